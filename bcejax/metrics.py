"""Binary classification metrics: exact, jit-able, scikit-learn's definitions.

Every metric takes predictions first and labels second (the order of the
losses, the reverse of scikit-learn's), any shape (flattened), labels 0 or 1,
and two keywords:

* ``sample_weight``: weights ``>= 0``, broadcastable to the scores; an entry
  of weight 0 is dropped, as scikit-learn drops it.
* ``where``: a boolean mask, broadcastable to the scores; a False entry is
  cut out before anything is checked or computed, so a NaN score or a label
  of 255 there changes nothing.

Results are 0-d arrays in float32 (float64 for float64 scores). Shapes are
static, so everything runs under ``jit``: the ranking metrics sort once, and
ties get scikit-learn's treatment (a tie between a positive and a negative
counts one half in the AUC; the precision-recall curve steps at distinct
scores only). Threshold metrics predict positive where ``score >= threshold``
(``threshold=0.5`` for probabilities; pass ``threshold=0`` for logits).
Where scikit-learn divides by zero and warns, these return its value
(0 for precision, recall, F-scores, IoU, Dice and MCC; NaN for a ROC-AUC
with one class present).

For a whole epoch without keeping the scores, :class:`StreamingBinaryMetrics`
accumulates the same metrics in a pytree of binned counts.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bcejax import checks
from bcejax._common import safe_divide
from bcejax._ranking import (
    ConfusionCounts,
    prepare_scores,
    rank_by_score,
    rates_from_counts,
)
from bcejax.reduction import AxisName

# ---------------------------------------------------------------------------
# Ranking: sort once, cumulative weights at the ends of groups of tied scores.
# ---------------------------------------------------------------------------


def _auc_from_groups(tp, fp, tp_before, fp_before, is_last):
    """Trapezoidal ROC-AUC over tie groups: a tied positive-negative pair counts 1/2."""
    area = jnp.sum(jnp.where(is_last, (fp - fp_before) * (tp + tp_before), 0))
    positives, negatives = tp[-1], fp[-1]
    both = (positives > 0) & (negatives > 0)
    return jnp.where(both, area / jnp.where(both, 2 * positives * negatives, 1), jnp.nan)


def _ap_from_groups(tp, fp, tp_before, is_last):
    """Step-wise average precision: sum over groups of (recall gained) x precision."""
    precision = safe_divide(tp, tp + fp)
    gained = jnp.sum(jnp.where(is_last, (tp - tp_before) * precision, 0))
    return safe_divide(gained, tp[-1])


def roc_auc(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    sample_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Area under the ROC curve, as scikit-learn's ``roc_auc_score``.

    The probability that a random positive scores above a random negative,
    ties counting one half (the trapezoidal area), weighted by
    ``sample_weight``. Scores may be probabilities or logits: only their order
    matters. NaN when the labels hold one class only (scikit-learn warns and
    returns NaN).

    Examples:
      Three of the four positive-negative pairs are ordered right (scikit-learn's example):

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> scores, labels = jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1])
      >>> print(f"{float(bcejax.metrics.roc_auc(scores, labels)):.4f}")
      0.7500
    """
    r = rank_by_score(*prepare_scores(scores, labels, sample_weight, where))
    return _auc_from_groups(r.tp, r.fp, r.tp_before, r.fp_before, r.is_last)


