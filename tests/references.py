"""Float64 NumPy references of the losses and metrics, from the formulas, never by bcejax."""

from __future__ import annotations

import itertools

import helpers
import numpy as np
from sklearn import metrics as skm


def f64(value):
    return None if value is None else np.asarray(value, np.float64)


def softplus(x):
    """``log(1 + e^x)`` without overflow: ``-log(sigmoid(-x))``."""
    return np.logaddexp(0.0, x)


# ---------------------------------------------------------------------------
# The elementwise binary losses.
# ---------------------------------------------------------------------------


def smooth(y, a):
    return y * (1 - a) + a / 2


def coef(value):
    """A missing weight is 1."""
    return 1.0 if value is None else f64(value)


def _alpha_t(y, alpha):
    return 1.0 if alpha is None else alpha * y + (1 - alpha) * (1 - y)


def _prob_wrong_logits(x, y):
    """``1 - p_t = (1 - y) p + y (1 - p)``; both terms are >= 0, so no cancellation."""
    return (1 - y) * helpers.sigmoid(x) + y * helpers.sigmoid(-x)


def ref_sigmoid_bce(x, y, *, weights=None, pos_weight=None, label_smoothing=0.0):
    x, y = f64(x), smooth(f64(y), float(label_smoothing))
    pos = coef(pos_weight) * y * softplus(-x)  # -log sigmoid(x)
    neg = (1 - y) * softplus(x)  # -log(1 - sigmoid(x))
    return coef(weights) * (pos + neg)


def ref_sigmoid_focal(x, y, *, alpha=None, gamma=2.0, weights=None, label_smoothing=0.0):
    x, y = f64(x), smooth(f64(y), float(label_smoothing))
    bce = y * softplus(-x) + (1 - y) * softplus(x)
    factor = _prob_wrong_logits(x, y) ** float(gamma)  # numpy: 0.0 ** 0 == 1
    return coef(weights) * _alpha_t(y, f64(alpha)) * factor * bce


def ref_sigmoid_asymmetric(x, y, *, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, weights=None):
    x, y, m = f64(x), f64(y), float(clip)
    positive = y * helpers.sigmoid(-x) ** float(gamma_pos) * softplus(-x)
    shifted = np.maximum(helpers.sigmoid(x) - m, 0.0)  # p_m
    # -log(1 - p_m), with 1 - p_m = min(1 - p + m, 1); for m = 0 it is softplus(x).
    nll = softplus(x) if m == 0 else -np.log(np.minimum(helpers.sigmoid(-x) + m, 1.0))
    negative = (1 - y) * shifted ** float(gamma_neg) * nll
    return coef(weights) * (positive + negative)


def ref_sigmoid_poly1(x, y, *, epsilon=1.0, weights=None, pos_weight=None, label_smoothing=0.0):
    bce = ref_sigmoid_bce(
        x, y, weights=weights, pos_weight=pos_weight, label_smoothing=label_smoothing
    )
    q = _prob_wrong_logits(f64(x), smooth(f64(y), float(label_smoothing)))
    return bce + float(epsilon) * coef(weights) * q


def _clip_probs(p, eps, dtype):
    # The bounds are those of the input dtype: 1 - eps rounds in float32 (so does Keras').
    lo = np.asarray(eps, dtype)
    hi = np.asarray(1, dtype) - lo
    return np.clip(p, np.float64(lo), np.float64(hi))


def ref_bce_probs(
    p,
    y,
    *,
    weights=None,
    pos_weight=None,
    label_smoothing=0.0,
    eps=None,
    dtype=np.float64,
):
    p, y = f64(p), smooth(f64(y), float(label_smoothing))
    if eps is not None:  # Keras: clip p to [eps, 1 - eps]
        p = _clip_probs(p, eps, dtype)
    with np.errstate(divide="ignore"):  # PyTorch: each log clamped at -100
        log_p = np.maximum(np.log(p), -100.0)
        log_not_p = np.maximum(np.log1p(-p), -100.0)
    return -coef(weights) * (coef(pos_weight) * y * log_p + (1 - y) * log_not_p)


