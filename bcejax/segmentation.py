"""Overlap losses for binary segmentation, one value per image.

Every function takes a batch of images (the leading axis) of logits, or of
probabilities with ``from_logits=False``, and labels of the same shape in
``[0, 1]``; it reduces over every axis but the leading one and returns one
loss per image in the dtype of the logits. ``where`` drops pixels exactly as
if they were cut out of their image. The overlap counts are soft:

.. math::
    TP = \\sum p y, \\quad FP = \\sum p (1 - y), \\quad FN = \\sum (1 - p) y

with ``1 - p = sigmoid(-x)`` from the logits, so no count cancels. Each loss
is written as ``mismatch / (overlap + mismatch + smooth)``, never as ``1 -
ratio``, so a near-perfect prediction keeps its relative accuracy; an image
with no foreground in its labels and its prediction gives 0 (exactly 0 when
``smooth=0``), never NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from bcejax import _common, binary, checks
from bcejax._primitives import prob_bce_terms
from bcejax.reduction import reduce_loss


def _cut_out(logits, labels, where, name):
    """Shape-checked ``(x, y, mask)`` with masked pixels set to 0 in both.

    A masked pixel is cut out: its values are never checked and a NaN there
    never reaches a loss or a gradient.
    """
    x = checks.check_float(logits, name)
    y = jnp.asarray(labels)
    if x.ndim < 2:
        raise ValueError(
            f"overlap losses take a batch of images, a leading batch axis first: {name} "
            f"have shape {x.shape}; for one image pass {name}[None]"
        )
    if y.shape != x.shape:
        hint = "give both the same shape"
        if y.shape == x.shape[:-1] or x.shape == y.shape[:-1]:
            hint = "drop the size-1 channel axis of one of them, or add it to the other"
        raise ValueError(
            f"labels with shape {y.shape} must have the shape of {name}, {x.shape}: {hint}"
        )
    if where is None:
        return x, y, None
    shape = checks.check_broadcast(**{name: x, "where": where})
    if shape != x.shape:
        raise ValueError(
            f"where with shape {jnp.shape(where)} must broadcast to the shape of {name}, "
            f"{x.shape}, without adding axes"
        )
    mask = jnp.broadcast_to(jnp.asarray(where, bool), x.shape)
    return jnp.where(mask, x, 0), jnp.where(mask, y, 0), mask


def _prepare(logits, labels, where, from_logits):
    """Checked ``(x, p, 1 - p, y, mask, dtype)`` in the compute dtype, masked pixels 0."""
    name = "logits" if from_logits else "probs"
    x, y, mask = _cut_out(logits, labels, where, name)
    if from_logits:
        x = checks.check_logits(x, name)
    else:
        x = checks.check_probabilities(x, name)
    y = checks.check_labels(y)
    dtype = x.dtype
    x = x.astype(_common.compute_dtype(dtype))
    y = y.astype(x.dtype)
    p, p_neg = (jax.nn.sigmoid(x), jax.nn.sigmoid(-x)) if from_logits else (x, 1 - x)
    if mask is not None:
        p, p_neg = jnp.where(mask, p, 0), jnp.where(mask, p_neg, 0)
    return x, p, p_neg, y, mask, dtype


def _image_axes(x):
    return tuple(range(1, x.ndim))


def _overlap_loss(logits, labels, where, from_logits, smooth, *, overlap, fp, fn):
    """``(fp FP + fn FN) / (overlap TP + fp FP + fn FN + smooth)`` per image."""
    checks.check_nonnegative(smooth, "smooth")
    _, p, p_neg, y, _, dtype = _prepare(logits, labels, where, from_logits)
    return _overlap(p, p_neg, y, smooth, overlap, fp, fn).astype(dtype)


def _overlap(p, p_neg, y, smooth, overlap, fp, fn):
    """:func:`_overlap_loss` of prepared values, in their dtype."""
    axes = _image_axes(p)
    tp = jnp.sum(p * y, axes)
    mismatch = fp * jnp.sum(p * (1 - y), axes) + fn * jnp.sum(p_neg * y, axes)
    den = overlap * tp + mismatch + jnp.asarray(smooth, p.dtype)
    # den = 0 only for an empty image and smooth = 0: nothing to get wrong, loss 0.
    positive = den > 0
    return jnp.where(positive, mismatch / jnp.where(positive, den, 1), 0)


@checks.compiled_when_eager
def dice_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    smooth: ArrayLike = 1.0,
    from_logits: bool = True,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft Dice loss per image.

    .. math::
        \ell = 1 - \frac{2 TP + s}{2 TP + FP + FN + s}
             = \frac{FP + FN}{2 TP + FP + FN + s}

    Equivalents: ``optax.dice_loss(smooth=s / 2)`` on ``[..., 1]`` inputs
    (optax adds its ``smooth`` to ``TP``, not ``2 TP``), segmentation_models'
    ``DiceLoss(mode="binary")`` per image. Near 0 for an empty image predicted
    empty needs ``s > 0``: its soft ``FP`` is small but not 0.

    Args:
      logits: a batch of images of logits (or probabilities, see ``from_logits``).
      labels: masks in ``[0, 1]`` of the same shape.
      smooth: ``s >= 0``, added to the numerator and the denominator.
      from_logits: False when ``logits`` are probabilities.
      where: optional pixel mask, broadcastable to the logits' shape.

    Returns:
      The loss per image, shape ``(batch,)``, in the dtype of ``logits``.

    Examples:
      ``(FP + FN) / (2 TP + FP + FN) = 1/3``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> probs = jnp.array([[1.0, 1.0, 0.0, 0.0]])  # one image of 4 pixels
      >>> masks = jnp.array([[1.0, 0.0, 0.0, 0.0]])  # TP = 1, FP = 1, FN = 0
      >>> loss = bcejax.dice_loss(probs, masks, smooth=0.0, from_logits=False)
      >>> [round(v, 4) for v in loss.tolist()]
      [0.3333]

    References:
      Milletari et al., V-Net: Fully Convolutional Neural Networks for
      Volumetric Medical Image Segmentation, 3DV 2016,
      https://arxiv.org/abs/1606.04797
    """
    return _overlap_loss(logits, labels, where, from_logits, smooth, overlap=2, fp=1, fn=1)


