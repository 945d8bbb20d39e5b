"""The ROC and precision-recall curves against scikit-learn: points, static lengths, areas."""

from __future__ import annotations

import helpers
import numpy as np
import pytest
from metric_inputs import VARIANTS, call
from references import classes, kept, sklearn_metric
from sklearn import metrics as skm

from bcejax import metrics


def dedup(*columns):
    """The rows of the stacked columns with consecutive duplicate rows removed."""
    rows = np.stack([np.asarray(c, np.float64) for c in columns], axis=1)
    if rows.shape[0] == 0:
        return rows
    keep = np.ones(rows.shape[0], bool)
    keep[1:] = np.any(rows[1:] != rows[:-1], axis=1)
    return rows[keep]


@helpers.quiet
def sklearn_roc(scores, labels, sample_weight=None, where=None):
    s, y, w = kept(scores, labels, sample_weight, where)
    return skm.roc_curve(classes(y), s, sample_weight=w, drop_intermediate=False)


@helpers.quiet
def sklearn_pr(scores, labels, sample_weight=None, where=None):
    s, y, w = kept(scores, labels, sample_weight, where)
    return skm.precision_recall_curve(classes(y), s, sample_weight=w, drop_intermediate=False)


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


@pytest.mark.parametrize("weighted", [False, True])
def test_precision_recall_curve_without_positives_has_recall_one(weighted):
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.35])
    y = np.zeros(5)
    w = np.array([1.0, 2.0, 0.5, 1.0, 3.0]) if weighted else None
    with pytest.warns(UserWarning, match="No positive class"):
        want = skm.precision_recall_curve(y, s, sample_weight=w, drop_intermediate=False)
    precision, recall, _ = metrics.precision_recall_curve(s, y, sample_weight=w)
    np.testing.assert_array_equal(recall, [1, 1, 1, 1, 1, 0])
    np.testing.assert_allclose(dedup(precision, recall), dedup(*want[:2]), rtol=1e-12)
