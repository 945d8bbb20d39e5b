"""The examples run as a user runs them: ``--quick`` in a subprocess, outputs checked.

Each run is a fresh process (as from the README), so the device count can be
set with ``XLA_FLAGS`` before JAX starts. The runs share a persistent
compilation cache, so each one after the first skips most of its compiling.
Runs as several processes are in ``test_examples_distributed.py``. One test
calls ``training.fit`` in this process, on its four devices.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER_KEYS = {"roc_auc", "average_precision", "f1", "log_loss", "ece"}


pytestmark = pytest.mark.usefixtures("examples_compile_cache")


def run_example(name: str, out: Path, *args: str, devices: int = 1, check: bool = True):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env.pop("JAX_ENABLE_X64", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{name}.py"), "--out", str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def spam_quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("spam")
    result = run_example("spam", out, "--quick")
    return out, result


def test_spam_quick_writes_sane_outputs(spam_quick):
    out, result = spam_quick
    metrics = read_metrics(out)
    test = metrics["test"]
    assert CLASSIFIER_KEYS <= set(test)
    assert all(math.isfinite(v) for v in test.values())
    assert 0.85 < test["roc_auc"] <= 1.0  # chance is 0.5; a full run reaches 0.93
    assert 0.0 < test["log_loss"] < 0.5  # always predicting the 9% base rate gives 0.31
    assert 0.0 <= test["ece"] < 0.2
    assert metrics["epochs"] == 3 and metrics["loss"] == "bce" and metrics["processes"] == 1
    assert len(metrics["history"]["val_loss"]) == 3
    for plot in ("loss_curves.png", "roc_pr.png", "reliability.png"):
        assert (out / plot).stat().st_size > 1000
    assert "roc_auc" in result.stdout  # the printed summary
    assert "baseline" not in metrics and "baseline" not in result.stdout  # --quick skips it


def check_baseline(metrics: dict, stdout: str) -> None:
    """The baseline's record in ``metrics.json``: scored as the model, printed beside it."""
    baseline = metrics["baseline"]
    assert set(baseline) == {"model", "val_score", "val_scores", "seconds", "test"}
    assert baseline["val_score"] == max(baseline["val_scores"].values())
    assert baseline["val_scores"][baseline["model"]] == baseline["val_score"]
    assert baseline["model"].startswith(("LogisticRegression(", "HistGradientBoostingClassifier("))
    assert set(baseline["test"]) == set(metrics["test"])
    assert all(math.isfinite(v) for v in baseline["test"].values())
    header = next(line for line in stdout.splitlines() if line.split() == ["model", "baseline"])
    assert header and f"baseline: {baseline['model']}, the best on the validation split" in stdout


def test_spam_ensemble_and_baseline(tmp_path):
    result = run_example("spam", tmp_path, "--quick", "--members", "2", "--baseline", "on")
    metrics = read_metrics(tmp_path)
    assert "member 2 of 2" in result.stdout
    for member in ("member0", "member1"):
        assert any(p.name.isdigit() for p in (tmp_path / member / "checkpoints").iterdir())
    assert not (tmp_path / "checkpoints").exists()
    check_baseline(metrics, result.stdout)
    assert metrics["baseline"]["test"]["roc_auc"] > 0.85
    assert metrics["test"]["roc_auc"] > 0.85


def test_spam_focal_loss(tmp_path):
    run_example("spam", tmp_path, "--quick", "--loss", "focal")
    metrics = read_metrics(tmp_path)
    assert metrics["loss"] == "focal"
    assert metrics["test"]["roc_auc"] > 0.85


def test_resume_continues_where_the_run_stopped(tmp_path, spam_quick):
    whole, parts = spam_quick[0], tmp_path / "parts"
    run_example("spam", parts, "--quick", "--epochs", "2")
    resumed = run_example("spam", parts, "--quick", "--resume")
    assert "resumed from the checkpoint after epoch 2" in resumed.stdout
    assert "epoch   1:" not in resumed.stdout  # the finished epochs are not run again
    # the same shuffles and optimizer state: the same history as the uninterrupted run
    want, got = read_metrics(whole), read_metrics(parts)
    assert got["history"]["val_loss"] == pytest.approx(want["history"]["val_loss"], rel=1e-5)
    assert got["test"]["roc_auc"] == pytest.approx(want["test"]["roc_auc"], rel=1e-5)


def damage(step: Path, how: str) -> None:
    """Makes the checkpoint in ``step`` unreadable, as a crash or a full disk would."""
    if how == "truncated data":
        data = max(step.rglob("d/*"), key=lambda file: file.stat().st_size)
        data.write_bytes(data.read_bytes()[:100])
    elif how == "garbage metadata":
        (step / "default" / "_METADATA").write_text("{not json")
    else:
        shutil.rmtree(step)
        step.mkdir()


