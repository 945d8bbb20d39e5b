"""hinge_loss against its float64 reference and optax's hinge_loss, and its bad targets."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from references import f64
from softmax_inputs import DTYPES, assert_close, sum_grad

import bcejax


def ref_hinge(scores, targets):
    return np.maximum(0.0, 1.0 - f64(targets) * f64(scores))


@pytest.mark.parametrize("dtype", DTYPES)
def test_hinge_matches_reference(dtype):
    rng = np.random.default_rng(9)
    scores = rng.normal(0, 2, (6, 5)).astype(dtype)
    scores[0, :3] = [1.0, -1.0, 0.0]  # on the kink for target 1, -1; and at 0
    targets = np.where(rng.uniform(size=(6, 5)) < 0.5, -1, 1).astype(dtype)
    targets[0, :3] = [1, -1, 1]
    got = bcejax.hinge_loss(scores, targets)
    assert_close(got, ref_hinge(scores, targets), dtype)
    # integer targets, broadcast over the rows
    got = bcejax.hinge_loss(scores, targets[0].astype(np.int32))
    assert_close(got, ref_hinge(scores, targets[0]), dtype)


def test_optax_hinge_cases():
    # optax's HingeTest: relu(1 - score * (2 label - 1))
    assert float(bcejax.hinge_loss(jnp.array(10.0), jnp.array(1.0))) == 0.0
    scores = jnp.array([10.0, 20.0])
    signed = 2.0 * jnp.array([1, 0]) - 1.0
    np.testing.assert_array_equal(bcejax.hinge_loss(scores, signed), [0.0, 21.0])
    rng = np.random.default_rng(12)

    @jax.jit
    def grads(s, t):
        return (
            sum_grad(functools.partial(bcejax.hinge_loss, targets=t))(s),
            sum_grad(functools.partial(optax.hinge_loss, targets=t))(s),
        )

    for dtype in DTYPES:
        s = rng.normal(0, 2, (6, 5)).astype(dtype)
        t = np.where(rng.uniform(size=(6, 5)) < 0.5, -1.0, 1.0).astype(dtype)
        got, want = bcejax.hinge_loss(s, t), optax.hinge_loss(s, t)
        assert got.dtype == want.dtype == dtype
        np.testing.assert_array_equal(got, want)
        # the derivative, the kink included: optax's (jnp.maximum halves it there)
        s[0] = t[0]
        grad, want = grads(s, t)
        np.testing.assert_array_equal(grad, want)
        np.testing.assert_array_equal(np.asarray(grad)[0], -t[0] / 2)


def test_hinge_targets_must_be_signed():
    scores = np.array([0.5, -2.0, 1.0])
    with pytest.raises(bcejax.InvalidInputError, match=r"targets in \{0, 1\}.*2 \* labels - 1"):
        bcejax.hinge_loss(scores, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(bcejax.InvalidInputError, match=r"2 \* labels - 1"):
        bcejax.checked(bcejax.hinge_loss)(scores, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(bcejax.InvalidInputError, match="must be -1 or 1"):
        bcejax.hinge_loss(scores, np.array([2.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match=r"targets with shape \(2,\).*shape \(3,\)"):
        bcejax.hinge_loss(scores, np.array([1.0, -1.0]))
    with pytest.raises(TypeError, match="predictor_outputs must have a floating dtype"):
        bcejax.hinge_loss(np.array([1, 2]), np.array([1, -1]))
