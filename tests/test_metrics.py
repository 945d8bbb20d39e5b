"""bcejax.metrics: evaluation metrics for binary classifiers, against scikit-learn and NumPy.

* Every metric against scikit-learn to 1e-6 in float64, on scores with many ties, with
  ``sample_weight`` (some zero), with ``where`` (junk in the masked entries: NaN scores and
  label 255), eager and under ``jit``; float32 inputs give float32 results.
* Edge cases: one class, a single example, all scores tied, no predicted positive.
* The curves: deduplicated points against scikit-learn, static lengths, the trapezoid of the
  ROC curve is the AUC, the step sum of the PR curve is the AP.
* ECE and the reliability diagram against ``calibration_curve`` (probabilities on bin edges)
  and a float64 reference with weights.
* Streaming: batch by batch, merge, ``reduce`` under shard_map on 4 devices, exact metrics
  against the batch functions, binned AUC/AP on 10^6 scores, the state through ``jit``.
* Bad inputs: labels 255 and -1 (eagerly and under ``bcejax.checked``), shapes, weights, bins.
"""

from __future__ import annotations

import functools
import warnings

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from sklearn import calibration as skc
from sklearn import metrics as skm

import bcejax
from bcejax import metrics
from bcejax.metrics import StreamingBinaryMetrics

SHAPE = (8, 25)
JUNK_LABEL = 255.0

# ---------------------------------------------------------------------------
# Float64 NumPy references and scikit-learn, on the kept entries only.
# ---------------------------------------------------------------------------


def _quiet(fn):
    """scikit-learn warns on undefined metrics (one class, zero division); the value counts."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)

    return wrapper


def kept(scores, labels, sample_weight=None, where=None):
    """Float64 flat scores, labels and weights of the entries that ``where`` keeps."""
    scores = np.asarray(scores, np.float64)
    shape = scores.shape
    keep = np.ones(shape, bool) if where is None else np.broadcast_to(where, shape)
    keep = keep.ravel()
    s = scores.ravel()[keep]
    y = np.broadcast_to(np.asarray(labels, np.float64), shape).ravel()[keep]
    w = None
    if sample_weight is not None:
        w = np.broadcast_to(np.asarray(sample_weight, np.float64), shape).ravel()[keep]
    return s, y, w


def _pred(s, threshold):
    return (s >= threshold).astype(np.int64)


def _labels(y):
    return y.astype(np.int64)


# scikit-learn, as (labels, scores, weights, threshold) -> value.
SKLEARN = {
    "roc_auc": lambda y, s, w, t: skm.roc_auc_score(_labels(y), s, sample_weight=w),
    "average_precision": lambda y, s, w, t: skm.average_precision_score(
        _labels(y), s, sample_weight=w
    ),
    "precision": lambda y, s, w, t: skm.precision_score(
        _labels(y), _pred(s, t), sample_weight=w, zero_division=0.0
    ),
    "recall": lambda y, s, w, t: skm.recall_score(
        _labels(y), _pred(s, t), sample_weight=w, zero_division=0.0
    ),
    "f1_score": lambda y, s, w, t: skm.f1_score(
        _labels(y), _pred(s, t), sample_weight=w, zero_division=0.0
    ),
    "fbeta_score": lambda y, s, w, t: skm.fbeta_score(
        _labels(y), _pred(s, t), beta=2.0, sample_weight=w, zero_division=0.0
    ),
    "accuracy": lambda y, s, w, t: skm.accuracy_score(_labels(y), _pred(s, t), sample_weight=w),
    "balanced_accuracy": lambda y, s, w, t: skm.balanced_accuracy_score(
        _labels(y), _pred(s, t), sample_weight=w
    ),
    "matthews_corrcoef": lambda y, s, w, t: skm.matthews_corrcoef(
        _labels(y), _pred(s, t), sample_weight=w
    ),
    "iou_score": lambda y, s, w, t: skm.jaccard_score(
        _labels(y), _pred(s, t), sample_weight=w, zero_division=0.0
    ),
    "dice_score": lambda y, s, w, t: skm.f1_score(
        _labels(y), _pred(s, t), sample_weight=w, zero_division=0.0
    ),
    "log_loss": lambda y, s, w, t: skm.log_loss(_labels(y), s, labels=[0, 1], sample_weight=w),
    "brier_score": lambda y, s, w, t: skm.brier_score_loss(_labels(y), s, sample_weight=w),
}
SKLEARN = {name: _quiet(fn) for name, fn in SKLEARN.items()}
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
SCALAR_METRICS = list(SKLEARN)


def bcejax_metric(name, **config):
    """The bcejax function of a metric name, with fbeta's required beta bound."""
    fn = getattr(metrics, name)
    if name == "fbeta_score":
        config = {"beta": 2.0, **config}
    return functools.partial(fn, **config) if config else fn


