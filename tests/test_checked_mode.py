"""The checked mode under every transformation, in either order with the plain program.

``bcejax.checked(f)`` and ``f`` share JAX's trace of ``f``: the check primitive
is in it whichever ran first, lowers to nothing in the plain program and turns
into a real check under checkify. Each case below runs both orders on fresh
functions: plain first then checked (the checked call must still catch bad
values), and checked first then plain (the plain call must still run, and
catch nothing).
"""

from __future__ import annotations

import collections
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
from bcejax import checks

RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 6)).astype(np.float32)
Y = (RNG.random((8, 6)) < 0.4).astype(np.float32)
CLASSES = RNG.integers(0, 6, size=8).astype(np.int32)


def _bce_mean(x, y):
    return bcejax.sigmoid_binary_cross_entropy(x, y).mean()


def _sharded_mean(x, y):
    return bcejax.reduce_loss(bcejax.sigmoid_binary_cross_entropy(x, y), axis_name="d")


def _scan_sum(x, y):
    def body(total, xy):
        return total + _bce_mean(*xy), None

    return jax.lax.scan(body, jnp.zeros((), x.dtype), (x, y))[0]


# name -> (factory of a fresh function, good inputs, bad inputs, what the error says)
CASES = {
    "jit": (lambda: jax.jit(_bce_mean), (X, Y), (X, 255 * Y), "8-bit mask"),
    "grad_of_jit": (lambda: jax.jit(jax.grad(_bce_mean)), (X, Y), (X, 255 * Y), "8-bit"),
    "jit_of_grad_of_jit": (
        lambda: jax.jit(jax.grad(jax.jit(_bce_mean))),
        (X, Y),
        (X, 2 * Y - 1),
        r"\{-1, 1\}",
    ),
    "value_and_grad": (
        lambda: jax.jit(jax.value_and_grad(_bce_mean)),
        (X, Y),
        (np.where(Y > 0, np.nan, X), Y),
        "NaN in logits",
    ),
    "nested_jit": (
        lambda: jax.jit(lambda x, y: 2 * jax.jit(_bce_mean)(x, y)),
        (X, Y),
        (X, 255 * Y),
        "8-bit",
    ),
    "vmap": (lambda: jax.jit(jax.vmap(_bce_mean)), (X, Y), (X, 255 * Y), "8-bit"),
    "scan": (lambda: jax.jit(_scan_sum), (X, Y), (X, 255 * Y), "8-bit"),
    "shard_map": (
        lambda: jax.jit(
            jax.shard_map(
                _sharded_mean, mesh=helpers.mesh(), in_specs=(P("d"), P("d")), out_specs=P()
            )
        ),
        (X, Y),
        (X, 255 * Y),
        "8-bit",
    ),
    "hessian": (
        lambda: jax.jit(jax.hessian(lambda x, y: _bce_mean(x[0], y[0]))),
        (X, Y),
        (X, 255 * Y),
        "8-bit",
    ),
    "callable_sum_grad": (
        lambda: jax.jit(
            jax.grad(
                lambda x, y: (bcejax.losses.BinaryCrossEntropy() + bcejax.losses.DiceLoss())(x, y)
            )
        ),
        (X, Y),
        (X, 255 * Y),
        "8-bit",
    ),
    "categorical_grad": (
        lambda: jax.jit(jax.grad(bcejax.losses.CategoricalCrossEntropy())),
        (X, CLASSES),
        (X, CLASSES + 6),
        r"class indices in \[0, 6\)",
    ),
}


def _call(fn, args):
    return jax.tree.map(np.asarray, fn(*args))


@pytest.mark.parametrize("name", CASES)
def test_plain_first_then_checked(name):
    factory, good, bad, match = CASES[name]
    f = factory()
    plain = _call(f, good)
    _call(f, bad)  # the plain program checks nothing and pays nothing
    with pytest.raises(bcejax.InvalidInputError, match=match):
        bcejax.checked(f)(*bad)
    jax.tree.map(np.testing.assert_array_equal, _call(bcejax.checked(f), good), plain)


