"""softmax_focal_loss against its float64 reference, and its derivatives where they are delicate."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import f64, ref_focal, softmax
from softmax_inputs import (
    CE_INT,
    DTYPES,
    EXTREME_FINITE,
    FOCAL,
    RTOL,
    assert_close,
    layout_grid,
    random_problem,
    ref_masks,
    sum_grad,
    where_of,
)

INF = np.inf
LN2 = math.log(2)

FOCAL_ALPHAS = {"none": None, "scalar": 0.25, "vector": "V"}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", list(FOCAL_ALPHAS))
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.5])
def test_focal_matches_reference(gamma, alpha, dtype):
    p = random_problem("2d", dtype, seed=4)
    alpha = FOCAL_ALPHAS[alpha]
    alpha = p["class_weights"] / 3 if alpha == "V" else alpha
    got = FOCAL(p["logits"], p["t"], gamma=gamma, alpha=alpha)
    assert_close(got, ref_focal(p["x"], p["t"], gamma=gamma, alpha=alpha), dtype)


@pytest.mark.parametrize(
    "where, layout, dtype", layout_grid([(None,), ("batch",), ("classes",)], {"classes"})
)
def test_focal_matches_reference_with_axes_and_where(where, layout, dtype):
    p = random_problem(layout, dtype, seed=5, class_mask=where == "classes")
    alpha = p["class_weights"] / 3  # per class, in the layout of the class axes
    got = FOCAL(
        p["logits"], p["t"], gamma=1.5, alpha=alpha, axis=p["axis"], where=where_of(p, where)
    )
    want = ref_focal(p["x"], p["t"], gamma=1.5, alpha=alpha.reshape(-1), **ref_masks(p, where))
    assert got.shape == p["batch_shape"]
    assert_close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_focal_gamma_zero_is_cross_entropy(dtype):
    p = random_problem("2d", dtype, seed=6, class_mask=True)
    focal = FOCAL(p["logits"], p["t"], gamma=0.0, where=p["where_classes"])
    ce = CE_INT(p["logits"], p["t"], -1, p["where_classes"])
    assert_close(focal, np.asarray(ce, np.float64), dtype, rtol=4 * RTOL[dtype])
    # alpha scales it: per class, alpha_t times the cross-entropy
    alpha = p["class_weights"]
    focal = FOCAL(p["logits"], p["t"], gamma=0.0, alpha=alpha)
    ce = CE_INT(p["logits"], p["t"]) * alpha[p["t"]]
    assert_close(focal, np.asarray(ce, np.float64), dtype, rtol=4 * RTOL[dtype])


@functools.partial(jax.jit, static_argnums=1)
def _focal_grad_and_hessian(x, hessian, gamma, t, alpha):
    """The value, the gradient of the sum and (if asked) its Hessian; gamma traced."""

    def f(x):
        return jnp.sum(FOCAL(x, t, gamma=gamma, alpha=alpha))

    value = FOCAL(x, t, gamma=gamma, alpha=alpha)
    return value, jax.grad(f)(x), jax.hessian(f)(x) if hessian else None


@pytest.mark.parametrize("dtype", DTYPES)
def test_focal_fractional_gamma_gradients_finite_at_extremes(dtype):
    """(1 - p_t)^gamma with gamma < 1 has an infinite slope at p_t = 1, never reached in
    the gradient. Right and confident (p_t = 1): 0; confidently wrong (p_t = 0): the
    factor is 1 and flat, so the gradient is alpha (p - onehot), as cross-entropy's."""
    x = EXTREME_FINITE.astype(dtype)
    x[3] = [-1e4, 0.0, 0.0]
    t = np.array([0, 0, 1, 0], np.int32)
    for gamma in (0.5, 0.25, 1.5):
        _, grad, hessian = _focal_grad_and_hessian(x, dtype == np.float64, gamma, t, 0.25)
        grad = np.asarray(grad)
        assert np.all(np.isfinite(grad)), (gamma, grad)
        np.testing.assert_array_equal(grad[0], [0, 0, 0])
        assert_close(grad[1], [-0.25, 0, 0.25], dtype)
        assert_close(grad[2], [0, -0.25, 0.25], dtype)
        assert_close(grad[3], [-0.25, 0.125, 0.125], dtype)
        if hessian is not None:
            assert np.all(np.isfinite(hessian)), gamma


# Rows whose target (class 0) ties the log-sum-exp of the others: p_t = 1/2 exactly.
# The first two are two-class rows (a third class at -inf adds nothing), e.g. the
# zero-initialized two-class head.
TIE_ROWS = np.array([[0.0, 0.0, -INF], [1.5, 1.5, -INF], [LN2, 0.0, 0.0], [1e4, 1e4, 0.0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_focal_gradient_where_the_target_ties_the_others(dtype):
    """With m = x_t - logsumexp(others) and s = sigmoid(m) = p_t, the loss is
    -(1 - s)^g log s, so dl/dm = g (1 - s)^g s log s - (1 - s)^(g + 1); at s = 1/2:
    dl/dm = -(1/2)^(g + 1) (g ln 2 + 1). dm/dx_t = 1, dm/dx_c = -softmax(others)_c."""
    x = TIE_ROWS.astype(dtype)
    t = np.zeros(len(x), np.int32)
    others = np.concatenate([np.zeros((len(x), 1)), softmax(f64(TIE_ROWS)[:, 1:])], -1)
    for gamma in (0.0, 0.5, 2.0):
        value, grad, _ = _focal_grad_and_hessian(x, False, gamma, t, None)
        assert_close(value, np.full(len(x), 0.5**gamma * LN2), dtype, rtol=4 * RTOL[dtype])
        dl_dm = -(0.5 ** (gamma + 1)) * (gamma * LN2 + 1)
        want = dl_dm * (np.eye(3)[t] - others)
        assert_close(grad, want, dtype, rtol=4 * RTOL[dtype], atol=1e-6, err_msg=f"gamma={gamma}")
    # gamma = 0 is cross-entropy: softmax - onehot = [-1/2, 1/2, 0] on the two-class rows
    ce = jax.jit(sum_grad(lambda x: CE_INT(x, t)))(x)
    assert_close(ce[:2], [[-0.5, 0.5, 0], [-0.5, 0.5, 0]], dtype)