def sklearn_metric(name, scores, labels, sample_weight=None, where=None, threshold=0.5):
    s, y, w = kept(scores, labels, sample_weight, where)
    return SKLEARN[name](y, s, w, threshold)


def ref_confusion(scores, labels, sample_weight=None, where=None, threshold=0.5):
    s, y, w = kept(scores, labels, sample_weight, where)
    return skm.confusion_matrix(_labels(y), _pred(s, threshold), labels=[0, 1], sample_weight=w)


def sklearn_bins(probs, n_bins):
    """The bin of each probability, as ``calibration_curve(strategy="uniform")`` finds it."""
    return np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], probs)


def ref_ece(probs, labels, sample_weight=None, where=None, n_bins=15):
    """Float64 ECE: sum over bins of (bin weight / total) * |mean label - mean prob|."""
    p, y, w = kept(probs, labels, sample_weight, where)
    w = np.ones_like(p) if w is None else w
    ids = sklearn_bins(p, n_bins)
    total = 0.0
    for b in range(n_bins):
        in_bin = (ids == b) & (w > 0)
        weight = w[in_bin].sum()
        if weight > 0:
            mean_y = np.sum(w[in_bin] * y[in_bin]) / weight
            mean_p = np.sum(w[in_bin] * p[in_bin]) / weight
            total += weight * abs(mean_y - mean_p)
    return total / w.sum()


def ref_logit_log_loss(logits, labels, sample_weight=None, where=None):
    x, y, w = kept(logits, labels, sample_weight, where)
    w = np.ones_like(x) if w is None else w
    loss = y * np.logaddexp(0.0, -x) + (1 - y) * np.logaddexp(0.0, x)
    return np.sum(w * loss) / np.sum(w)


def dedup(*columns):
    """The rows of the stacked columns with consecutive duplicate rows removed."""
    rows = np.stack([np.asarray(c, np.float64) for c in columns], axis=1)
    if rows.shape[0] == 0:
        return rows
    keep = np.ones(rows.shape[0], bool)
    keep[1:] = np.any(rows[1:] != rows[:-1], axis=1)
    return rows[keep]


# ---------------------------------------------------------------------------
# Inputs.
# ---------------------------------------------------------------------------


