"""ECE and the reliability diagram against calibration_curve and a float64 reference; logits.

Probabilities on the bin edges, weights and ``where``; the probabilistic metrics from logits.
"""

from __future__ import annotations

import functools

import helpers
import numpy as np
import pytest
from metric_inputs import (
    JUNK_LABEL,
    JUNK_LABELS,
    JUNK_SCORES,
    LABELS,
    MASK,
    SCORES,
    SHAPE,
    VARIANTS,
    WEIGHTS,
    assert_scalar,
    call,
)
from references import classes, ref_ece, ref_logit_log_loss, sklearn_bins, sklearn_metric
from sklearn import calibration as skc

from bcejax import metrics

# ---------------------------------------------------------------------------
# Calibration error and the reliability diagram.
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
    sk_true, sk_pred = skc.calibration_curve(classes(labels), probs, n_bins=n_bins)
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
# Probabilistic metrics from logits.
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
