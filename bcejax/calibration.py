"""Post-hoc calibration and threshold choice for a trained classifier.

Fit on held-out data (a validation split), never on the training data:

* :func:`fit_temperature`: one scale ``T`` for the logits, ``sigmoid(logits / T)``
  (or the softmax for multiclass logits), minimizing the log loss. It keeps the
  ranking, so AUC is unchanged and calibration improves.
* :func:`fit_platt`: Platt scaling ``sigmoid(a * score + b)``, for scores that
  are not logits (an SVM's margins, a ranker's scores).
* :func:`best_threshold`: the score threshold that maximizes F1, Youden's J or
  the Matthews correlation.

Everything runs under ``jit``; the fits use optax's L-BFGS for a fixed number
of iterations at most.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike, DTypeLike

from bcejax import _common, _ranking, binary, checks, multiclass


def _minimize(
    fun: Callable[[jax.Array], jax.Array], init: jax.Array, max_iter: int, tol: ArrayLike
) -> jax.Array:
    """Minimizes ``fun`` from ``init`` with optax's L-BFGS; stops at ``|grad| <= tol``."""
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(carry):
        params, state, _, i = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(params, updates), state, optax.tree.norm(grad), i + 1

    def running(carry):
        _, _, grad_norm, i = carry
        return (i < max_iter) & (grad_norm > tol)

    inf = jnp.asarray(jnp.inf, jnp.result_type(init))
    carry = (init, solver.init(init), inf, 0)
    return jax.lax.while_loop(running, step, carry)[0]


def _tolerance(dtype: DTypeLike) -> float:
    return 1e-10 if dtype == jnp.float64 else 1e-5


def fit_temperature(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    multiclass_labels: bool | None = None,
    max_iter: int = 100,
) -> jax.Array:
    """The temperature ``T > 0`` that minimizes the log loss of ``logits / T``.

    Binary (labels of the logits' shape, 0 or 1): the mean sigmoid BCE of
    ``logits / T``. Multiclass (integer labels of the logits' shape without
    the last, class, axis): the mean softmax cross-entropy. ``multiclass_labels``
    overrides the guess from the labels' dtype and shape. ``where`` masks
    entries (binary) or examples (multiclass). Guo et al., On Calibration of
    Modern Neural Networks, ICML 2017, https://arxiv.org/abs/1706.04599.

    Returns:
      ``T`` as a 0-d array in the logits' dtype (float32 at least): calibrated
      probabilities are ``sigmoid(logits / T)`` or ``softmax(logits / T)``.

    Examples:
      Logits of 3 that are right 3 times in 4: ``sigmoid(3 / T) = 3/4``, ``T = 3 / log 3``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> logits, labels = jnp.array([3.0, 3.0, 3.0, 3.0]), jnp.array([1, 1, 1, 0])
      >>> temperature = bcejax.calibration.fit_temperature(logits, labels)
      >>> print(f"{float(temperature):.3f}")
      2.731
    """
    x = checks.check_float(logits, "logits")
    y = jnp.asarray(labels)
    if multiclass_labels is None:
        multiclass_labels = (
            jnp.issubdtype(y.dtype, jnp.integer) and x.ndim >= 1 and y.shape == x.shape[:-1]
        )
    dtype = _common.compute_dtype(x.dtype)
    x = x.astype(dtype)

    if multiclass_labels:
        mask = None if where is None else jnp.broadcast_to(jnp.asarray(where, bool), y.shape)
        count = y.size if mask is None else jnp.sum(mask)
        if mask is not None:  # masked examples' logits never reach the derivative in T
            x = jnp.where(mask[..., None], x, 0)
        # Checked here, outside the minimizer's loop, so that an eager call checks them.
        x = checks.check_logits(x)
        y = checks.check_class_indices(
            y if mask is None else jnp.where(mask, y, 0), x.shape[-1], carrier=y
        )

        def per_entry(scaled):
            return multiclass.softmax_cross_entropy_with_integer_labels(scaled, y, where=where)

    else:
        shape = checks.check_broadcast(logits=x, labels=y, where=where)
        mask = None if where is None else jnp.broadcast_to(jnp.asarray(where, bool), shape)
        count = math.prod(shape) if mask is None else jnp.sum(mask)
        if mask is not None:
            x, y = jnp.where(mask, x, 0), jnp.where(mask, y, 0)
        x, y = checks.check_logits(x), checks.check_labels(y)

        def per_entry(scaled):
            return binary.sigmoid_binary_cross_entropy(scaled, y)

    def nll(log_t):
        loss = per_entry(x * jnp.exp(-log_t))
        if mask is not None:
            loss = jnp.where(mask, loss, 0)
        return jnp.sum(loss) / jnp.maximum(count, 1)

    log_t = _minimize(nll, jnp.zeros((), dtype), max_iter, _tolerance(dtype))
    return jnp.exp(log_t)