def model_data(shape, *, seed, decimals=1):
    """Labels ~ Bernoulli(sigmoid(z)), scores sigmoid(z + noise) rounded (ties, 0 and 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, shape)
    labels = (rng.uniform(size=shape) < helpers.sigmoid(z)).astype(np.float64)
    scores = np.round(helpers.sigmoid(z + rng.normal(0.0, 1.0, shape)), decimals)
    weights = rng.uniform(0.0, 2.0, shape)
    weights[rng.uniform(size=shape) < 0.15] = 0.0
    mask = rng.uniform(size=shape) < 0.8
    return scores, labels, weights, mask


SCORES, LABELS, WEIGHTS, MASK = model_data(SHAPE, seed=0)
JUNK_SCORES = np.where(MASK, SCORES, np.nan)
JUNK_LABELS = np.where(MASK, LABELS, JUNK_LABEL)
assert np.any(SCORES == 0.0) and np.any(SCORES == 1.0) and np.any(WEIGHTS == 0.0)

VARIANTS = {
    "plain": (SCORES, LABELS, None, None),
    "weights": (SCORES, LABELS, WEIGHTS, None),
    "where": (JUNK_SCORES, JUNK_LABELS, None, MASK),
    "weights-where": (JUNK_SCORES, JUNK_LABELS, WEIGHTS, MASK),
}


def call(fn, scores, labels, sample_weight, where, *, jit):
    """Calls a metric eagerly or jitted, passing only the optional arrays that are given."""
    kwargs = {}
    if sample_weight is not None:
        kwargs["sample_weight"] = sample_weight
    if where is not None:
        kwargs["where"] = where
    if jit:
        fn = jax.jit(fn)
    return fn(scores, labels, **kwargs)


def assert_scalar(got, dtype):
    assert got.shape == (), got.shape
    assert got.dtype == dtype, got.dtype


# ---------------------------------------------------------------------------
# 1. Every metric against scikit-learn: ties, weights, where, eager and jit.
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
# 2. Edge cases.
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


# ---------------------------------------------------------------------------
# 3. Curves.
# ---------------------------------------------------------------------------


@_quiet
def sklearn_roc(scores, labels, sample_weight=None, where=None):
    s, y, w = kept(scores, labels, sample_weight, where)
    return skm.roc_curve(_labels(y), s, sample_weight=w, drop_intermediate=False)


@_quiet
def sklearn_pr(scores, labels, sample_weight=None, where=None):
    s, y, w = kept(scores, labels, sample_weight, where)
    return skm.precision_recall_curve(_labels(y), s, sample_weight=w, drop_intermediate=False)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_roc_curve_matches_sklearn(variant, jit):
    scores, labels, weights, mask = VARIANTS[variant]
    fpr, tpr, thresholds = call(metrics.roc_curve, scores, labels, weights, mask, jit=jit)
    n = scores.size
    assert fpr.shape == tpr.shape == thresholds.shape == (n + 1,)
    assert fpr.dtype == tpr.dtype == np.float64
    fpr, tpr, thresholds = (np.asarray(a) for a in (fpr, tpr, thresholds))
    assert (fpr[0], tpr[0], thresholds[0]) == (0.0, 0.0, np.inf)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.all(thresholds[1:] <= thresholds[:-1])  # decreasing (masked: -inf at the end)
    sk_fpr, sk_tpr, sk_thresholds = sklearn_roc(scores, labels, weights, mask)
    np.testing.assert_allclose(dedup(fpr, tpr), dedup(sk_fpr, sk_tpr), rtol=1e-12, atol=1e-15)
    if weights is None:  # without zero weights every distinct threshold is one of sklearn's
        finite = thresholds > -np.inf
        got = dedup(fpr[finite], tpr[finite], thresholds[finite])
        np.testing.assert_allclose(
            got, np.stack([sk_fpr, sk_tpr, sk_thresholds], axis=1), rtol=1e-12, atol=1e-15
        )
    auc = sklearn_metric("roc_auc", scores, labels, weights, mask)
    np.testing.assert_allclose(np.trapezoid(tpr, fpr), auc, rtol=1e-9)
    ours = call(metrics.roc_auc, scores, labels, weights, mask, jit=False)
    np.testing.assert_allclose(np.trapezoid(tpr, fpr), ours, rtol=1e-9)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_precision_recall_curve_matches_sklearn(variant, jit):
    scores, labels, weights, mask = VARIANTS[variant]
    fn = metrics.precision_recall_curve
    precision, recall, thresholds = call(fn, scores, labels, weights, mask, jit=jit)
    n = scores.size
    assert precision.shape == recall.shape == (n + 1,)
    assert thresholds.shape == (n,)
    precision, recall, thresholds = (np.asarray(a) for a in (precision, recall, thresholds))
    assert (precision[-1], recall[-1]) == (1.0, 0.0)
    assert np.all(thresholds[1:] >= thresholds[:-1])  # increasing
    assert np.all(np.diff(recall) <= 0)
    sk_precision, sk_recall, _ = sklearn_pr(scores, labels, weights, mask)
    np.testing.assert_allclose(
        dedup(precision, recall), dedup(sk_precision, sk_recall), rtol=1e-12, atol=1e-15
    )
    ap = sklearn_metric("average_precision", scores, labels, weights, mask)
    np.testing.assert_allclose(-np.sum(np.diff(recall) * precision[:-1]), ap, rtol=1e-9)
    ours = call(metrics.average_precision, scores, labels, weights, mask, jit=False)
    np.testing.assert_allclose(-np.sum(np.diff(recall) * precision[:-1]), ours, rtol=1e-9)


def test_precision_recall_curve_keeps_the_points_past_full_recall():
    """Below the lowest-scored positive, scikit-learn 1.9 keeps every threshold's point
    (precision falling to the prevalence at recall 1); ties and a mask as in the others."""
    rng = np.random.default_rng(8)
    scores = np.round(rng.uniform(size=200), 1)
    labels = ((rng.uniform(size=200) < scores) & (scores >= 0.4)).astype(np.float64)
    mask = rng.uniform(size=200) < 0.9
    junk_scores, junk_labels = np.where(mask, scores, np.nan), np.where(mask, labels, 255.0)
    precision, recall, _ = metrics.precision_recall_curve(junk_scores, junk_labels, where=mask)
    sk_precision, sk_recall, _ = sklearn_pr(scores, labels, where=mask)
    assert np.sum(sk_recall == 1.0) == 5  # thresholds 0.0 to 0.4 all reach full recall
    np.testing.assert_allclose(
        dedup(precision, recall), dedup(sk_precision, sk_recall), rtol=1e-12, atol=1e-15
    )
    _, y, _ = kept(scores, labels, where=mask)
    np.testing.assert_allclose(np.min(precision), np.mean(y), rtol=1e-12)  # the prevalence


def test_curves_without_ties():
    """Distinct scores: the ROC curve is sklearn's point for point, thresholds included."""
    rng = np.random.default_rng(3)
    scores = rng.uniform(size=200)
    labels = (rng.uniform(size=200) < scores).astype(np.float64)
    fpr, tpr, thresholds = metrics.roc_curve(scores, labels)
    sk_fpr, sk_tpr, sk_thresholds = sklearn_roc(scores, labels)
    np.testing.assert_allclose(fpr, sk_fpr, rtol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, rtol=1e-12)
    np.testing.assert_array_equal(thresholds, sk_thresholds)
    precision, recall, pr_thresholds = metrics.precision_recall_curve(scores, labels)
    sk_precision, sk_recall, sk_pr_thresholds = sklearn_pr(scores, labels)
    np.testing.assert_allclose(precision, sk_precision, rtol=1e-12)
    np.testing.assert_allclose(recall, sk_recall, rtol=1e-12)
    np.testing.assert_array_equal(pr_thresholds, sk_pr_thresholds)


