"""Batch-level losses: GHM-C, soft F-beta and OHEM against float64 NumPy references."""

from __future__ import annotations

import math

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import bcejax
from bcejax.batch import ohem_reduce, sigmoid_ghm_loss, soft_fbeta_loss

RNG = np.random.default_rng(0)
X = RNG.normal(0, 2, (16, 3))
Y = (RNG.random((16, 3)) < 0.4).astype(np.float64)
SOFT_Y = RNG.random((16, 3))
W = RNG.uniform(0.5, 2, (16, 3))
# Uneven masks: the four shards of 4 rows hold 0, 3, 8 and 12 valid entries.
MASK = np.zeros((16, 3), bool)
MASK[4, :] = True
MASK[8:12, :2] = True
MASK[12:16] = True
LOSS = RNG.uniform(0, 3, (16, 3))


# -- float64 references, NumPy only ---------------------------------------------


def _bce(x, y):
    return y * np.logaddexp(0, -x) + (1 - y) * np.logaddexp(0, x)


def _grad(f):
    return jax.jit(jax.grad(f))


def ref_ghm(x, y, bins=10, mask=None, w=None, momentum=0.0, state=None):
    x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
    mask = np.ones(x.shape, bool) if mask is None else np.broadcast_to(mask, x.shape)
    w = np.ones(x.shape) if w is None else np.broadcast_to(w, x.shape)
    w = np.where(mask, w, 0)
    g = np.abs(helpers.sigmoid(x) - y)
    index = np.minimum(np.floor(g * bins), bins - 1).astype(int)
    counts = np.zeros(bins)
    for b, weight in zip(index[mask].ravel(), w[mask].ravel(), strict=True):
        counts[b] += weight
    running = counts if state is None else momentum * np.asarray(state) + (1 - momentum) * counts
    n = max(np.count_nonzero(counts), 1)
    density = running[index]
    beta = np.divide(counts.sum(), density * n, out=np.zeros(x.shape), where=density > 0)
    loss = np.where(w > 0, w * beta * _bce(np.where(mask, x, 0), np.where(mask, y, 0)), 0)
    return loss, running


def ref_fbeta(x, y, beta=1.0, average="micro", mask=None, w=None, epsilon=1e-7):
    x, y = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(y, np.float64))
    c = np.ones(x.shape) if w is None else np.broadcast_to(w, x.shape).astype(np.float64)
    if mask is not None:
        c = np.where(mask, c, 0)
        x = np.where(mask, x, 0)
    axes = None if average == "micro" else tuple(range(x.ndim - 1))
    p = helpers.sigmoid(x)
    tp = np.sum(c * p * y, axes)
    fp = np.sum(c * p * (1 - y), axes)
    fn = np.sum(c * (1 - p) * y, axes)
    f = (1 + beta**2) * tp / ((1 + beta**2) * tp + beta**2 * fn + fp + epsilon)
    return np.mean(1 - f)


def ref_ohem(loss, top_k, mask=None):
    valid = np.asarray(loss, np.float64)[np.ones(np.shape(loss), bool) if mask is None else mask]
    if valid.size == 0:
        return 0.0
    k = max(math.ceil(round(top_k * valid.size, 9)), 1)
    return np.sort(valid)[::-1][:k].mean()


# -- values ----------------------------------------------------------------------


def test_ghm_one_bin_is_bce():
    # Every gradient norm is below 0.1: one bin, beta = N / (N * 1) = 1.
    x = np.array([5.0, -4.0, 3.0, -6.0])
    y = np.array([1.0, 0.0, 1.0, 0.0])
    loss, state = sigmoid_ghm_loss(x, y)
    np.testing.assert_allclose(loss, _bce(x, y), rtol=1e-12)
    np.testing.assert_array_equal(state, [4, 0, 0, 0, 0, 0, 0, 0, 0, 0])


def test_ghm_two_bins_by_hand():
    # Three easy entries (bin 0) and one badly wrong (bin 9): N = 4, n = 2.
    x = np.array([5.0, -4.0, 3.0, 6.0])
    y = np.array([1.0, 0.0, 1.0, 0.0])
    loss, _ = sigmoid_ghm_loss(x, y)
    beta = np.array([4 / (3 * 2)] * 3 + [4 / (1 * 2)])
    np.testing.assert_allclose(loss, beta * _bce(x, y), rtol=1e-12)


@pytest.mark.parametrize("bins", [1, 3, 30])
def test_ghm_matches_reference(bins):
    loss, state = sigmoid_ghm_loss(X, SOFT_Y, bins=bins, where=MASK, weights=W)
    expected, expected_state = ref_ghm(X, SOFT_Y, bins, MASK, W)
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    np.testing.assert_allclose(state, expected_state, rtol=1e-12)


