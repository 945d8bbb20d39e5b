"""What the metrics and the calibration tools share: checked scores, ranking, confusion counts."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bcejax import _common, checks
from bcejax._common import safe_divide


def prepare_scores(scores, labels, sample_weight, where, name="scores"):
    """Flat ``(s, y, w, kept)``: masked entries cut out, values checked, weights 0 there.

    ``s`` is in the compute dtype (float32 or float64), ``y`` and ``w`` too;
    ``kept`` is False where ``where`` masks or the weight is 0.
    """
    s = checks.check_float(scores, name)
    y = jnp.asarray(labels)
    pair = checks.check_broadcast(**{name: s, "labels": y})
    if pair not in (s.shape, y.shape):
        raise ValueError(
            f"{name} with shape {s.shape} and labels with shape {y.shape} broadcast to {pair}, "
            f"a pair per combination: give them the same shape, e.g. {name}.reshape(labels.shape)"
        )
    shape = checks.check_broadcast(
        **{name: s, "labels": y, "sample_weight": sample_weight, "where": where}
    )
    if shape != pair:
        raise ValueError(
            f"sample_weight and where must broadcast to the shape of {name} and labels, "
            f"{pair}, without adding axes; got sample_weight {jnp.shape(sample_weight)}, "
            f"where {jnp.shape(where)}"
        )
    s, y = jnp.broadcast_to(s, shape).reshape(-1), jnp.broadcast_to(y, shape).reshape(-1)
    w = None if sample_weight is None else jnp.broadcast_to(sample_weight, shape).reshape(-1)
    kept = None if where is None else jnp.broadcast_to(jnp.asarray(where, bool), shape).reshape(-1)
    if kept is not None:
        s, y = jnp.where(kept, s, 0), jnp.where(kept, y, 0)
        w = None if w is None else jnp.where(kept, w, 0)
    s = checks.check_logits(s, name)
    y = checks.check_binary_labels(y)
    if w is not None:
        w = checks.check_weights(w, "sample_weight")
    dtype = _common.compute_dtype(s.dtype)
    s, y = s.astype(dtype), y.astype(dtype)
    w = jnp.ones_like(s) if w is None else jnp.asarray(w, dtype)
    if kept is not None:
        w = jnp.where(kept, w, 0)
    return s, y, w, w > 0


class Ranked(NamedTuple):
    """Scores sorted in decreasing order, dropped entries last (at ``-inf``)."""

    scores: jax.Array  # sorted scores, -inf for dropped entries
    tp: jax.Array  # cumulative positive weight at the end of each entry's tie group
    fp: jax.Array  # cumulative negative weight, likewise
    tp_before: jax.Array  # the same just before the group (at the previous group's end)
    fp_before: jax.Array
    is_last: jax.Array  # True at the last entry of each tie group


def _ordered_bits(s):
    """Integers ordered as the floats ``s`` (``-0.0`` as ``0.0``): a fast sort key on CPU.

    XLA:CPU sorts one integer array several times faster than a float array or
    a key with payloads, so the ranking sorts these alone and finds each
    entry's tie group by binary search.
    """
    int_type = jnp.int64 if s.dtype == jnp.float64 else jnp.int32
    bits = jax.lax.bitcast_convert_type(jnp.where(s == 0, 0, s), int_type)
    magnitude = jnp.asarray(jnp.iinfo(int_type).max, int_type)
    return jnp.where(bits < 0, bits ^ magnitude, bits)  # negatives: reverse their order


def _from_ordered_bits(key, dtype):
    magnitude = jnp.asarray(jnp.iinfo(key.dtype).max, key.dtype)
    return jax.lax.bitcast_convert_type(jnp.where(key < 0, key ^ magnitude, key), dtype)


def rank_by_score(s: jax.Array, y: jax.Array, w: jax.Array, kept: jax.Array) -> Ranked:
    key = _ordered_bits(jnp.where(kept, s, -jnp.inf))
    ascending = jnp.sort(key)
    # Each tie group's weights land at its first position in ascending order, which
    # is its last in descending order.
    first = jnp.searchsorted(ascending, key, side="left", method="scan")
    pos = jax.ops.segment_sum(w * y, first, num_segments=key.size)[::-1]
    neg = jax.ops.segment_sum(w * (1 - y), first, num_segments=key.size)[::-1]
    descending = ascending[::-1]
    tp, fp = jnp.cumsum(pos), jnp.cumsum(neg)
    is_last = jnp.append(descending[1:] != descending[:-1], True)
    # Cumulative weights never decrease, so the value at the end of a group is a
    # reverse running min over group ends, and the value before it a running max.
    tp_end = jax.lax.cummin(jnp.where(is_last, tp, jnp.inf), reverse=True)
    fp_end = jax.lax.cummin(jnp.where(is_last, fp, jnp.inf), reverse=True)
    zero = jnp.zeros(1, tp.dtype)
    tp_before = jnp.concatenate([zero, jax.lax.cummax(jnp.where(is_last, tp, 0))[:-1]])
    fp_before = jnp.concatenate([zero, jax.lax.cummax(jnp.where(is_last, fp, 0))[:-1]])
    scores = _from_ordered_bits(descending, s.dtype)
    return Ranked(scores, tp_end, fp_end, tp_before, fp_before, is_last)


class ConfusionCounts(NamedTuple):
    tn: jax.Array
    fp: jax.Array
    fn: jax.Array
    tp: jax.Array


def rates_from_counts(c: ConfusionCounts) -> dict[str, jax.Array]:
    """Every threshold metric from the confusion counts (0 where one divides by 0)."""
    positives, negatives = c.tp + c.fn, c.tn + c.fp
    recall, specificity = safe_divide(c.tp, positives), safe_divide(c.tn, negatives)
    present = (positives > 0).astype(recall.dtype) + (negatives > 0)
    balanced = safe_divide(
        jnp.where(positives > 0, recall, 0) + jnp.where(negatives > 0, specificity, 0), present
    )
    den = (c.tp + c.fp) * positives * negatives * (c.tn + c.fn)
    mcc = safe_divide(c.tp * c.tn - c.fp * c.fn, jnp.sqrt(den))
    f1 = safe_divide(2 * c.tp, 2 * c.tp + c.fp + c.fn)
    return dict(
        accuracy=safe_divide(c.tp + c.tn, positives + negatives),
        precision=safe_divide(c.tp, c.tp + c.fp),
        recall=recall,
        f1_score=f1,
        balanced_accuracy=balanced,
        matthews_corrcoef=mcc,
        iou_score=safe_divide(c.tp, c.tp + c.fp + c.fn),
        dice_score=f1,
    )
