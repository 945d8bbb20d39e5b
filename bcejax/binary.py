"""Elementwise binary losses, from logits and from probabilities.

Every function returns the unreduced, elementwise loss in the dtype of its
first argument; reduce it with :func:`bcejax.reduce_loss` or use the callables
in :mod:`bcejax.losses`. Half-precision inputs are computed in float32, float64
inputs in float64. Numeric config (``alpha``, ``gamma``, ``pos_weight``,
``weights``, ``label_smoothing``, ``epsilon``) may be a traced array.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from bcejax import _common, _kernels, _primitives, _xla_cpu, checks


@checks.compiled_when_eager
def sigmoid_binary_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    label_smoothing: ArrayLike = 0.0,
) -> jax.Array:
    r"""Sigmoid binary cross-entropy from logits, elementwise.

    .. math::
        \ell = w \left(p_w\, y \log(1 + e^{-x}) + (1 - y) \log(1 + e^{x})\right),
        \qquad y \leftarrow y (1 - a) + a / 2

    The derivative in the logits is ``w ((1 - y) sigmoid(x) - pw y sigmoid(-x))``,
    i.e. ``sigmoid(x) - y`` for plain BCE. Finite for every finite logit;
    ``+-inf`` logits with hard labels give 0 when right and ``+inf`` when wrong.
    Elementwise values above ``2**64`` (about 1.8e19) are returned as ``+inf``.

    Equivalents: ``optax.sigmoid_binary_cross_entropy`` (this is a drop-in
    superset), PyTorch ``BCEWithLogitsLoss(weight=, pos_weight=, reduction="none")``,
    Keras ``binary_crossentropy(from_logits=True, label_smoothing=)`` (before
    Keras' mean over the last axis).

    Args:
      logits: unnormalized log-odds of the positive class, any float dtype.
      labels: targets in ``[0, 1]`` (bool, int or float; soft labels allowed),
        broadcastable with ``logits``.
      weights: optional per-element weights ``w >= 0``, broadcastable.
      pos_weight: optional weight ``p_w`` of the positive term, e.g. one per
        class for multi-label (PyTorch semantics); ``negatives / positives``
        balances the classes (see :func:`bcejax.pos_weight_from_labels`).
      label_smoothing: ``a`` in ``[0, 1)``; labels move towards 1/2.

    Returns:
      The elementwise loss, with the broadcast shape and the dtype of ``logits``.

    Examples:
      ``log 2`` at logit 0 with label 1, ``log(1 + e^2)`` at logit 2 with label 0
      (as ``optax.sigmoid_binary_cross_entropy``); ``pos_weight`` doubles the first:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> logits, labels = jnp.array([0.0, 2.0]), jnp.array([1.0, 0.0])
      >>> [round(v, 4) for v in bcejax.sigmoid_binary_cross_entropy(logits, labels).tolist()]
      [0.6931, 2.1269]
      >>> loss = bcejax.sigmoid_binary_cross_entropy(logits, labels, pos_weight=2.0)
      >>> [round(v, 4) for v in loss.tolist()]
      [1.3863, 2.1269]

    References:
      Goodfellow et al., Deep Learning, 2016, section 6.2.2.2.
    """
    checks.check_label_smoothing(label_smoothing)
    checks.check_nonnegative(pos_weight, "pos_weight")
    x, y, dtype = checks.prepare_elementwise(
        logits, labels, name="logits", from_logits=True, weights=weights, pos_weight=pos_weight
    )
    return sigmoid_bce_of_checked(x, y, weights, pos_weight, label_smoothing).astype(dtype)


@checks.compiled_when_eager
def sigmoid_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike | None = None,
    gamma: ArrayLike = 2.0,
    weights: ArrayLike | None = None,
    label_smoothing: ArrayLike = 0.0,
) -> jax.Array:
    r"""Sigmoid focal loss from logits, elementwise.

    .. math::
        \ell = w\, \alpha_t (1 - p_t)^\gamma\, \mathrm{BCE}(x, y), \quad
        1 - p_t = (1 - y)\, p + y (1 - p), \quad
        \alpha_t = \alpha y + (1 - \alpha)(1 - y)

    with ``p = sigmoid(x)``; soft labels work, ``alpha=None`` means
    ``alpha_t = 1`` and ``gamma = 0`` gives (alpha-weighted) BCE. Any
    ``gamma >= 0``, traced or not: ``(1 - p_t) ** gamma`` is computed in log
    space, so values and gradients stay finite for ``0 < gamma < 1`` at extreme
    logits. Integer ``gamma`` known at trace time uses repeated products.
    Elementwise values above ``2**64`` (about 1.8e19) are returned as ``+inf``.

    Equivalents: ``optax.sigmoid_focal_loss`` (drop-in superset);
    torchvision ``sigmoid_focal_loss(reduction="none")`` with ``alpha=0.25``;
    Keras ``BinaryFocalCrossentropy(from_logits=True)``, whose
    ``apply_class_balancing=True`` is ``alpha`` here.

    Args:
      logits: unnormalized log-odds, any float dtype.
      labels: targets in ``[0, 1]``, broadcastable with ``logits``.
      alpha: optional weight of the positive class in ``[0, 1]``.
      gamma: focusing exponent ``>= 0``.
      weights: optional per-element weights ``>= 0``, broadcastable.
      label_smoothing: in ``[0, 1)``, applied to the labels first (Keras).

    Returns:
      The elementwise loss, with the broadcast shape and the dtype of ``logits``.

    Examples:
      At logit 0 with label 1, ``p_t = 1/2``: ``(1/2)**2 log 2`` (as ``optax.sigmoid_focal_loss``):

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss = bcejax.sigmoid_focal_loss(jnp.array([0.0, 2.0]), jnp.array([1.0, 0.0]), gamma=2.0)
      >>> [round(v, 4) for v in loss.tolist()]
      [0.1733, 1.6501]

    References:
      Lin et al., Focal Loss for Dense Object Detection, ICCV 2017,
      https://arxiv.org/abs/1708.02002
    """
    checks.check_label_smoothing(label_smoothing)
    checks.check_alpha(alpha)
    checks.check_gamma(gamma)
    x, y, dtype = checks.prepare_elementwise(
        logits, labels, name="logits", from_logits=True, weights=weights, alpha=alpha
    )
    return sigmoid_focal_of_checked(x, y, weights, alpha, gamma, label_smoothing).astype(dtype)


@checks.compiled_when_eager
def sigmoid_asymmetric_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    gamma_pos: ArrayLike = 0.0,
    gamma_neg: ArrayLike = 4.0,
    clip: ArrayLike = 0.05,
    weights: ArrayLike | None = None,
) -> jax.Array:
    r"""Asymmetric loss (ASL) for multi-label classification, elementwise.

    .. math::
        \ell = w\left(y (1 - p)^{\gamma_+} \log\frac{1}{p}
        + (1 - y)\, p_m^{\gamma_-} \log\frac{1}{1 - p_m}\right),
        \qquad p_m = \max(p - m, 0)

    with ``p = sigmoid(x)`` and the probability margin ``m = clip``: easy
    negatives (``p <= m``) are discarded and the rest are down-weighted by
    ``gamma_neg``. With ``clip=0`` the negative term is a focal term, computed
    stably from the logits. No ``eps`` is needed: ``1 - p_m >= m``.

    Equivalent: the reference ``AsymmetricLoss`` of Ben-Baruch et al. (with
    ``disable_torch_grad_focal_loss=False``), elementwise and from logits.

    Args:
      logits: unnormalized log-odds, any float dtype.
      labels: targets in ``[0, 1]``, broadcastable with ``logits``.
      gamma_pos: focusing exponent of the positive term, ``>= 0``.
      gamma_neg: focusing exponent of the negative term, ``>= 0``.
      clip: probability margin ``m`` in ``[0, 1]`` of the negative term.
      weights: optional per-element weights ``>= 0``, broadcastable.

    Returns:
      The elementwise loss, with the broadcast shape and the dtype of ``logits``.

    Examples:
      At logit 0: ``log 2`` for a positive; ``0.45**4 log(1 / 0.55)`` for a negative
      (``p_m = 0.5 - 0.05``):

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss = bcejax.sigmoid_asymmetric_loss(jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0]))
      >>> [round(v, 4) for v in loss.tolist()]
      [0.6931, 0.0245]

    References:
      Ben-Baruch et al., Asymmetric Loss For Multi-Label Classification, ICCV
      2021, https://arxiv.org/abs/2009.14119
    """
    checks.check_gamma(gamma_pos, "gamma_pos")
    checks.check_gamma(gamma_neg, "gamma_neg")
    checks.check_range(clip, "clip", 0.0, 1.0)
    x, y, dtype = checks.prepare_elementwise(
        logits, labels, name="logits", from_logits=True, weights=weights
    )
    w = _cast(weights, x.dtype)
    # The focal factors of each side, as for hard labels: (1 - p)**gamma_pos, p**gamma_neg.
    positive_label = (jnp.ones_like(x), jnp.zeros_like(x))
    negative_label = positive_label[::-1]
    positive = _primitives.bce_terms(x, _scale(w, y), jnp.zeros_like(y))
    positive = _modulated(_modulating_factor(x, positive_label, gamma_pos), positive)
    negative_coef = _scale(w, 1 - y)
    if _common.known_zero(clip):
        negative = _primitives.bce_terms(x, jnp.zeros_like(y), negative_coef)
        factor = _modulating_factor(x, negative_label, gamma_neg)
        negative = _modulated(factor, negative)
    else:
        m = jnp.asarray(clip, x.dtype)
        shifted = jnp.maximum(jax.nn.sigmoid(x) - m, 0)
        # -log(1 - p_m) = -min(log(sigmoid(-x) + m), 0), the sum taken in log space so
        # that it stays exact where sigmoid(-x) underflows (a traced clip may be 0).
        nll = -jnp.minimum(_primitives.log_sigmoid_neg_plus(x, m), 0)
        factor = _safe_power(shifted, jnp.asarray(gamma_neg, x.dtype))
        negative = _primitives.modulate(factor, _primitives.scaled(negative_coef, nll))
    return (positive + negative).astype(dtype)


@checks.compiled_when_eager
def sigmoid_poly1_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    epsilon: ArrayLike = 1.0,
    weights: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    label_smoothing: ArrayLike = 0.0,
) -> jax.Array:
    r"""Poly-1 loss from logits, elementwise: BCE plus a linear term in ``1 - p_t``.

    .. math::
        \ell = \mathrm{BCE}_{w, p_w}(x, y) + \epsilon\, w\, (1 - p_t),
        \qquad 1 - p_t = (1 - y)\, p + y (1 - p)

    ``pos_weight`` scales the positive BCE term only; ``epsilon = 0`` is
    :func:`sigmoid_binary_cross_entropy`; ``epsilon = -1`` removes the first
    polynomial term of BCE.

    Args:
      logits: unnormalized log-odds, any float dtype.
      labels: targets in ``[0, 1]``, broadcastable with ``logits``.
      epsilon: coefficient of the poly-1 term (any real number).
      weights: optional per-element weights ``>= 0``, broadcastable.
      pos_weight: optional positive-term weight (PyTorch semantics).
      label_smoothing: in ``[0, 1)``, applied to the labels first.

    Returns:
      The elementwise loss, with the broadcast shape and the dtype of ``logits``.

    Examples:
      At logit 0 with label 1: ``log 2 + 1 * (1 - 1/2)``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss = bcejax.sigmoid_poly1_loss(jnp.array([0.0]), jnp.array([1.0]), epsilon=1.0)
      >>> [round(v, 4) for v in loss.tolist()]
      [1.1931]

    References:
      Leng et al., PolyLoss: A Polynomial Expansion Perspective of
      Classification Loss Functions, ICLR 2022, https://arxiv.org/abs/2204.12511
    """
    checks.check_label_smoothing(label_smoothing)
    checks.check_nonnegative(pos_weight, "pos_weight")
    x, y, dtype = checks.prepare_elementwise(
        logits, labels, name="logits", from_logits=True, weights=weights, pos_weight=pos_weight
    )
    y = _smooth(y, label_smoothing)
    w = _cast(weights, x.dtype)
    bce = _primitives.bce_terms(x, *_bce_coefficients(y, w, _cast(pos_weight, x.dtype)))
    if _common.known_zero(epsilon):
        return bce.astype(dtype)
    poly = jnp.asarray(epsilon, x.dtype) * _scale(w, _primitives.prob_wrong(x, *y))
    return (bce + poly).astype(dtype)


@checks.compiled_when_eager
def binary_cross_entropy(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    label_smoothing: ArrayLike = 0.0,
    eps: ArrayLike | None = None,
) -> jax.Array:
    r"""Binary cross-entropy from probabilities, elementwise.

    .. math::
        \ell = -w \left(p_w\, y \log p + (1 - y) \log(1 - p)\right)

    Prefer :func:`sigmoid_binary_cross_entropy` on logits: it is exact where
    ``p`` rounds to 0 or 1. Two conventions for probabilities at 0 and 1:

    * ``eps=None`` (PyTorch ``binary_cross_entropy``): each log is clamped at
      -100 and the derivative is ``(p - y) / max(p (1 - p), 1e-12)``.
    * ``eps`` a float in ``(0, 0.5)`` (Keras ``binary_crossentropy``,
      ``from_logits=False``, default ``eps=1e-7``): ``p`` is clipped to
      ``[eps, 1 - eps]`` first.

    Args:
      probs: probabilities of the positive class in ``[0, 1]``, float dtype.
      labels: targets in ``[0, 1]``, broadcastable with ``probs``.
      weights: optional per-element weights ``>= 0``, broadcastable.
      pos_weight: optional positive-term weight, broadcastable.
      label_smoothing: in ``[0, 1)``, applied to the labels first.
      eps: None for PyTorch semantics, a float for Keras semantics.

    Returns:
      The elementwise loss, with the broadcast shape and the dtype of ``probs``.

    Examples:
      ``-log 0.5`` and ``-log 0.9`` (PyTorch ``binary_cross_entropy``):

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss = bcejax.binary_cross_entropy(jnp.array([0.5, 0.9]), jnp.array([1.0, 1.0]))
      >>> [round(v, 4) for v in loss.tolist()]
      [0.6931, 0.1054]
    """
    checks.check_label_smoothing(label_smoothing)
    checks.check_nonnegative(pos_weight, "pos_weight")
    if eps is not None:
        _check_eps(eps)
    p, y, dtype = checks.prepare_elementwise(
        probs, labels, name="probs", from_logits=False, weights=weights, pos_weight=pos_weight
    )
    if eps is not None:
        p = _clip_probs(p, eps)
    y = _smooth(y, label_smoothing)
    pos, neg = _bce_coefficients(y, _cast(weights, p.dtype), _cast(pos_weight, p.dtype))
    return _primitives.prob_bce_terms(p, pos, neg).astype(dtype)


@checks.compiled_when_eager
def binary_focal_loss(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike | None = None,
    gamma: ArrayLike = 2.0,
    weights: ArrayLike | None = None,
    label_smoothing: ArrayLike = 0.0,
    eps: ArrayLike = 1e-7,
) -> jax.Array:
    r"""Focal loss from probabilities, elementwise (Keras semantics).

    .. math::
        \ell = w\, \alpha_t (1 - p_t)^\gamma\, \mathrm{BCE}(p, y), \quad
        1 - p_t = y (1 - p) + (1 - y)\, p

    as Keras ``binary_focal_crossentropy(from_logits=False)``: labels are
    smoothed first, ``p`` is clipped to ``[eps, 1 - eps]``, and ``alpha`` set
    is Keras' ``apply_class_balancing=True``. Unlike Keras, ``p_t`` also uses
    the clipped ``p``, so the derivative stays finite at ``p`` of exactly 0 or 1
    for ``0 < gamma < 1``; the values differ from Keras' only inside the clip
    band, by less than ``eps``.

    Args:
      probs: probabilities in ``[0, 1]``, float dtype.
      labels: targets in ``[0, 1]``, broadcastable with ``probs``.
      alpha: optional weight of the positive class in ``[0, 1]``.
      gamma: focusing exponent ``>= 0``.
      weights: optional per-element weights ``>= 0``, broadcastable.
      label_smoothing: in ``[0, 1)``.
      eps: clip of the probabilities, in ``(0, 0.5)``.

    Returns:
      The elementwise loss, with the broadcast shape and the dtype of ``probs``.

    Examples:
      ``0.5**2 (-log 0.5)`` and ``0.1**2 (-log 0.9)``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss = bcejax.binary_focal_loss(jnp.array([0.5, 0.9]), jnp.array([1.0, 1.0]), gamma=2.0)
      >>> [round(v, 4) for v in loss.tolist()]
      [0.1733, 0.0011]

    References:
      Lin et al., Focal Loss for Dense Object Detection, ICCV 2017.
    """
    checks.check_label_smoothing(label_smoothing)
    checks.check_alpha(alpha)
    checks.check_gamma(gamma)
    _check_eps(eps)
    p, y, dtype = checks.prepare_elementwise(
        probs, labels, name="probs", from_logits=False, weights=weights, alpha=alpha
    )
    p = _clip_probs(p, eps)
    y = _smooth(y, label_smoothing)
    coef = _scale(_cast(weights, p.dtype), _alpha_weight(y, _cast(alpha, p.dtype)))
    loss = _primitives.prob_bce_terms(p, *_bce_coefficients(y, coef, None))
    n = _integer_gamma(gamma)
    if n == 0:
        return loss.astype(dtype)
    y, y_neg = y
    q = y * (1 - p) + y_neg * p  # >= eps > 0, so q ** gamma is smooth
    factor = jax.lax.integer_pow(q, n) if n is not None else q ** jnp.asarray(gamma, p.dtype)
    return (factor * loss).astype(dtype)


# -- Helpers of the losses above: they take checked inputs and config ---------


# Integer focal exponents up to this one are computed as repeated products of
# q = 1 - p_t, which is cheaper than exp(gamma * log q) and exact.
_MAX_INTEGER_GAMMA = 8


# The two kernels from logits, for inputs and config that a door has checked:
# this module's functions, and the losses of other families that add a binary
# loss to their own terms (sigmoid_bce_dice_loss, softmax_focal_loss). In the
# compute dtype of ``x``; None stands for no weights, pos_weight or alpha.


def sigmoid_bce_of_checked(
    x: jax.Array,
    y: jax.Array,
    weights: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    label_smoothing: ArrayLike = 0.0,
) -> jax.Array:
    """The elementwise :func:`sigmoid_binary_cross_entropy` of checked inputs."""
    config = _or(x.dtype, (label_smoothing, 0), (weights, 1), (pos_weight, 1))
    return _xla_cpu.view_call(_kernels.sigmoid_bce, x=x, y=y, config=config)


def sigmoid_focal_of_checked(
    x: jax.Array,
    y: jax.Array,
    weights: ArrayLike | None,
    alpha: ArrayLike | None,
    gamma: ArrayLike,
    label_smoothing: ArrayLike = 0.0,
) -> jax.Array:
    """The elementwise :func:`sigmoid_focal_loss` of checked inputs."""
    config = _or(x.dtype, (label_smoothing, 0), (weights, 1), (alpha, 0), (gamma, 0))
    static = (_focal_halves(gamma), alpha is not None)
    return _xla_cpu.view_call(_kernels.sigmoid_focal, *static, x=x, y=y, config=config)


def _cast(value, dtype):
    return None if value is None else jnp.asarray(value, dtype)


def _or(dtype, *pairs):
    """Each value as an array of ``dtype``, or its default when the value is None."""
    return tuple(jnp.asarray(default if v is None else v, dtype) for v, default in pairs)


def _smooth(labels, label_smoothing):
    """``(y, 1 - y)`` after label smoothing, each computed without cancellation."""
    if _common.known_zero(label_smoothing):
        return labels, 1 - labels
    return _primitives.smooth_pair(labels, jnp.asarray(label_smoothing, labels.dtype))


def _scale(coef, value):
    """``coef * value`` where None stands for 1."""
    if coef is None or value is None:
        return value if coef is None else coef
    return coef * value


def _bce_coefficients(labels, weights, pos_weight):
    """The coefficients of ``-log p`` and ``-log(1 - p)``: ``(w pw y, w (1 - y))``."""
    y, y_neg = labels
    return _scale(weights, _scale(pos_weight, y)), _scale(weights, y_neg)


def _alpha_weight(labels, alpha):
    """``alpha_t = alpha y + (1 - alpha)(1 - y)``, or None for no class balancing."""
    if alpha is None:
        return None
    y, y_neg = labels
    return alpha * y + (1 - alpha) * y_neg


def _focal_halves(gamma: Any) -> int | None:
    """``2 gamma`` for a known gamma in {0, 1, 1.5, 2, 2.5, ...} up to the largest integer one.

    1/2 is left out: ``q ** 0.5`` has an infinite derivative where ``q``
    underflows, which only the log-space form keeps finite.
    """
    if isinstance(gamma, jax.core.Tracer) or jnp.ndim(gamma) != 0:
        return None
    halves = 2 * float(gamma)
    if halves.is_integer() and halves != 1 and 0 <= halves <= 2 * _MAX_INTEGER_GAMMA:
        return int(halves)
    return None


def _integer_gamma(gamma: Any) -> int | None:
    """A known integer gamma up to the largest one raised by multiplications, else None."""
    halves = _focal_halves(gamma)
    return None if halves is None or halves % 2 else halves // 2


def _modulating_factor(logits, labels, gamma):
    """``(1 - p_t) ** gamma``, or None when ``gamma`` is known to be 0."""
    n = _integer_gamma(gamma)
    if n == 0:
        return None
    if n is not None:
        return jax.lax.integer_pow(_primitives.prob_wrong(logits, *labels), n)
    return _primitives.focal_factor(logits, *labels, jnp.asarray(gamma, logits.dtype))


def _modulated(factor, loss):
    return loss if factor is None else _primitives.modulate(factor, loss)


def _safe_power(base, exponent):
    """``base ** exponent`` for ``base >= 0`` with ``0 ** 0 = 1`` and finite derivatives."""
    positive = base > 0
    safe = jnp.where(positive, base, 1)  # keeps the unused branch's derivative finite
    at_zero = jnp.where(exponent == 0, 1, 0).astype(base.dtype)
    return jnp.where(positive, safe**exponent, at_zero)


def _check_eps(eps):
    hint = (
        ": eps=0 gives log(0) at probabilities of 0 and 1; use eps=None for PyTorch's clamped logs"
    )
    checks.check_range(eps, "eps", 0.0, 0.5, lo_open=True, hi_open=True, hint=hint)


def _clip_probs(p, eps):
    eps = jnp.asarray(eps, p.dtype)
    return jnp.clip(p, eps, 1 - eps)