def test_ghm_weights_average_to_one_and_gradient_is_weighted_residual():
    loss, _ = sigmoid_ghm_loss(X, Y)
    beta = np.asarray(loss) / _bce(X, Y)
    np.testing.assert_allclose(beta.mean(), 1, rtol=1e-12)
    grad = _grad(lambda x: sigmoid_ghm_loss(x, Y)[0].sum())(X)
    np.testing.assert_allclose(grad, beta * (helpers.sigmoid(X) - Y), rtol=1e-10, atol=1e-14)


def test_ghm_momentum_threads_state_over_two_steps():
    x2 = RNG.normal(0, 3, X.shape)
    loss1, state1 = sigmoid_ghm_loss(X, Y, momentum=0.75)
    loss2, state2 = sigmoid_ghm_loss(x2, Y, momentum=0.75, state=state1, where=MASK)
    ref1, ref_state1 = ref_ghm(X, Y, momentum=0.75)
    ref2, ref_state2 = ref_ghm(x2, Y, mask=MASK, momentum=0.75, state=ref_state1)
    np.testing.assert_allclose(loss1, ref1, rtol=1e-12)
    np.testing.assert_allclose(state1, ref_state1, rtol=1e-12)
    np.testing.assert_allclose(loss2, ref2, rtol=1e-12)
    np.testing.assert_allclose(state2, ref_state2, rtol=1e-12)
    step = jax.jit(lambda x, s: sigmoid_ghm_loss(x, Y, momentum=0.75, state=s, where=MASK))
    np.testing.assert_allclose(step(x2, state1)[1], ref_state2, rtol=1e-12)


def test_fbeta_by_hand():
    # p is 1, 0, 1, 1 (to 1e-17): TP = 1, FN = 1, FP = 2.
    x = np.array([40.0, -40.0, 40.0, 40.0])
    y = np.array([1, 1, 0, 0])
    np.testing.assert_allclose(soft_fbeta_loss(x, y, epsilon=0.0), 1 - 2 / 5, rtol=1e-12)
    np.testing.assert_allclose(soft_fbeta_loss(x, y, beta=2.0, epsilon=0), 1 - 5 / 11, rtol=1e-12)


@pytest.mark.parametrize("average", ["micro", "macro"])
@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_fbeta_matches_reference(average, beta):
    out = soft_fbeta_loss(X, SOFT_Y, beta=beta, average=average, where=MASK, weights=W)
    expected = ref_fbeta(X, SOFT_Y, beta, average, MASK, W)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_fbeta_without_true_positives_is_one_with_zero_gradient():
    x = np.array([1.0, -2.0])
    y = np.zeros(2)
    assert float(soft_fbeta_loss(x, y, epsilon=0)) == 1
    nothing = np.zeros(2, bool)
    assert float(soft_fbeta_loss(x, y, where=nothing, epsilon=0)) == 1
    grad = _grad(lambda x: soft_fbeta_loss(x, np.ones(2), where=nothing, epsilon=0))(x)
    np.testing.assert_array_equal(grad, np.zeros(2))


@pytest.mark.parametrize("top_k", [0.05, 0.25, 0.5, 1.0])
def test_ohem_matches_reference(top_k):
    np.testing.assert_allclose(ohem_reduce(LOSS, top_k=top_k), ref_ohem(LOSS, top_k), 1e-12)
    out = ohem_reduce(LOSS, top_k=top_k, where=MASK)
    np.testing.assert_allclose(out, ref_ohem(LOSS, top_k, MASK), rtol=1e-12)


def test_ohem_by_hand():
    assert float(ohem_reduce(np.array([1.0, 5.0, 3.0, 2.0]), top_k=0.5)) == 4
    # 0.1 of 30 is 3 entries, although 0.1 * 30 rounds to 3.0000000000000004.
    assert float(ohem_reduce(np.arange(30.0), top_k=0.1)) == 28
    # At least one entry: the largest.
    assert float(ohem_reduce(np.array([1.0, 5.0, 3.0]), top_k=0.01)) == 5
    grad = _grad(lambda v: ohem_reduce(v, top_k=0.5))(np.array([1.0, 5.0, 3.0, 2.0]))
    np.testing.assert_array_equal(grad, [0, 0.5, 0.5, 0])


def test_ohem_ties_give_the_same_mean():
    assert float(ohem_reduce(np.array([2.0, 7.0, 2.0, 2.0, 1.0]), top_k=0.4)) == 4.5