def ref_binary_focal(
    p,
    y,
    *,
    alpha=None,
    gamma=2.0,
    weights=None,
    label_smoothing=0.0,
    eps=1e-7,
    dtype=np.float64,
):
    y = smooth(f64(y), float(label_smoothing))
    p = _clip_probs(f64(p), eps, dtype)
    bce = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    q = y * (1 - p) + (1 - y) * p  # from the clipped p
    return coef(weights) * _alpha_t(y, f64(alpha)) * q ** float(gamma) * bce


# ---------------------------------------------------------------------------
# The softmax losses, classes on the last axis.
# ---------------------------------------------------------------------------


def log_softmax(x, mask=None):
    """``x - log(sum(exp(x)))`` over the last axis; masked classes are left out (-inf)."""
    x = f64(x)
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    m = np.max(x, -1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)  # a fully masked row: its values are never used
    with np.errstate(invalid="ignore", divide="ignore"):
        shifted = x - m
        return shifted - np.log(np.sum(np.exp(shifted), -1, keepdims=True))


def softmax(x, mask=None):
    with np.errstate(invalid="ignore"):
        p = np.exp(log_softmax(x, mask))
    return np.nan_to_num(p) if mask is None else np.where(mask, np.nan_to_num(p), 0.0)


def _weighted_sum(weights, values):
    """``sum_c w_c values_c``, where a zero weight adds 0 (not 0 * inf)."""
    with np.errstate(invalid="ignore"):
        return np.sum(np.where(weights != 0, weights * values, 0.0), -1)


def smoothed(y, smoothing, mask):
    """``y (1 - a) + a / K`` with ``K`` the number of unmasked classes; 0 on masked classes."""
    num_classes = y.shape[-1] if mask is None else np.maximum(mask.sum(-1, keepdims=True), 1)
    y = y * (1 - smoothing) + smoothing / num_classes
    return y if mask is None else np.where(mask, y, 0.0)


def _batch_masked(loss, batch_mask):
    return loss if batch_mask is None else np.where(batch_mask, loss, 0.0)


def ref_ce(x, y, *, smoothing=0.0, class_weights=None, mask=None, batch_mask=None):
    """``-sum_c w_c y_c log softmax(x)_c``, ``y`` smoothed over the unmasked classes."""
    weights = smoothed(f64(y), float(smoothing), mask)
    if class_weights is not None:
        weights = weights * f64(class_weights)
    return _batch_masked(_weighted_sum(weights, -log_softmax(x, mask)), batch_mask)


def ref_ce_int(
    x, t, *, smoothing=0.0, class_weights=None, mask=None, batch_mask=None, ignore_index=None
):
    """PyTorch CrossEntropyLoss(reduction="none"): the one-hot version; ignored rows give 0."""
    t = np.asarray(t)
    one_hot = (t[..., None] == np.arange(np.shape(x)[-1])).astype(np.float64)
    loss = ref_ce(
        x,
        one_hot,
        smoothing=smoothing,
        class_weights=class_weights,
        mask=mask,
        batch_mask=batch_mask,
    )
    return loss if ignore_index is None else np.where(t == ignore_index, 0.0, loss)


def ref_focal(x, t, *, gamma, alpha=None, mask=None, batch_mask=None):
    """``-alpha_t (1 - p_t)^gamma log p_t``, ``1 - p_t`` summed over the other classes."""
    t = np.asarray(t)
    log_p = log_softmax(x, mask)
    target = t[..., None] == np.arange(np.shape(x)[-1])
    unmasked = np.ones(target.shape, bool) if mask is None else np.asarray(mask, bool)
    target &= unmasked  # a masked target class adds 0
    with np.errstate(invalid="ignore"):
        others = np.sum(np.where(~target & unmasked, np.exp(log_p), 0.0), -1)  # 1 - p_t
        log_pt = np.sum(np.where(target, log_p, 0.0), -1)
    if alpha is None:
        alpha_t = 1.0
    elif np.ndim(alpha) == 0:
        alpha_t = float(alpha)
    else:
        alpha_t = f64(alpha).reshape(-1)[np.clip(t, 0, np.size(alpha) - 1)]
    loss = np.where(target.any(-1), alpha_t * others ** float(gamma) * -log_pt, 0.0)
    return _batch_masked(loss, batch_mask)


