"""Losses whose full logits are too large to materialize on one device.

:func:`sigmoid_binary_cross_entropy_with_linear` fuses a multi-label
classifier head ``features @ weight + bias`` with its BCE and never forms the
``batch x labels`` logits: it works through the labels a chunk at a time and
recomputes each chunk's logits for the derivative.

:func:`sigmoid_contrastive_loss` is the SigLIP loss of an image-text batch;
with ``axis_name`` inside ``shard_map`` the embeddings stay sharded and the
text blocks travel around the device ring, so no device ever holds more than
its local ``batch x batch`` block of logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from bcejax import _common, binary, checks


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
    compute = _common.compute_dtype(jnp.promote_types(x.dtype, y.dtype))
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


def _check_head(features, weight, bias, labels, positive_indices, pos_weight, reduction):
    """Checked operands; the labels as ``("dense", y)`` or ``("indices", i)``."""
    f = checks.check_float(features, "features")
    w = checks.check_float(weight, "weight")
    if f.ndim != 2 or w.ndim != 2 or w.shape[0] != f.shape[1]:
        raise ValueError(
            f"features (batch, dim) and weight (dim, labels) must share dim, got {f.shape} "
            f"and {w.shape}"
        )
    batch, num_labels = f.shape[0], w.shape[1]
    b = jnp.zeros(num_labels, w.dtype) if bias is None else jnp.asarray(bias)
    if b.shape != (num_labels,):
        raise ValueError(f"bias must have shape ({num_labels},), one per label, got {b.shape}")
    if (labels is None) == (positive_indices is None):
        raise ValueError("pass labels (batch, labels) or positive_indices (batch, k), not both")
    if reduction not in ("mean", "sum"):
        raise ValueError(
            f"reduction must be 'mean' or 'sum', got {reduction!r}: the unreduced loss is "
            "the batch x labels array this function exists to avoid"
        )
    if pos_weight is not None:
        pw = jnp.asarray(pos_weight)
        if pw.shape not in ((), (num_labels,)):
            raise ValueError(
                f"pos_weight must be a scalar or one per label ({num_labels},), got {pw.shape}"
            )
        f = checks.check_weights(pw, "pos_weight", carrier=f)
    if labels is not None:
        y = jnp.asarray(labels)
        if y.shape != (batch, num_labels):
            raise ValueError(f"labels must have shape {(batch, num_labels)}, got {y.shape}")
        y = checks.check_labels(y)
        return f, w, b, ("dense", y)
    indices = checks.check_integer(
        positive_indices, "positive_indices", "label indices, padded with -1"
    )
    if indices.ndim != 2 or indices.shape[0] != batch:
        raise ValueError(
            f"positive_indices must have shape ({batch}, k), padded with -1, got {indices.shape}"
        )
    indices = checks.check_class_indices(indices, num_labels, -1, "positive_indices")
    return f, w, b, ("indices", indices)


def sigmoid_binary_cross_entropy_with_linear(
    features: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None,
    labels: ArrayLike | None = None,
    *,
    positive_indices: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: str = "mean",
    chunk_size: int = 4096,
) -> jax.Array:
    r"""BCE of the logits ``features @ weight + bias``, without forming them.

    .. math::
        \ell = \sum_{b, l} \text{BCE}(z_{bl}, y_{bl}), \qquad
        z = F W + \text{bias}

    with :func:`bcejax.sigmoid_binary_cross_entropy` per entry (``pos_weight``
    as there). ``"mean"`` divides by ``batch * labels`` and equals
    ``BinaryCrossEntropy(pos_weight=...)(features @ weight + bias, labels)``;
    ``"sum"`` is the sum. The labels axis is taken ``chunk_size`` columns at a
    time: each chunk's logits are formed, used and dropped, and recomputed for
    the derivative (``jax.checkpoint`` around each step of a ``scan``), so
    memory is ``O(batch * chunk_size)`` besides the operands and their
    gradients. Forward and reverse mode both work.

    Labels are dense, ``labels`` of shape ``(batch, labels)`` in ``[0, 1]``, or
    for extreme multi-label problems ``positive_indices`` of shape
    ``(batch, k)``: the indices of each example's positive labels, padded with
    -1 (every other label is negative), so no ``batch x labels`` array exists
    at all.

    Args:
      features: ``(batch, dim)``, float.
      weight: ``(dim, labels)``, float.
      bias: ``(labels,)`` or None.
      labels: dense labels ``(batch, labels)``, or None with ``positive_indices``.
      positive_indices: ``(batch, k)`` integer label indices, -1 for padding.
      pos_weight: None, a scalar or one per label, ``>= 0``.
      reduction: ``"mean"`` or ``"sum"``.
      chunk_size: labels per chunk (static).

    Returns:
      The reduced loss, a scalar in the dtype of ``features @ weight`` (float32
      at least inside).
    """
    f, w, b, (kind, y) = _check_head(
        features, weight, bias, labels, positive_indices, pos_weight, reduction
    )
    batch, num_labels = f.shape[0], w.shape[1]
    dtype = jnp.promote_types(f.dtype, w.dtype)
    compute = _common.compute_dtype(dtype)
    f, w, b = f.astype(compute), w.astype(compute), b.astype(compute)
    pw = None if pos_weight is None else jnp.asarray(pos_weight, compute)
    chunk = min(int(chunk_size), num_labels)
    chunks = -(-num_labels // chunk)

    def step(total, c):
        # The last chunk ends at the last label; columns an earlier chunk took add 0.
        start = jnp.minimum(c * chunk, num_labels - chunk)
        columns = start + jnp.arange(chunk)
        logits = f @ jax.lax.dynamic_slice_in_dim(w, start, chunk, 1)
        logits = logits + jax.lax.dynamic_slice_in_dim(b, start, chunk)
        if kind == "dense":
            y_chunk = jax.lax.dynamic_slice_in_dim(y, start, chunk, 1)
        else:
            y_chunk = jnp.any(y[:, :, None] == columns, axis=1)
        pw_chunk = (
            pw if pw is None or pw.ndim == 0 else jax.lax.dynamic_slice_in_dim(pw, start, chunk)
        )
        loss = binary.sigmoid_binary_cross_entropy(logits, y_chunk, pos_weight=pw_chunk)
        loss = jnp.where(columns >= c * chunk, loss, 0)
        return total + jnp.sum(loss), None

    init = jnp.zeros((), compute)
    total, _ = jax.lax.scan(jax.checkpoint(step, prevent_cse=False), init, jnp.arange(chunks))
    if reduction == "mean":
        total = total / (batch * num_labels)
    return total.astype(dtype)


__all__ = ["sigmoid_binary_cross_entropy_with_linear", "sigmoid_contrastive_loss"]
