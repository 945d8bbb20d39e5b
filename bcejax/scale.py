"""Losses whose full logits are too large to materialize on one device.

:func:`sigmoid_contrastive_loss` is the SigLIP loss of an image-text batch;
with ``axis_name`` inside ``shard_map`` the embeddings stay sharded and the
text blocks travel around the device ring, so no device ever holds more than
its local ``batch x batch`` block of logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from bcejax import binary, checks


def _pair_losses(x, y, logit_scale, logit_bias, positive_diagonal: bool):
    """Summed BCE of the block ``logit_scale * x @ y.T + logit_bias`` (diagonal +1 if asked)."""
    logits = logit_scale * (x @ y.T) + logit_bias
    if positive_diagonal:
        labels = jnp.eye(x.shape[0], y.shape[0], dtype=logits.dtype)
    else:
        labels = jnp.zeros((), logits.dtype)
    return jnp.sum(binary.sigmoid_binary_cross_entropy(logits, labels))


def sigmoid_contrastive_loss(
    x_emb: ArrayLike,
    y_emb: ArrayLike,
    *,
    logit_scale: ArrayLike,
    logit_bias: ArrayLike,
    axis_name: str | None = None,
) -> jax.Array:
    r"""The pairwise sigmoid loss of SigLIP, summed over all pairs and divided by the batch.

    .. math::
        \ell = -\frac{1}{B} \sum_{i, j} \log \sigma\left(z_{ij} (t\, x_i \cdot y_j + b)\right),
        \qquad z_{ij} = 1 \text{ if } i = j \text{ else } -1

    with ``t = logit_scale`` (pass ``exp`` of a learned log-scale, as SigLIP
    does) and ``b = logit_bias``. Every pair is an independent binary
    problem, computed with :func:`bcejax.sigmoid_binary_cross_entropy`, so
    its value and gradient are exact for any logit.

    Without ``axis_name``, ``x_emb`` and ``y_emb`` are the whole batch,
    ``(B, D)``, and the ``B x B`` logits are formed at once. With
    ``axis_name`` (inside ``shard_map`` over that axis), they are each
    device's shard, ``(B / n, D)``, and pair ``i`` of every device is a
    positive; the text shards pass around the ring of devices with
    ``ppermute``, so each device forms one ``(B / n) x (B / n)`` block at a
    time, and the result, the same on every device, is the loss of the whole
    batch. Derivatives flow through the ring (the reverse ``ppermute``).

    Args:
      x_emb: image embeddings ``(B, D)`` (usually normalized), float.
      y_emb: text embeddings ``(B, D)``, float, row ``i`` paired with ``x_emb[i]``.
      logit_scale: the temperature ``t > 0``, scalar (may be traced and learned).
      logit_bias: the bias ``b``, scalar (SigLIP starts it at -10).
      axis_name: the mapped axis the batch is sharded over, or None.

    Returns:
      The loss, a scalar in the embeddings' dtype (computed in float32 at least).

    References:
      Zhai et al., Sigmoid Loss for Language Image Pre-Training, ICCV 2023,
      https://arxiv.org/abs/2303.15343
    """
    x = checks.check_float(x_emb, "x_emb")
    y = checks.check_float(y_emb, "y_emb")
    if x.ndim != 2 or y.shape != x.shape:
        raise ValueError(
            f"x_emb and y_emb must both be (batch, dim) with equal shapes, got {x.shape} and "
            f"{y.shape}: row i of each is a positive pair"
        )
    dtype = x.dtype
    compute = binary._compute_dtype(jnp.promote_types(x.dtype, y.dtype))
    x, y = x.astype(compute), y.astype(compute)
    scale, bias = jnp.asarray(logit_scale, compute), jnp.asarray(logit_bias, compute)
    if axis_name is None:
        return (_pair_losses(x, y, scale, bias, True) / x.shape[0]).astype(dtype)

    devices = jax.lax.axis_size(axis_name)
    ring = [(i, (i + 1) % devices) for i in range(devices)]
    total = _pair_losses(x, y, scale, bias, True)
    for _ in range(devices - 1):  # every other device's texts: negatives only
        y = jax.lax.ppermute(y, axis_name, ring)
        total = total + _pair_losses(x, y, scale, bias, False)
    total = jax.lax.psum(total, axis_name)
    return (total / (x.shape[0] * devices)).astype(dtype)


__all__ = ["sigmoid_contrastive_loss"]