@checks.compiled_when_eager
def jaccard_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    smooth: ArrayLike = 1.0,
    from_logits: bool = True,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft Jaccard (IoU) loss per image.

    .. math::
        \ell = 1 - \frac{TP + s}{TP + FP + FN + s} = \frac{FP + FN}{TP + FP + FN + s}

    Equivalent: segmentation_models' ``JaccardLoss(mode="binary")`` per image.

    Args:
      logits: a batch of images of logits (or probabilities, see ``from_logits``).
      labels: masks in ``[0, 1]`` of the same shape.
      smooth: ``s >= 0``.
      from_logits: False when ``logits`` are probabilities.
      where: optional pixel mask, broadcastable to the logits' shape.

    Returns:
      The loss per image, shape ``(batch,)``, in the dtype of ``logits``.

    Examples:
      ``(FP + FN) / (TP + FP + FN) = 1/2``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> probs = jnp.array([[1.0, 1.0, 0.0, 0.0]])  # one image of 4 pixels
      >>> masks = jnp.array([[1.0, 0.0, 0.0, 0.0]])  # TP = 1, FP = 1, FN = 0
      >>> bcejax.jaccard_loss(probs, masks, smooth=0.0, from_logits=False).tolist()
      [0.5]

    References:
      Rahman and Wang, Optimizing Intersection-Over-Union in Deep Neural
      Networks for Image Segmentation, ISVC 2016.
    """
    return _overlap_loss(logits, labels, where, from_logits, smooth, overlap=1, fp=1, fn=1)


@checks.compiled_when_eager
def tversky_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike = 0.3,
    beta: ArrayLike = 0.7,
    smooth: ArrayLike = 1.0,
    from_logits: bool = True,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Tversky loss per image: Dice with separate weights on false positives and negatives.

    .. math::
        \ell = 1 - \frac{TP + s}{TP + \alpha FP + \beta FN + s}
             = \frac{\alpha FP + \beta FN}{TP + \alpha FP + \beta FN + s}

    ``alpha = beta = 1/2`` is Dice (with ``s`` halved), ``alpha = beta = 1``
    Jaccard. The default ``beta = 0.7 > alpha`` weighs missed foreground more,
    as the paper recommends for small lesions.

    Equivalent: segmentation_models' ``TverskyLoss(mode="binary")`` per image.

    Args:
      logits: a batch of images of logits (or probabilities, see ``from_logits``).
      labels: masks in ``[0, 1]`` of the same shape.
      alpha: weight ``>= 0`` of the false positives.
      beta: weight ``>= 0`` of the false negatives.
      smooth: ``s >= 0``.
      from_logits: False when ``logits`` are probabilities.
      where: optional pixel mask, broadcastable to the logits' shape.

    Returns:
      The loss per image, shape ``(batch,)``, in the dtype of ``logits``.

    Examples:
      ``0.3 FP / (TP + 0.3 FP + 0.7 FN) = 0.3 / 1.3``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> probs = jnp.array([[1.0, 1.0, 0.0, 0.0]])  # one image of 4 pixels
      >>> masks = jnp.array([[1.0, 0.0, 0.0, 0.0]])  # TP = 1, FP = 1, FN = 0
      >>> loss = bcejax.tversky_loss(probs, masks, smooth=0.0, from_logits=False)
      >>> [round(v, 4) for v in loss.tolist()]
      [0.2308]

    References:
      Salehi et al., Tversky loss function for image segmentation using 3D
      fully convolutional deep networks, MLMI 2017, https://arxiv.org/abs/1706.05721
    """
    checks.check_nonnegative(alpha, "alpha")
    checks.check_nonnegative(beta, "beta")
    return _overlap_loss(logits, labels, where, from_logits, smooth, overlap=1, fp=alpha, fn=beta)