def fit_platt(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    sample_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
    max_iter: int = 100,
) -> tuple[jax.Array, jax.Array]:
    """Platt scaling: ``(a, b)`` with calibrated probabilities ``sigmoid(a * score + b)``.

    Minimizes the weighted BCE against Platt's smoothed targets
    ``(N+ + 1) / (N+ + 2)`` for positives and ``1 / (N- + 2)`` for negatives
    (``N`` the weighted counts), which keeps ``a`` finite on separable data;
    the fit of scikit-learn's ``CalibratedClassifierCV(method="sigmoid")``,
    whose ``(A, B)`` are ``(-a, -b)``. Platt, Probabilistic Outputs for Support
    Vector Machines, 1999.

    Examples:
      Platt's targets are 3/4 and 1/4 here, met exactly by ``sigmoid(b) = 1/4`` and
      ``sigmoid(a + b) = 3/4``: ``a = 2 log 3``, ``b = -log 3``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> scores, labels = jnp.array([0.0, 0.0, 1.0, 1.0]), jnp.array([0, 0, 1, 1])
      >>> a, b = bcejax.calibration.fit_platt(scores, labels)
      >>> print(f"{float(a):.3f} {float(b):.3f}")
      2.197 -1.099
    """
    s, y, w, _ = _ranking.prepare_scores(scores, labels, sample_weight, where)
    positives, negatives = jnp.sum(w * y), jnp.sum(w * (1 - y))
    target = jnp.where(y > 0, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    # Scores scaled to at most 1 in size (the fit is invariant to it), for conditioning.
    scale = jnp.maximum(jnp.max(jnp.abs(s)), 1)
    s = s / scale

    def nll(params):
        a, b = params
        return jnp.sum(w * binary.sigmoid_binary_cross_entropy(a * s + b, target))

    init = jnp.stack([jnp.zeros((), s.dtype), jnp.log((positives + 1) / (negatives + 1))])
    a, b = _minimize(nll, init, max_iter, _tolerance(s.dtype) * jnp.maximum(jnp.sum(w), 1))
    return a / scale, b


_THRESHOLD_METRICS = ("f1", "youden", "mcc")


def best_threshold(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    metric: str = "f1",
    sample_weight: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The threshold among the scores that maximizes ``metric``, and its value.

    Predictions are ``scores >= threshold``; every distinct score is tried,
    exactly, from one sort. ``metric``: ``"f1"``, ``"youden"`` (Youden's J,
    ``tpr - fpr``) or ``"mcc"`` (Matthews correlation). Of equal values, the
    highest threshold wins.

    Returns:
      ``(threshold, value)``: the value equals the metric's function (e.g.
      :func:`bcejax.metrics.f1_score`) at that threshold.

    Examples:
      At 0.35 two positives and one negative are predicted positive: F1 = 4/5:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> scores, labels = jnp.array([0.1, 0.4, 0.35, 0.8]), jnp.array([0, 0, 1, 1])
      >>> threshold, f1 = bcejax.calibration.best_threshold(scores, labels, metric="f1")
      >>> print(f"{float(threshold):.2f} {float(f1):.4f}")
      0.35 0.8000
    """
    if metric not in _THRESHOLD_METRICS:
        raise ValueError(f"metric must be one of {_THRESHOLD_METRICS}, got {metric!r}")
    r = _ranking.rank_by_score(*_ranking.prepare_scores(scores, labels, sample_weight, where))
    tp, fp = r.tp, r.fp
    # The confusion counts at every threshold, and the metrics' own formulas on them.
    rates = _ranking.rates_from_counts(_ranking.ConfusionCounts(fp[-1] - fp, fp, tp[-1] - tp, tp))
    if metric == "f1":
        value = rates["f1_score"]
    elif metric == "youden":
        value = rates["recall"] - _common.safe_divide(fp, fp[-1])
    else:
        value = rates["matthews_corrcoef"]
    candidate = r.is_last & jnp.isfinite(r.scores)
    best = jnp.argmax(jnp.where(candidate, value, -jnp.inf))
    return r.scores[best], value[best]


__all__ = ["best_threshold", "fit_platt", "fit_temperature"]