def average_precision(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    sample_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Average precision, as scikit-learn's ``average_precision_score``.

    .. math:: AP = \sum_n (R_n - R_{n-1}) P_n

    over the distinct scores in decreasing order (no interpolation). 0 when
    there is no positive (scikit-learn's value).

    Examples:
      ``(1/2) * 1 + (1/2) * (2/3)`` (scikit-learn's example):

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> scores, labels = jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1])
      >>> print(f"{float(bcejax.metrics.average_precision(scores, labels)):.4f}")
      0.8333
    """
    r = rank_by_score(*prepare_scores(scores, labels, sample_weight, where))
    return _ap_from_groups(r.tp, r.fp, r.tp_before, r.is_last)


def roc_curve(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    sample_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The ROC curve ``(fpr, tpr, thresholds)``, each of static length ``n + 1``.

    Point 0 is ``(0, 0)`` at threshold ``+inf``; point ``i + 1`` is the rate
    pair when the ``i + 1`` highest scores are predicted positive, with tied
    scores taken together. So tied, masked and zero-weight entries repeat a
    point (masked ones at threshold ``-inf``): drawn, the curve is exactly
    scikit-learn's ``roc_curve(..., drop_intermediate=False)``, and its
    trapezoidal area is :func:`roc_auc`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> scores, labels = jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1])
      >>> fpr, tpr, thresholds = bcejax.metrics.roc_curve(scores, labels)
      >>> fpr.tolist(), tpr.tolist()
      ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    r = rank_by_score(*prepare_scores(scores, labels, sample_weight, where))
    zero = jnp.zeros(1, r.tp.dtype)
    fpr = jnp.concatenate([zero, r.fp / r.fp[-1]])
    tpr = jnp.concatenate([zero, r.tp / r.tp[-1]])
    thresholds = jnp.concatenate([jnp.full(1, jnp.inf, r.scores.dtype), r.scores])
    return fpr, tpr, thresholds


def precision_recall_curve(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    sample_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The precision-recall curve, ordered as scikit-learn's.

    Returns ``(precision, recall, thresholds)``: precision and recall of
    static length ``n + 1``, thresholds of length ``n``, thresholds increasing,
    and the last point ``(1, 0)`` without a threshold. Tied, masked and
    zero-weight entries repeat a point, so the curve drawn is exactly scikit-learn's
    ``precision_recall_curve``, and ``-sum(diff(recall) * precision[:-1])``
    is :func:`average_precision`. With no positive label, recall is 1 at
    every threshold (and 0 at the last point), as scikit-learn sets it; where
    scikit-learn also warns, a jitted function cannot, so count the positive
    labels first if a batch may hold none.

    Examples:
      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> scores, labels = jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1])
      >>> precision, recall, thresholds = bcejax.metrics.precision_recall_curve(scores, labels)
      >>> [round(v, 4) for v in precision.tolist()], recall.tolist()
      ([0.5, 0.6667, 0.5, 1.0, 1.0], [1.0, 1.0, 0.5, 0.5, 0.0])
    """
    r = rank_by_score(*prepare_scores(scores, labels, sample_weight, where))
    precision = safe_divide(r.tp, r.tp + r.fp)
    recall = safe_divide(r.tp, r.tp[-1], 1.0)  # no positive label: 1, as scikit-learn
    # Dropped entries sort last, at -inf: they repeat the last kept point.
    kept = jnp.isfinite(r.scores) | (r.scores > 0)
    last = jnp.max(jnp.where(kept, jnp.arange(r.tp.size), 0))
    past = jnp.arange(r.tp.size) > last
    precision = jnp.where(past, precision[last], precision)
    thresholds = jnp.where(past, r.scores[last], r.scores)
    one = jnp.ones(1, precision.dtype)
    return (
        jnp.concatenate([precision[::-1], one]),
        jnp.concatenate([recall[::-1], 0 * one]),
        thresholds[::-1],
    )


# ---------------------------------------------------------------------------
# Threshold metrics: weighted confusion counts at score >= threshold.
# ---------------------------------------------------------------------------


def _counts(
    scores: ArrayLike,
    labels: ArrayLike,
    threshold: ArrayLike,
    sample_weight: ArrayLike | None,
    where: ArrayLike | None,
) -> ConfusionCounts:
    s, y, w, _ = prepare_scores(scores, labels, sample_weight, where)
    predicted = (s >= threshold).astype(s.dtype)
    tp = jnp.sum(w * y * predicted)
    fp = jnp.sum(w * (1 - y) * predicted)
    positives, total = jnp.sum(w * y), jnp.sum(w)
    return ConfusionCounts(total - positives - fp, fp, positives - tp, tp)


def confusion_matrix(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    threshold: ArrayLike = 0.5,
    sample_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Weighted counts ``[[tn, fp], [fn, tp]]`` (scikit-learn's layout), float.

    Examples:
      Only 0.8 is ``>= 0.5``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> scores, labels = jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1])
      >>> bcejax.metrics.confusion_matrix(scores, labels).tolist()
      [[2.0, 0.0], [1.0, 1.0]]
    """
    c = _counts(scores, labels, threshold, sample_weight, where)
    return jnp.stack([jnp.stack([c.tn, c.fp]), jnp.stack([c.fn, c.tp])])


class _ThresholdMetric(Protocol):
    """The signature of the metrics that :func:`_threshold_metric` makes."""

    def __call__(
        self,
        scores: ArrayLike,
        labels: ArrayLike,
        *,
        threshold: ArrayLike = ...,
        sample_weight: ArrayLike | None = ...,
        where: ArrayLike | None = ...,
    ) -> jax.Array: ...


# Each threshold metric: what it is, and how it comes to its value in the
# example, where at 0.5 only the score 0.8 is predicted positive, so that
# tp = 1, fp = 0, fn = 1, tn = 2.
_THRESHOLD_METRICS = {
    "accuracy": ("Weighted fraction of correct predictions.", "``(tp + tn) / 4``", "0.7500"),
    "precision": (
        "``tp / (tp + fp)``; 0 with no predicted positive (scikit-learn's default).",
        "``tp / (tp + fp) = 1``",
        "1.0000",
    ),
    "recall": ("``tp / (tp + fn)``; 0 with no positive label.", "``1/2``", "0.5000"),
    "f1_score": (
        "``2 tp / (2 tp + fp + fn)``, the harmonic mean of precision and recall; 0 if empty.",
        "``2/3``",
        "0.6667",
    ),
    "balanced_accuracy": (
        "The mean of the recalls of the classes present in the labels (scikit-learn's).",
        "the recalls are 1/2 (positives) and 1 (negatives)",
        "0.7500",
    ),
    "matthews_corrcoef": (
        "``(tp tn - fp fn) / sqrt((tp + fp)(tp + fn)(tn + fp)(tn + fn))``; 0 when a factor is 0.",
        "``2 / sqrt(1 * 2 * 2 * 3)``",
        "0.5774",
    ),
    "iou_score": (
        "Intersection over union ``tp / (tp + fp + fn)`` (scikit-learn's jaccard_score).",
        "``1/2``",
        "0.5000",
    ),
    "dice_score": (
        "Dice coefficient ``2 tp / (2 tp + fp + fn)`` over all entries (equal to F1); 0 if empty.",
        "``2/3``",
        "0.6667",
    ),
}

_THRESHOLD_DOC = """{doc}

    Predicts positive where ``scores >= threshold``.

    Examples:
      At the threshold 0.5 only the score 0.8 is predicted positive: ``tp = 1``,
      ``fp = 0``, ``fn = 1``, ``tn = 2``; {hint}:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> scores, labels = jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1])
      >>> print(f"{{float(bcejax.metrics.{name}(scores, labels)):.4f}}")
      {value}
