"""The softmax cross-entropy family and the margin baseline, per example.

Every function returns the unreduced loss, one value per example: the class
axis (or axes) is reduced, the others are kept; the dtype is that of the
logits (half precision is computed in float32). The first four are drop-in
supersets of optax's functions of the same names: positional ``axis`` and
``where``, the same defaults and shapes, and optax's ``where``: a mask of the
batch shape drops whole examples (their loss is 0), a mask of the logits'
shape drops single classes from the softmax.
"""

from __future__ import annotations

import math
import operator

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bcejax import _common, _softmax, binary, checks


def _class_axes(axis: int | tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """The class axes as a tuple of non-negative ints, in the given order (flat labels)."""
    axes = (axis,) if isinstance(axis, int) else axis
    if not isinstance(axes, tuple) or not axes:
        raise TypeError(f"axis must be an int or a non-empty tuple of ints, got {axis!r}")
    out = []
    for a in axes:
        a = operator.index(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for logits with {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis!r} names an axis twice")
    return tuple(out)


def _classes_last(x, axes):
    """``x`` with its class axes moved to the end and flattened into one."""
    batch = [a for a in range(x.ndim) if a not in axes]
    if axes != tuple(range(x.ndim - len(axes), x.ndim)):
        x = jnp.transpose(x, (*batch, *axes))
    # The class size written out: -1 cannot be inferred from an empty batch.
    return x.reshape(*x.shape[: len(batch)], math.prod(x.shape[len(batch) :]))


def _class_mask(where, shape, axes):
    """optax's ``where`` as a boolean mask of ``shape``, or None."""
    if where is None:
        return None
    where = given = jnp.asarray(where, bool)
    batch_ndim = len(shape) - len(axes)
    if where.ndim <= batch_ndim:  # of the batch shape, or broadcastable to it
        where = jnp.expand_dims(where.reshape((1,) * (batch_ndim - where.ndim) + where.shape), axes)
    try:
        return jnp.broadcast_to(where, shape)
    except ValueError:
        raise ValueError(
            f"where with shape {given.shape} fits neither the logits' shape {shape} nor "
            "their batch shape (the logits' shape without the class axes)"
        ) from None


def _class_weights(class_weights, shape, axes, dtype, name="class_weights"):
    """``class_weights`` spread over the flattened class axis, or None."""
    if class_weights is None:
        return None
    weights = jnp.asarray(class_weights, dtype)
    class_shape = tuple(shape[a] for a in axes)
    if weights.shape not in (class_shape, (int(np.prod(class_shape)),)):
        raise ValueError(
            f"{name} must have one weight per class, shape {class_shape}, got shape {weights.shape}"
        )
    return checks.check_weights(weights, name).reshape(-1)


def _smoothing(label_smoothing, dtype):
    checks.check_label_smoothing(label_smoothing)
    if _common.known_zero(label_smoothing):
        return None
    return jnp.asarray(label_smoothing, dtype)


def _prepare(logits, axis, where):
    """Checked logits (compute dtype, classes last), the mask, the axes and the dtype."""
    logits = checks.check_float(logits, "logits")
    axes = _class_axes(axis, logits.ndim)
    mask = _class_mask(where, logits.shape, axes)
    logits = checks.check_logits(
        logits if mask is None else jnp.where(mask, logits, 0), carrier=logits
    )
    x = _classes_last(logits.astype(_common.compute_dtype(logits.dtype)), axes)
    return x, None if mask is None else _classes_last(mask, axes), axes, logits.dtype


def _prepare_soft(logits, labels, axis, where):
    """:func:`_prepare` with checked soft labels: ``(x, y, mask, axes, shape, dtype)``.

    ``y`` is in the compute dtype with the classes last; ``shape`` is the shape
    the logits and labels broadcast to.
    """
    x_in = checks.check_float(logits, "logits")
    labels = jnp.asarray(labels)
    shape = checks.check_broadcast(logits=x_in, labels=labels)
    x, mask, axes, dtype = _prepare(jnp.broadcast_to(x_in, shape), axis, where)
    y = _classes_last(jnp.broadcast_to(labels, shape), axes)
    y = checks.check_labels(y if mask is None else jnp.where(mask, y, 0), carrier=y)
    return x, y.astype(x.dtype), mask, axes, shape, dtype


def _masked(x, coef, mask):
    # Masked classes leave the softmax (logit -inf, which also hides a NaN there)
    # and the sum (coefficient 0).
    if mask is None:
        return x, coef
    return jnp.where(mask, x, -jnp.inf), jnp.where(mask, coef, 0)


@checks.compiled_when_eager
def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    *,
    label_smoothing: ArrayLike = 0.0,
    class_weights: ArrayLike | None = None,
) -> jax.Array:
    r"""Softmax cross-entropy with one-hot or soft labels, per example.

    .. math::
        \ell = -\sum_c w_c\, y_c \log \mathrm{softmax}(x)_c, \qquad
        y \leftarrow y (1 - a) + a / K

    ``K`` is the number of classes (those not masked by ``where``). The
    derivative in the logits is ``sum(w y) softmax(x) - w y``. Exact for
    infinite logits: a class at ``+inf`` takes all the probability, one at
    ``-inf`` none; a zero label on a ``-inf`` logit adds 0, not NaN.

    Equivalents: ``optax.softmax_cross_entropy`` (drop-in superset), PyTorch
    ``CrossEntropyLoss(weight=, label_smoothing=, reduction="none")`` with
    probability targets, Keras ``categorical_crossentropy(from_logits=True)``.

    Args:
      logits: unnormalized log-probabilities, float, classes along ``axis``.
      labels: one-hot or soft labels in ``[0, 1]`` (checked), broadcastable
        with ``logits``. They need not sum to 1: the formula is applied as
        written, as optax and PyTorch do (multi-hot targets add their terms).
      axis: the class axis, or a tuple of axes.
      where: optional mask, of the batch shape (False drops the example: its
        loss is 0) or of the logits' shape (False drops that class).
      label_smoothing: ``a`` in ``[0, 1)``; spreads ``a / K`` over the classes.
      class_weights: optional weights ``w >= 0``, one per class.

    Returns:
      The loss per example: the logits' shape without the class axes, in the
      dtype of ``logits``.

    Examples:
      Uniform logits over 3 classes give ``log 3``; ``log(1 + 2 e^{-2})`` when the
      target's logit is 2 (as ``optax.softmax_cross_entropy``):

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> logits = jnp.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
      >>> loss = bcejax.softmax_cross_entropy(logits, jnp.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
      >>> [round(v, 4) for v in loss.tolist()]
      [1.0986, 0.2395]

    References:
      Szegedy et al., Rethinking the Inception Architecture for Computer
      Vision, CVPR 2016 (label smoothing), https://arxiv.org/abs/1512.00567
    """
    x, y, mask, axes, shape, dtype = _prepare_soft(logits, labels, axis, where)
    weights = _class_weights(class_weights, shape, axes, x.dtype)
    coef = _smoothed_labels(y, _smoothing(label_smoothing, x.dtype), mask)
    if weights is not None:
        coef = coef * weights
    x, coef = _masked(x, coef, mask)
    return _softmax.softmax_cross_entropy(False, x, None, None, coef).astype(dtype)


def _smoothed_labels(y, smoothing, mask):
    """``y (1 - a) + a / K`` with ``K`` the number of unmasked classes."""
    if smoothing is None:
        return y
    num_classes = y.shape[-1] if mask is None else jnp.sum(mask, -1, keepdims=True)
    return y * (1 - smoothing) + smoothing / jnp.maximum(num_classes, 1).astype(y.dtype)


def _integer_labels(labels, x, axes, logits_shape):
    """Checked integer labels of the batch shape."""
    labels = checks.check_integer(
        labels, "labels", "pass class indices, or use softmax_cross_entropy for one-hot labels"
    )
    batch = tuple(n for a, n in enumerate(logits_shape) if a not in axes)
    try:
        shape = jnp.broadcast_shapes(labels.shape, batch)
    except ValueError:
        shape = None
    if shape != batch:
        raise ValueError(
            f"labels with shape {labels.shape} do not match the batch shape {batch} of "
            f"logits with shape {logits_shape} (class axes {axes}): give one class index "
            "per example"
        )
    return jnp.broadcast_to(labels, batch)


def _exempt(labels, kept):
    """The labels to check: those of examples that a mask drops whole are not."""
    return labels if kept is None else jnp.where(kept, labels, 0)


def _in_range(labels, num_classes, kept):
    # A label out of range gives NaN in a plain jit, unless its example is masked.
    in_range = (labels >= 0) & (labels < num_classes)
    return in_range if kept is None else in_range | ~kept


@checks.compiled_when_eager
def softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    *,
    label_smoothing: ArrayLike = 0.0,
    class_weights: ArrayLike | None = None,
    ignore_index: int | None = None,
) -> jax.Array:
    r"""Softmax cross-entropy with integer class labels, per example.

    .. math::
        \ell = -(1 - a)\, w_t \log \mathrm{softmax}(x)_t
               - \frac{a}{K} \sum_c w_c \log \mathrm{softmax}(x)_c

    with ``t`` the label, as PyTorch ``CrossEntropyLoss(weight=,
    label_smoothing=, ignore_index=, reduction="none")``. An example labelled
    ``ignore_index`` gets loss 0 and no gradient. With a tuple ``axis`` the
    label is a flat (row-major) index into the class axes, as in optax. A
    label outside ``[0, K)`` that is not ``ignore_index`` is an error when the
    values are checked (eagerly, or under :func:`bcejax.checked`); in a plain
    ``jit`` its loss is NaN. A label whose class ``where`` masks adds 0.

    Equivalents: ``optax.softmax_cross_entropy_with_integer_labels``
    (drop-in superset), PyTorch ``CrossEntropyLoss`` as above, Keras
    ``sparse_categorical_crossentropy(from_logits=True, ignore_class=)``.

    Args:
      logits: unnormalized log-probabilities, float, classes along ``axis``.
      labels: integer class indices, of the logits' shape without the class axes.
      axis: the class axis, or a tuple of axes.
      where: optional mask, of the batch shape or of the logits' shape (as in
        :func:`softmax_cross_entropy`).
      label_smoothing: ``a`` in ``[0, 1)``.
      class_weights: optional weights ``w >= 0``, one per class.
      ignore_index: optional label value (e.g. -100) that marks examples to skip.

    Returns:
      The loss per example, of the batch shape, in the dtype of ``logits``.

    Examples:
      ``log 3`` and ``log(1 + 2 e^{-2})``, as ``optax.softmax_cross_entropy_with_integer_labels``;
      an ignored example gives 0:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> logits = jnp.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
      >>> loss = bcejax.softmax_cross_entropy_with_integer_labels(
      ...     logits, jnp.array([0, 0, -100]), ignore_index=-100
      ... )
      >>> [round(v, 4) for v in loss.tolist()]
      [1.0986, 0.2395, 0.0]
    """
    logits = checks.check_float(logits, "logits")
    x, mask, axes, dtype = _prepare(logits, axis, where)
    labels = _integer_labels(labels, x, axes, logits.shape)
    num_classes = x.shape[-1]
    kept = None if mask is None else jnp.any(mask, -1)  # examples not masked whole
    labels = checks.check_class_indices(
        _exempt(labels, kept), num_classes, ignore_index, carrier=labels
    )
    # The coefficients are u onehot(labels) + v: the target's, and the smoothing's.
    u = jnp.ones(labels.shape, x.dtype)
    weights = _class_weights(class_weights, logits.shape, axes, x.dtype)
    if weights is not None:
        u = u * jnp.take(weights, labels, mode="clip")
    v = None
    smoothing = _smoothing(label_smoothing, x.dtype)
    if smoothing is not None:
        num_classes_row = num_classes if mask is None else jnp.sum(mask, -1, keepdims=True)
        v = smoothing / jnp.maximum(num_classes_row, 1).astype(x.dtype)
        v = v if weights is None else v * weights
        u = u * (1 - smoothing)
    if mask is not None:
        x = jnp.where(mask, x, -jnp.inf)
        u = jnp.where(jnp.take_along_axis(mask, labels[..., None], -1, mode="clip")[..., 0], u, 0)
        v = None if v is None else jnp.where(mask, v, 0)
    in_range = _in_range(labels, num_classes, kept)
    if ignore_index is not None:
        ignored = labels == ignore_index
        in_range |= ignored
        u = jnp.where(ignored, 0, u)
        v = None if v is None else jnp.where(ignored[..., None], 0, v)
    loss = _softmax.softmax_cross_entropy(True, x, labels, u, v)
    return jnp.where(in_range, loss, jnp.nan).astype(dtype)


