"""The softmax losses against optax: the cases of optax's own tests, and random inputs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from softmax_inputs import CE, CE_INT, DTYPES, FOCAL, POLY, random_problem, sum_grad, where_of

# optax's SoftmaxCrossEntropyTest / SoftmaxCrossEntropyWithIntegerLabelsTest
OPTAX_YS = np.array([[10.0, 1.0, -2.0], [1.0, 4.0, 0.2]], np.float32)
OPTAX_TS = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
OPTAX_TS_INT = np.array([1, 0], np.int32)
OPTAX_EXP = np.array([9.00013, 3.0696733], np.float32)
OPTAX_MASK = np.array([True, False])
OPTAX_PER_LOGIT_MASK = np.array([[1, 0, 0], [0, 0, 0]], bool)


@jax.jit
def _optax_cases(ys, ts, ts_int):
    """bcejax and optax on optax's arrays, with and without masks: values and gradients."""
    mask, per_logit = OPTAX_MASK, OPTAX_PER_LOGIT_MASK

    def grad(fn):
        return sum_grad(fn)(ys)

    return dict(
        ce=CE(ys, ts),
        ce_scalar=CE(ys[0], ts[0]),
        ce_int=CE_INT(ys, ts_int),
        ce_int_scalar=CE_INT(ys[0], ts_int[0]),
        optax=optax.softmax_cross_entropy(ys, ts),
        # a batch mask
        ce_mask=CE(ys, ts, where=mask),
        ce_int_mask=CE_INT(ys, ts_int, where=mask),
        poly_mask=POLY(ys, ts, epsilon=0.0, where=mask),
        optax_mask=optax.softmax_cross_entropy(ys, ts, where=mask),
        grad_ce_mask=grad(lambda x: CE(x, ts, where=mask)),
        grad_ce_int_mask=grad(lambda x: CE_INT(x, ts_int, where=mask)),
        grad_optax_mask=grad(lambda x: optax.softmax_cross_entropy(x, ts, where=mask)),
        # a mask of the logits' shape
        ce_logit=CE(ys, ts, where=per_logit),
        ce_int_logit=CE_INT(ys, ts_int, where=per_logit),
        optax_logit=optax.softmax_cross_entropy(ys, ts, where=per_logit),
        optax_int_logit=optax.softmax_cross_entropy_with_integer_labels(
            ys, ts_int, where=per_logit
        ),
        grad_ce_logit=grad(lambda x: CE(x, ts, where=per_logit)),
        grad_ce_int_logit=grad(lambda x: CE_INT(x, ts_int, where=per_logit)),
    )


def test_optax_fixed_cases():
    out = _optax_cases(OPTAX_YS, OPTAX_TS, OPTAX_TS_INT)
    for name in ("ce", "ce_int", "optax"):
        np.testing.assert_allclose(out[name], OPTAX_EXP, atol=1e-4, err_msg=name)
        assert out[name].dtype == np.float32
    for name in ("ce_scalar", "ce_int_scalar"):
        np.testing.assert_allclose(out[name], OPTAX_EXP[0], atol=1e-4, err_msg=name)
    np.testing.assert_allclose(out["ce"], out["optax"], rtol=1e-6)
    np.testing.assert_allclose(out["ce_int"], out["optax"], rtol=1e-6)
    # eagerly (value checks on), and by hand, in float64:
    # row 0 is -log softmax(10, 1, -2)_1 = 9 + log(1 + e^-9 + e^-12).
    assert float(CE_INT(OPTAX_YS.astype(np.float64), OPTAX_TS_INT)[0]) == pytest.approx(
        9 + math.log1p(math.exp(-9) + math.exp(-12)), rel=1e-14
    )
    # optax's docstring: [[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]], labels [0, 1] -> [0.2761 2.9518]
    logits = np.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]], np.float32)
    np.testing.assert_allclose(CE_INT(logits, OPTAX_TS_INT[::-1]), [0.2761, 2.9518], atol=1e-4)


