"""The callable CategoricalCrossEntropy: reductions, weights, ignore_index, where, jit, pickling."""

from __future__ import annotations

import pickle

import jax
import numpy as np
import pytest
from references import f64, ref_ce, ref_ce_int
from softmax_inputs import DTYPES, RTOL, X2, assert_close, random_problem

from bcejax.losses import CategoricalCrossEntropy


def _callable_problem(dtype=np.float64):
    p = random_problem("2d", dtype, seed=16)
    t = p["t"].copy()
    t[[1, 4]] = -100
    return p, t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_callable_integer_and_one_hot_agree(reduction, dtype):
    p = random_problem("2d", dtype, seed=17)
    loss_fn = CategoricalCrossEntropy(
        label_smoothing=0.1, class_weights=p["class_weights"], reduction=reduction
    )
    one_hot = np.eye(5, dtype=dtype)[p["t"]]
    for where in (None, p["batch_mask"]):
        by_index = loss_fn(p["logits"], p["t"], where=where)
        by_one_hot = loss_fn(p["logits"], one_hot, where=where)
        assert by_index.dtype == by_one_hot.dtype == dtype
        np.testing.assert_allclose(by_index, by_one_hot, rtol=4 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_callable_reductions_weights_and_where(dtype):
    p, t = _callable_problem(dtype)
    w = p["class_weights"]
    v = np.random.default_rng(18).uniform(0.5, 2.0, t.shape).astype(dtype)  # per example
    m = p["batch_mask"]
    per_example = ref_ce_int(p["x"], t, smoothing=0.1, class_weights=w, ignore_index=-100)
    target_w = np.where(t == -100, 0.0, f64(w)[np.clip(t, 0, 4)])
    config = dict(label_smoothing=0.1, class_weights=w, ignore_index=-100)
    for weights in (None, v):
        vv = 1.0 if weights is None else f64(v)
        for where in (None, m):
            mm = 1.0 if where is None else m
            call = dict(weights=weights, where=where)
            none = CategoricalCrossEntropy(**config, reduction="none")(p["logits"], t, **call)
            assert_close(none, mm * vv * per_example, dtype)
            total = CategoricalCrossEntropy(**config, reduction="sum")(p["logits"], t, **call)
            assert_close(total, np.sum(mm * vv * per_example), dtype)
            # PyTorch's mean: over the summed class weights of the counted targets
            # (per-example weights scale the numerator only)
            mean = CategoricalCrossEntropy(**config)(p["logits"], t, **call)
            want = np.sum(mm * vv * per_example) / np.sum(mm * target_w)
            assert_close(mean, want, dtype)
    # without class weights, the mean is over the non-ignored, unmasked examples
    mean = CategoricalCrossEntropy(ignore_index=-100)(p["logits"], t, where=m)
    kept = (t != -100) & m
    assert_close(mean, ref_ce_int(p["x"], t)[kept].mean(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_callable_mean_with_soft_labels(dtype):
    """The mean divides by sum_i sum_c w_c y_ic (bcejax's contract; PyTorch divides a
    weighted probability-target loss by the number of examples instead)."""
    p = random_problem("2d", dtype, seed=19)
    w = p["class_weights"]
    got = CategoricalCrossEntropy(class_weights=w)(p["logits"], p["labels"])
    want = ref_ce(p["x"], p["y"], class_weights=w).sum() / np.sum(f64(p["y"]) @ f64(w))
    assert_close(got, want, dtype)
    got = CategoricalCrossEntropy()(p["logits"], p["labels"], where=p["batch_mask"])
    assert_close(got, ref_ce(p["x"], p["y"])[p["batch_mask"]].mean(), dtype)


def test_callable_ignore_index_with_one_hot_labels_is_an_error():
    with pytest.raises(ValueError, match="ignore_index needs integer labels"):
        CategoricalCrossEntropy(ignore_index=-100)(X2, np.eye(3)[[0, 1]])
    with pytest.raises(ValueError, match="reduction must be one of"):
        CategoricalCrossEntropy(reduction="avg")


@pytest.mark.parametrize("weighted", [False, True])
def test_callable_all_ignored_gives_zero_with_zero_gradient(weighted):
    p, _ = _callable_problem()
    t = np.full(p["t"].shape, -100, np.int32)
    loss_fn = CategoricalCrossEntropy(
        label_smoothing=0.1,
        class_weights=p["class_weights"] if weighted else None,
        ignore_index=-100,
    )

    @jax.jit
    def value_and_grads(x, t):
        return (
            jax.value_and_grad(lambda x: loss_fn(x, t))(x),
            jax.value_and_grad(lambda x: loss_fn(x, p["t"], where=False))(x),
        )

    assert float(loss_fn(p["logits"], t)) == 0.0  # eager
    for value, grad in value_and_grads(p["logits"], t):  # every example ignored; masked
        assert float(value) == 0.0
        np.testing.assert_array_equal(grad, np.zeros_like(p["logits"]))


def test_callable_ignored_examples_have_zero_gradient():
    p, t = _callable_problem()
    loss_fn = CategoricalCrossEntropy(label_smoothing=0.2, ignore_index=-100)
    grad = np.asarray(jax.jit(jax.grad(lambda x: loss_fn(x, t)))(p["logits"]))
    assert np.all(grad[t == -100] == 0)
    assert np.all(np.abs(grad[t != -100]).sum(-1) > 0)


@pytest.mark.parametrize("labels", ["integer", "one-hot"])
def test_callable_ignores_junk_in_masked_examples(labels):
    """NaN logits, out-of-range labels and NaN weights of masked examples are cut out."""
    p, _ = _callable_problem()
    m = p["batch_mask"]
    t = p["t"] if labels == "integer" else np.eye(5)[p["t"]]
    junk_t = np.where(m, p["t"], 255) if labels == "integer" else np.where(m[:, None], t, 0.7)
    junk_x = np.where(m[:, None], p["logits"], np.nan)
    v = np.random.default_rng(20).uniform(0.5, 2.0, m.shape)
    junk_v = np.where(m, v, np.nan)
    loss_fn = CategoricalCrossEntropy(label_smoothing=0.1, class_weights=p["class_weights"])
    for call in (loss_fn, jax.jit(loss_fn.__call__)):
        got = call(junk_x, junk_t, weights=junk_v, where=m)
        np.testing.assert_allclose(got, loss_fn(p["logits"], t, weights=v, where=m), rtol=1e-13)
    grad = jax.grad(lambda x: loss_fn(x, junk_t, weights=junk_v, where=m))(junk_x)
    assert np.all(np.isfinite(grad))
    assert np.all(grad[~m] == 0)


def test_callable_where_is_per_example():
    with pytest.raises(ValueError, match=r"masks whole examples: where must have the batch shape"):
        CategoricalCrossEntropy()(X2, np.array([0, 1]), where=np.ones((2, 3), bool))


_call = jax.jit(lambda fn, x, y: fn(x, y))
_call_grad = jax.jit(jax.grad(lambda fn, x, y: fn(x, y)))


@pytest.mark.parametrize("class_weights", ["array", "tuple", "none"])
def test_callable_passes_through_jit_as_an_argument(class_weights):
    p, t = _callable_problem()
    w = {"array": p["class_weights"], "tuple": tuple(p["class_weights"].tolist()), "none": None}
    loss_fn = CategoricalCrossEntropy(
        label_smoothing=0.1, class_weights=w[class_weights], ignore_index=-100
    )
    eager = loss_fn(p["logits"], t)
    traced = _call(loss_fn, p["logits"], t)
    np.testing.assert_allclose(traced, eager, rtol=1e-12)
    # the config is a pytree leaf: its gradient exists (d/da of the mean)
    grads = _call_grad(loss_fn, p["logits"], t)
    assert isinstance(grads, CategoricalCrossEntropy)
    assert np.isfinite(grads.label_smoothing)
    h = 1e-6
    plus = _call(CategoricalCrossEntropy(0.1 + h, w[class_weights], -100), p["logits"], t)
    minus = _call(CategoricalCrossEntropy(0.1 - h, w[class_weights], -100), p["logits"], t)
    assert float(grads.label_smoothing) == pytest.approx(float(plus - minus) / (2 * h), rel=1e-6)


def test_callable_equality_and_pickle_round_trip():
    loss_fn = CategoricalCrossEntropy(
        label_smoothing=0.1, class_weights=(1.0, 2.0, 0.5, 1.0, 3.0), ignore_index=-100
    )
    restored = pickle.loads(pickle.dumps(loss_fn))
    assert restored == loss_fn and hash(restored) == hash(loss_fn)
    assert loss_fn != CategoricalCrossEntropy(label_smoothing=0.1, ignore_index=-100)
    assert loss_fn != CategoricalCrossEntropy(
        label_smoothing=0.1, class_weights=(1.0, 2.0, 0.5, 1.0, 3.0), ignore_index=-1
    )
    assert "CategoricalCrossEntropy(label_smoothing=0.1" in repr(loss_fn)
    p, t = _callable_problem()
    np.testing.assert_array_equal(restored(p["logits"], t), loss_fn(p["logits"], t))
    with pytest.raises(AttributeError):
        loss_fn.label_smoothing = 0.2
    leaves, treedef = jax.tree_util.tree_flatten(loss_fn)
    assert leaves == [0.1, 1.0, 2.0, 0.5, 1.0, 3.0]  # ignore_index and reduction are static
    assert jax.tree_util.tree_unflatten(treedef, leaves) == loss_fn


def test_callable_equality_with_array_class_weights():
    """The usual config, class_weights as an array: a pickled copy compares equal."""
    loss_fn = CategoricalCrossEntropy(class_weights=np.array([1.0, 2.0, 0.5]))
    restored = pickle.loads(pickle.dumps(loss_fn))
    np.testing.assert_array_equal(restored(X2, np.array([0, 2])), loss_fn(X2, np.array([0, 2])))
    assert restored == loss_fn
