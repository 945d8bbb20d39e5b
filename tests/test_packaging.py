"""The package as users get it: the sdist and the wheel build and pass ``twine check``,
and the wheel, installed in a fresh virtual environment, works without the source tree.

``python -m build`` builds the sdist and then the wheel from the unpacked sdist,
so a file missing from the sdist is missing from the wheel too. The install
takes bcejax's dependencies from the package index (or pip's cache).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

SMOKE = textwrap.dedent(
    """
    import math
    import sys
    from pathlib import Path

    import jax
    import jax.numpy as jnp
    import numpy as np

    import bcejax
    from bcejax import losses, metrics

    package = Path(bcejax.__file__).resolve().parent
    assert package.is_relative_to(Path(sys.prefix).resolve()), (package, sys.prefix)
    assert (package / "py.typed").is_file()

    logits = jnp.array([math.log(3.0), 0.0, -math.log(3.0), 0.0])
    labels = jnp.array([1.0, 1.0, 0.0, 0.0])
    # softplus(-x) for a positive, softplus(x) for a negative: log(4/3), log 2, log(4/3), log 2
    expected = [math.log(4 / 3), math.log(2), math.log(4 / 3), math.log(2)]
    loss = jax.jit(bcejax.sigmoid_binary_cross_entropy)(logits, labels)
    np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-6)
    mean = losses.BinaryCrossEntropy()(logits, labels)
    np.testing.assert_allclose(float(mean), math.log(8 / 3) / 2, rtol=1e-6)
    # positives score log 3 and 0, negatives -log 3 and 0: 3 pairs ordered, 1 tie
    auc = jax.jit(metrics.roc_auc)(logits, labels)
    np.testing.assert_allclose(float(auc), 3.5 / 4, rtol=1e-6)
    print("installed", bcejax.__version__, "at", package)
    """
)


def run(command, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], timeout=600)
    (sdist,) = out.glob("bcejax-*.tar.gz")
    (wheel,) = out.glob("bcejax-*-py3-none-any.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_twine_check_passes(dist):
    twine = [sys.executable, "-m", "twine", "check", "--strict"]
    run([*twine, str(dist["sdist"]), str(dist["wheel"])])


def test_the_wheel_holds_every_module_and_py_typed(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        files = set(wheel.namelist())
    expected = {f"bcejax/{p.name}" for p in (ROOT / "bcejax").glob("*.py")} | {"bcejax/py.typed"}
    assert expected <= files, sorted(expected - files)


def test_the_installed_wheel_works_outside_the_source_tree(dist, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    python = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "install", "--quiet", str(dist["wheel"])], timeout=600)
    away = tmp_path / "elsewhere"
    away.mkdir()
    (away / "smoke.py").write_text(SMOKE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["JAX_PLATFORMS"] = "cpu"
    result = run([str(python), "smoke.py"], cwd=away, env=env, timeout=300)
    location = Path(result.stdout.split(" at ")[-1].strip())
    assert location.is_relative_to(venv.resolve()), result.stdout
    assert not location.is_relative_to(ROOT), result.stdout
