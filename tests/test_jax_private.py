"""What bcejax takes from JAX's private modules, checked branch by branch.

CI runs this file on the lowest and the newest JAX that ``pyproject.toml`` admits (checkify's
rules without and with a context), so each branch meets the JAX it was written for; the
branch the running JAX does not take is checked against a stand-in of checkify's
``assert_func``. Nothing else imports from ``jax._src``.
"""

from __future__ import annotations

import pathlib
import re
from unittest import mock

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from jax.sharding import PartitionSpec as P

import bcejax
from bcejax import _jax_private

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _seen_inside(transform):
    """What ``trace_state_clean`` says when called inside ``transform`` of a function."""
    seen = []

    def f(x):
        seen.append(_jax_private.trace_state_clean())
        return x.sum()

    transform(f)(jnp.ones(4))
    return seen


def test_clean_outside_every_trace():
    assert _jax_private.trace_state_clean()


def test_not_clean_inside_any_trace():
    mesh = helpers.mesh()
    transforms = {
        "jit": jax.jit,
        "grad": jax.grad,
        "vmap": lambda f: jax.vmap(lambda x: f(x[None])),
        "jvp": lambda f: lambda x: jax.jvp(f, (x,), (x,)),
        "checkify": lambda f: checkify.checkify(f, errors=checkify.user_checks),
        "scan": lambda f: lambda x: jax.lax.scan(lambda c, r: (c + f(r), None), 0.0, x[None])[0],
        "shard_map": lambda f: jax.shard_map(
            lambda x: jax.lax.psum(f(x), "d"), mesh=mesh, in_specs=P("d"), out_specs=P()
        ),
        "eval_shape": lambda f: lambda x: jax.eval_shape(f, x),
    }
    for name, transform in transforms.items():
        seen = _seen_inside(transform)
        assert seen and not any(seen), name


def test_clean_again_after_a_trace():
    jax.jit(lambda x: x + 1)(np.ones(2))
    assert _jax_private.trace_state_clean()


def test_nothing_else_imports_private_jax():
    pattern = re.compile(r"^\s*(from|import)\s+jax\._src", re.MULTILINE)
    files = [*(ROOT / "bcejax").glob("*.py"), *(ROOT / "examples").glob("*.py")]
    files += [*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "tests").glob("*.py")]
    importers = {p.relative_to(ROOT).as_posix() for p in files if pattern.search(p.read_text())}
    assert importers == {"bcejax/_jax_private.py"}


def test_the_rule_form_follows_the_jax_version():
    # jax 0.11.2 gave checkify's rules and assert_func a leading context.
    assert _jax_private.RULES_TAKE_CONTEXT == (jax.__version_info__ >= (0, 11, 2))


def _causes(value):
    return [
        (value.min() < 0, "negative (min {lo})", {"lo": value.min()}),
        (value.max() > 1, "above 1", {}),
    ]


@pytest.mark.parametrize("takes_context", [False, True])
def test_each_rule_form_adds_every_cause_in_order(takes_context):
    calls = []

    def assert_func(*args):
        calls.append(args)
        return args[-3]  # the error, the last argument before the failure's pair

    rule = _jax_private.checkify_rule(_causes, takes_context=takes_context)
    context = ("ctx",) if takes_context else ()
    enabled = checkify.user_checks
    value = jnp.array([-1.0, 2.0])
    with mock.patch.object(_jax_private._checkify, "assert_func", assert_func):
        error, out = rule(*context, "error", enabled, "carrier", value)
    assert (error, out) == ("error", "carrier")
    assert [call[: len(context)] for call in calls] == [context, context]
    failures = [call[-1] for call in calls]
    assert [f.fmt_string for f in failures] == ["negative (min {lo})", "above 1"]
    assert [bool(call[-2]) for call in calls] == [True, True]
    # Without the user checks enabled, nothing is added.
    calls.clear()
    with mock.patch.object(_jax_private._checkify, "assert_func", assert_func):
        assert rule(*context, "error", checkify.nan_checks, "carrier", value) == (
            "error",
            "carrier",
        )
    assert calls == []


def test_the_running_form_reports_the_first_cause_that_fails():
    error, _ = checkify.checkify(
        lambda x, y: bcejax.sigmoid_binary_cross_entropy(x, y), errors=checkify.user_checks
    )(np.zeros(3, np.float32), np.array([0.0, 1.0, 255.0], np.float32))
    assert "8-bit mask" in error.get()


def test_the_public_debug_check_would_make_exported_programs_unserializable():
    """Why the check primitive has a private checkify rule rather than being a debug_check.

    A traced ``debug_check`` leaves checkify's error effect on the program, which
    ``jax.export`` cannot serialize, while a program with bcejax's checks serializes
    (tests/test_export.py). When this test fails, a JAX release serializes the effect:
    the public ``debug_check`` can then replace the private rule.
    """

    def with_debug_check(x):
        checkify.debug_check(jnp.all(x >= 0), "negative")
        return x.sum()

    exported = jax.export.export(jax.jit(with_debug_check))(jnp.ones(3))
    with pytest.raises(NotImplementedError, match="nullary constructor"):
        exported.serialize()
    loss = jax.jit(lambda x, y: bcejax.sigmoid_binary_cross_entropy(x, y).sum())
    jax.export.export(loss)(jnp.ones(3), jnp.ones(3)).serialize()
