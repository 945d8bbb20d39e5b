"""The ``bcejax-api`` directive: a module's public names, as a summary table and autodoc entries.

The public names of a module are its ``__all__``; a module without one exports
the names that ``bcejax`` re-exports from it. The entries follow the code, so a
name added to ``__all__`` appears in the reference without editing a page.
"""

from __future__ import annotations

import importlib
import inspect
import types
from typing import ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

# Section titles for the flat ``bcejax`` namespace, by the module a name is defined in.
GROUPS = {
    "bcejax.binary": "Binary losses",
    "bcejax.multiclass": "Multiclass losses",
    "bcejax.segmentation": "Segmentation losses",
    "bcejax.batch": "Batch-level losses",
    "bcejax.scale": "Losses at scale",
    "bcejax.reduction": "Reduction",
    "bcejax.weighting": "Weighting helpers",
    "bcejax.checks": "Checked mode",
}


def public_names(module: types.ModuleType) -> list[str]:
    """``module.__all__``, or the names ``bcejax`` re-exports from a module without one."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    package = importlib.import_module("bcejax")
    return [
        name
        for name in package.__all__
        if getattr(getattr(package, name), "__module__", None) == module.__name__
    ]


def _group(name: str, value) -> str:
    if isinstance(value, types.ModuleType):
        return "Submodules"
    if name == "__version__":
        return "Version"
    return GROUPS.get(getattr(value, "__module__", None), "Other")


def _entry(name: str, value) -> list[str]:
    if isinstance(value, types.ModuleType):
        return []  # documented on its own page
    if inspect.isclass(value):
        kind = "autoexception" if issubclass(value, BaseException) else "autoclass"
        return [f".. {kind}:: {name}", "   :members:", ""]
    if callable(value):
        return [f".. autofunction:: {name}", ""]
    return [f".. autodata:: {name}", ""]


def _table(names: list[str], values: dict) -> list[str]:
    rows = [n for n in names if callable(values[n]) or isinstance(values[n], types.ModuleType)]
    if not rows:
        return []
    return [".. autosummary::", "   :nosignatures:", "", *(f"   {n}" for n in rows), ""]


class ApiDirective(SphinxDirective):
    """``.. bcejax-api:: bcejax.metrics``; the flat ``bcejax`` namespace is split by topic.

    ``:also:`` names module attributes to document after the public names (once,
    should a later ``__all__`` list them too).
    """

    required_arguments = 1
    option_spec: ClassVar[dict] = {"also": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        module = importlib.import_module(self.arguments[0])
        for path in (module.__file__, importlib.import_module("bcejax").__file__):
            self.env.note_dependency(path)  # re-read the page when the names may have changed
        names = public_names(module)
        names += [n for n in self.options.get("also", "").split() if n not in names]
        values = {name: getattr(module, name) for name in names}
        lines = [f".. currentmodule:: {module.__name__}", ""]
        if module.__name__ == "bcejax":
            order = [*GROUPS.values(), "Submodules", "Other", "Version"]
            groups = {title: [n for n in names if _group(n, values[n]) == title] for title in order}
            for title, members in groups.items():
                if not members:
                    continue
                lines += [title, "-" * len(title), "", *_table(members, values)]
                for name in members:
                    lines += _entry(name, values[name])
        else:
            lines += _table(names, values)
            for name in names:
                lines += _entry(name, values[name])
        source = self.get_source_info()[0]
        content = StringList(lines, source=source)
        holder = nodes.section()
        nested_parse_with_titles(self.state, content, holder)
        return holder.children


def setup(app):
    app.add_directive("bcejax-api", ApiDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