def ref_poly(x, y, *, epsilon, mask=None, batch_mask=None):
    """``CE + epsilon sum_c y_c (1 - p_c)``."""
    y = f64(y) if mask is None else np.where(mask, f64(y), 0.0)
    poly = _weighted_sum(y, -np.expm1(log_softmax(x, mask)))
    ce = ref_ce(x, y, mask=mask)
    return _batch_masked(ce + float(epsilon) * poly, batch_mask)


# ---------------------------------------------------------------------------
# The overlap losses for segmentation, one image at a time, masked pixels cut out.
# ---------------------------------------------------------------------------


def _images(preds, labels, where):
    """Per image: the float64 predictions and labels of its unmasked pixels, flattened."""
    preds, labels = f64(preds), f64(labels)
    mask = np.ones(preds.shape, bool) if where is None else np.broadcast_to(where, preds.shape)
    return [(p[m], y[m]) for p, y, m in zip(preds, labels, mask, strict=True)]


def _soft_counts(pred, y, from_logits):
    """(TP, FP, FN) of one image; ``1 - p`` is ``sigmoid(-x)`` from logits."""
    p, not_p = (helpers.sigmoid(pred), helpers.sigmoid(-pred)) if from_logits else (pred, 1 - pred)
    return np.sum(p * y), np.sum(p * (1 - y)), np.sum(not_p * y)


def _ratio(num, den):
    return num / den if den > 0 else 0.0


def ref_dice(preds, labels, *, smooth=1.0, from_logits=True, where=None):
    out = []
    for pred, y in _images(preds, labels, where):
        tp, fp, fn = _soft_counts(pred, y, from_logits)
        out.append(_ratio(fp + fn, 2 * tp + fp + fn + smooth))
    return np.array(out)


def ref_jaccard(preds, labels, *, smooth=1.0, from_logits=True, where=None):
    out = []
    for pred, y in _images(preds, labels, where):
        tp, fp, fn = _soft_counts(pred, y, from_logits)
        out.append(_ratio(fp + fn, tp + fp + fn + smooth))
    return np.array(out)


def ref_tversky(preds, labels, *, alpha=0.3, beta=0.7, smooth=1.0, from_logits=True, where=None):
    out = []
    for pred, y in _images(preds, labels, where):
        tp, fp, fn = _soft_counts(pred, y, from_logits)
        out.append(_ratio(alpha * fp + beta * fn, tp + alpha * fp + beta * fn + smooth))
    return np.array(out)


def ref_bce_dice(
    preds,
    labels,
    *,
    bce_weight=1.0,
    dice_weight=1.0,
    smooth=1.0,
    from_logits=True,
    where=None,
):
    dice = ref_dice(preds, labels, smooth=smooth, from_logits=from_logits, where=where)
    bce = ref_sigmoid_bce if from_logits else ref_bce_probs
    means = [
        np.mean(bce(pred, y)) if pred.size else 0.0 for pred, y in _images(preds, labels, where)
    ]
    return bce_weight * np.array(means) + dice_weight * dice


def _jaccard_set_loss(mistakes, foreground):
    """Delta(M) = |M| / |F u M|, 0 for an empty union."""
    union = np.sum(mistakes | foreground)
    return np.sum(mistakes) / union if union else 0.0


def ref_lovasz_extension(errors, foreground):
    """Choquet integral of Delta at m = max(errors, 0): sum over the levels of m."""
    m = np.maximum(f64(errors), 0.0)
    levels = np.unique(m[m > 0])[::-1]  # distinct positive levels, decreasing
    below = np.append(levels[1:], 0.0)[: levels.size]  # the next level down, then 0
    total = 0.0
    for hi, lo in zip(levels, below, strict=True):
        total += (hi - lo) * _jaccard_set_loss(m >= hi, foreground)
    return total