@pytest.mark.parametrize("name", CASES)
def test_checked_first_then_plain(name):
    factory, good, bad, match = CASES[name]
    f = factory()
    first = _call(bcejax.checked(f), good)
    jax.tree.map(np.testing.assert_array_equal, _call(f, good), first)
    _call(f, bad)
    with pytest.raises(bcejax.InvalidInputError, match=match):
        bcejax.checked(f)(*bad)


def test_plain_eager_then_checked_and_back():
    # The same plain function: eager, then checked, then jitted, then eager again.
    f = _bce_mean
    expected = f(X, Y)
    with pytest.raises(bcejax.InvalidInputError, match="8-bit"):
        f(X, 255 * Y)
    with pytest.raises(bcejax.InvalidInputError, match="8-bit"):
        bcejax.checked(f)(X, 255 * Y)
    np.testing.assert_allclose(jax.jit(f)(X, Y), expected, rtol=1e-6)
    with pytest.raises(bcejax.InvalidInputError, match="8-bit"):
        f(X, 255 * Y)


def test_user_checkify_sees_the_checks():
    # checkify itself, not only bcejax.checked, turns the primitive into a check.
    error, _ = jax.jit(checkify.checkify(_bce_mean))(X, 255 * Y)
    assert "labels must be in [0, 1]" in error.get()
    error, _ = checkify.checkify(_bce_mean, errors=checkify.nan_checks)(X, 255 * Y)
    assert error.get() is None  # only user checks are bcejax's