# ---------------------------------------------------------------------------
# 4. Calibration error and the reliability diagram.
# ---------------------------------------------------------------------------


def edge_probs(n_bins):
    """Probabilities exactly on the bin edges (as linspace and as k / n_bins), on the
    multiples of 0.1, 1/3, 0 and 1, each several times, and random ones."""
    rng = np.random.default_rng(n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    special = np.concatenate(
        [edges, np.arange(n_bins + 1) / n_bins, np.arange(11) / 10, [1 / 3, 2 / 3, 0.0, 1.0]]
    )
    special = np.repeat(special, 3)
    probs = np.concatenate([special, rng.uniform(size=200 - special.size)])  # one length
    labels = (rng.uniform(size=probs.size) < probs).astype(np.float64)
    return probs, labels


@pytest.mark.parametrize("n_bins", [3, 5, 10, 15])
def test_reliability_diagram_matches_calibration_curve(n_bins):
    probs, labels = edge_probs(n_bins)
    diagram = metrics.reliability_diagram(probs, labels, n_bins=n_bins)
    prob_true, prob_pred, weight, edges = (np.asarray(a) for a in diagram)
    assert prob_true.shape == prob_pred.shape == weight.shape == (n_bins,)
    np.testing.assert_allclose(edges, np.linspace(0.0, 1.0, n_bins + 1), rtol=1e-12, atol=1e-15)
    sk_true, sk_pred = skc.calibration_curve(_labels(labels), probs, n_bins=n_bins)
    counts = np.bincount(sklearn_bins(probs, n_bins), minlength=n_bins)
    np.testing.assert_array_equal(weight > 0, counts > 0)
    np.testing.assert_allclose(weight / weight.sum(), counts / counts.sum(), rtol=1e-12)
    np.testing.assert_allclose(prob_true[weight > 0], sk_true, rtol=1e-12)
    np.testing.assert_allclose(prob_pred[weight > 0], sk_pred, rtol=1e-12)
    assert np.all(np.isnan(prob_true[weight == 0])) and np.all(np.isnan(prob_pred[weight == 0]))
    ece = metrics.expected_calibration_error(probs, labels, n_bins=n_bins)
    np.testing.assert_allclose(ece, ref_ece(probs, labels, n_bins=n_bins), rtol=1e-9)
    gaps = np.abs(prob_true - prob_pred)[weight > 0]
    np.testing.assert_allclose(ece, np.sum(gaps * counts[counts > 0]) / counts.sum(), rtol=1e-9)


def test_reliability_diagram_has_empty_bins():
    probs = np.array([0.05, 0.05, 0.95, 0.97])
    labels = np.array([0.0, 1.0, 1.0, 1.0])
    prob_true, prob_pred, weight, _ = metrics.reliability_diagram(probs, labels, n_bins=10)
    assert np.count_nonzero(np.asarray(weight)) == 2
    assert np.sum(np.isnan(np.asarray(prob_true))) == 8
    np.testing.assert_allclose(np.asarray(prob_true)[[0, 9]], [0.5, 1.0])
    np.testing.assert_allclose(np.asarray(prob_pred)[[0, 9]], [0.05, 0.96])


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("n_bins", [1, 15])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ece_matches_float64_reference(variant, n_bins, jit):
    scores, labels, weights, mask = VARIANTS[variant]
    fn = functools.partial(metrics.expected_calibration_error, n_bins=n_bins)
    got = call(fn, scores, labels, weights, mask, jit=jit)
    assert_scalar(got, np.float64)
    np.testing.assert_allclose(got, ref_ece(scores, labels, weights, mask, n_bins), rtol=1e-9)


def test_ece_default_bins_and_weighted_diagram():
    got = metrics.expected_calibration_error(
        JUNK_SCORES, JUNK_LABELS, sample_weight=WEIGHTS, where=MASK
    )
    np.testing.assert_allclose(got, ref_ece(SCORES, LABELS, WEIGHTS, MASK, 15), rtol=1e-9)
    prob_true, prob_pred, weight, _ = (
        np.asarray(a)
        for a in metrics.reliability_diagram(
            JUNK_SCORES, JUNK_LABELS, sample_weight=WEIGHTS, where=MASK
        )
    )
    assert weight.shape == (15,)
    full = weight > 0
    gaps = np.abs(prob_true[full] - prob_pred[full])
    np.testing.assert_allclose(np.sum(weight[full] * gaps) / weight.sum(), got, rtol=1e-9)


def test_ece_of_a_perfectly_calibrated_bin_is_zero():
    probs = np.array([0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75])
    labels = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(
        metrics.expected_calibration_error(probs, labels, n_bins=2), 0.0, atol=1e-15
    )
    np.testing.assert_allclose(
        metrics.expected_calibration_error(probs, 1 - labels, n_bins=2), 0.5, rtol=1e-12
    )


# ---------------------------------------------------------------------------
# 5. Probabilistic metrics from logits.
# ---------------------------------------------------------------------------

LOGITS = np.random.default_rng(4).normal(0.0, 3.0, SHAPE)
LOGITS[0, :4] = [40.0, -40.0, 700.0, -700.0]  # beyond the clipping of probabilities


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_log_loss_from_logits_is_the_exact_reference(jit):
    fn = functools.partial(metrics.log_loss, from_logits=True)
    labels = LABELS.copy()
    labels[0, :4] = [0.0, 1.0, 0.0, 1.0]
    for weights, mask in [(None, None), (WEIGHTS, MASK)]:
        logits = LOGITS if mask is None else np.where(mask, LOGITS, np.nan)
        y = labels if mask is None else np.where(mask, labels, JUNK_LABEL)
        got = call(fn, logits, y, weights, mask, jit=jit)
        want = ref_logit_log_loss(LOGITS, labels, weights, mask)
        np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize("name", ["brier_score", "expected_calibration_error", "log_loss"])
def test_from_logits_equals_sigmoid_of_logits(name):
    logits = np.clip(LOGITS, -8.0, 8.0)  # log(1 - p) without cancellation
    fn = getattr(metrics, name)
    got = fn(logits, LABELS, from_logits=True, sample_weight=WEIGHTS)
    want = fn(helpers.sigmoid(logits), LABELS, sample_weight=WEIGHTS)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    if name != "expected_calibration_error":
        sk = sklearn_metric(name, helpers.sigmoid(logits), LABELS, WEIGHTS)
        np.testing.assert_allclose(got, sk, rtol=1e-6)


def test_reliability_diagram_from_logits():
    logits = np.clip(LOGITS, -8.0, 8.0)
    got = metrics.reliability_diagram(logits, LABELS, from_logits=True, n_bins=10)
    want = metrics.reliability_diagram(helpers.sigmoid(logits), LABELS, n_bins=10)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9)