def test_ohem_no_valid_entry_is_zero_with_zero_gradient():
    nothing = np.zeros(LOSS.shape, bool)
    assert float(ohem_reduce(LOSS, where=nothing)) == 0
    grad = _grad(lambda v: ohem_reduce(v, where=nothing))(LOSS)
    np.testing.assert_array_equal(grad, np.zeros_like(LOSS))


# -- properties, for every function ----------------------------------------------


def _ghm(x, y, **kw):
    return sigmoid_ghm_loss(x, y, bins=5, **kw)[0]


def _fbeta_micro(x, y, **kw):
    return soft_fbeta_loss(x, y, beta=2.0, **kw)


def _fbeta_macro(x, y, **kw):
    return soft_fbeta_loss(x, y, average="macro", **kw)


def _ohem(x, y, *, where=None, axis_name=None):
    # OHEM of the BCE, with masked entries cut out before the BCE checks them.
    if where is not None:
        x, y = jnp.where(where, x, 0), jnp.where(where, y, 0)
    loss = bcejax.sigmoid_binary_cross_entropy(x, y)
    return ohem_reduce(loss, top_k=0.3, where=where, axis_name=axis_name)


FUNCTIONS = {"ghm": _ghm, "fbeta": _fbeta_micro, "fbeta_macro": _fbeta_macro, "ohem": _ohem}
ALL = pytest.mark.parametrize("fn", FUNCTIONS.values(), ids=FUNCTIONS.keys())


def _total(fn, x, y, **kw):
    return jnp.sum(fn(x, y, **kw))


@ALL
def test_jit_equals_eager(fn):
    eager = fn(X, SOFT_Y, where=MASK)
    np.testing.assert_allclose(jax.jit(lambda x, y, m: fn(x, y, where=m))(X, SOFT_Y, MASK), eager)


@ALL
def test_vmap_equals_a_loop_and_forward_equals_reverse_mode(fn):
    def rows(x):
        return jax.vmap(lambda x, y, m: fn(x, y, where=m))(x, SOFT_Y, MASK)

    looped = np.stack([fn(X[i], SOFT_Y[i], where=MASK[i]) for i in range(2)])
    np.testing.assert_allclose(jax.jit(rows)(X)[:2], looped, rtol=1e-12)

    def total(x):
        return _total(fn, x, SOFT_Y, where=MASK)

    forward, reverse = jax.jit(jax.jacfwd(total))(X), jax.jit(jax.jacrev(total))(X)
    np.testing.assert_allclose(forward, reverse, rtol=1e-12, atol=1e-15)


@ALL
def test_where_equals_slicing(fn):
    rows = MASK.any(axis=1)
    masked = fn(X, Y, where=rows[:, None])
    kept = fn(X[rows], Y[rows])
    if np.ndim(masked):
        np.testing.assert_array_equal(masked[~rows], 0)
        masked = masked[rows]
    np.testing.assert_allclose(masked, kept, rtol=1e-12)


def test_ghm_integer_weights_equal_repeats():
    x, y, w = X.ravel(), Y.ravel(), RNG.integers(0, 4, X.size)
    loss, state = sigmoid_ghm_loss(x, y, weights=w)
    repeated, repeated_state = sigmoid_ghm_loss(np.repeat(x, w), np.repeat(y, w))
    np.testing.assert_allclose(jnp.sum(loss), jnp.sum(repeated), rtol=1e-12)
    np.testing.assert_allclose(state, repeated_state, rtol=1e-12)


@pytest.mark.parametrize("average", ["micro", "macro"])
def test_fbeta_integer_weights_equal_repeats(average):
    w = RNG.integers(0, 4, (16, 1))
    out = soft_fbeta_loss(X, SOFT_Y, average=average, weights=w)
    repeats = w.ravel()
    expected = soft_fbeta_loss(
        np.repeat(X, repeats, 0), np.repeat(SOFT_Y, repeats, 0), average=average
    )
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@ALL
def test_masked_nan_and_255_are_cut_out(fn):
    x = np.where(MASK, X, np.nan)
    y = np.where(MASK, Y, 255)
    clean = fn(X, Y, where=MASK)
    np.testing.assert_allclose(fn(x, y, where=MASK), clean, rtol=1e-12)
    grad = _grad(lambda x: _total(fn, x, y, where=MASK))(x)
    clean_grad = _grad(lambda x: _total(fn, x, Y, where=MASK))(X)
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[~MASK], 0)
    np.testing.assert_allclose(grad, clean_grad, rtol=1e-12)