def _opcodes(fn, *args):
    """The multiset of HLO opcodes in the optimized program XLA compiles for ``fn``."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    return collections.Counter(re.findall(r"= \S+\[?[^\s]*\s+([a-z][\w-]*)\(", text))


def _steps():
    cce = bcejax.losses.CategoricalCrossEntropy(ignore_index=-100)
    seg = bcejax.losses.BinaryCrossEntropy() + bcejax.losses.DiceLoss()
    return {
        "bce": (jax.value_and_grad(_bce_mean), (X, Y)),
        "weighted_focal": (
            jax.grad(lambda x, y: bcejax.losses.FocalLoss()(x, y, weights=y + 1.0)),
            (X, Y),
        ),
        "categorical_masked": (
            jax.grad(lambda x, t: cce(x, t, where=t != 0)),
            (X, CLASSES),
        ),
        "segmentation_masked": (
            jax.grad(lambda x, y: seg(x, y, where=x > -1)),
            (X[None], Y[None]),
        ),
        "metrics": (lambda s, y: bcejax.metrics.roc_auc(s, y), (X.ravel(), Y.ravel())),
    }


@pytest.mark.parametrize("name", list(_steps()))
def test_plain_program_holds_no_trace_of_the_checks(name):
    fn, args = _steps()[name]
    with_checks = _opcodes(fn, *args)
    with mock.patch.object(checks, "_guard", lambda carrier, value, check: carrier):
        without = _opcodes(fn, *args)
    assert with_checks == without
    assert sum(with_checks.values()) > 0


def test_the_primitive_is_in_the_plain_trace():
    jaxpr = jax.make_jaxpr(jax.grad(_bce_mean))(X, Y)
    assert "bcejax_check" in str(jaxpr)


@pytest.mark.parametrize("offset", [-1e-5, 1e-5, -checks.ROUNDING_TOLERANCE])
def test_labels_within_the_rounding_tolerance_are_accepted(offset):
    labels = np.clip(Y + offset, -1, 2) if offset < 0 else Y + offset
    eager = bcejax.sigmoid_binary_cross_entropy(X, labels)
    assert np.all(np.isfinite(eager))
    np.testing.assert_array_equal(
        bcejax.checked(bcejax.sigmoid_binary_cross_entropy)(X, labels), eager
    )
    bcejax.sigmoid_focal_loss(X, labels, weights=np.full_like(X, offset if offset < 0 else 1))


@pytest.mark.parametrize("offset", [-2e-3, 2e-3])
def test_labels_beyond_the_rounding_tolerance_are_rejected(offset):
    with pytest.raises(bcejax.InvalidInputError, match=r"labels must be in \[0, 1\]"):
        bcejax.sigmoid_binary_cross_entropy(X, Y + offset)
    with pytest.raises(bcejax.InvalidInputError, match=r"labels must be in \[0, 1\]"):
        bcejax.checked(bcejax.sigmoid_binary_cross_entropy)(X, Y + offset)


def test_weights_beyond_the_rounding_tolerance_are_rejected():
    with pytest.raises(bcejax.InvalidInputError, match="weights must be >= 0"):
        bcejax.sigmoid_binary_cross_entropy(X, Y, weights=np.full_like(X, -2e-3))


def test_probabilities_have_no_tolerance():
    # log(1 - p) has no value above 1, so probabilities are held to [0, 1] exactly (PyTorch too).
    with pytest.raises(bcejax.InvalidInputError, match="probs must be probabilities"):
        bcejax.binary_cross_entropy(np.full(3, 1 + 1e-6), np.ones(3))


def test_unnormalized_soft_labels_are_applied_as_written():
    # As optax and PyTorch: -sum_c y_c log softmax(x)_c, whatever the labels sum to.
    labels = RNG.random(X.shape)
    expected = -np.sum(labels * jax.nn.log_softmax(X.astype(np.float64)), -1)
    np.testing.assert_allclose(bcejax.softmax_cross_entropy(X, labels), expected, rtol=1e-5)
    multi_hot = (labels > 0.5).astype(np.float32)
    expected = -np.sum(multi_hot * jax.nn.log_softmax(X.astype(np.float64)), -1)
    np.testing.assert_allclose(bcejax.softmax_cross_entropy(X, multi_hot), expected, rtol=1e-5)


def test_an_eager_call_is_one_compiled_program():
    """Eager calls go through one cached compiled program with the checks fused in."""
    x = RNG.normal(size=(3, 5)).astype(np.float32)
    y = (x > 0).astype(np.float32)
    before = checks._eager_program.cache_info()
    eager = bcejax.sigmoid_focal_loss(x, y, gamma=1.5)
    again = bcejax.sigmoid_focal_loss(x, y, gamma=1.5)
    after = checks._eager_program.cache_info()
    assert after.misses == before.misses + 1 and after.hits == before.hits + 1
    np.testing.assert_array_equal(eager, again)
    jitted = jax.jit(lambda x, y: bcejax.sigmoid_focal_loss(x, y, gamma=1.5))(x, y)
    np.testing.assert_allclose(eager, jitted, rtol=1e-6)
    # a failed check names the cause from the values it saw
    with pytest.raises(bcejax.InvalidInputError, match="labels up to 255 look like an 8-bit mask"):
        bcejax.sigmoid_focal_loss(x, 255 * y, gamma=1.5)


@pytest.mark.parametrize("name", helpers.loss_functions())
def test_every_loss_function_is_compiled_when_called_eagerly(name):
    wrapper_code = checks.compiled_when_eager(lambda: None).__code__
    assert helpers.loss_functions()[name].__code__ is wrapper_code


def test_checked_inside_jit_says_to_wrap_the_jitted_function():
    with pytest.raises(TypeError, match=r"checked\(jax\.jit\(f\)\)"):
        jax.jit(bcejax.checked(_bce_mean))(X, Y)
    with pytest.raises(TypeError, match=r"checked\(jax\.jit\(f\)\)"):
        jax.grad(bcejax.checked(_bce_mean))(X, Y)


@pytest.mark.parametrize(
    ("labels", "cause"),
    [
        (255 * Y, "labels up to 255 look like an 8-bit mask; divide by 255"),
        (2 * Y - 1, r"labels in \{-1, 1\}; map them to \{0, 1\}"),
        (np.where(Y > 0, np.nan, Y), "NaN labels"),
        (Y + 0.5, "clip or rescale them"),
    ],
)
def test_checked_and_eager_name_the_same_cause(labels, cause):
    messages = []
    for call in (_bce_mean, bcejax.checked(jax.jit(_bce_mean))):
        with pytest.raises(bcejax.InvalidInputError, match=cause) as caught:
            call(X, labels)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