# ---------------------------------------------------------------------------
# 6. Streaming.
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# 7. Bad inputs.
# ---------------------------------------------------------------------------

ALL_FUNCTIONS = [
    *SCALAR_METRICS,
    "confusion_matrix",
    "roc_curve",
    "precision_recall_curve",
    "expected_calibration_error",
    "reliability_diagram",
]
GOOD_S = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.2])
GOOD_Y = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
BAD_LABELS = {"255": 255.0, "minus-1": -1.0}


def _with_bad_label(bad, dtype=np.float64):
    labels = GOOD_Y.copy()
    labels[3] = bad
    return labels.astype(dtype)


@pytest.mark.parametrize("bad", list(BAD_LABELS))
@pytest.mark.parametrize("name", ALL_FUNCTIONS)
def test_bad_labels_raise_eagerly(name, bad):
    fn = bcejax_metric(name)
    with pytest.raises(bcejax.InvalidInputError, match="labels"):
        fn(GOOD_S, _with_bad_label(BAD_LABELS[bad]))
    # the same label, masked out, is junk and passes
    keep = np.arange(GOOD_S.size) != 3
    fn(GOOD_S, _with_bad_label(BAD_LABELS[bad]), where=keep)


def test_uint8_mask_labels_raise():
    with pytest.raises(bcejax.InvalidInputError, match="labels"):
        metrics.roc_auc(GOOD_S, _with_bad_label(255, np.uint8))
    with pytest.raises(bcejax.InvalidInputError, match="labels"):
        metrics.f1_score(GOOD_S, _with_bad_label(-1, np.int32))


