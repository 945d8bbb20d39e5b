"""Label smoothing and class-weight helpers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from bcejax import checks


def _float(x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def smooth_binary_labels(labels: ArrayLike, alpha: ArrayLike) -> jax.Array:
    r"""Moves binary labels towards 1/2: ``y (1 - alpha) + alpha / 2``.

    The binary form of Szegedy et al. 2016's label smoothing, as Keras'
    ``label_smoothing`` argument; ``alpha`` in ``[0, 1)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> smoothed = bcejax.smooth_binary_labels(jnp.array([0.0, 1.0]), 0.1)
      >>> [round(v, 4) for v in smoothed.tolist()]
      [0.05, 0.95]
    """
    checks.check_label_smoothing(alpha)
    y = _float(labels)
    alpha = jnp.asarray(alpha, y.dtype)
    return y * (1 - alpha) + alpha / 2


def pos_weight_from_labels(
    labels: ArrayLike, axis: int | tuple[int, ...] | None = 0, *, where: ArrayLike | None = None
) -> jax.Array:
    r"""``pos_weight`` that balances each class: ``negatives / positives``.

    The value PyTorch's ``BCEWithLogitsLoss`` documentation recommends, counted
    over ``axis`` (the examples) for each remaining entry (the classes). Soft
    labels count fractionally. A class with no positives gets 1.0, so it is
    left unweighted rather than given an infinite weight.

    Args:
      labels: targets in ``[0, 1]``, e.g. ``(num_examples, num_classes)``.
      axis: the example axis or axes to count over.
      where: optional mask of the entries to count.

    Returns:
      Float array of per-class weights, ``labels`` reduced over ``axis``.

    Examples:
      Class 0 has 1 positive and 3 negatives, class 1 has 2 of each:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> labels = jnp.array([[1, 0], [0, 0], [0, 1], [0, 1]])
      >>> bcejax.pos_weight_from_labels(labels).tolist()
      [3.0, 1.0]
    """
    y = _float(labels)
    y = checks.check_labels(y)
    valid = jnp.ones_like(y) if where is None else jnp.broadcast_to(where, y.shape).astype(y.dtype)
    positives = jnp.sum(y * valid, axis=axis)
    negatives = jnp.sum((1 - y) * valid, axis=axis)
    safe = jnp.where(positives > 0, positives, 1)
    return jnp.where(positives > 0, negatives / safe, 1.0)


def _counts(counts: ArrayLike) -> jax.Array:
    counts = _float(counts)
    if counts.ndim != 1:
        raise ValueError(f"counts must be 1-D (one count per class), got shape {counts.shape}")
    checks.check_range(counts, "counts", 0.0)
    return counts


def inverse_frequency_weights(counts: ArrayLike) -> jax.Array:
    r"""Class weights ``n / (K n_c)``: scikit-learn's ``class_weight="balanced"``.

    With these weights every class carries the same total weight, and the
    weights average to 1 over the examples. A class with ``n_c = 0`` gets
    weight 0 (it has no examples to weigh).

    Args:
      counts: number of examples of each class, shape ``(K,)``.

    Returns:
      Float array of shape ``(K,)``.

    Examples:
      ``40 / (2 * 30)`` and ``40 / (2 * 10)``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> weights = bcejax.inverse_frequency_weights(jnp.array([30, 10]))
      >>> [round(v, 4) for v in weights.tolist()]
      [0.6667, 2.0]
    """
    counts = _counts(counts)
    safe = jnp.where(counts > 0, counts, 1)
    weights = jnp.sum(counts) / (counts.shape[0] * safe)
    return jnp.where(counts > 0, weights, 0.0)


def class_balanced_weights(counts: ArrayLike, beta: ArrayLike = 0.999) -> jax.Array:
    r"""Class-balanced weights from the effective number of samples.

    .. math::
        E_c = \frac{1 - \beta^{n_c}}{1 - \beta}, \qquad
        w_c = \frac{K / E_c}{\sum_k 1 / E_k}

    normalized to sum to the number of classes ``K``, as in the paper.
    ``beta = 0`` gives equal weights, ``beta -> 1`` inverse frequency. A class
    with ``n_c = 0`` gets weight 0 and the others share the sum ``K``.

    Args:
      counts: number of examples of each class, shape ``(K,)``.
      beta: in ``[0, 1]``; the paper uses 0.9 to 0.9999.

    Returns:
      Float array of shape ``(K,)``.

    Examples:
      ``E = (1 - 0.9**30) / 0.1 = 9.576`` and ``(1 - 0.9**10) / 0.1 = 6.513``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> weights = bcejax.class_balanced_weights(jnp.array([30, 10]), beta=0.9)
      >>> [round(v, 4) for v in weights.tolist()]
      [0.8096, 1.1904]

    References:
      Cui et al., Class-Balanced Loss Based on Effective Number of Samples,
      CVPR 2019, https://arxiv.org/abs/1901.05555
    """
    counts = _counts(counts)
    checks.check_range(beta, "beta", 0.0, 1.0)
    beta = jnp.asarray(beta, counts.dtype)
    present = counts > 0
    # (1 - beta^n) / (1 - beta) through expm1 stays accurate as beta -> 1; its limit is n.
    log_beta = jnp.log(jnp.where(beta == 1, 0.5, beta))
    effective = jnp.where(beta == 1, counts, -jnp.expm1(counts * log_beta) / (1 - beta))
    effective = jnp.where(beta == 0, 1.0, effective)
    inverse = jnp.where(present, 1 / jnp.where(present, effective, 1), 0.0)
    return counts.shape[0] * inverse / jnp.sum(inverse)
