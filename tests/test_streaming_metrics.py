"""StreamingBinaryMetrics: batch by batch, merge, reduce under shard_map, the state through jit."""

from __future__ import annotations

import functools

import helpers
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from metric_inputs import JUNK_LABEL
from references import ref_ece, ref_logit_log_loss, sklearn_metric
from sklearn import metrics as skm

from bcejax import metrics
from bcejax.metrics import StreamingBinaryMetrics

STREAM_KEYS = [
    "roc_auc",
    "average_precision",
    "log_loss",
    "brier_score",
    "expected_calibration_error",
    "accuracy",
    "precision",
    "recall",
    "f1_score",
    "count",
]
N_STREAM = 4000


def stream_data(seed=5, n=N_STREAM):
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    labels = (rng.uniform(size=n) < helpers.sigmoid(z)).astype(np.float64)
    scores = helpers.sigmoid(z + rng.normal(0.0, 1.0, n))
    scores[:200] = np.round(scores[:200], 1)  # ties and bin edges
    weights = rng.uniform(0.0, 2.0, n)
    weights[rng.uniform(size=n) < 0.1] = 0.0
    mask = rng.uniform(size=n) < 0.85
    mask[N_STREAM // 4 : N_STREAM // 2] = False  # the second of 4 shards keeps nothing
    return (
        np.where(mask, scores, np.nan),
        np.where(mask, labels, JUNK_LABEL),
        weights,
        mask,
        scores,
        labels,
    )


S_SCORES, S_LABELS, S_WEIGHTS, S_MASK, S_CLEAN, S_CLEAN_LABELS = stream_data()


def assert_results_close(got, want, *, rtol=1e-5, keys=STREAM_KEYS):
    """The default state counts in float32: equal up to float32 rounding."""
    for key in keys:
        np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=1e-12, err_msg=key)


@functools.cache
def reference_result():
    """The metrics of one update with all the data, in the default configuration."""
    return one_update().compute()


def one_update(**config):
    state = StreamingBinaryMetrics.empty(**config)
    return state.update(S_SCORES, S_LABELS, where=S_MASK, sample_weight=S_WEIGHTS)


def test_compute_keys_and_values():
    result = one_update().compute()
    assert set(STREAM_KEYS) <= set(result)
    for key in STREAM_KEYS:
        assert np.shape(result[key]) == (), key
    # The binned AUC and AP are close to the exact ones.
    for key in ["roc_auc", "average_precision"]:
        want = sklearn_metric(key, S_SCORES, S_LABELS, S_WEIGHTS, S_MASK)
        np.testing.assert_allclose(result[key], want, atol=1e-3, err_msg=key)


@pytest.mark.parametrize(
    "config",
    [{}, {"threshold": 0.3, "ece_bins": 10, "num_bins": 1000}],
    ids=["default", "threshold-0.3-ece-10"],
)
def test_exact_metrics_equal_the_batch_functions(config):
    result = one_update(**config).compute()
    threshold = config.get("threshold", 0.5)
    batch = dict(sample_weight=S_WEIGHTS, where=S_MASK)
    thresholded = dict(batch, threshold=threshold)
    want = {
        "log_loss": metrics.log_loss(S_SCORES, S_LABELS, **batch),
        "brier_score": metrics.brier_score(S_SCORES, S_LABELS, **batch),
        "expected_calibration_error": metrics.expected_calibration_error(
            S_SCORES, S_LABELS, n_bins=config.get("ece_bins", 15), **batch
        ),
        "accuracy": metrics.accuracy(S_SCORES, S_LABELS, **thresholded),
        "precision": metrics.precision(S_SCORES, S_LABELS, **thresholded),
        "recall": metrics.recall(S_SCORES, S_LABELS, **thresholded),
        "f1_score": metrics.f1_score(S_SCORES, S_LABELS, **thresholded),
    }
    assert_results_close(result, want, keys=list(want))
    # ... and the independent references.
    for key in ["log_loss", "brier_score", "accuracy", "precision", "recall", "f1_score"]:
        sk = sklearn_metric(key, S_SCORES, S_LABELS, S_WEIGHTS, S_MASK, threshold=threshold)
        np.testing.assert_allclose(result[key], sk, rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(
        result["expected_calibration_error"],
        ref_ece(S_SCORES, S_LABELS, S_WEIGHTS, S_MASK, config.get("ece_bins", 15)),
        rtol=1e-5,
    )


def test_count_is_the_number_of_kept_entries():
    state = StreamingBinaryMetrics.empty().update(S_SCORES, S_LABELS, where=S_MASK)
    assert float(state.compute()["count"]) == S_MASK.sum()
    chunk = slice(None, N_STREAM // 4)
    state = state.update(S_CLEAN[chunk], S_CLEAN_LABELS[chunk])
    assert float(state.compute()["count"]) == S_MASK.sum() + N_STREAM // 4


def test_batch_by_batch_equals_one_update():
    want = reference_result()
    state = StreamingBinaryMetrics.empty()
    for chunk in np.split(np.arange(N_STREAM), 4):  # the second chunk keeps nothing
        state = state.update(
            S_SCORES[chunk], S_LABELS[chunk], where=S_MASK[chunk], sample_weight=S_WEIGHTS[chunk]
        )
    assert_results_close(state.compute(), want)


def test_merge_equals_one_state_updated_with_both():
    half = N_STREAM // 2
    first, second = slice(None, half), slice(half, None)

    def updated(part):
        return StreamingBinaryMetrics.empty().update(
            S_SCORES[part], S_LABELS[part], where=S_MASK[part], sample_weight=S_WEIGHTS[part]
        )

    want = reference_result()
    assert_results_close(updated(first).merge(updated(second)).compute(), want)
    assert_results_close(updated(second).merge(updated(first)).compute(), want)
    empty = StreamingBinaryMetrics.empty()
    assert_results_close(one_update().merge(empty).compute(), want)


def test_state_is_a_pytree_through_jit():
    state = StreamingBinaryMetrics.empty()
    leaves = jax.tree_util.tree_leaves(state)
    assert leaves and all(isinstance(leaf, jax.Array) for leaf in leaves)

    @jax.jit
    def step(state, scores, labels, where, sample_weight):
        return state.update(scores, labels, where=where, sample_weight=sample_weight)

    half = N_STREAM // 2
    for part in (slice(None, half), slice(half, None)):
        state = step(state, S_SCORES[part], S_LABELS[part], S_MASK[part], S_WEIGHTS[part])
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(
        StreamingBinaryMetrics.empty()
    )
    want = reference_result()
    assert_results_close(state.compute(), want)
    assert_results_close(jax.jit(lambda s: s.compute())(state), want)
    # A state goes back in and out again (e.g. carried through a training loop).
    again = jax.jit(lambda s, t: s.merge(t))(state, StreamingBinaryMetrics.empty())
    assert_results_close(again.compute(), want)


def test_reduce_under_shard_map_equals_unsharded():
    assert jax.device_count() == 4
    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))

    def local(scores, labels, where, sample_weight):
        state = StreamingBinaryMetrics.empty()
        state = state.update(scores, labels, where=where, sample_weight=sample_weight)
        return state.reduce("data")

    sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P("data"),) * 4, out_specs=P()))
    state = sharded(S_SCORES, S_LABELS, S_MASK, S_WEIGHTS)
    want = reference_result()
    assert_results_close(state.compute(), want)