@pytest.mark.parametrize(
    "name", ["roc_auc", "average_precision", "f1_score", "log_loss", "expected_calibration_error"]
)
def test_bad_labels_raise_under_checked(name):
    fn = bcejax_metric(name)
    checked = bcejax.checked(fn)
    np.testing.assert_allclose(checked(GOOD_S, GOOD_Y), fn(GOOD_S, GOOD_Y), rtol=1e-12)
    for bad in BAD_LABELS.values():
        with pytest.raises(bcejax.InvalidInputError, match="labels"):
            checked(GOOD_S, _with_bad_label(bad))


def test_streaming_update_rejects_bad_labels():
    state = StreamingBinaryMetrics.empty()
    with pytest.raises(bcejax.InvalidInputError, match="labels"):
        state.update(GOOD_S, _with_bad_label(255.0))
    checked = bcejax.checked(lambda st, s, y: st.update(s, y))
    checked(state, GOOD_S, GOOD_Y)
    with pytest.raises(bcejax.InvalidInputError, match="labels"):
        checked(state, GOOD_S, _with_bad_label(-1.0))


@pytest.mark.parametrize("name", ["roc_auc", "f1_score", "log_loss", "confusion_matrix"])
def test_negative_sample_weight_raises(name):
    weights = np.ones(GOOD_S.size)
    weights[2] = -0.5
    fn = bcejax_metric(name)
    with pytest.raises(bcejax.InvalidInputError):
        fn(GOOD_S, GOOD_Y, sample_weight=weights)
    with pytest.raises(bcejax.InvalidInputError):
        bcejax.checked(lambda s, y, w: fn(s, y, sample_weight=w))(GOOD_S, GOOD_Y, weights)


