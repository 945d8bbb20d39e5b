"""Losses whose full logits are too large to materialize on one device.

:func:`sigmoid_binary_cross_entropy_with_linear` fuses a multi-label
classifier head ``features @ weight + bias`` with its BCE and never forms the
``batch x labels`` logits: it works through the labels a chunk at a time and
recomputes each chunk's logits for the derivative.

:func:`softmax_cross_entropy_with_linear` does the same for a language
model's output layer and its cross-entropy: an online log-sum-exp over
vocabulary chunks, without the ``tokens x vocabulary`` logits.

:func:`sigmoid_contrastive_loss` is the SigLIP loss of an image-text batch;
with ``axis_name`` inside ``shard_map`` the embeddings stay sharded and the
text blocks travel around the device ring, so no device ever holds more than
its local ``batch x batch`` block of logits.
"""

from __future__ import annotations

from collections.abc import Hashable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from bcejax import _common, _linear_head, binary, checks


def _pair_losses(
    x: jax.Array,
    y: jax.Array,
    logit_scale: jax.Array,
    logit_bias: jax.Array,
    positive_diagonal: bool,
) -> jax.Array:
    """Summed BCE of the block ``logit_scale * x @ y.T + logit_bias`` (diagonal +1 if asked)."""
    logits = logit_scale * (x @ y.T) + logit_bias
    if positive_diagonal:
        labels = jnp.eye(x.shape[0], y.shape[0], dtype=logits.dtype)
    else:
        labels = jnp.zeros((), logits.dtype)
    return jnp.sum(binary.sigmoid_binary_cross_entropy(logits, labels))


@checks.compiled_when_eager
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

    Examples:
      Orthonormal pairs, ``t = 1``, ``b = 0``: two positives at logit 1 and two
      negatives at logit 0, ``(2 log(1 + e^{-1}) + 2 log 2) / 2``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss = bcejax.sigmoid_contrastive_loss(
      ...     jnp.eye(2), jnp.eye(2), logit_scale=1.0, logit_bias=0.0
      ... )
      >>> print(f"{float(loss):.4f}")
      1.0064

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


def _axis_names(axis_name: Hashable | tuple[Hashable, ...] | None) -> tuple[Hashable, ...] | None:
    if axis_name is None:
        return None
    return tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)


def _check_matmul(features, weight, features_shape, weight_shape, hint=""):
    """Float ``features`` and ``weight``, checked for NaN, whose product is defined."""
    f = checks.check_float(features, "features")
    w = checks.check_float(weight, "weight")
    if f.ndim != 2 or w.ndim != 2 or w.shape[0] != f.shape[1]:
        raise ValueError(
            f"features {features_shape} and weight {weight_shape} must share dim, got "
            f"{f.shape} and {w.shape}{hint}"
        )
    return checks.check_logits(f, "features"), checks.check_logits(w, "weight")


def _check_head(features, weight, bias, labels, positive_indices, pos_weight, reduction, total):
    """Checked operands; the labels as ``("dense", y)`` or ``("indices", i)``.

    ``total`` is the number of labels across the devices (``weight`` holds a slice of them).
    """
    f, w = _check_matmul(features, weight, "(batch, dim)", "(dim, labels)")
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
    indices = checks.check_class_indices(indices, total, -1, "positive_indices")
    return f, w, b, ("indices", indices)


