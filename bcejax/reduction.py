"""``reduce_loss``: mean, sum or none, with masks, weights and exact cross-device means."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from bcejax import checks

AxisName = Hashable | Sequence[Hashable]


def reduce_loss(
    loss: ArrayLike,
    reduction: str = "mean",
    *,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = None,
    axis_name: AxisName | None = None,
) -> jax.Array:
    r"""Reduces an unreduced loss, ignoring masked entries exactly.

    .. math::
        \text{mean} = \frac{\sum_i m_i w_i \ell_i}{\sum_i m_i}, \qquad
        \text{sum} = \sum_i m_i w_i \ell_i

    ``mean`` divides by the number of unmasked entries, not by the summed
    weights (PyTorch's ``reduction="mean"`` with ``weight=``). Masked entries
    are selected away, so a NaN or inf there never reaches the result or its
    gradient. With no unmasked entry, ``mean`` is 0 with a zero gradient.

    Inside ``shard_map`` or ``pmap``, ``axis_name`` sums the numerators and the
    counts over the devices before dividing, so the result is the exact global
    mean even when shards hold different numbers of valid entries.

    Args:
      loss: the unreduced loss, float.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      where: optional boolean mask, broadcastable to ``loss``; False entries are
        ignored (``none`` sets them to 0).
      weights: optional weights, broadcastable to ``loss``.
      axis: axes to reduce; None reduces all of them.
      axis_name: mapped axis name(s) to reduce across devices as well.

    Returns:
      The reduced loss in the dtype of ``loss``; sums accumulate in float32
      (float64 for float64 input).

    Examples:
      The masked entry leaves the mean: ``(1 + 2 + 4) / 3``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss, mask = jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([True, True, False, True])
      >>> mean = bcejax.reduce_loss(loss, "mean", where=mask)
      >>> print(f"{float(mean):.4f}")
      2.3333
    """
    checks.check_reduction(reduction)
    loss = checks.check_float(loss, "loss")
    shape = checks.check_broadcast(loss=loss, where=where, weights=weights)
    if shape != loss.shape:
        raise ValueError(
            f"where/weights would broadcast loss of shape {loss.shape} to {shape}: "
            "masks and weights must not add axes to the loss"
        )
    dtype = loss.dtype
    values = loss if weights is None else loss * jnp.asarray(weights, dtype)
    mask = None if where is None else jnp.broadcast_to(jnp.asarray(where, bool), shape)
    if mask is not None:
        values = jnp.where(mask, values, 0)
    if reduction == "none":
        return values
    accumulate = jnp.promote_types(dtype, jnp.float32)
    total = jnp.sum(values.astype(accumulate), axis=axis)
    if axis_name is not None:
        total = jax.lax.psum(total, axis_name)
    if reduction == "sum":
        return total.astype(dtype)
    if mask is None:
        count = jnp.asarray(_size(shape, axis), accumulate)
    else:
        count = jnp.sum(mask, axis=axis, dtype=accumulate)
    if axis_name is not None:
        count = jax.lax.psum(count, axis_name)
    return (total / jnp.maximum(count, 1)).astype(dtype)


def _size(shape: tuple[int, ...], axis: int | tuple[int, ...] | None) -> int:
    if axis is None:
        axes: Sequence[int] = range(len(shape))
    else:
        axes = (axis,) if isinstance(axis, int) else axis
    size = 1
    for a in axes:
        size *= shape[a]
    return size
