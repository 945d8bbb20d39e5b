"""The softmax losses at extreme and infinite logits, and on fully masked rows with NaN logits."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import ref_ce, ref_poly
from softmax_inputs import ATOL, CE, CE_INT, DTYPES, FOCAL, POLY, RTOL, assert_close, sum_grad

import bcejax

LN2 = math.log(2)

INF = np.inf
# (logits row, expected value) for the target class 0; two more classes at -inf with
# zero labels pad each row to the (6, 5) shape of the random problems: they add 0.
INFINITE_ROWS = [
    ([INF, 0.0, -INF], 0.0),  # the target at +inf takes all the probability
    ([-INF, 0.0, 1.0], INF),  # the target at -inf gets none
    ([0.0, INF, 1.0], INF),  # another class at +inf
    ([INF, INF, 0.0], LN2),  # two classes at +inf share it: p_t = 1/2
    ([1e4, 0.0, -1e4], 0.0),
    ([-1e4, 0.0, 1e4], 2e4),  # -log p_t = 1e4 - (-1e4)
]
INF_X = np.array([r[0] + [-INF, -INF] for r in INFINITE_ROWS])
INF_WANT = np.array([r[1] for r in INFINITE_ROWS])
INF_T = np.zeros(len(INF_X), np.int32)
INF_Y = np.eye(5)[INF_T]
# softmax, the limit: 1 (or 1/2 each) at +inf, 0 at -inf
_E = math.e
INF_SOFTMAX = np.array(
    [
        [1, 0, 0, 0, 0],
        [0, 1 / (1 + _E), _E / (1 + _E), 0, 0],
        [0, 1, 0, 0, 0],
        [0.5, 0.5, 0, 0, 0],
        [1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0],
    ]
)


def _infinite_cases(y, t):
    return {
        "ce": (lambda x: CE(x, y), INF_WANT),
        "ce_int": (lambda x: CE_INT(x, t), INF_WANT),
        "focal_g0": (lambda x: FOCAL(x, t, gamma=0.0), INF_WANT),
        # gamma 2: (1 - p_t)^2 scales the finite values: (1/2)^2 ln 2 on the tie, 1 at 2e4
        "focal_g2": (
            lambda x: FOCAL(x, t, gamma=2.0),
            np.where(INF_WANT == LN2, LN2 / 4, INF_WANT),
        ),
        # gamma 0.5 and alpha: 0.25 (1/2)^0.5 ln 2 on the tie
        "focal_g0.5": (
            lambda x: FOCAL(x, t, gamma=0.5, alpha=0.25),
            0.25 * np.where(INF_WANT == LN2, LN2 * 0.5**0.5, INF_WANT),
        ),
        # poly: + eps (1 - p_t): 0 where p_t = 1, eps where p_t = 0, eps / 2 on the tie
        "poly": (
            lambda x: POLY(x, y, epsilon=2.0),
            INF_WANT + 2.0 * (INF_WANT != 0) - (INF_WANT == LN2),
        ),
    }


@jax.jit
def _infinite_values_and_grads(x):
    y, t = INF_Y.astype(x.dtype), INF_T
    return {name: (fn(x), sum_grad(fn)(x)) for name, (fn, _) in _infinite_cases(y, t).items()}


@pytest.mark.parametrize("dtype", DTYPES)
def test_infinite_and_extreme_logits(dtype):
    """Values: 0 for a target at +inf, +inf for one at -inf, never NaN; gradients finite."""
    x = INF_X.astype(dtype)
    cases = _infinite_cases(INF_Y.astype(dtype), INF_T)
    jitted = _infinite_values_and_grads(x)
    for name, (fn, want) in cases.items():
        for got in (fn(x), jitted[name][0]):  # eager (value checks on) and jit
            got = np.asarray(got)
            assert got.dtype == dtype
            assert not np.any(np.isnan(got)), (name, got)
            np.testing.assert_allclose(got, want, rtol=RTOL[dtype], err_msg=name)
        grad = np.asarray(jitted[name][1])
        assert np.all(np.isfinite(grad)), (name, grad)
        np.testing.assert_array_equal(grad[:, 3:], 0, err_msg=name)  # the padding classes
    # cross-entropy: sum(c) softmax - c, with the limits of softmax
    for name in ("ce", "ce_int"):
        assert_close(jitted[name][1], INF_SOFTMAX - INF_Y, dtype, rtol=4 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_focal_gamma_zero_gradient_equals_cross_entropy_at_infinite_logits(dtype):
    """gamma = 0 is cross-entropy, in value and in derivative, at infinite logits too
    (the row with two classes at +inf: softmax - onehot = [-1/2, 1/2, 0, 0, 0])."""
    jitted = _infinite_values_and_grads(INF_X.astype(dtype))
    np.testing.assert_allclose(jitted["focal_g0"][0], jitted["ce_int"][0], rtol=RTOL[dtype])
    np.testing.assert_allclose(
        jitted["focal_g0"][1], jitted["ce_int"][1], rtol=RTOL[dtype], atol=ATOL[dtype]
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_label_on_minus_inf_logit_adds_zero(dtype):
    x = np.array([[-INF, 1.0, 2.0], [-INF, 1.0, 2.0]], dtype)
    y = np.array([[0.0, 0.5, 0.5], [0.0, 1.0, 0.0]], dtype)
    got = CE(x, y)
    assert_close(got, ref_ce(x[:, 1:], y[:, 1:]), dtype)
    # the same with a class weight on the -inf class, and through poly
    weighted = CE(x, y, class_weights=np.array([5.0, 1.0, 1.0], dtype))
    assert_close(weighted, np.asarray(got, np.float64), dtype)
    assert_close(POLY(x, y, epsilon=1.0), ref_poly(x[:, 1:], y[:, 1:], epsilon=1.0), dtype)
    grad = jax.jit(sum_grad(lambda x: CE(x, y)))(x)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[:, 0] == 0)
    # with label smoothing the -inf class gets a / K > 0: the loss is +inf, not NaN
    smoothed = CE(x, y, label_smoothing=0.1)
    np.testing.assert_array_equal(smoothed, [INF, INF])


# ---------------------------------------------------------------------------
# Masks: fully masked rows are 0, with NaN logits in the masked entries too.
# ---------------------------------------------------------------------------

NAN_LOGITS = np.array([[1.0, np.nan, 2.0], [np.nan, np.nan, np.nan], [0.5, 1.5, -1.0]])
NAN_WHERE = np.array([[True, False, True], [False, False, False], [True, True, True]])
NAN_WHERE_BATCH = np.array([True, False, True])


def _masked_losses(x, where):
    soft = np.array([[0.3, 0.0, 0.7], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    t = np.array([2, 1, 0], np.int32)
    w = np.array([1.0, 2.0, 0.5])
    return [
        CE(x, soft, where=where, label_smoothing=0.1, class_weights=w),
        CE_INT(x, t, where=where, label_smoothing=0.1, class_weights=w),
        FOCAL(x, t, gamma=0.5, alpha=0.25, where=where),
        POLY(x, soft, epsilon=2.0, where=where),
    ]


@jax.jit
def _masked_losses_and_grad(x, where):
    def total(x):
        return sum(jnp.sum(v) for v in _masked_losses(x, where))

    return _masked_losses(x, where), jax.grad(total)(x)


@pytest.mark.parametrize(
    "mode, mask",
    [
        ("jit", "classes"),
        ("jit", "batch"),
        ("eager", "classes"),
        ("checked", "classes"),
    ],
)
def test_fully_masked_rows_with_nan_logits_give_zero(mode, mask):
    where = NAN_WHERE if mask == "classes" else NAN_WHERE_BATCH
    x = NAN_LOGITS.copy()
    if mask == "batch":
        x[0, 1] = 0.25  # only the masked example holds NaN
    clean = np.where(np.isnan(x), 0.0, x)  # what the masked entries hold must not matter
    reference, _ = _masked_losses_and_grad(clean, where)
    if mode == "jit":
        out, grad = _masked_losses_and_grad(x, where)
        grad = np.asarray(grad)
        assert np.all(np.isfinite(grad)), grad
        np.testing.assert_array_equal(grad[1], 0)
        np.testing.assert_array_equal(grad[np.isnan(x)], 0)
    elif mode == "eager":
        out = _masked_losses(x, where)
    else:
        out = bcejax.checked(_masked_losses)(x, where)
    for got, want in zip(out, reference, strict=True):
        got = np.asarray(got)
        assert not np.any(np.isnan(got)), got
        assert got[1] == 0
        np.testing.assert_allclose(got, want, rtol=1e-12)
