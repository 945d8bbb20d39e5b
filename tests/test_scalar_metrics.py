"""Every scalar metric of bcejax.metrics against scikit-learn, edge cases included.

Scores with many ties, ``sample_weight`` (some zero), ``where`` (junk in the masked entries:
NaN scores and label 255), eager and under ``jit``; float32 inputs give float32 results.
"""

from __future__ import annotations

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from metric_inputs import (
    JUNK_LABEL,
    JUNK_LABELS,
    JUNK_SCORES,
    LABELS,
    MASK,
    SCALAR_METRICS,
    SCORES,
    SHAPE,
    VARIANTS,
    WEIGHTS,
    assert_scalar,
    bcejax_metric,
    call,
    model_data,
)
from references import classes, kept, predicted, ref_ece, sklearn_metric
from sklearn import metrics as skm

from bcejax import metrics

THRESHOLDED = [
    "precision",
    "recall",
    "f1_score",
    "fbeta_score",
    "accuracy",
    "balanced_accuracy",
    "matthews_corrcoef",
    "iou_score",
    "dice_score",
]


def ref_confusion(scores, labels, sample_weight=None, where=None, threshold=0.5):
    s, y, w = kept(scores, labels, sample_weight, where)
    return skm.confusion_matrix(classes(y), predicted(s, threshold), labels=[0, 1], sample_weight=w)


# ---------------------------------------------------------------------------
# Every metric against scikit-learn: ties, weights, where, eager and jit.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", SCALAR_METRICS)
def test_metric_matches_sklearn(name, variant, jit):
    scores, labels, weights, mask = VARIANTS[variant]
    got = call(bcejax_metric(name), scores, labels, weights, mask, jit=jit)
    assert_scalar(got, np.float64)
    want = sklearn_metric(name, scores, labels, weights, mask)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_confusion_matrix_matches_sklearn(variant, jit):
    scores, labels, weights, mask = VARIANTS[variant]
    got = call(metrics.confusion_matrix, scores, labels, weights, mask, jit=jit)
    assert got.shape == (2, 2)
    assert jnp.issubdtype(got.dtype, jnp.floating)
    want = ref_confusion(scores, labels, weights, mask)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("threshold", [0.3, 0.0, 1.0, 0.95], ids=str)
@pytest.mark.parametrize("name", THRESHOLDED)
def test_threshold_keyword(name, threshold):
    """Predictions are scores >= threshold, ties with the threshold included."""
    fn = bcejax_metric(name, threshold=threshold)
    got = fn(JUNK_SCORES, JUNK_LABELS, sample_weight=WEIGHTS, where=MASK)
    want = sklearn_metric(name, SCORES, LABELS, WEIGHTS, MASK, threshold=threshold)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)
    cm = metrics.confusion_matrix(
        JUNK_SCORES, JUNK_LABELS, threshold=threshold, sample_weight=WEIGHTS, where=MASK
    )
    want_cm = ref_confusion(SCORES, LABELS, WEIGHTS, MASK, threshold=threshold)
    np.testing.assert_allclose(cm, want_cm, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", THRESHOLDED)
def test_threshold_zero_on_logits(name):
    rng = np.random.default_rng(1)
    logits = np.round(rng.normal(0.0, 2.0, 300), 1)  # ties, and exact zeros
    labels = (rng.uniform(size=300) < helpers.sigmoid(logits)).astype(np.float64)
    assert np.any(logits == 0.0)
    got = bcejax_metric(name, threshold=0.0)(logits, labels)
    want = sklearn_metric(name, logits, labels, threshold=0.0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", [*SCALAR_METRICS, "expected_calibration_error"])
def test_float32_inputs_give_float32_results(name):
    scores, labels, weights, mask = model_data(SHAPE, seed=2, decimals=2)
    # Off every bin edge and the threshold: float32 rounding cannot move an entry across.
    scores = np.clip(scores + 0.005, 0.005, 0.995).astype(np.float32)
    junk_scores = np.where(mask, scores, np.float32(np.nan))
    junk_labels = np.where(mask, labels, JUNK_LABEL).astype(np.float32)
    weights = weights.astype(np.float32)
    if name == "expected_calibration_error":
        got = metrics.expected_calibration_error(
            junk_scores, junk_labels, sample_weight=weights, where=mask
        )
        want = ref_ece(scores, labels, weights, mask)
    else:
        got = bcejax_metric(name)(junk_scores, junk_labels, sample_weight=weights, where=mask)
        want = sklearn_metric(name, scores, labels, weights, mask)
    assert_scalar(got, np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "label_dtype", [np.bool_, np.int32, np.uint8, np.float32, np.float64], ids=np.dtype
)
@pytest.mark.parametrize("name", ["roc_auc", "average_precision", "f1_score", "log_loss"])
def test_labels_of_any_dtype(name, label_dtype):
    got = bcejax_metric(name)(SCORES, LABELS.astype(label_dtype), sample_weight=WEIGHTS)
    assert_scalar(got, np.float64)
    np.testing.assert_allclose(got, sklearn_metric(name, SCORES, LABELS, WEIGHTS), rtol=1e-6)


@pytest.mark.parametrize(
    "name", ["roc_auc", "average_precision", "f1_score", "matthews_corrcoef", "log_loss"]
)
def test_weights_and_where_broadcast(name):
    """A per-row weight and mask of shape (8, 1) broadcast over the scores (8, 25)."""
    row_weights = np.linspace(0.0, 2.0, SHAPE[0])[:, None]
    row_mask = (np.arange(SHAPE[0]) % 3 != 1)[:, None]
    scores = np.where(row_mask, SCORES, np.nan)
    labels = np.where(row_mask, LABELS, JUNK_LABEL)
    got = bcejax_metric(name)(scores, labels, sample_weight=row_weights, where=row_mask)
    want = sklearn_metric(name, SCORES, LABELS, row_weights, row_mask)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


def test_shape_is_flattened():
    flat = {
        name: bcejax_metric(name)(SCORES.ravel(), LABELS.ravel(), sample_weight=WEIGHTS.ravel())
        for name in SCALAR_METRICS
    }
    shape = (5, 4, 10)
    for name in SCALAR_METRICS:
        fn = bcejax_metric(name)
        got = fn(SCORES.reshape(shape), LABELS.reshape(shape), sample_weight=WEIGHTS.reshape(shape))
        np.testing.assert_allclose(got, flat[name], rtol=1e-12, err_msg=name)


# ---------------------------------------------------------------------------
# Edge cases.
# ---------------------------------------------------------------------------

EDGE_CASES = {  # one length (6) apart from the single examples: fewer compiles
    "all-one": (np.array([0.1, 0.5, 0.5, 0.9, 0.3, 0.0]), np.ones(6)),
    "all-zero": (np.array([0.1, 0.5, 0.5, 0.9, 0.3, 1.0]), np.zeros(6)),
    "all-zero-none-predicted": (np.array([0.1, 0.2, 0.2, 0.4, 0.0, 0.3]), np.zeros(6)),
    "none-predicted": (
        np.array([0.1, 0.2, 0.2, 0.4, 0.0, 0.3]),
        np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0]),
    ),
    "all-predicted": (
        np.array([0.6, 0.9, 0.9, 0.7, 1.0, 0.5]),
        np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0]),
    ),
    "single-positive": (np.array([0.7]), np.array([1.0])),
    "single-negative": (np.array([0.7]), np.array([0.0])),
    "all-tied": (np.full(6, 0.4), np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])),
    "all-tied-at-threshold": (np.full(6, 0.5), np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
@pytest.mark.parametrize("name", SCALAR_METRICS)
def test_edge_cases_match_sklearn(name, case):
    scores, labels = EDGE_CASES[case]
    got = bcejax_metric(name)(scores, labels)
    assert_scalar(got, np.float64)
    want = sklearn_metric(name, scores, labels)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12, equal_nan=True)


