"""bcejax.calibration: temperature scaling, Platt scaling and threshold selection.

* ``fit_temperature``: the NLL minimum, found again by a float64 golden-section search, with
  a derivative ~0 there; binary and multiclass; it lowers the ECE of an over-confident model;
  ``where`` drops entries (NaN junk included).
* ``fit_platt``: scikit-learn's ``_sigmoid_calibration`` (a = -A, b = -B) and a float64 Newton
  solve of Platt's smoothed-target objective.
* ``best_threshold``: a brute force over every distinct score for f1, youden and mcc, with
  weights and ``where``; unknown metric names.
* Eager and ``jit``; labels outside {0, 1}.
"""

from __future__ import annotations

import functools

import helpers
import jax
import numpy as np
import pytest
from references import kept
from sklearn import metrics as skm
from sklearn.calibration import _sigmoid_calibration

import bcejax
from bcejax import calibration, metrics

GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0

# ---------------------------------------------------------------------------
# Float64 references.
# ---------------------------------------------------------------------------


def _logsumexp(x, axis=-1):
    top = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def binary_nll(logits, labels, temperature):
    z = np.asarray(logits, np.float64) / temperature
    return np.mean(np.logaddexp(0.0, z) - labels * z)


def binary_nll_slope(logits, labels, temperature):
    """d/dT of the mean BCE of sigmoid(logits / T)."""
    x = np.asarray(logits, np.float64)
    return np.mean((helpers.sigmoid(x / temperature) - labels) * x) * (-1.0 / temperature**2)


def multiclass_nll(logits, labels, temperature):
    z = np.asarray(logits, np.float64) / temperature
    picked = np.take_along_axis(z, labels[:, None], axis=-1)[:, 0]
    return np.mean(_logsumexp(z) - picked)


def multiclass_nll_slope(logits, labels, temperature):
    x = np.asarray(logits, np.float64)
    z = x / temperature
    probs = np.exp(z - _logsumexp(z)[:, None])
    picked = np.take_along_axis(x, labels[:, None], axis=-1)[:, 0]
    return np.mean(np.sum(probs * x, axis=-1) - picked) * (-1.0 / temperature**2)


