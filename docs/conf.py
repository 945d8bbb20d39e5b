"""Sphinx configuration of the bcejax documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(DOCS / "_ext")]

import bcejax  # noqa: E402

project = "bcejax"
author = "the bcejax authors"
copyright = "the bcejax authors, Apache License 2.0"
release = bcejax.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax copied into the site: no CDN, the math renders offline
    "myst_nb",  # MyST Markdown pages (myst-parser) and notebooks
    "bcejax_api",
]

exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]

# The API reference: Google-style docstrings, signatures as written in the code.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_type_aliases = {"ArrayLike": "ArrayLike"}  # jax.typing.ArrayLike, not its members
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# The README's sections are pages under their own titles, so their subsections start at H3.
suppress_warnings = ["myst.header"]

# The quickstart notebook is rendered with the outputs stored in it, never executed.
nb_execution_mode = "off"
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"bcejax {release}"


def _copy_notebook() -> None:
    """Copy ``examples/quickstart.ipynb`` under ``docs/`` (ignored by git): Sphinx reads sources
    only from inside its source folder. Copied only when it changed, so builds stay incremental."""
    source = ROOT / "examples" / "quickstart.ipynb"
    target = DOCS / "examples" / "quickstart.ipynb"
    if not target.exists() or target.read_bytes() != source.read_bytes():
        target.parent.mkdir(exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(source, partial)
        os.replace(partial, target)


def _alias_names(app, what, name, obj, options, signature, return_annotation):
    """Sphinx writes an alias inside a union (``ArrayLike | None``) as
    ``TypeAliasForwardRef('ArrayLike')``; show the alias's name."""

    def fix(text):
        return text and re.sub(r"TypeAliasForwardRef\('([^']*)'\)", r"\1", text)

    return fix(signature), fix(return_annotation)


def setup(app):
    _copy_notebook()
    app.connect("autodoc-process-signature", _alias_names)