def _lovasz_gradient(sorted_labels):
    """Increments of the Jaccard loss along the sorted errors (Berman et al., Alg. 1)."""
    foreground = jnp.sum(sorted_labels, -1, keepdims=True)
    intersection = foreground - jnp.cumsum(sorted_labels, -1)
    union = foreground + jnp.cumsum(1 - sorted_labels, -1)  # >= 1 at every position
    jaccard = 1 - intersection / union
    return jnp.concatenate([jaccard[..., :1], jnp.diff(jaccard, axis=-1)], -1)


@checks.compiled_when_eager
def lovasz_hinge(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    per_image: bool = True,
    from_logits: bool = True,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Lovász hinge: the exact Lovász extension of the Jaccard loss, per image.

    .. math::
        \ell = \sum_i \max(e_{\pi(i)}, 0)\, g_i, \qquad e = 1 - x (2 y - 1)

    with the hinge errors ``e`` sorted in decreasing order by ``pi`` and ``g``
    the increments of the Jaccard loss of the growing set of mispredicted
    pixels. The loss is piecewise linear in the logits, its gradient a
    permutation of ``g``. With ``from_logits=False`` the errors are
    ``|y - p|`` (the foreground term of the Lovász-softmax loss). An image
    with no foreground and every pixel right (hinge margin >= 1) gives 0.

    Equivalent: ``lovasz_hinge`` of the reference implementation by Berman.

    Args:
      logits: a batch of images of logits (or probabilities, see ``from_logits``).
      labels: binary masks of the same shape.
      per_image: True (default) for one loss per image; False treats the batch
        as one image and returns a scalar.
      from_logits: False for probabilities (Lovász-softmax errors).
      where: optional pixel mask, broadcastable to the logits' shape.

    Returns:
      The loss per image, shape ``(batch,)`` (a scalar if not ``per_image``),
      in the dtype of ``logits``.

    Examples:
      Hinge errors ``1 - 0.5 = 0.5`` (the foreground pixel) and ``1 - 1 = 0``; the
      first increment of the Jaccard loss is 1:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> bcejax.lovasz_hinge(jnp.array([[0.5, -1.0]]), jnp.array([[1.0, 0.0]])).tolist()
      [0.5]

    References:
      Berman et al., The Lovász-Softmax loss: A tractable surrogate for the
      optimization of the intersection-over-union measure in neural networks,
      CVPR 2018, https://arxiv.org/abs/1705.08790
    """
    x, p, _, y, mask, dtype = _prepare(logits, labels, where, from_logits)
    errors = 1 - x * (2 * y - 1) if from_logits else jnp.abs(y - p)
    if mask is not None:
        errors = jnp.where(mask, errors, -jnp.inf)  # sorted last, and relu(-inf) = 0
    batch = x.shape[0] if per_image else 1
    pixels = errors.size // batch if batch else 0  # -1 cannot be inferred from an empty batch
    errors = errors.reshape(batch, pixels)
    y = y.reshape(batch, pixels)
    order = jnp.argsort(-errors, axis=-1, stable=True)
    errors = jnp.take_along_axis(errors, order, -1)
    y = jnp.take_along_axis(y, order, -1)
    loss = jnp.sum(jax.nn.relu(errors) * _lovasz_gradient(y), -1)
    return (loss if per_image else loss[0]).astype(dtype)


@checks.compiled_when_eager
def sigmoid_bce_dice_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    bce_weight: ArrayLike = 1.0,
    dice_weight: ArrayLike = 1.0,
    smooth: ArrayLike = 1.0,
    from_logits: bool = True,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Weighted sum of the mean BCE over each image's pixels and its Dice loss.

    .. math::
        \ell = \lambda_{bce} \frac{1}{n} \sum_i \mathrm{BCE}(x_i, y_i)
             + \lambda_{dice}\, \mathrm{Dice}(x, y)

    with ``n`` the number of unmasked pixels of the image (an image with none
    gives 0). BCE trains every pixel; Dice counters the imbalance of a small
    foreground.

    Args:
      logits: a batch of images of logits (or probabilities, see ``from_logits``).
      labels: masks in ``[0, 1]`` of the same shape.
      bce_weight: ``lambda_bce >= 0``.
      dice_weight: ``lambda_dice >= 0``.
      smooth: ``s >= 0`` of the Dice term.
      from_logits: False when ``logits`` are probabilities (PyTorch's clamped
        ``binary_cross_entropy``).
      where: optional pixel mask, broadcastable to the logits' shape.

    Returns:
      The loss per image, shape ``(batch,)``, in the dtype of ``logits``.

    Examples:
      Logits 0: the BCE is ``log 2``, and Dice with ``TP = FP = FN = 1/2``,
      ``s = 1`` is ``1 / 3``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss = bcejax.sigmoid_bce_dice_loss(jnp.array([[0.0, 0.0]]), jnp.array([[1.0, 0.0]]))
      >>> [round(v, 4) for v in loss.tolist()]
      [1.0265]

    References:
      Isensee et al., nnU-Net: a self-configuring method for deep
      learning-based biomedical image segmentation, Nature Methods 2021.
    """
    checks.check_nonnegative(bce_weight, "bce_weight")
    checks.check_nonnegative(dice_weight, "dice_weight")
    checks.check_nonnegative(smooth, "smooth")
    x, p, p_neg, y, mask, dtype = _prepare(logits, labels, where, from_logits)
    dice = _overlap(p, p_neg, y, smooth, overlap=2, fp=1, fn=1)
    bce = binary.sigmoid_bce_of_checked(x, y) if from_logits else prob_bce_terms(x, y, 1 - y)
    bce = reduce_loss(bce, "mean", where=mask, axis=_image_axes(x))
    bce_weight, dice_weight = jnp.asarray(bce_weight, x.dtype), jnp.asarray(dice_weight, x.dtype)
    return (bce_weight * bce + dice_weight * dice).astype(dtype)