def ref_lovasz_by_permutations(errors, foreground):
    """max over the vertices of the base polytope of Delta (Delta is submodular)."""
    m = np.maximum(f64(errors), 0.0)
    best = -np.inf
    for order in itertools.permutations(range(m.size)):
        mistakes = np.zeros(m.size, bool)
        total, previous = 0.0, 0.0
        for i in order:
            mistakes[i] = True
            current = _jaccard_set_loss(mistakes, foreground)
            total += m[i] * (current - previous)
            previous = current
        best = max(best, total)
    return best


def ref_lovasz(preds, labels, *, per_image=True, from_logits=True, where=None):
    images = _images(preds, labels, where)
    if not per_image:
        images = [(np.concatenate([p for p, _ in images]), np.concatenate([y for _, y in images]))]
    out = []
    for pred, y in images:
        errors = 1 - pred * (2 * y - 1) if from_logits else np.abs(y - pred)
        out.append(ref_lovasz_extension(errors, y == 1))
    return np.array(out) if per_image else np.float64(out[0])


def sets_iou(pred, y):
    """Hard IoU of two boolean masks; 1 when both are empty."""
    union = np.sum(pred | y)
    return np.sum(pred & y) / union if union else 1.0


# ---------------------------------------------------------------------------
# The metrics: scikit-learn and float64 NumPy, on the kept entries only.
# ---------------------------------------------------------------------------


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


def predicted(s, threshold):
    return (s >= threshold).astype(np.int64)


def classes(y):
    return y.astype(np.int64)


# scikit-learn, as (labels, scores, weights, threshold) -> value.
SKLEARN = {
    "roc_auc": lambda y, s, w, t: skm.roc_auc_score(classes(y), s, sample_weight=w),
    "average_precision": lambda y, s, w, t: skm.average_precision_score(
        classes(y), s, sample_weight=w
    ),
    "precision": lambda y, s, w, t: skm.precision_score(
        classes(y), predicted(s, t), sample_weight=w, zero_division=0.0
    ),
    "recall": lambda y, s, w, t: skm.recall_score(
        classes(y), predicted(s, t), sample_weight=w, zero_division=0.0
    ),
    "f1_score": lambda y, s, w, t: skm.f1_score(
        classes(y), predicted(s, t), sample_weight=w, zero_division=0.0
    ),
    "fbeta_score": lambda y, s, w, t: skm.fbeta_score(
        classes(y), predicted(s, t), beta=2.0, sample_weight=w, zero_division=0.0
    ),
    "accuracy": lambda y, s, w, t: skm.accuracy_score(classes(y), predicted(s, t), sample_weight=w),
    "balanced_accuracy": lambda y, s, w, t: skm.balanced_accuracy_score(
        classes(y), predicted(s, t), sample_weight=w
    ),
    "matthews_corrcoef": lambda y, s, w, t: skm.matthews_corrcoef(
        classes(y), predicted(s, t), sample_weight=w
    ),
    "iou_score": lambda y, s, w, t: skm.jaccard_score(
        classes(y), predicted(s, t), sample_weight=w, zero_division=0.0
    ),
    "dice_score": lambda y, s, w, t: skm.f1_score(
        classes(y), predicted(s, t), sample_weight=w, zero_division=0.0
    ),
    "log_loss": lambda y, s, w, t: skm.log_loss(classes(y), s, labels=[0, 1], sample_weight=w),
    "brier_score": lambda y, s, w, t: skm.brier_score_loss(classes(y), s, sample_weight=w),
}
SKLEARN = {name: helpers.quiet(fn) for name, fn in SKLEARN.items()}


def sklearn_metric(name, scores, labels, sample_weight=None, where=None, threshold=0.5):
    s, y, w = kept(scores, labels, sample_weight, where)
    return SKLEARN[name](y, s, w, threshold)


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
    loss = y * softplus(-x) + (1 - y) * softplus(x)
    return np.sum(w * loss) / np.sum(w)