@checks.compiled_when_eager
def softmax_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    gamma: ArrayLike = 2.0,
    alpha: ArrayLike | None = None,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Softmax focal loss with integer class labels, per example.

    .. math::
        \ell = -\alpha_t (1 - p_t)^\gamma \log p_t, \qquad
        p_t = \mathrm{softmax}(x)_t = \sigma(x_t - \log\textstyle\sum_{c \ne t} e^{x_c})

    ``p_t`` is the sigmoid of the target's margin over the log-sum-exp of the
    other classes, so the binary focal kernel computes the loss, with its
    exact ``1 - p_t`` and finite derivatives for any ``gamma >= 0``.
    ``alpha`` is a scalar or one weight per class (``alpha_t`` that of the
    target); None weighs every class 1. ``gamma = 0`` is cross-entropy.

    Equivalent: Keras ``CategoricalFocalCrossentropy(alpha=, gamma=,
    from_logits=True)`` on one-hot labels, whose default ``alpha`` is 0.25.

    Args:
      logits: unnormalized log-probabilities, float, classes along ``axis``.
      labels: integer class indices, of the logits' shape without the class axes.
      gamma: focusing exponent ``>= 0``.
      alpha: optional weight ``>= 0``: a scalar, or one per class.
      axis: the class axis, or a tuple of axes.
      where: optional mask, of the batch shape or of the logits' shape.

    Returns:
      The loss per example, of the batch shape, in the dtype of ``logits``.

    Examples:
      Two equal logits: ``p_t = 1/2``, so ``(1/2)**2 log 2``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss = bcejax.softmax_focal_loss(jnp.array([[0.0, 0.0]]), jnp.array([0]), gamma=2.0)
      >>> [round(v, 4) for v in loss.tolist()]
      [0.1733]

    References:
      Lin et al., Focal Loss for Dense Object Detection, ICCV 2017,
      https://arxiv.org/abs/1708.02002
    """
    logits = checks.check_float(logits, "logits")
    x, mask, axes, dtype = _prepare(logits, axis, where)
    labels = _integer_labels(labels, x, axes, logits.shape)
    num_classes = x.shape[-1]
    kept = None if mask is None else jnp.any(mask, -1)
    labels = checks.check_class_indices(_exempt(labels, kept), num_classes, carrier=labels)
    checks.check_gamma(gamma)
    target = labels[..., None] == jnp.arange(num_classes, dtype=labels.dtype)
    if mask is not None:
        x = jnp.where(mask, x, -jnp.inf)
        target &= mask  # a masked target class adds 0
    # p_t = sigmoid(margin): the target's logit over the log-sum-exp of the others.
    target_logit = jnp.sum(jnp.where(target, x, 0), -1)
    others = _softmax.logsumexp(jnp.where(target, -jnp.inf, x), (-1,))
    # Equal (both +inf, say) means p_t = 1/2, not inf - inf = NaN. The tie's value
    # is 0 but its derivative is still d(target_logit) - d(others).
    tie = _zero_with_derivative(target_logit) - _zero_with_derivative(others)
    margin = jnp.where(target_logit == others, tie, target_logit - others)
    has_target = jnp.any(target, -1)
    weight = has_target.astype(x.dtype)
    if alpha is not None:
        checks.check_nonnegative(alpha, "alpha")
        alpha = jnp.asarray(alpha, x.dtype)
        if alpha.ndim:
            alpha = _class_weights(alpha, logits.shape, axes, x.dtype, "alpha")
            alpha = jnp.sum(jnp.where(target, alpha, 0), -1)
        weight = weight * alpha
    margin = jnp.where(has_target, margin, 0)
    loss = binary.sigmoid_focal_of_checked(margin, jnp.ones_like(margin), weight, None, gamma)
    return jnp.where(_in_range(labels, num_classes, kept), loss, jnp.nan).astype(dtype)


@jax.custom_jvp
def _zero_with_derivative(a):
    """0, with the derivative of ``a`` (finite or not)."""
    return jnp.zeros_like(a)


@_zero_with_derivative.defjvp
def _zero_with_derivative_jvp(primals, tangents):
    return jnp.zeros_like(primals[0]), tangents[0]


@checks.compiled_when_eager
def poly_loss_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    epsilon: ArrayLike = 2.0,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Poly-1 loss: softmax cross-entropy plus a linear term in ``1 - p_t``, per example.

    .. math::
        \ell = -\sum_c y_c \log p_c + \epsilon \sum_c y_c (1 - p_c),
        \qquad p = \mathrm{softmax}(x)

    For one-hot labels the second sum is ``1 - p_t``. ``1 - p_c`` is computed
    as ``-expm1(log p_c)``, without cancellation.

    Equivalent: ``optax.poly_loss_cross_entropy`` (drop-in superset).

    Args:
      logits: unnormalized log-probabilities, float, classes along ``axis``.
      labels: one-hot or soft labels in ``[0, 1]``, broadcastable; as in
        :func:`softmax_cross_entropy`, they need not sum to 1.
      epsilon: coefficient of the poly-1 term (2 for ImageNet in the paper,
        -1 for detection).
      axis: the class axis, or a tuple of axes.
      where: optional mask, of the batch shape or of the logits' shape.

    Returns:
      The loss per example, in the dtype of ``logits``.

    Examples:
      ``log 2 + 2 (1 - 1/2)`` (as ``optax.losses.poly_loss_cross_entropy``):

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> logits, labels = jnp.array([[0.0, 0.0]]), jnp.array([[1.0, 0.0]])
      >>> loss = bcejax.poly_loss_cross_entropy(logits, labels, epsilon=2.0)
      >>> [round(v, 4) for v in loss.tolist()]
      [1.6931]

    References:
      Leng et al., PolyLoss: A Polynomial Expansion Perspective of
      Classification Loss Functions, ICLR 2022, https://arxiv.org/abs/2204.12511
    """
    x, y, mask, _, _, dtype = _prepare_soft(logits, labels, axis, where)
    x, y = _masked(x, y, mask)
    cross_entropy = _softmax.softmax_cross_entropy(False, x, None, None, y)
    if _common.known_zero(epsilon):
        return cross_entropy.astype(dtype)
    wrong = -jnp.expm1(_softmax.log_softmax(x, (-1,)))
    poly = jnp.sum(y * wrong, -1) * jnp.asarray(epsilon, x.dtype)
    return (cross_entropy + poly).astype(dtype)


