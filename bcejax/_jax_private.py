"""What bcejax needs of JAX that JAX's public API does not offer, in one place.

Two things, each used by :mod:`bcejax.checks`:

* ``trace_state_clean``: whether a call is inside a trace (``jit``, ``grad``,
  ``vmap``, ``checkify``, ``shard_map``, ...). An eager call of a loss runs as
  one compiled program with its value checks fused in, and an op-by-op call
  checks its values on the spot; both may fetch to the host only outside every
  trace. Probing instead (binding an operation and looking for a tracer) would
  add an operation to every traced program that calls a loss.
* A checkify rule for bcejax's check primitive. Every loss binds the primitive
  on its inputs; it lowers to nothing, so a plain ``jit`` pays nothing, and
  under checkify this rule turns it into one check per named cause. The public
  ``checkify.debug_check`` does the second half too, but it marks the traced
  program with checkify's error effect, which ``jax.export`` cannot serialize:
  every exported program that called a loss would fail to serialize.

Both have had the same meaning in every JAX that ``pyproject.toml`` admits. The
rule's form changed once: from jax 0.11.2, checkify's rules and ``assert_func``
take a leading context (which numbers the checks). :data:`RULES_TAKE_CONTEXT`
tells the two forms apart; CI runs the suite on the lowest JAX admitted (the
first form) and the newest (the second), and ``tests/test_jax_private.py``
checks each branch. Nothing else in bcejax imports from ``jax._src``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
from jax._src import checkify as _checkify
from jax._src import core as _core

#: One check: its failure (a boolean scalar), its message (a format string), the arrays it formats.
Cause = tuple[jax.Array, str, Mapping[str, jax.Array]]

#: True from jax 0.11.2, whose checkify rules take a context first.
RULES_TAKE_CONTEXT = "ctx" in inspect.signature(_checkify.assert_func).parameters


def trace_state_clean() -> bool:
    """True outside every trace: every argument and closed-over value is concrete."""
    return _core.trace_state_clean()


def checkify_rule(
    causes: Callable[..., Iterable[Cause]], takes_context: bool = RULES_TAKE_CONTEXT
) -> Callable[..., Any]:
    """The checkify rule of a primitive ``bind(carrier, value, **params) -> carrier``.

    ``causes(value, **params)`` gives the checks of ``value`` in order: the
    first that fails is the one reported. ``takes_context`` picks the rule's
    form (the running JAX's, unless a test asks for the other).
    """

    def rule(assert_func, error, enabled_errors, carrier, value, **params):
        if _checkify.FailedCheckError in enabled_errors:
            for bad, message, values in causes(value, **params):
                failure = _checkify.FailedCheckError(_checkify.get_traceback(), message, **values)
                error = assert_func(error, bad, failure)
        return error, carrier

    if takes_context:  # jax 0.11.2 and later: the context numbers the checks

        def with_context(ctx, *args, **params):
            return rule(functools.partial(_checkify.assert_func, ctx), *args, **params)

        return with_context
    return lambda *args, **params: rule(_checkify.assert_func, *args, **params)


def register_checkify_rule(primitive: Any, causes: Callable[..., Iterable[Cause]]) -> None:
    """Under checkify, ``primitive`` checks its second operand through ``causes``."""
    _checkify.error_checks[primitive] = checkify_rule(causes)