@pytest.mark.parametrize("how", ["truncated data", "garbage metadata", "emptied"])
def test_resume_skips_an_unreadable_checkpoint(tmp_path, spam_quick, how):
    whole, out = spam_quick[0], tmp_path / "run"
    shutil.copytree(whole / "checkpoints", out / "checkpoints")
    damage(out / "checkpoints" / "3", how)
    result = run_example("spam", out, "--quick", "--resume")
    skipped = [line for line in result.stdout.splitlines() if line.startswith("skipped")]
    # one line: which checkpoint, and why (the error's type and message)
    assert len(skipped) == 1, result.stdout
    assert re.fullmatch(r"skipped the checkpoint after epoch 3 \(.+/3\): \w+: .+", skipped[0])
    assert "resumed from the checkpoint after epoch 2" in result.stdout
    assert "epoch   3:" in result.stdout
    # No traceback from the examples or bcejax. (After a truncated data file, orbax's
    # reads still in flight may print asyncio's "Event loop is closed" from its threads.)
    assert not re.search(r'File "[^"]*/(examples|bcejax)/', result.stderr), result.stderr
    # epoch 3 ran again from the good checkpoint: the uninterrupted run's results
    want, got = read_metrics(whole), read_metrics(out)
    assert got["test"] == pytest.approx(want["test"], rel=1e-6)
    for key, values in want["history"].items():
        assert got["history"][key] == pytest.approx(values, rel=1e-6)


def test_resume_with_no_readable_checkpoint_stops(tmp_path, spam_quick):
    out = tmp_path / "run"
    shutil.copytree(spam_quick[0] / "checkpoints", out / "checkpoints")
    for step in ("2", "3"):
        damage(out / "checkpoints" / step, "garbage metadata")
    result = run_example("spam", out, "--quick", "--resume", check=False)
    assert result.returncode == 2
    error = f"spam.py: error: --resume: no checkpoint in {out / 'checkpoints'} can be read"
    assert result.stderr.splitlines()[-1] == error
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2", "3"]  # kept


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--lr", "-1"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--epochs", "0"], "--epochs"),
        ([], "--out"),  # --out names a file
        (["--resume"], "--resume"),  # --out is an empty folder
    ],
    ids=["batch-size 0", "lr -1", "lr nan", "epochs 0", "out is a file", "resume from nothing"],
)
def test_bad_flags_stop_before_any_work(tmp_path, flags, named):
    out = tmp_path / "out"
    if named == "--out":
        out.write_text("a file, not a folder\n")
    else:
        out.mkdir()
    result = run_example("spam", out, "--quick", *flags, check=False)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr  # one line, no traceback
    assert result.stderr.startswith(f"spam.py: error: {named}")
    assert result.stdout == ""
    assert out.is_file() or not any(out.iterdir())  # nothing written


def test_history_holds_only_the_epochs_that_ran(tmp_path):
    """Early stopping at the first epoch without improvement: no padding up to --epochs."""
    flags = ("--epochs", "10", "--patience", "0", "--lr", "0.02", "--members", "1")
    run_example("spam", tmp_path, *flags, "--baseline", "off")
    metrics = read_metrics(tmp_path)
    assert metrics["epochs"] < 10
    for values in metrics["history"].values():
        assert len(values) == metrics["epochs"]
        assert all(math.isfinite(v) for v in values)


def test_four_devices_shard_the_batch(tmp_path):
    result = run_example("spam", tmp_path, "--quick", devices=4)
    metrics = read_metrics(tmp_path)
    assert metrics["devices"] == "4 x cpu"
    assert metrics["test"]["roc_auc"] > 0.85, result.stdout


def test_non_finite_loss_stops_the_run_with_the_step(tmp_path):
    result = run_example("spam", tmp_path, "--quick", "--lr", "1e12", check=False)
    assert result.returncode == 1
    assert "training stopped: the training loss is nan at step" in result.stderr
    assert "learning rate" in result.stderr
    assert not (tmp_path / "metrics.json").exists()


def test_sentiment_quick(tmp_path):
    """With the squared-error loss, the one loss that is not a bcejax callable."""
    result = run_example("sentiment", tmp_path, "--quick", "--loss", "mse", "--baseline", "on")
    metrics = read_metrics(tmp_path)
    check_baseline(metrics, result.stdout)
    assert metrics["baseline"]["model"].startswith("LogisticRegression(")
    assert metrics["loss"] == "mse"
    assert CLASSIFIER_KEYS <= set(metrics["test"])
    assert all(math.isfinite(v) for v in metrics["test"].values())
    assert metrics["test"]["roc_auc"] > 0.75  # a full run reaches 0.88
    assert (tmp_path / "roc_pr.png").exists()


def test_quickstart_notebook_runs(monkeypatch):
    """Every code cell of the notebook, in order, in one namespace (as a kernel runs them)."""
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setattr("matplotlib.pyplot.show", lambda *a, **k: None)
    notebook = json.loads((ROOT / "examples" / "quickstart.ipynb").read_text())
    namespace: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "quickstart.ipynb", "exec"), namespace)
    rows = namespace["rows"]
    assert set(rows) == {"BCE", "focal (alpha 0.25, gamma 2)"}
    for row in rows.values():
        assert float(row["ROC-AUC"]) > 0.88
        assert float(row["ECE, temperature-scaled"]) < 0.1