def test_from_logits_stream():
    rng = np.random.default_rng(6)
    logits = rng.normal(0.0, 2.0, N_STREAM)
    # No logit in [0, 0.5): the threshold 0.5 reads the same as a probability or a logit ...
    logits[(logits >= 0.0) & (logits < 0.5)] += 0.5
    # ... and sigmoid(x) >= 0.5 is x >= 0.
    labels = (rng.uniform(size=N_STREAM) < helpers.sigmoid(logits)).astype(np.float64)
    weights = rng.uniform(0.5, 1.5, N_STREAM)
    state = StreamingBinaryMetrics.empty(from_logits=True)
    result = state.update(logits, labels, sample_weight=weights).compute()
    probs = helpers.sigmoid(logits)
    np.testing.assert_allclose(
        result["log_loss"], ref_logit_log_loss(logits, labels, weights), rtol=1e-5
    )
    np.testing.assert_allclose(
        result["log_loss"],
        metrics.log_loss(logits, labels, from_logits=True, sample_weight=weights),
        rtol=1e-5,
    )
    for key in ["brier_score", "accuracy", "precision", "recall", "f1_score"]:
        want = sklearn_metric(key, probs, labels, weights)
        np.testing.assert_allclose(result[key], want, rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(
        result["expected_calibration_error"], ref_ece(probs, labels, weights), rtol=1e-5
    )
    for key in ["roc_auc", "average_precision"]:
        want = sklearn_metric(key, logits, labels, weights)
        np.testing.assert_allclose(result[key], want, atol=1e-3, err_msg=key)


def test_binned_auc_and_ap_on_a_million_scores():
    """10^6 scores of a plausible model, default bins: AUC and AP within 1e-3 of exact."""
    n, batches = 10**6, 4
    rng = np.random.default_rng(7)
    z = rng.normal(0.0, 1.5, n)
    labels = (rng.uniform(size=n) < helpers.sigmoid(z)).astype(np.float32)
    scores = helpers.sigmoid(z + rng.normal(0.0, 1.0, n)).astype(np.float32)
    step = jax.jit(lambda state, s, y: state.update(s, y))
    state = StreamingBinaryMetrics.empty()
    for s, y in zip(np.split(scores, batches), np.split(labels, batches), strict=True):
        state = step(state, s, y)
    result = state.compute()
    assert float(result["count"]) == n
    exact_auc = skm.roc_auc_score(labels, scores)
    exact_ap = skm.average_precision_score(labels, scores)
    assert abs(float(result["roc_auc"]) - exact_auc) < 1e-3, (result["roc_auc"], exact_auc)
    assert abs(float(result["average_precision"]) - exact_ap) < 1e-3, (
        result["average_precision"],
        exact_ap,
    )
    np.testing.assert_allclose(
        result["log_loss"], skm.log_loss(labels, scores.astype(np.float64)), rtol=1e-4
    )