"""


def _threshold_metric(name: str) -> _ThresholdMetric:
    """The metric ``name`` of the confusion counts, documented from ``_THRESHOLD_METRICS``."""

    def metric(*args: Any, **kwargs: Any) -> jax.Array:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{name}() {e}; it takes {signature}") from None
        bound.apply_defaults()
        return rates_from_counts(_counts(**bound.arguments))[name]

    signature = inspect.signature(confusion_matrix)  # every threshold metric takes its arguments
    doc, hint, value = _THRESHOLD_METRICS[name]
    metric.__name__ = metric.__qualname__ = name
    metric.__signature__ = signature  # type: ignore[attr-defined]
    metric.__doc__ = _THRESHOLD_DOC.format(doc=doc, name=name, hint=hint, value=value)
    return metric


(
    accuracy,
    precision,
    recall,
    f1_score,
    balanced_accuracy,
    matthews_corrcoef,
    iou_score,
    dice_score,
) = map(_threshold_metric, _THRESHOLD_METRICS)


def fbeta_score(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    beta: ArrayLike,
    threshold: ArrayLike = 0.5,
    sample_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    """F-beta ``(1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp)``: recall weighs ``beta`` times more.

    0 when the denominator is 0. Predicts positive where ``scores >= threshold``.

    Examples:
      ``tp = 1``, ``fp = 0``, ``fn = 1`` at the threshold 0.5: ``5 / (5 + 4)``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> scores, labels = jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1])
      >>> print(f"{float(bcejax.metrics.fbeta_score(scores, labels, beta=2.0)):.4f}")
      0.5556
    """
    checks.check_nonnegative(beta, "beta")
    c = _counts(scores, labels, threshold, sample_weight, where)
    b2 = jnp.square(jnp.asarray(beta, c.tp.dtype))
    return safe_divide((1 + b2) * c.tp, (1 + b2) * c.tp + b2 * c.fn + c.fp)


# ---------------------------------------------------------------------------
# Probabilistic metrics.
# ---------------------------------------------------------------------------


class _Probabilities(NamedTuple):
    scores: jax.Array  # flat, as given (logits or probabilities), masked entries 0
    p: jax.Array
    log_p: jax.Array
    log_not_p: jax.Array  # log(1 - p)
    y: jax.Array
    w: jax.Array


def _probabilities(
    scores: ArrayLike,
    labels: ArrayLike,
    sample_weight: ArrayLike | None,
    where: ArrayLike | None,
    from_logits: bool,
) -> _Probabilities:
    """``p``, ``log p`` and ``log(1 - p)``: from logits exactly, from probabilities clipped.

    Probabilities are clipped to ``[eps, 1 - eps]`` (eps of their dtype) before
    the logs, as scikit-learn's ``log_loss``.
    """
    name = "logits" if from_logits else "probs"
    s, y, w, _ = prepare_scores(scores, labels, sample_weight, where, name)
    if from_logits:
        return _Probabilities(
            s, jax.nn.sigmoid(s), jax.nn.log_sigmoid(s), jax.nn.log_sigmoid(-s), y, w
        )
    s = checks.check_probabilities(s, name)
    eps = jnp.finfo(jnp.result_type(scores)).eps
    clipped = jnp.clip(s, eps, 1 - eps)
    return _Probabilities(s, s, jnp.log(clipped), jnp.log1p(-clipped), y, w)


def log_loss(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    sample_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Weighted mean binary cross-entropy, as scikit-learn's ``log_loss``.

    Probabilities are clipped to ``[eps, 1 - eps]`` as scikit-learn clips
    them; with ``from_logits=True`` the loss is computed from the logits
    exactly, with nothing to clip.

    Examples:
      ``-(log 0.9 + log 0.8) / 2``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss = bcejax.metrics.log_loss(jnp.array([0.9, 0.2]), jnp.array([1, 0]))
      >>> print(f"{float(loss):.4f}")
      0.1643
    """
    q = _probabilities(probs, labels, sample_weight, where, from_logits)
    return safe_divide(_log_loss_sum(q), jnp.sum(q.w), jnp.nan)