def test_optax_batch_mask():
    out = _optax_cases(OPTAX_YS, OPTAX_TS, OPTAX_TS_INT)
    for name in ("ce_mask", "ce_int_mask", "poly_mask"):
        np.testing.assert_allclose(out[name], OPTAX_EXP * OPTAX_MASK, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(out[name], out["optax_mask"], rtol=1e-6, err_msg=name)
    # the gradients are those of optax: finite, and 0 on the masked example
    for name in ("grad_ce_mask", "grad_ce_int_mask"):
        np.testing.assert_allclose(out[name], out["grad_optax_mask"], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(out[name][1], 0)


def test_optax_per_logit_mask():
    out = _optax_cases(OPTAX_YS, OPTAX_TS, OPTAX_TS_INT)
    # Row 1 is fully masked: 0 (optax's test). Row 0 keeps class 0 only and its label is
    # class 1: it adds 0 in bcejax (a masked target); optax gives logsumexp([10]) - 1 = 9.
    np.testing.assert_array_equal(out["ce_int_logit"], [0.0, 0.0])
    np.testing.assert_allclose(out["optax_int_logit"], [9.0, 0.0])
    # One-hot: both give 0 for both rows (under jit; eagerly, see below).
    np.testing.assert_array_equal(out["ce_logit"], out["optax_logit"])
    np.testing.assert_array_equal(out["ce_logit"], [0.0, 0.0])
    for name in ("grad_ce_logit", "grad_ce_int_logit"):
        np.testing.assert_array_equal(out[name], np.zeros_like(OPTAX_YS))
    # Row 0's one-hot labels sum to 0 over its unmasked class: applied as written, eagerly too.
    eager = CE(OPTAX_YS, OPTAX_TS, where=OPTAX_PER_LOGIT_MASK)
    np.testing.assert_array_equal(eager, out["ce_logit"])


@pytest.mark.parametrize("size", [5, 10])
def test_optax_mask_drops_classes(size):
    """optax's test_mask: where=mask equals the loss on preds[mask], labels renormalized."""
    rng = np.random.default_rng(size)
    preds = rng.normal(size=size)
    mask = rng.integers(2, size=size).astype(bool)
    mask[:2] = (True, False)
    targets = np.where(mask, rng.dirichlet(np.ones(size)), 0.0)
    targets /= targets.sum()  # a distribution over the unmasked classes

    @jax.jit
    def losses(preds, targets, where):
        return (
            CE(preds, targets, where=where),
            POLY(preds, targets, where=where),
            optax.softmax_cross_entropy(preds, targets, where=where),
            optax.losses.poly_loss_cross_entropy(preds, targets, where=where),
        )

    ce, poly, optax_ce, optax_poly = losses(preds, targets, mask)
    ce_kept, poly_kept, _, _ = losses(preds[mask], targets[mask], None)
    np.testing.assert_allclose([ce, poly], [ce_kept, poly_kept], rtol=1e-12)
    np.testing.assert_allclose([ce, poly], [optax_ce, optax_poly], rtol=1e-12)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_optax_axis(axis):
    shape = [4, 5, 6]
    rng = np.random.default_rng(axis)
    preds = rng.normal(size=shape)
    # valid distributions along the class axis (optax's test draws them along the last axis)
    batch = shape[:axis] + shape[axis + 1 :]
    targets = np.moveaxis(rng.dirichlet(np.ones(shape[axis]), size=batch), -1, axis)
    t = rng.integers(shape[axis], size=batch).astype(np.int32)

    @jax.jit
    def losses(preds, targets, t):
        moved, moved_targets = jnp.moveaxis(preds, axis, -1), jnp.moveaxis(targets, axis, -1)
        return dict(
            ce=(
                CE(preds, targets, axis=axis),
                CE(moved, moved_targets),
                optax.softmax_cross_entropy(preds, targets, axis=axis),
            ),
            poly=(
                POLY(preds, targets, axis=axis),
                POLY(moved, moved_targets),
                optax.losses.poly_loss_cross_entropy(preds, targets, axis=axis),
            ),
            ce_int=(
                CE_INT(preds, t, axis=axis),
                CE_INT(moved, t),
                optax.softmax_cross_entropy_with_integer_labels(preds, t, axis=axis),
            ),
        )

    out = losses(preds, targets, t)
    for name, (got, moved, want) in out.items():
        np.testing.assert_allclose(got, moved, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=name)


OPTAX_AXES = [(1, 3), (3, 2), (2, 3), (-3, -1), (-1, -2), (-2, -1), (0, 1, 3), (-4, -3, -1)]


@pytest.mark.parametrize("axis", OPTAX_AXES, ids=str)
def test_optax_tuple_axes(axis):
    """optax's test_axes: the label is a flat index over ``logits[axis]``, in the given order."""
    shape = (2, 3, 4, 5)
    ndim = len(shape)
    logits_axis = tuple(a % ndim for a in axis)
    labels_axis = tuple(a for a in range(ndim) if a not in logits_axis)
    logits_shape = tuple(shape[a] for a in logits_axis)
    labels_shape = tuple(shape[a] for a in labels_axis)
    num_classes = int(np.prod(logits_shape))
    rng = np.random.default_rng(42)
    flat = rng.uniform(size=(*labels_shape, num_classes)).astype(np.float32)
    labels = rng.integers(0, num_classes - 1, labels_shape).astype(np.int32)
    perm = labels_axis + logits_axis
    logits = flat.reshape(labels_shape + logits_shape).transpose(np.argsort(perm))
    assert logits.shape == shape

    @jax.jit
    def losses(logits, flat, labels):
        return (
            CE_INT(flat, labels),
            optax.softmax_cross_entropy_with_integer_labels(logits, labels, axis),
            CE_INT(logits, labels, axis),
        )

    desired, optax_value, got = losses(logits, flat, labels)
    np.testing.assert_allclose(optax_value, desired, rtol=1e-6)
    np.testing.assert_allclose(got, desired, rtol=1e-6)


def test_optax_docstring_tuple_axis_example():
    # logits arange(24).reshape(1, 2, 3, 4), labels ravel_multi_index(([1, 2], [1, 3]), (3, 4))
    # = [1*4+1, 2*4+3] = [5, 11]; -log softmax(arange(12))_k = log(sum e^(j-k)):
    # k = 11: log(sum_{i=0}^{11} e^-i) = 0.4587, k = 5: 6 + 0.4587 = 6.4587.
    logits = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    labels = np.array([[5, 11]], np.int32)
    got = jax.jit(CE_INT, static_argnums=2)(logits, labels, (2, 3))
    np.testing.assert_allclose(got, [[6.4587, 0.4587]], atol=1e-4)
    tail = math.log(sum(math.exp(-i) for i in range(12)))
    np.testing.assert_allclose(got, [[6 + tail, tail]], rtol=1e-6)


SAFE_YS = np.array(
    [
        [10.0, 1.0, -2.0],
        [1.0, 4.0, 0.2],
        [-np.inf, 0.0, 0.0],
        [-np.inf, 0.0, 0.0],
        [-np.inf, 0.0, -np.inf],
    ],
    np.float32,
)
SAFE_TS = np.array(
    [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.4, 0.3, 0.3], [0.0, 1.0, 0.0]],
    np.float32,
)
SAFE_EXP = np.array([9.00013, 3.0696733, 0.693147, np.inf, 0.0], np.float32)


def test_optax_safe_softmax_cross_entropy_cases():
    """optax's SafeSoftmaxCrossEntropyTest: 0 log 0 = 0 at -inf logits, as bcejax always does."""

    @jax.jit
    def outputs(ys, ts):
        return (
            CE(ys, ts),
            optax.safe_softmax_cross_entropy(ys, ts),
            sum_grad(lambda x: CE(x, ts[:2]))(ys[:2]),
            sum_grad(lambda x: optax.safe_softmax_cross_entropy(x, ts[:2]))(ys[:2]),
        )

    got, want, grad, want_grad = outputs(SAFE_YS, SAFE_TS)
    np.testing.assert_allclose(got, SAFE_EXP, atol=1e-4)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", [None, "batch", "classes"])
def test_optax_parity_on_random_inputs(where, dtype):
    p = random_problem("2d", dtype, seed=11, class_mask=where == "classes")
    w = where_of(p, where)
    rtol, atol = (1e-5, 1e-6) if dtype == np.float32 else (1e-12, 1e-13)

    x, y, t = p["logits"], p["labels"], p["t"]
    # optax's poly takes a mask of the logits' shape only
    w_logits = None if w is None else np.broadcast_to(w[:, None] if w.ndim == 1 else w, x.shape)
    w_int = w
    if where == "classes":  # where optax keeps a masked target's logit; bcejax adds 0
        keep = np.take_along_axis(p["mask"], t[:, None], -1)[:, 0]
        w_int = np.where(keep[:, None], w, False)

    @jax.jit
    def pairs(x, y, t):
        want_int = optax.softmax_cross_entropy_with_integer_labels(x, t, where=w_int)
        return dict(
            ce=(CE(x, y, where=w), optax.softmax_cross_entropy(x, y, where=w)),
            poly=(
                POLY(x, y, epsilon=1.5, where=w),
                optax.losses.poly_loss_cross_entropy(x, y, epsilon=1.5, where=w_logits),
            ),
            ce_int=(CE_INT(x, t, where=w_int), want_int),
            focal_g0=(FOCAL(x, t, gamma=0.0, where=w_int), want_int),
        )

    for name, (got, want) in pairs(x, y, t).items():
        assert got.dtype == want.dtype == dtype, name
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