def golden_section_min(fn, lo, hi, iters=200):
    """The minimizer of a unimodal fn on [lo, hi], to float64 precision."""
    a, b = lo, hi
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    fc, fd = fn(c), fn(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - GOLDEN * (b - a)
            fc = fn(c)
        else:
            a, c, fc = c, d, fd
            d = a + GOLDEN * (b - a)
            fd = fn(d)
        if b - a < 1e-15 * max(1.0, abs(a)):
            break
    return (a + b) / 2


def ref_temperature(nll, logits, labels):
    """Golden-section search over the inverse temperature (the NLL is convex in it)."""
    inverse = golden_section_min(lambda beta: nll(logits, labels, 1.0 / beta), 1e-4, 20.0)
    return 1.0 / inverse


def ref_platt(scores, labels):
    """Newton's method on Platt's objective with the smoothed targets, in float64."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, np.float64)
    n_pos, n_neg = np.sum(y == 1), np.sum(y == 0)
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(ab):
        z = ab[0] * s + ab[1]
        return np.sum(np.logaddexp(0.0, z) - t * z)

    ab = np.array([0.0, np.log((n_pos + 1) / (n_neg + 1))])
    for _ in range(100):
        p = helpers.sigmoid(ab[0] * s + ab[1])
        grad = np.array([np.sum((p - t) * s), np.sum(p - t)])
        h = p * (1 - p)
        hess = np.array([[np.sum(h * s * s), np.sum(h * s)], [np.sum(h * s), np.sum(h)]])
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while loss(ab - scale * step) > loss(ab) and scale > 1e-10:
            scale /= 2
        ab = ab - scale * step
        if np.max(np.abs(scale * step)) < 1e-15:
            break
    return ab


@helpers.quiet
def sklearn_threshold_metric(metric, s, y, w, threshold):
    """f1, youden (tpr - fpr) or mcc of predictions s >= threshold, by scikit-learn."""
    y, pred = y.astype(np.int64), (s >= threshold).astype(np.int64)
    if metric == "f1":
        return skm.f1_score(y, pred, sample_weight=w, zero_division=0.0)
    if metric == "mcc":
        return skm.matthews_corrcoef(y, pred, sample_weight=w)
    (tn, fp), (fn, tp) = skm.confusion_matrix(y, pred, labels=[0, 1], sample_weight=w)
    return tp / (tp + fn) - fp / (fp + tn)


# ---------------------------------------------------------------------------
# Inputs.
# ---------------------------------------------------------------------------


def binary_model(n, *, seed, overconfidence=3.0):
    """Labels ~ Bernoulli(sigmoid(z)); the model reports overconfidence * z."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    labels = (rng.uniform(size=n) < helpers.sigmoid(z)).astype(np.float64)
    return overconfidence * z, labels


def multiclass_model(n, k, *, seed, overconfidence=3.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, (n, k))
    labels = np.argmax(z + rng.gumbel(size=(n, k)), axis=-1)  # a draw from softmax(z)
    return overconfidence * z, labels


# ---------------------------------------------------------------------------
# 1. Temperature scaling.
# ---------------------------------------------------------------------------


# Jitted once: every call with the same shapes reuses the compiled fit.
FIT_TEMPERATURE = jax.jit(calibration.fit_temperature)
FIT_PLATT = jax.jit(calibration.fit_platt)
N_BINARY = 3000


@pytest.mark.parametrize(
    "overconfidence, jit", [(3.0, False), (0.5, True)], ids=["over-eager", "under-jit"]
)
def test_binary_temperature_is_the_nll_minimum(overconfidence, jit):
    logits, labels = binary_model(N_BINARY, seed=0, overconfidence=overconfidence)
    fit = FIT_TEMPERATURE if jit else calibration.fit_temperature
    temperature = fit(logits, labels)
    assert np.shape(temperature) == ()
    assert temperature.dtype == np.float64
    t = float(temperature)
    assert t > 0
    want = ref_temperature(binary_nll, logits, labels)
    np.testing.assert_allclose(t, want, rtol=1e-5)
    assert abs(binary_nll_slope(logits, labels, t)) < 1e-6
    # it is the minimum: both neighbours are worse
    assert binary_nll(logits, labels, t) <= binary_nll(logits, labels, t * 1.01)
    assert binary_nll(logits, labels, t) <= binary_nll(logits, labels, t / 1.01)
    # over-confident logits get T > 1, under-confident ones T < 1
    assert (t > 1) == (overconfidence > 1)


def test_temperature_lowers_the_ece_of_an_overconfident_model():
    logits, labels = binary_model(N_BINARY, seed=1)
    t = FIT_TEMPERATURE(logits, labels)
    before = metrics.expected_calibration_error(logits, labels, from_logits=True)
    after = metrics.expected_calibration_error(logits / t, labels, from_logits=True)
    assert float(after) < 0.5 * float(before), (before, after)
    np.testing.assert_allclose(t, 3.0, rtol=0.15)  # the true temperature, up to sampling
    # the ranking is unchanged, so is the AUC
    np.testing.assert_allclose(
        metrics.roc_auc(logits / t, labels), metrics.roc_auc(logits, labels), rtol=1e-12
    )


def test_multiclass_temperature_is_the_nll_minimum():
    logits, labels = multiclass_model(2000, 5, seed=2)
    temperature = FIT_TEMPERATURE(logits, labels)
    assert np.shape(temperature) == ()
    t = float(temperature)
    want = ref_temperature(multiclass_nll, logits, labels)
    np.testing.assert_allclose(t, want, rtol=1e-5)
    assert abs(multiclass_nll_slope(logits, labels, t)) < 1e-6
    np.testing.assert_allclose(t, 3.0, rtol=0.15)


def test_binary_temperature_where_drops_entries():
    logits, labels = binary_model(N_BINARY, seed=3)
    mask = np.random.default_rng(3).uniform(size=N_BINARY) < 0.7
    junk_logits = np.where(mask, logits, np.nan)
    junk_labels = np.where(mask, labels, 255.0)
    t = calibration.fit_temperature(junk_logits, junk_labels, where=mask)
    np.testing.assert_allclose(
        t, ref_temperature(binary_nll, logits[mask], labels[mask]), rtol=1e-5
    )


def test_multiclass_temperature_where_drops_examples():
    logits, labels = multiclass_model(2000, 5, seed=4)
    mask = np.random.default_rng(4).uniform(size=2000) < 0.7
    want = ref_temperature(multiclass_nll, logits[mask], labels[mask])
    fit = functools.partial(FIT_TEMPERATURE, where=mask)
    # finite junk in the dropped examples
    np.testing.assert_allclose(fit(np.where(mask[:, None], logits, 50.0), labels), want, rtol=1e-5)
    # NaN junk (padding) in the dropped examples, as for the binary fit and the metrics
    np.testing.assert_allclose(
        fit(np.where(mask[:, None], logits, np.nan), labels), want, rtol=1e-5
    )


def test_float32_temperature():
    logits, labels = binary_model(2000, seed=6)
    t = calibration.fit_temperature(logits.astype(np.float32), labels.astype(np.float32))
    assert t.dtype == np.float32
    np.testing.assert_allclose(t, ref_temperature(binary_nll, logits, labels), rtol=1e-3)


# ---------------------------------------------------------------------------
# 2. Platt scaling.
# ---------------------------------------------------------------------------


def platt_data(kind):
    rng = np.random.default_rng({"margins": 7, "wide": 8, "imbalanced": 9}[kind])
    n = 400  # one shape: one compile of the jitted fit
    if kind == "margins":  # SVM-like decision values
        s = rng.normal(0.0, 1.5, n)
        y = rng.uniform(size=n) < helpers.sigmoid(1.7 * s - 0.5)
    elif kind == "wide":  # a wide score range, a shallow slope
        s = rng.normal(0.0, 8.0, n)
        y = rng.uniform(size=n) < helpers.sigmoid(0.4 * s + 0.3)
    else:  # few positives
        s = rng.normal(-1.0, 1.0, n)
        y = rng.uniform(size=n) < helpers.sigmoid(2.0 * s - 2.0)
    return s, y.astype(np.float64)


@pytest.mark.parametrize("kind", ["margins", "wide", "imbalanced"])
def test_platt_matches_sklearn(kind):
    scores, labels = platt_data(kind)
    a, b = FIT_PLATT(scores, labels)
    assert np.shape(a) == np.shape(b) == ()
    big_a, big_b = _sigmoid_calibration(scores, labels)
    np.testing.assert_allclose([a, b], [-big_a, -big_b], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose([a, b], ref_platt(scores, labels), rtol=1e-6, atol=1e-9)
    # the calibrated probabilities are sklearn's
    np.testing.assert_allclose(
        helpers.sigmoid(float(a) * scores + float(b)),
        1.0 / (1.0 + np.exp(big_a * scores + big_b)),
        rtol=1e-4,
    )


def test_platt_eager_and_jit_with_where():
    scores, labels = platt_data("margins")
    mask = np.random.default_rng(10).uniform(size=scores.size) < 0.75
    want = ref_platt(scores[mask], labels[mask])
    junk_scores = np.where(mask, scores, np.nan)
    junk_labels = np.where(mask, labels, 255.0)
    got = calibration.fit_platt(junk_scores, junk_labels, where=mask)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    got_jit = FIT_PLATT(junk_scores, junk_labels, where=mask)
    np.testing.assert_allclose(got_jit, want, rtol=1e-6, atol=1e-9)
    big_a, big_b = _sigmoid_calibration(scores[mask], labels[mask])
    np.testing.assert_allclose(got, [-big_a, -big_b], rtol=1e-4, atol=1e-6)


def test_platt_on_separable_data_stays_finite():
    """Perfectly separated classes: the smoothed targets keep the fit finite."""
    scores = np.array([-2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0])
    labels = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    a, b = FIT_PLATT(scores, labels)
    assert np.isfinite(float(a)) and np.isfinite(float(b)) and float(a) > 0
    np.testing.assert_allclose([a, b], ref_platt(scores, labels), rtol=1e-5, atol=1e-8)
    big_a, big_b = _sigmoid_calibration(scores, labels)
    np.testing.assert_allclose([a, b], [-big_a, -big_b], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# 3. Threshold selection.
# ---------------------------------------------------------------------------

METRIC_FUNCTIONS = {
    "f1": lambda s, y, t, **kw: metrics.f1_score(s, y, threshold=t, **kw),
    "mcc": lambda s, y, t, **kw: metrics.matthews_corrcoef(s, y, threshold=t, **kw),
}


def threshold_data(seed=11, n=150):
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    labels = (rng.uniform(size=n) < helpers.sigmoid(z)).astype(np.float64)
    scores = np.round(helpers.sigmoid(z + rng.normal(0.0, 1.2, n)), 2)  # ties
    weights = rng.uniform(0.2, 2.0, n)
    weights[rng.uniform(size=n) < 0.1] = 0.0
    mask = rng.uniform(size=n) < 0.8
    return scores, labels, weights, mask


SETTINGS = ["plain", "weights-where"]


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("metric", ["f1", "youden", "mcc"])
def test_best_threshold_is_the_brute_force_maximum(metric, setting):
    scores, labels, weights, mask = threshold_data()
    kwargs = {}
    if setting == "weights-where":
        kwargs = {"sample_weight": weights, "where": mask}
        call_scores = np.where(mask, scores, np.nan)
        call_labels = np.where(mask, labels, 255.0)
    else:
        call_scores, call_labels = scores, labels
    threshold, value = calibration.best_threshold(call_scores, call_labels, metric=metric, **kwargs)
    assert np.shape(threshold) == np.shape(value) == ()
    s, y, w = kept(scores, labels, kwargs.get("sample_weight"), kwargs.get("where"))
    t = float(threshold)
    assert t in set(s.tolist())  # one of the (kept) scores
    brute = {c: sklearn_threshold_metric(metric, s, y, w, c) for c in np.unique(s)}
    best = max(brute.values())
    np.testing.assert_allclose(value, best, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(value, brute[t], rtol=1e-9, atol=1e-12)
    assert all(float(value) >= v - 1e-12 for v in brute.values())


@pytest.mark.parametrize("metric", ["f1", "mcc"])
def test_best_threshold_value_is_the_metric_function(metric):
    scores, labels, weights, mask = threshold_data(seed=12)
    junk_scores = np.where(mask, scores, np.nan)
    junk_labels = np.where(mask, labels, 255.0)
    kwargs = {"sample_weight": weights, "where": mask}
    threshold, value = calibration.best_threshold(junk_scores, junk_labels, metric=metric, **kwargs)
    direct = METRIC_FUNCTIONS[metric](junk_scores, junk_labels, threshold, **kwargs)
    np.testing.assert_allclose(value, direct, rtol=1e-9, atol=1e-12)


def test_youden_value_is_tpr_minus_fpr_from_the_confusion_matrix():
    scores, labels, weights, _ = threshold_data(seed=13)
    threshold, value = calibration.best_threshold(
        scores, labels, metric="youden", sample_weight=weights
    )
    (tn, fp), (fn, tp) = np.asarray(
        metrics.confusion_matrix(scores, labels, threshold=threshold, sample_weight=weights)
    )
    np.testing.assert_allclose(value, tp / (tp + fn) - fp / (fp + tn), rtol=1e-9)


@pytest.mark.parametrize("metric", ["f1", "youden", "mcc"])
def test_best_threshold_under_jit(metric):
    scores, labels, weights, mask = threshold_data(seed=14)
    fn = functools.partial(calibration.best_threshold, metric=metric)
    eager = fn(scores, labels, sample_weight=weights, where=mask)
    jitted = jax.jit(fn)(scores, labels, sample_weight=weights, where=mask)
    np.testing.assert_allclose(jitted[1], eager[1], rtol=1e-12)
    s, y, w = kept(scores, labels, weights, mask)
    np.testing.assert_allclose(
        sklearn_threshold_metric(metric, s, y, w, float(jitted[0])), eager[1], rtol=1e-9
    )


def test_best_threshold_separable():
    scores = np.array([0.1, 0.3, 0.35, 0.6, 0.8, 0.9])
    labels = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    for metric in ["f1", "youden", "mcc"]:
        threshold, value = calibration.best_threshold(scores, labels, metric=metric)
        assert float(threshold) == 0.6, metric
        np.testing.assert_allclose(value, 1.0, rtol=1e-12, err_msg=metric)


def test_best_threshold_default_metric_is_f1():
    scores, labels, _, _ = threshold_data(seed=15)
    default = calibration.best_threshold(scores, labels)
    f1 = calibration.best_threshold(scores, labels, metric="f1")
    np.testing.assert_array_equal(np.asarray(default), np.asarray(f1))


def test_unknown_metric_lists_the_choices():
    scores, labels, _, _ = threshold_data()
    with pytest.raises(ValueError, match=r"(?s)(?=.*accuracy_typo)(?=.*f1)(?=.*youden)(?=.*mcc)"):
        calibration.best_threshold(scores, labels, metric="accuracy_typo")


# ---------------------------------------------------------------------------
# 4. Bad labels.
# ---------------------------------------------------------------------------

BAD_LABELS = {"255": 255.0, "minus-1": -1.0}
FITS = {
    "fit_temperature": calibration.fit_temperature,
    "fit_platt": calibration.fit_platt,
    "best_threshold": calibration.best_threshold,
}


@pytest.mark.parametrize("bad", list(BAD_LABELS))
@pytest.mark.parametrize("name", list(FITS))
def test_bad_labels_raise(name, bad):
    scores, labels = platt_data("margins")
    labels = labels.copy()
    labels[7] = BAD_LABELS[bad]
    with pytest.raises(bcejax.InvalidInputError, match="labels"):
        FITS[name](scores, labels)


def test_masked_bad_labels_pass():
    scores, labels, _, mask = threshold_data()
    junk_labels = np.where(mask, labels, 255.0)
    threshold, value = calibration.best_threshold(scores, junk_labels, where=mask)
    s, y, _ = kept(scores, labels, where=mask)
    brute = max(sklearn_threshold_metric("f1", s, y, None, c) for c in np.unique(s))
    np.testing.assert_allclose(value, brute, rtol=1e-9)
    assert float(threshold) in set(s.tolist())


@pytest.mark.parametrize("name", list(FITS))
def test_bad_labels_raise_under_checked(name):
    scores, labels = platt_data("margins")
    checked = bcejax.checked(FITS[name])
    checked(scores, labels)
    for bad in BAD_LABELS.values():
        bad_labels = labels.copy()
        bad_labels[3] = bad
        with pytest.raises(bcejax.InvalidInputError, match="labels"):
            checked(scores, bad_labels)


def test_negative_weight_raises_in_best_threshold():
    scores, labels, weights, _ = threshold_data()
    weights = weights.copy()
    weights[0] = -1.0
    with pytest.raises(bcejax.InvalidInputError):
        calibration.best_threshold(scores, labels, sample_weight=weights)


def test_shape_mismatch_raises():
    scores, labels = platt_data("margins")
    for fn in FITS.values():
        with pytest.raises(ValueError, match="labels"):
            fn(scores, labels[:-1])