def test_ohem_masked_nan_loss_is_cut_out():
    loss = np.where(MASK, LOSS, np.nan)
    np.testing.assert_allclose(ohem_reduce(loss, where=MASK), ref_ohem(LOSS, 0.25, MASK), 1e-12)
    grad = _grad(lambda v: ohem_reduce(v, where=MASK))(loss)
    assert np.isfinite(grad).all()
    np.testing.assert_array_equal(grad[~MASK], 0)


@ALL
def test_extreme_logits_in_bfloat16(fn):
    # bfloat16 is computed in float32: this checks the float32 path at +-1e4 as well.
    x = np.concatenate([X, [[1e4, -1e4, 30.0]], [[-1e4, 1e4, -30.0]]])
    x = jnp.asarray(x, jnp.bfloat16)
    y = np.concatenate([Y, [[0, 1, 1]], [[0, 1, 0]]])
    out = fn(x, y)
    assert out.dtype == jnp.bfloat16
    grad = _grad(lambda x: _total(fn, x, y).astype(jnp.float32))(x)
    assert np.isfinite(np.asarray(out, np.float64)).all()
    assert np.isfinite(np.asarray(grad, np.float64)).all()
    reference = fn(np.asarray(x, np.float64), y)
    np.testing.assert_allclose(np.asarray(out, np.float64), reference, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("fn", [_fbeta_micro, _fbeta_macro], ids=["micro", "macro"])
def test_fbeta_gradients_agree_with_finite_differences(fn):
    check_grads(jax.jit(lambda x, y: fn(x, y, where=MASK, weights=W)), (X, SOFT_Y), order=1)


# -- across devices ----------------------------------------------------------------


@ALL
def test_shard_map_equals_global_batch(fn):
    assert jax.device_count() == 4
    out_spec = P("d") if fn is _ghm else P()
    sharded = jax.jit(
        jax.shard_map(
            lambda x, y, m: fn(x, y, where=m, axis_name="d"),
            mesh=helpers.mesh(),
            in_specs=(P("d"),) * 3,
            out_specs=out_spec,
            check_vma=True,
        )
    )
    np.testing.assert_allclose(sharded(X, SOFT_Y, MASK), fn(X, SOFT_Y, where=MASK), rtol=1e-12)
    grad = _grad(lambda x: jnp.sum(sharded(x, SOFT_Y, MASK)))(X)
    expected = _grad(lambda x: _total(fn, x, SOFT_Y, where=MASK))(X)
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-15)


def test_ghm_shard_map_state_is_global():
    def step(x, y, m, s):
        return sigmoid_ghm_loss(x, y, momentum=0.5, state=s, where=m, axis_name="d")

    sharded = jax.shard_map(
        step,
        mesh=helpers.mesh(),
        in_specs=(P("d"), P("d"), P("d"), P()),
        out_specs=(P("d"), P()),
        check_vma=True,
    )
    state = np.arange(10.0)
    loss, new_state = jax.jit(sharded)(X, Y, MASK, state)
    expected, expected_state = ref_ghm(X, Y, mask=MASK, momentum=0.5, state=state)
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    np.testing.assert_allclose(new_state, expected_state, rtol=1e-12)


@pytest.mark.parametrize("top_k", [0.1, 0.25, 0.9])
def test_ohem_shard_map_gradient_inside_is_exact(top_k):
    # All of the top entries on one device: the rows of the last shard are largest.
    loss = LOSS + np.repeat([0, 0, 0, 10], 4)[:, None]

    def local(v, m):
        return ohem_reduce(v, top_k=top_k, where=m, axis_name="d")

    inside = helpers.sharded_grad(local)(loss, MASK)
    expected = _grad(lambda v: ohem_reduce(v, top_k=top_k, where=MASK))(loss)
    np.testing.assert_allclose(inside, expected, rtol=1e-12)
    assert expected.sum() == pytest.approx(1)


# -- bad inputs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"bins": 0}, ValueError, "bins must be >= 1"),
        ({"bins": 2.5}, TypeError, "bins must be a Python int"),
        ({"momentum": 1.0}, ValueError, "momentum must be >= 0.0 and < 1.0"),
        ({"momentum": -0.1}, ValueError, "momentum"),
        ({"state": np.zeros(3)}, ValueError, r"state must have shape \(10,\)"),
        ({"weights": -W}, bcejax.InvalidInputError, "weights must be >= 0"),
    ],
)
def test_ghm_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        sigmoid_ghm_loss(X, Y, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"beta": 0.0}, ValueError, "beta must be > 0"),
        ({"beta": -1.0}, ValueError, "beta must be > 0"),
        ({"average": "weighted"}, ValueError, "average must be one of"),
        ({"epsilon": -1.0}, ValueError, "epsilon must be >= 0"),
        ({"weights": np.ones(4)}, ValueError, "weights with shape"),
    ],
)
def test_fbeta_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        soft_fbeta_loss(X, Y, **kwargs)