@checks.compiled_when_eager
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
    axis_name: Hashable | tuple[Hashable, ...] | None = None,
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

    With ``axis_name`` (inside ``shard_map`` over that axis) the labels axis
    is sharded: ``weight``, ``bias``, dense ``labels`` and a per-label
    ``pos_weight`` are this device's consecutive slice of the labels (device
    ``i`` of the axis holds slice ``i``), ``features`` and
    ``positive_indices`` (global label indices) are the same on every device.
    The sums are combined across the axis (``psum``), so the result, the same
    on every device, is the loss of all the labels and ``"mean"`` divides by
    ``batch`` times their total number.

    Args:
      features: ``(batch, dim)``, float.
      weight: ``(dim, labels)``, float.
      bias: ``(labels,)`` or None.
      labels: dense labels ``(batch, labels)``, or None with ``positive_indices``.
      positive_indices: ``(batch, k)`` integer label indices, -1 for padding.
      pos_weight: None, a scalar or one per label, ``>= 0``.
      reduction: ``"mean"`` or ``"sum"``.
      chunk_size: labels per chunk (static).
      axis_name: the mapped axis the labels are sharded over, or None.

    Returns:
      The reduced loss, a scalar in the dtype of ``features @ weight`` (float32
      at least inside).

    Examples:
      The logits ``features @ weight`` are ``[[1, -1], [1, -1]]``, every one on the right
      side of its label: the mean is ``log(1 + e^{-1})``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> features, weight = jnp.ones((2, 2)), jnp.array([[1.0, 0.0], [0.0, -1.0]])
      >>> labels = jnp.array([[1.0, 0.0], [1.0, 0.0]])
      >>> loss = bcejax.sigmoid_binary_cross_entropy_with_linear(features, weight, None, labels)
      >>> print(f"{float(loss):.4f}")
      0.3133
    """
    axes = _axis_names(axis_name)
    shards = 1 if axes is None else jax.lax.axis_size(axes)
    total_labels = jnp.shape(weight)[-1] * shards
    f, w, b, (kind, y) = _check_head(
        features, weight, bias, labels, positive_indices, pos_weight, reduction, total_labels
    )
    batch, num_labels = f.shape[0], w.shape[1]
    dtype = jnp.promote_types(f.dtype, w.dtype)
    compute = _common.compute_dtype(dtype)
    f, w, b = f.astype(compute), w.astype(compute), b.astype(compute)
    pw = None if pos_weight is None else jnp.asarray(pos_weight, compute)
    chunk = min(
        checks.check_count(chunk_size, "chunk_size", what=" (labels per chunk)"), num_labels
    )
    chunks = -(-num_labels // chunk)
    offset = 0 if axes is None else jax.lax.axis_index(axes) * num_labels

    def step(total, c):
        # The last chunk ends at the last label; columns an earlier chunk took add 0.
        start = jnp.minimum(c * chunk, num_labels - chunk)
        columns = start + jnp.arange(chunk)
        logits = f @ jax.lax.dynamic_slice_in_dim(w, start, chunk, 1)
        logits = logits + jax.lax.dynamic_slice_in_dim(b, start, chunk)
        if kind == "dense":
            y_chunk = jax.lax.dynamic_slice_in_dim(y, start, chunk, 1)
        else:
            y_chunk = jnp.any(y[:, :, None] == offset + columns, axis=1)
        pw_chunk = (
            pw if pw is None or pw.ndim == 0 else jax.lax.dynamic_slice_in_dim(pw, start, chunk)
        )
        loss = binary.sigmoid_bce_of_checked(logits, y_chunk.astype(compute), None, pw_chunk)
        loss = jnp.where(columns >= c * chunk, loss, 0)
        return total + jnp.sum(loss), None

    init = _linear_head.varying(jnp.zeros((), compute), axes)
    total, _ = jax.lax.scan(jax.checkpoint(step, prevent_cse=False), init, jnp.arange(chunks))
    if axes is not None:
        total = jax.lax.psum(total, axes)
    if reduction == "mean":
        total = total / (batch * total_labels)
    return total.astype(dtype)


def _check_softmax_head(
    features, weight, bias, labels, *, reduction, chunk_size, label_smoothing, z_loss, logit_softcap
):
    """The softmax head's checked features, weight, bias (or None) and labels; checks the rest."""
    f, w = _check_matmul(
        features,
        weight,
        "(tokens, dim)",
        "(dim, vocabulary)",
        "; flatten a (batch, sequence, dim) batch with features.reshape(-1, dim)",
    )
    tokens, vocabulary = f.shape[0], w.shape[1]
    b = None
    if bias is not None:
        b = checks.check_float(bias, "bias")
        if b.shape != (vocabulary,):
            raise ValueError(
                f"bias must have shape ({vocabulary},), one per vocabulary entry, got {b.shape}"
            )
    y = checks.check_integer(labels, "labels", "pass token ids (class indices)")
    if y.shape != (tokens,):
        raise ValueError(
            f"labels must have shape ({tokens},), one token id per row of features, got {y.shape}"
        )
    checks.check_reduction(reduction)
    checks.check_count(chunk_size, "chunk_size", what=" (it sets the vocabulary chunk's shape)")
    checks.check_label_smoothing(label_smoothing)
    checks.check_nonnegative(z_loss, "z_loss")
    if logit_softcap is not None and jnp.ndim(logit_softcap) != 0:
        raise ValueError(f"logit_softcap must be a scalar, got shape {jnp.shape(logit_softcap)}")
    checks.check_positive(logit_softcap, "logit_softcap", hint=": pass None for no cap")
    return f, w, b, y