def _log_loss_sum(q: _Probabilities) -> jax.Array:
    return -jnp.sum(q.w * (q.y * q.log_p + (1 - q.y) * q.log_not_p))


def brier_score(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    sample_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    """Weighted mean of ``(p - y)^2``, as scikit-learn's ``brier_score_loss``.

    Examples:
      ``(0.1**2 + 0.2**2) / 2``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> score = bcejax.metrics.brier_score(jnp.array([0.9, 0.2]), jnp.array([1, 0]))
      >>> print(f"{float(score):.4f}")
      0.0250
    """
    q = _probabilities(probs, labels, sample_weight, where, from_logits)
    return safe_divide(jnp.sum(q.w * jnp.square(q.p - q.y)), jnp.sum(q.w), jnp.nan)


class ReliabilityDiagram(NamedTuple):
    """Per bin: the fraction of positives, the mean probability, the weight; and the edges.

    Empty bins have weight 0 and NaN means.

    Examples:
      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> probs, labels = jnp.array([0.1, 0.3, 0.7, 0.9]), jnp.array([0, 1, 1, 1])
      >>> diagram = bcejax.metrics.reliability_diagram(probs, labels, n_bins=2)
      >>> diagram.weight.tolist(), diagram.edges.tolist()
      ([2.0, 2.0], [0.0, 0.5, 1.0])
    """

    prob_true: jax.Array
    prob_pred: jax.Array
    weight: jax.Array
    edges: jax.Array


def _bin_edges(n_bins: int, dtype: np.dtype) -> np.ndarray:
    """Equal-width edges, each rounded down to ``dtype``.

    A probability ``p`` of ``dtype`` is above the float64 edge ``e`` exactly
    when it is above ``e`` rounded down, so binning in ``dtype`` puts every
    probability in scikit-learn's bin (which compares in float64).
    """
    checks.check_count(n_bins, "n_bins")
    exact = np.linspace(0.0, 1.0, n_bins + 1)
    rounded = exact.astype(dtype)
    return np.where(rounded > exact, np.nextafter(rounded, rounded.dtype.type(-1)), rounded)


def _bin_sums(p, y, w, n_bins):
    """Per bin ``(sum w y, sum w p, sum w)``: bins ``(e_k, e_{k+1}]``, the first from 0."""
    edges = _bin_edges(n_bins, np.dtype(p.dtype))
    index = jnp.searchsorted(jnp.asarray(edges[1:-1]), p, side="left")
    sums = [jax.ops.segment_sum(v, index, num_segments=n_bins) for v in (w * y, w * p, w)]
    return (*sums, edges)


def reliability_diagram(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    n_bins: int = 15,
    from_logits: bool = False,
    sample_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> ReliabilityDiagram:
    """The reliability diagram's bins: equal-width, as scikit-learn's ``calibration_curve``.

    Bin ``k`` holds the probabilities in ``(k / n, (k + 1) / n]`` (the first
    also holds 0), as ``calibration_curve(strategy="uniform")`` bins them; for
    the bins with weight, ``(prob_true, prob_pred)`` are its two outputs.

    Examples:
      Bin ``(0, 1/2]`` holds 0.1 and 0.3 (one positive), bin ``(1/2, 1]`` 0.7 and 0.9:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> probs, labels = jnp.array([0.1, 0.3, 0.7, 0.9]), jnp.array([0, 1, 1, 1])
      >>> diagram = bcejax.metrics.reliability_diagram(probs, labels, n_bins=2)
      >>> [round(v, 4) for v in diagram.prob_true.tolist()]
      [0.5, 1.0]
      >>> [round(v, 4) for v in diagram.prob_pred.tolist()]
      [0.2, 0.8]
    """
    q = _probabilities(probs, labels, sample_weight, where, from_logits)
    positive, predicted, weight, edges = _bin_sums(q.p, q.y, q.w, n_bins)
    return ReliabilityDiagram(
        safe_divide(positive, weight, jnp.nan),
        safe_divide(predicted, weight, jnp.nan),
        weight,
        jnp.asarray(edges, q.p.dtype),
    )


def expected_calibration_error(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    n_bins: int = 15,
    from_logits: bool = False,
    sample_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Expected calibration error of the positive class, over equal-width bins.

    .. math:: ECE = \sum_b \frac{W_b}{W} \left| \bar y_b - \bar p_b \right|

    with the bins of :func:`reliability_diagram` (scikit-learn's
    ``calibration_curve``), weighted by ``sample_weight``.

    Examples:
      Bins of :func:`reliability_diagram`'s example: ``(2 |0.5 - 0.2| + 2 |1 - 0.8|) / 4``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> probs, labels = jnp.array([0.1, 0.3, 0.7, 0.9]), jnp.array([0, 1, 1, 1])
      >>> ece = bcejax.metrics.expected_calibration_error(probs, labels, n_bins=2)
      >>> print(f"{float(ece):.4f}")
      0.2500
    """
    q = _probabilities(probs, labels, sample_weight, where, from_logits)
    positive, predicted, weight, _ = _bin_sums(q.p, q.y, q.w, n_bins)
    return safe_divide(jnp.sum(jnp.abs(positive - predicted)), jnp.sum(weight), jnp.nan)


# ---------------------------------------------------------------------------
# Streaming: binned counts over an epoch, mergeable across batches and devices.
# ---------------------------------------------------------------------------

_LOGIT_RANGE = 20.0  # the AUC bins cover logits in [-20, 20]; beyond, the end bins


@dataclasses.dataclass(frozen=True)
class StreamingBinaryMetrics:
    """Metrics over many batches, from binned counts: a pytree for a training state.

    ::

        state = StreamingBinaryMetrics.empty()
        for scores, labels in batches:
            state = update(state, scores, labels)  # jitted: state.update(...)
        metrics = state.compute()  # {"roc_auc": ..., "f1_score": ..., ...}

    Log loss, Brier score, ECE, accuracy, precision, recall and F1 are exact
    (sums over every entry). ROC-AUC and average precision come from a
    histogram of the scores over ``num_bins`` equal bins of the logit in
    [-20, 20] (scores in a bin count as tied), within about 1e-3 of the
    exact values for 10^6 scores with the default bins.

    ``from_logits`` says whether the scores are logits (else probabilities);
    ``threshold`` (default 0.5 for probabilities, 0 for logits) decides the
    predictions; ``ece_bins`` are the calibration bins. Inside ``shard_map``
    or ``pmap``, :meth:`reduce` sums the state over devices.

    Examples:
      Two batches, counted one after the other, give the metrics of both:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> state = bcejax.metrics.StreamingBinaryMetrics.empty()
      >>> state = state.update(jnp.array([0.1, 0.4]), jnp.array([0, 0]))
      >>> state = state.update(jnp.array([0.35, 0.8]), jnp.array([1, 1]))
      >>> metrics = state.compute()
      >>> print(f"{float(metrics['accuracy']):.4f} {float(metrics['roc_auc']):.4f}")
      0.7500 0.7500
    """

    positive_hist: jax.Array
    negative_hist: jax.Array
    ece_positive: jax.Array
    ece_predicted: jax.Array
    ece_weight: jax.Array
    log_loss_sum: jax.Array  # the weighted sums over every entry counted
    squared_error_sum: jax.Array
    weight_sum: jax.Array
    true_positives: jax.Array  # weighted, at the threshold
    false_positives: jax.Array
    positives: jax.Array
    count: jax.Array  # entries of weight > 0
    from_logits: bool = False
    threshold: float = 0.5

    @classmethod
    def empty(
        cls,
        num_bins: int = 16384,
        *,
        from_logits: bool = False,
        threshold: float | None = None,
        ece_bins: int = 15,
        dtype: Any = jnp.float32,
    ) -> StreamingBinaryMetrics:
        """A state with nothing counted; ``dtype`` is that of the counts."""
        checks.check_count(num_bins, "num_bins", lo=2)
        _bin_edges(ece_bins, np.dtype(dtype))  # checks ece_bins
        if threshold is None:
            threshold = 0.0 if from_logits else 0.5

        def zeros(n):
            return jnp.zeros(n, dtype)

        # mypy gives the starred sums every remaining field: "too many arguments".
        return cls(  # type: ignore[call-arg]
            zeros(num_bins),
            zeros(num_bins),
            zeros(ece_bins),
            zeros(ece_bins),
            zeros(ece_bins),
            *(zeros(()) for _ in _SUM_FIELDS),
            from_logits,
            float(threshold),
        )

    def update(
        self,
        scores: ArrayLike,
        labels: ArrayLike,
        *,
        where: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> StreamingBinaryMetrics:
        """This state with a batch counted in (a new state); call it inside ``jit``."""
        q = _probabilities(scores, labels, sample_weight, where, self.from_logits)
        w, y = q.w, q.y
        # The AUC bins: equal in the logit (of the clipped probability), whose order is
        # the scores' order; scores in one bin count as tied.
        logit = q.scores if self.from_logits else q.log_p - q.log_not_p
        num_bins = self.positive_hist.size
        unit = (jnp.clip(logit, -_LOGIT_RANGE, _LOGIT_RANGE) + _LOGIT_RANGE) / (2 * _LOGIT_RANGE)
        index = jnp.clip((unit * num_bins).astype(jnp.int32), 0, num_bins - 1)
        positive_hist = jax.ops.segment_sum(w * y, index, num_segments=num_bins)
        negative_hist = jax.ops.segment_sum(w * (1 - y), index, num_segments=num_bins)
        ece = _bin_sums(q.p, y, w, self.ece_weight.size)[:3]
        predicted = (q.scores >= self.threshold).astype(w.dtype)
        sums = (
            _log_loss_sum(q),
            jnp.sum(w * jnp.square(q.p - y)),
            jnp.sum(w),
            jnp.sum(w * y * predicted),
            jnp.sum(w * (1 - y) * predicted),
            jnp.sum(w * y),
            jnp.sum(w > 0, dtype=w.dtype),
        )
        return self._add(positive_hist, negative_hist, *ece, *sums)

    def _add(self, *counts: ArrayLike) -> StreamingBinaryMetrics:
        new = {
            name: getattr(self, name) + jnp.asarray(count).astype(getattr(self, name).dtype)
            for name, count in zip(_COUNT_FIELDS, counts, strict=True)
        }
        return dataclasses.replace(self, **new)

    def merge(self, other: StreamingBinaryMetrics) -> StreamingBinaryMetrics:
        """The counts of both states (e.g. two shards' or two epochs')."""
        if (self.from_logits, self.threshold) != (other.from_logits, other.threshold) or (
            jax.tree.map(jnp.shape, self) != jax.tree.map(jnp.shape, other)
        ):
            raise ValueError(
                "only states made by the same StreamingBinaryMetrics.empty(...) call merge: "
                f"{self._config()} vs {other._config()}"
            )
        return self._add(*(getattr(other, f) for f in _COUNT_FIELDS))

    def reduce(self, axis_name: AxisName) -> StreamingBinaryMetrics:
        """The counts summed over the devices of ``axis_name`` (inside ``shard_map``/``pmap``)."""
        return jax.tree.map(lambda count: jax.lax.psum(count, axis_name), self)

    def _config(self) -> str:
        return (
            f"num_bins={self.positive_hist.size}, ece_bins={self.ece_weight.size}, "
            f"from_logits={self.from_logits}, threshold={self.threshold}"
        )

    def compute(self) -> dict[str, jax.Array]:
        """The metrics over everything counted: a dict of 0-d arrays."""
        total, tp, fp, positives = (
            self.weight_sum,
            self.true_positives,
            self.false_positives,
            self.positives,
        )
        # The histogram bins, highest scores first, as tie groups.
        tp_cum = jnp.cumsum(self.positive_hist[::-1])
        fp_cum = jnp.cumsum(self.negative_hist[::-1])
        zero = jnp.zeros(1, tp_cum.dtype)
        tp_before = jnp.concatenate([zero, tp_cum[:-1]])
        fp_before = jnp.concatenate([zero, fp_cum[:-1]])
        every = jnp.ones(tp_cum.shape, bool)
        rates = rates_from_counts(ConfusionCounts(total - positives - fp, fp, positives - tp, tp))
        return dict(
            roc_auc=_auc_from_groups(tp_cum, fp_cum, tp_before, fp_before, every),
            average_precision=_ap_from_groups(tp_cum, fp_cum, tp_before, every),
            log_loss=safe_divide(self.log_loss_sum, total, jnp.nan),
            brier_score=safe_divide(self.squared_error_sum, total, jnp.nan),
            expected_calibration_error=safe_divide(
                jnp.sum(jnp.abs(self.ece_positive - self.ece_predicted)), total, jnp.nan
            ),
            accuracy=rates["accuracy"],
            precision=rates["precision"],
            recall=rates["recall"],
            f1_score=rates["f1_score"],
            count=self.count,
        )


_SUM_FIELDS = (
    "log_loss_sum",
    "squared_error_sum",
    "weight_sum",
    "true_positives",
    "false_positives",
    "positives",
    "count",
)
_COUNT_FIELDS: tuple[str, ...] = (
    "positive_hist",
    "negative_hist",
    "ece_positive",
    "ece_predicted",
    "ece_weight",
)
_COUNT_FIELDS += _SUM_FIELDS
jax.tree_util.register_dataclass(
    StreamingBinaryMetrics,
    data_fields=list(_COUNT_FIELDS),
    meta_fields=["from_logits", "threshold"],
)


__all__ = [
    "ReliabilityDiagram",
    "StreamingBinaryMetrics",
    "accuracy",
    "average_precision",
    "balanced_accuracy",
    "brier_score",
    "confusion_matrix",
    "dice_score",
    "expected_calibration_error",
    "f1_score",
    "fbeta_score",
    "iou_score",
    "log_loss",
    "matthews_corrcoef",
    "precision",
    "precision_recall_curve",
    "recall",
    "reliability_diagram",
    "roc_auc",
    "roc_curve",
]