@pytest.mark.parametrize(
    ("source", "requirement"),
    [
        ("..", "..[examples]"),  # from examples/ in a clone
        ("git+https://example.org/bcejax", "bcejax[examples] @ git+https://example.org/bcejax"),
        ("bcejax", "bcejax[examples]"),
        ("/", None),  # what ".." is on Colab: not a clone
        ("missing.whl", None),
    ],
)
def test_the_notebook_install_cell_installs_from_its_source(monkeypatch, source, requirement):
    """The install cell as on a fresh runtime (bcejax not importable), pip replaced."""
    import importlib.util

    notebook = json.loads((ROOT / "examples" / "quickstart.ipynb").read_text())
    code = "".join(next(c for c in notebook["cells"] if c["cell_type"] == "code")["source"])
    assert code.startswith('BCEJAX_SOURCE = ".."')
    code = code.replace('BCEJAX_SOURCE = ".."', f"BCEJAX_SOURCE = {source!r}", 1)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bcejax" else find_spec(name, *a),
    )
    installed = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: installed.append(command[-1]))
    monkeypatch.chdir(ROOT / "examples")
    if requirement is None:
        with pytest.raises(FileNotFoundError, match="not a bcejax clone or a wheel file"):
            exec(compile(code, "quickstart.ipynb", "exec"), {})
        assert installed == []
    else:
        exec(compile(code, "quickstart.ipynb", "exec"), {})
        assert installed == [requirement]


def test_segmentation_quick(tmp_path):
    # bce_dice: the Lovász hinge (the default) needs more than the 2 quick epochs to start.
    result = run_example(
        "segmentation", tmp_path, "--quick", "--loss", "bce_dice", "--baseline", "on"
    )
    metrics = read_metrics(tmp_path)
    check_baseline(metrics, result.stdout)
    assert metrics["baseline"]["test"]["iou"] > 0.5
    test = metrics["test"]
    assert set(test) == {"iou", "dice"}
    # predicting no foreground gives 0, predicting all of it about 0.075; a full run 0.93
    assert 0.2 < test["iou"] <= test["dice"] <= 1.0
    assert len(metrics["history"]["val_score"]) == 2  # the validation IoU per epoch
    for plot in ("loss_curves.png", "overlays.png"):
        assert (tmp_path / plot).stat().st_size > 1000


def test_a_schedule_sized_with_global_batch_size_spans_the_steps_fit_takes(tmp_path, monkeypatch):
    """On 4 devices a batch of 30 trains as 32: 95 rows take 3 steps an epoch, not 4."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import jax
    import optax
    import training
    from flax import nnx

    import bcejax

    class Linear(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.linear = nnx.Linear(3, 1, rngs=rngs)

        def __call__(self, x):
            return self.linear(x)[..., 0]

    rng = np.random.default_rng(0)
    splits = {
        name: {"x": rng.normal(size=(n, 3)), "y": (rng.uniform(size=n) < 0.5).astype(np.float64)}
        for name, n in (("train", 95), ("val", 20), ("test", 20))
    }
    task = training.Task("toy", Linear(nnx.Rngs(0)), bcejax.losses.BinaryCrossEntropy(), splits)
    args = argparse.Namespace(
        epochs=2, batch_size=30, lr=0.1, patience=3, seed=0, out=tmp_path, resume=False
    )
    assert jax.device_count() == 4  # set in conftest.py
    batch_size = training.global_batch_size(args.batch_size)
    steps = args.epochs * -(-len(splits["train"]["y"]) // batch_size)
    result = training.fit(task, args, optax.sgd(optax.linear_schedule(0.1, 0.0, steps)))
    assert (batch_size, steps) == (32, 6)
    assert (result.state.epoch, result.state.step) == (2, steps)
    assert len(result.state.history.val_loss) == 2 and result.out == tmp_path
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.state.epoch = 0


@pytest.mark.parametrize("name", ["spam", "sentiment", "segmentation"])
def test_help_shows_every_default_and_explains_every_choice(name):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{name}.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "COLUMNS": "1000"},  # one line an option
    )
    assert result.returncode == 0, result.stderr
    options = []  # each option with its help, which argparse may put on the next lines
    for line in result.stdout.splitlines():
        if line.startswith("  --"):
            options.append(line)
        elif options and line.startswith("   ") and not line.strip().startswith("-"):
            options[-1] += " " + line.strip()
    assert len(options) >= 14
    for line in options:
        assert "(default: " in line, line
    loss = next(line for line in options if line.startswith("  --loss"))
    choices = re.search(r"\{(.+?)\}", loss).group(1).split(",")
    for choice in choices:
        assert f"{choice}: " in loss, (choice, loss)


@pytest.mark.parametrize("widths", ["8", "8,x", "8,0,4", ""])
def test_bad_widths_stop_before_any_work(tmp_path, widths):
    result = run_example("segmentation", tmp_path, "--quick", "--widths", widths, check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "segmentation.py: error: argument --widths: give two or more positive channel "
        f"counts, comma-separated, as 8,16,32; got {widths!r}"
    ]