@checks.compiled_when_eager
def softmax_cross_entropy_with_linear(
    features: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None,
    labels: ArrayLike,
    *,
    ignore_index: int | None = -100,
    label_smoothing: ArrayLike = 0.0,
    z_loss: ArrayLike = 0.0,
    logit_softcap: ArrayLike | None = None,
    reduction: str = "mean",
    chunk_size: int = 1024,
    axis_name: Hashable | tuple[Hashable, ...] | None = None,
) -> jax.Array:
    r"""Softmax cross-entropy of the logits ``features @ weight + bias``, without forming them.

    The output layer of a language model and its loss in one op. With
    ``z = F W + b`` (``b = 0`` when ``bias`` is None), the logits are
    ``x = z``, or ``x = c \tanh(z / c)`` with ``c = logit_softcap``; per token
    ``i`` with target ``t_i``, over a vocabulary of ``V`` entries,

    .. math::
        \mathrm{lse}_i = \log \sum_{v} e^{x_{iv}}, \qquad
        \ell_i = (1 - a)(\mathrm{lse}_i - x_{i t_i})
               + \frac{a}{V} \sum_v (\mathrm{lse}_i - x_{iv})
               + \zeta\, \mathrm{lse}_i^2

    with ``a = label_smoothing`` and ``zeta = z_loss``; a token labelled
    ``ignore_index`` has loss 0 and no gradient. Without ``z_loss`` and
    ``logit_softcap`` this is
    ``CategoricalCrossEntropy(label_smoothing=a, ignore_index=...)`` (PyTorch
    ``CrossEntropyLoss``) on the materialized logits; ``"mean"`` divides by
    the number of tokens not ignored (0, with a zero gradient, when all are),
    ``"sum"`` sums, ``"none"`` returns ``l_i`` so sequences can be weighted.

    The vocabulary is processed ``chunk_size`` entries at a time: an online
    log-sum-exp keeps each token's running maximum and sum of exponentials
    (the last chunk ends at the last entry and masks what an earlier chunk
    took, so nothing is padded), and the derivative, a hand-written reverse-
    mode rule, recomputes each chunk's logits and multiplies its logit
    gradient ``(1 + 2 zeta lse) softmax(x) - (1 - a) onehot(t) - a / V``
    into the gradients of ``features``, ``weight`` and ``bias``. No array of
    more than ``tokens x chunk_size`` entries is formed besides the operands
    and their gradients (on XLA:CPU, a half-precision weight is also sliced
    through an integer view of it, a copy of its size). Half-precision inputs
    are multiplied and accumulated in float32. Reverse mode only (``grad``,
    ``vjp``); ``label_smoothing``, ``z_loss`` and ``logit_softcap`` may be
    traced and differentiated.

    With ``axis_name`` (inside ``shard_map`` over that axis) the vocabulary
    is sharded, as in tensor-parallel training: ``weight`` ``(dim, V / n)``
    and ``bias`` are this device's consecutive slice of the vocabulary
    (device ``i`` of the axis holds slice ``i``), ``features`` and ``labels``
    (global token ids) are the same on every device. The per-token maximum,
    sum of exponentials, target logit and sum of logits are combined across
    the axis (``pmax``, ``psum``), so the loss, the same on every device, is
    that of the whole vocabulary, and the gradients are those of the local
    slices (``features``' summed across the axis).

    Args:
      features: ``(tokens, dim)``, float (the last hidden states, flattened).
      weight: ``(dim, vocabulary)``, float.
      bias: ``(vocabulary,)``, float, or None.
      labels: ``(tokens,)`` integer token ids in ``[0, V)`` or ``ignore_index``
        (checked eagerly and under :func:`bcejax.checked`; in a plain ``jit``
        an out-of-range label gives a NaN loss).
      ignore_index: the label of tokens to skip (padding), or None.
      label_smoothing: ``a`` in ``[0, 1)``, spread uniformly over the vocabulary.
      z_loss: ``zeta >= 0``, the coefficient of ``lse^2`` (PaLM uses 1e-4).
      logit_softcap: ``c > 0`` or None (Gemma 2 uses 30).
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      chunk_size: vocabulary entries per chunk (static); memory grows with
        ``tokens * chunk_size``.
      axis_name: the mapped axis the vocabulary is sharded over, or None.

    Returns:
      The loss: a scalar, or ``(tokens,)`` with ``"none"``, in the dtype of
      ``features @ weight``.

    Examples:
      Zero logits over a vocabulary of 8 give ``log 8``; the padding token is ignored:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> features, weight = jnp.zeros((2, 4)), jnp.zeros((4, 8))
      >>> labels = jnp.array([3, -100])
      >>> loss = bcejax.softmax_cross_entropy_with_linear(features, weight, None, labels)
      >>> print(f"{float(loss):.4f}")
      2.0794

    References:
      Wijmans et al., Cut Your Losses in Large-Vocabulary Language Models,
      2024, https://arxiv.org/abs/2411.09009 (the chunked loss and gradient).
      Chowdhery et al., PaLM: Scaling Language Modeling with Pathways, 2022,
      https://arxiv.org/abs/2204.02311 (the z-loss).
      Gemma Team, Gemma 2: Improving Open Language Models at a Practical
      Size, 2024, https://arxiv.org/abs/2408.00118 (the logit soft-cap).
    """
    f, w, b, y = _check_softmax_head(
        features,
        weight,
        bias,
        labels,
        reduction=reduction,
        chunk_size=chunk_size,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        logit_softcap=logit_softcap,
    )
    axes = _axis_names(axis_name)
    vocabulary = w.shape[1]
    num_classes = vocabulary * (1 if axes is None else jax.lax.axis_size(axes))
    y = checks.check_class_indices(y, num_classes, ignore_index)
    dtype = jnp.promote_types(f.dtype, w.dtype)
    compute = _common.compute_dtype(dtype)
    config = _linear_head.HeadConfig(
        chunk=min(int(chunk_size), vocabulary),
        num_classes=num_classes,
        ignore_index=None if ignore_index is None else int(ignore_index),
        smoothing=not _common.known_zero(label_smoothing),
        softcap=logit_softcap is not None,
        softcap_grad=isinstance(logit_softcap, jax.core.Tracer),
        axis_name=axes,
    )
    loss = _linear_head.token_losses(
        config,
        f.astype(compute),
        w,  # cast a chunk at a time: no float32 copy of a half-precision weight
        jnp.zeros(vocabulary, compute) if b is None else b.astype(compute),
        y,
        jnp.asarray(label_smoothing, compute),
        jnp.asarray(z_loss, compute),
        jnp.asarray(1 if logit_softcap is None else logit_softcap, compute),
    )
    if reduction == "none":
        return loss.astype(dtype)
    total = jnp.sum(loss)
    if reduction == "mean":
        kept = jnp.ones(y.shape, bool) if ignore_index is None else y != ignore_index
        total = _common.safe_divide(total, jnp.sum(kept, dtype=compute))
    return total.astype(dtype)


__all__ = [
    "sigmoid_binary_cross_entropy_with_linear",
    "sigmoid_contrastive_loss",
    "softmax_cross_entropy_with_linear",
]