def test_fbeta_macro_needs_a_class_axis():
    with pytest.raises(ValueError, match="last axis"):
        soft_fbeta_loss(1.0, 1.0, average="macro")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"top_k": 0.0}, ValueError, "top_k must be > 0 and <= 1"),
        ({"top_k": 1.5}, ValueError, "top_k must be > 0 and <= 1"),
        ({"top_k": jnp.float32(0.5)}, TypeError, "top_k must be a Python float"),
        ({"where": np.ones((2, 16, 3), bool)}, ValueError, "must not add axes"),
        ({"where": np.ones(4, bool)}, ValueError, "where with shape"),
    ],
)
def test_ohem_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        ohem_reduce(LOSS, **kwargs)


@pytest.mark.parametrize("fn", [sigmoid_ghm_loss, soft_fbeta_loss])
def test_unmasked_bad_values_raise(fn):
    with pytest.raises(ValueError, match="labels with shape"):
        fn(X, np.ones(4))
    with pytest.raises(TypeError, match="floating dtype"):
        fn(np.ones(3, np.int32), np.ones(3))
    with pytest.raises(bcejax.InvalidInputError, match="8-bit mask"):
        fn(X, Y * 255)
    with pytest.raises(bcejax.InvalidInputError, match="NaN"):
        fn(np.where(MASK, X, np.nan), Y)
    with pytest.raises(bcejax.InvalidInputError, match="8-bit mask"):
        bcejax.checked(jax.jit(fn))(X, Y * 255)


def mmdetection_ghmc(batches, bins, momentum):
    """mmdetection's GHMC over the batches, in float64: only the bins a batch fills move.

    Its loop, bin by bin: edges ``i / bins`` (the last moved up by 1e-6), a
    running sum starting at zeros, ``weights = tot / acc_sum[i] / n``; the
    elementwise loss is ``weights * BCE`` (mmdetection then sums it over ``tot``).
    """
    edges = np.arange(bins + 1) / bins
    edges[-1] += 1e-6
    acc_sum = np.zeros(bins)
    losses = []
    for x, y in batches:
        g = np.abs(helpers.sigmoid(x) - y)
        tot, n = x.size, 0
        weights = np.zeros(x.shape)
        for i in range(bins):
            inds = (g >= edges[i]) & (g < edges[i + 1])
            num_in_bin = inds.sum()
            if num_in_bin > 0:
                acc_sum[i] = momentum * acc_sum[i] + (1 - momentum) * num_in_bin
                weights[inds] = tot / acc_sum[i]
                n += 1
        if n > 0:
            weights = weights / n
        losses.append(weights * _bce(x, y))
    return losses


def test_ghm_filled_update_is_mmdetections_rule():
    # g = |sigmoid(x) - y| with bins of width 1/4: batch 1 fills bins 0, 1 and 3,
    # batch 2 leaves bin 1 empty, batch 3 fills it again.
    y = np.ones(4)
    batches = [
        (np.array([5.0, 0.8, 0.6, -5.0]), y),  # bins 0, 1, 1, 3
        (np.array([5.0, 4.0, -4.0, -5.0]), y),  # bins 0, 0, 3, 3
        (np.array([0.7, 0.9, 6.0, -6.0]), y),  # bins 1, 1, 0, 3
    ]
    want = mmdetection_ghmc(batches, bins=4, momentum=0.75)
    state = jnp.zeros(4, jnp.float64)
    step = jax.jit(
        lambda x, y, s: sigmoid_ghm_loss(x, y, bins=4, momentum=0.75, state=s, update="filled")
    )
    for (x, y), loss_want in zip(batches, want, strict=True):
        loss, state = step(x, y, state)
        np.testing.assert_allclose(loss, loss_want, rtol=1e-12)
    # The paper's rule decays bin 1 in batch 2, so batch 3 weighs its entries otherwise.
    state = jnp.zeros(4, jnp.float64)
    for x, y in batches:
        loss, state = sigmoid_ghm_loss(x, y, bins=4, momentum=0.75, state=state)
    assert not np.allclose(loss, want[-1], rtol=1e-3)


def test_ghm_update_must_be_a_known_rule():
    with pytest.raises(ValueError, match=r"update must be one of \('all', 'filled'\).*mmdetection"):
        sigmoid_ghm_loss(X, Y, momentum=0.5, update="filled_bins")