@checks.compiled_when_eager
def hinge_loss(predictor_outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
    r"""Hinge loss for signed targets, elementwise: the margin baseline.

    .. math::
        \ell = \max(0,\, 1 - t\, s)

    with the score ``s`` and the target ``t`` in ``{-1, 1}``. The derivative at
    the kink ``t s = 1`` is half of ``-t``, as in optax.

    Equivalents: ``optax.hinge_loss`` (drop-in superset, with checks),
    PyTorch ``SoftMarginLoss``'s non-smooth counterpart, Keras ``hinge``
    (before its mean over the last axis).

    Args:
      predictor_outputs: scores (logits), float.
      targets: signed targets in ``{-1, 1}``, broadcastable with the scores.

    Returns:
      The elementwise loss, in the dtype of ``predictor_outputs``.

    Examples:
      ``max(0, 1 - t s)`` (as ``optax.losses.hinge_loss``):

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss = bcejax.hinge_loss(jnp.array([0.5, -2.0, 3.0]), jnp.array([1, 1, -1]))
      >>> loss.tolist()
      [0.5, 3.0, 4.0]
    """
    scores = checks.check_float(predictor_outputs, "predictor_outputs")
    targets = jnp.asarray(targets)
    checks.check_broadcast(predictor_outputs=scores, targets=targets)
    scores = checks.check_logits(scores, "predictor_outputs")
    targets = checks.check_signed_targets(targets)
    compute = _common.compute_dtype(scores.dtype)
    loss = jnp.maximum(0, 1 - targets.astype(compute) * scores.astype(compute))
    return loss.astype(scores.dtype)
