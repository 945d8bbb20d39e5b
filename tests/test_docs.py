"""The documentation site builds with warnings as errors and documents every public name.

The build is the README's command into a temporary folder. Sphinx and the docs
extensions come with the ``test`` extra: without them the build fails, and so
does this test.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from helpers import public_modules, public_names

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

pytestmark = pytest.mark.slow


def read_inventory(path: Path) -> dict[str, set[str]]:
    """``objects.inv``: each documented name with its roles (``py:function``, ...)."""
    with path.open("rb") as stream:
        header = [stream.readline() for _ in range(4)]
        body = zlib.decompress(stream.read()).decode()
    assert header[0].startswith(b"# Sphinx inventory version 2"), header
    entries: dict[str, set[str]] = {}
    for line in body.splitlines():
        name, role, *_ = line.split()  # name domain:role priority uri display name
        entries.setdefault(name, set()).add(role)
    return entries


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs") / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q"]
    result = subprocess.run(
        [*command, str(DOCS), str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    return result, out


def test_the_site_builds_without_warnings(site):
    result, out = site
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert "WARNING" not in result.stderr, result.stderr[-5000:]
    assert (out / "index.html").is_file()


def test_every_public_name_has_an_entry(site):
    result, out = site
    assert result.returncode == 0, result.stderr[-5000:]
    entries = read_inventory(out / "objects.inv")
    missing = []
    for module in public_modules():
        if "py:module" not in entries.get(module, ()):
            missing.append(module)
        names = public_names(module)
        assert names, f"{module} exports nothing"
        missing += [f"{module}.{n}" for n in names if f"{module}.{n}" not in entries]
    assert not missing, f"not in the API reference: {missing}"


def test_the_pages_hold_the_readme_the_notebook_and_the_math(site):
    result, out = site
    assert result.returncode == 0, result.stderr[-5000:]
    for image in ("spam_roc_pr.png", "sentiment_reliability.png", "segmentation_overlays.png"):
        assert (out / "_images" / image).is_file(), image
    tour = (out / "guide" / "tour.html").read_text()
    assert "sigmoid_binary_cross_entropy" in tour
    notebook = (out / "examples" / "quickstart.html").read_text()
    assert "BCEJAX_SOURCE" in notebook
    # Its stored outputs: the metrics table and the plots.
    assert "ROC-AUC" in notebook and "<img" in notebook
    for page in (out / "api").glob("*.html"):  # no builtin's docstring stands in for ours
        assert "str(object=" not in page.read_text(), page.name
    api = (out / "api" / "bcejax.binary.html").read_text()
    assert 'class="math' in api and "mathjax" in api.lower()


def test_the_math_renders_offline(site):
    """Every page loads MathJax from the site itself, never from a CDN."""
    result, out = site
    assert result.returncode == 0, result.stderr[-5000:]
    assert (out / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 100_000
    pages = [p for p in out.rglob("*.html") if "math" in p.read_text()]
    assert len(pages) >= 9
    for page in pages:
        scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', page.read_text(), re.I)
        assert scripts, page
        for src in scripts:
            assert "://" not in src, (page, src)
            assert (page.parent / src).resolve().is_file(), (page, src)