def test_edge_case_values_as_specified():
    ones, zeros = EDGE_CASES["all-one"], EDGE_CASES["all-zero"]
    assert np.isnan(metrics.roc_auc(*ones))
    assert np.isnan(metrics.roc_auc(*zeros))
    assert float(metrics.average_precision(*ones)) == 1.0
    assert float(metrics.average_precision(*zeros)) == 0.0
    assert np.isnan(metrics.roc_auc(*EDGE_CASES["single-positive"]))
    # No positive and no predicted positive: every zero division is 0.0.
    empty = EDGE_CASES["all-zero-none-predicted"]
    for name in ["precision", "recall", "f1_score", "iou_score", "dice_score"]:
        assert float(bcejax_metric(name)(*empty)) == 0.0, name
    assert float(metrics.matthews_corrcoef(*empty)) == 0.0
    assert float(metrics.accuracy(*empty)) == 1.0
    assert float(metrics.balanced_accuracy(*empty)) == 1.0  # the recall of the negatives
    # balanced accuracy with only positives: their recall, 3 of 6 scores >= 0.5.
    np.testing.assert_allclose(metrics.balanced_accuracy(*ones), 0.5, rtol=1e-12)
    # All tied: AUC 1/2, AP the prevalence.
    tied_scores, tied_labels = EDGE_CASES["all-tied"]
    np.testing.assert_allclose(metrics.roc_auc(tied_scores, tied_labels), 0.5, rtol=1e-12)
    np.testing.assert_allclose(
        metrics.average_precision(tied_scores, tied_labels), 2 / 6, rtol=1e-12
    )


def test_fully_masked_and_zero_weight_positives():
    """Positives present but masked or weighted 0 count as absent: one class left."""
    scores = np.array([0.2, 0.8, 0.6, 0.4, 0.1, 0.9])
    labels = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    keep = labels == 0
    assert np.isnan(metrics.roc_auc(scores, labels, where=keep))
    assert np.isnan(metrics.roc_auc(scores, labels, sample_weight=keep.astype(float)))
    assert float(metrics.average_precision(scores, labels, where=keep)) == 0.0
    assert float(metrics.recall(scores, labels, where=keep)) == 0.0


@pytest.mark.parametrize("name", ["roc_auc", "average_precision", "f1_score", "log_loss"])
def test_jit_edge_cases(name):
    """The same NaN / 0.0 / 1.0 values under jit, where nothing is known at trace time."""
    fn = jax.jit(bcejax_metric(name))
    for case in ["all-one", "all-zero", "all-tied"]:
        scores, labels = EDGE_CASES[case]
        want = sklearn_metric(name, scores, labels)
        np.testing.assert_allclose(fn(scores, labels), want, rtol=1e-6, equal_nan=True)