@pytest.mark.parametrize("name", ["roc_auc", "average_precision", "f1_score", "log_loss"])
def test_shapes_that_do_not_broadcast_raise(name):
    fn = bcejax_metric(name)
    with pytest.raises(ValueError, match=r"(?s)(?=.*\(6,\))(?=.*\(4,\))"):
        fn(GOOD_S, GOOD_Y[:4])
    with pytest.raises(ValueError, match=r"(?s)(?=.*\(6,\))(?=.*\(3,\))"):
        fn(GOOD_S, GOOD_Y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match=r"(?s)(?=.*\(6,\))(?=.*\(5,\))"):
        fn(GOOD_S, GOOD_Y, where=np.ones(5, bool))


def test_shape_error_names_both_arguments():
    with pytest.raises(ValueError, match=r"(?s)(?=.*labels)(?=.*\(6,\))(?=.*\(4,\))") as info:
        metrics.roc_auc(GOOD_S, GOOD_Y[:4])
    assert not isinstance(info.value, bcejax.InvalidInputError)


@pytest.mark.parametrize("n_bins", [0, -3])
def test_bad_n_bins(n_bins):
    with pytest.raises(ValueError, match="n_bins"):
        metrics.expected_calibration_error(GOOD_S, GOOD_Y, n_bins=n_bins)
    with pytest.raises(ValueError, match="n_bins"):
        metrics.reliability_diagram(GOOD_S, GOOD_Y, n_bins=n_bins)


@pytest.mark.parametrize("num_bins", [1, 0])
def test_bad_num_bins(num_bins):
    with pytest.raises(ValueError, match="num_bins"):
        StreamingBinaryMetrics.empty(num_bins=num_bins)


def test_fbeta_requires_beta():
    with pytest.raises(TypeError):
        metrics.fbeta_score(GOOD_S, GOOD_Y)
    np.testing.assert_allclose(
        metrics.fbeta_score(GOOD_S, GOOD_Y, beta=1.0), metrics.f1_score(GOOD_S, GOOD_Y)
    )
