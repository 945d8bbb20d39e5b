"""Stable elementwise primitives that every loss in bcejax is built from.

Each primitive carries a ``jax.custom_jvp`` with its closed-form derivative, so
forward mode (``jacfwd``, ``hessian``) works and the edge cases are decided
here, once:

* ``exp(-|x|)`` is the only exponential: softplus, sigmoid and the focal
  factor are all written in terms of it, so it never overflows and XLA shares
  it between the loss and its derivative.
* A term whose coefficient is exactly zero contributes exactly zero, even when
  the term itself is infinite (``0 * inf`` would be NaN).
* Tangents of inputs that are not differentiated arrive as symbolic zeros and
  are skipped, so an infinite partial derivative with respect to a label never
  leaks NaN into the derivative with respect to the logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero


def _is_zero(tangent) -> bool:
    return isinstance(tangent, SymbolicZero)


def _accumulate(total, term):
    return term if total is None else total + term


def _finish(total, like):
    return jnp.zeros_like(like) if total is None else jnp.broadcast_to(total, like.shape)


def _softplus_parts(x):
    """``(relu(x), relu(-x), log1p(exp(-|x|)))``: softplus(+-x) is relu(+-x) plus the last.

    The shared part is bounded by log 2, so only the relu parts can be
    infinite (at infinite ``x``).
    """
    return jnp.maximum(x, 0), jnp.maximum(-x, 0), jnp.log1p(jnp.exp(-jnp.abs(x)))


def _bce_value(x, pos, neg):
    relu, relu_neg, shared = _softplus_parts(x)
    return _times(pos, relu_neg) + _times(neg, relu) + (pos + neg) * shared


def _times(coef, term):
    # A zero coefficient wins over an infinite term: 0 * inf is 0, not NaN.
    return jnp.where(coef == 0, jnp.zeros_like(term), coef * term)


@jax.custom_jvp
def bce_terms(x, pos, neg):
    """``pos * softplus(-x) + neg * softplus(x)``: BCE with arbitrary coefficients.

    ``pos`` multiplies ``-log(sigmoid(x))`` and ``neg`` multiplies
    ``-log(1 - sigmoid(x))``; plain BCE has ``pos = y`` and ``neg = 1 - y``.
    """
    return _bce_value(x, pos, neg)


def _bce_terms_jvp(primals, tangents):
    x, pos, neg = primals
    dx, dpos, dneg = tangents
    out = _bce_value(x, pos, neg)
    tangent = None
    if not _is_zero(dx):
        # d/dx = neg * sigmoid(x) - pos * sigmoid(-x), over the common 1 + e.
        e = jnp.exp(-jnp.abs(x))
        slope = jnp.where(x >= 0, neg - pos * e, neg * e - pos) / (1 + e)
        tangent = _accumulate(tangent, slope * dx)
    if not _is_zero(dpos) or not _is_zero(dneg):
        relu, relu_neg, shared = _softplus_parts(x)
    if not _is_zero(dpos):
        tangent = _accumulate(tangent, (relu_neg + shared) * dpos)
    if not _is_zero(dneg):
        tangent = _accumulate(tangent, (relu + shared) * dneg)
    return out, _finish(tangent, out)


bce_terms.defjvp(_bce_terms_jvp, symbolic_zeros=True)


def _wrong_parts(x, y):
    """Pieces of ``q = 1 - p_t = (1 - y) sigmoid(x) + y sigmoid(-x)``.

    With ``e = exp(-|x|)``, ``q = (c + d e) / (1 + e)`` where ``(c, d)`` is
    ``(1 - y, y)`` for ``x >= 0`` and ``(y, 1 - y)`` for ``x < 0``; neither
    ``c + d e`` nor ``1 + e`` cancels, so ``q`` has full relative accuracy.
    """
    e = jnp.exp(-jnp.abs(x))
    nonneg = x >= 0
    c = jnp.where(nonneg, 1 - y, y)
    d = jnp.where(nonneg, y, 1 - y)
    return e, c, d, c + d * e, 1 + e


@jax.custom_jvp
def prob_wrong(x, y):
    """``q = 1 - p_t``, the probability the model gives to the wrong class."""
    _, _, _, num, den = _wrong_parts(x, y)
    return num / den


def _prob_wrong_jvp(primals, tangents):
    x, y = primals
    dx, dy = tangents
    e, _, _, num, den = _wrong_parts(x, y)
    out = num / den
    tangent = None
    if not _is_zero(dx):
        # dq/dx = (1 - 2y) sigmoid(x) sigmoid(-x) = (1 - 2y) e / (1 + e)^2.
        tangent = _accumulate(tangent, (1 - 2 * y) * e / (den * den) * dx)
    if not _is_zero(dy):
        # dq/dy = sigmoid(-x) - sigmoid(x) = -tanh(x / 2) = -sign(x) (1 - e) / (1 + e).
        tangent = _accumulate(tangent, -jnp.sign(x) * (1 - e) / den * dy)
    return out, _finish(tangent, out)


prob_wrong.defjvp(_prob_wrong_jvp, symbolic_zeros=True)


@jax.custom_jvp
def modulate(factor, loss):
    """``factor * loss`` for a focal factor in ``[0, 1]`` and a loss in ``[0, inf]``.

    Where the loss is infinite (an infinite logit on the wrong side) the factor
    is flat, so its product-rule term ``loss * dfactor`` is taken as its limit, 0,
    instead of ``inf * 0 = NaN``.
    """
    return factor * loss


def _modulate_jvp(primals, tangents):
    factor, loss = primals
    dfactor, dloss = tangents
    out = factor * loss
    tangent = None
    if not _is_zero(dfactor):
        tangent = _accumulate(tangent, jnp.where(jnp.isinf(loss), 0, loss) * dfactor)
    if not _is_zero(dloss):
        tangent = _accumulate(tangent, factor * dloss)
    return out, _finish(tangent, out)


modulate.defjvp(_modulate_jvp, symbolic_zeros=True)


def _log_wrong_parts(x, y):
    """``log q`` and ``d log q / dx``, exact even where ``q`` underflows."""
    e, c, d, num, den = _wrong_parts(x, y)
    certain = c == 0  # hard label on the side of x: q = e / (1 + e) exactly.
    safe_num = jnp.where(certain, 1, num)
    log_q = jnp.where(certain, -jnp.abs(x), jnp.log(safe_num)) - jnp.log1p(e)
    sign = jnp.where(x >= 0, 1, -1)
    # d log q / dx = (1 - 2y) sigmoid(x) sigmoid(-x) / q = sign (c - d) e / ((1 + e)(c + d e)),
    # which is -sign / (1 + e) when c == 0; both forms are bounded by 2 in magnitude.
    dlog_q = sign * jnp.where(certain, -1 / den, (c - d) * e / (den * safe_num))
    return e, den, log_q, dlog_q


@jax.custom_jvp
def focal_factor(x, y, gamma):
    """The focal modulating factor ``(1 - p_t) ** gamma`` for any ``gamma >= 0``.

    Computed as ``exp(gamma * log q)`` with ``log q`` exact in log space, so the
    derivative ``gamma q**gamma d(log q)/dx`` stays finite for ``0 < gamma < 1``
    at logits where ``q`` underflows to zero.
    """
    _, _, log_q, _ = _log_wrong_parts(x, y)
    return jnp.exp(_times(gamma, log_q))


def _focal_factor_jvp(primals, tangents):
    x, y, gamma = primals
    dx, dy, dgamma = tangents
    e, den, log_q, dlog_q = _log_wrong_parts(x, y)
    out = jnp.exp(_times(gamma, log_q))
    tangent = None
    if not _is_zero(dx):
        tangent = _accumulate(tangent, gamma * out * dlog_q * dx)
    if not _is_zero(dy):
        # d q**gamma / dy = gamma q**(gamma - 1) dq/dy; zero when gamma == 0.
        dq_dy = -jnp.sign(x) * (1 - e) / den
        slope = jnp.where(gamma == 0, 0, gamma * jnp.exp(_times(gamma - 1, log_q)) * dq_dy)
        tangent = _accumulate(tangent, slope * dy)
    if not _is_zero(dgamma):
        tangent = _accumulate(tangent, _times(out, log_q) * dgamma)
    return out, _finish(tangent, out)


focal_factor.defjvp(_focal_factor_jvp, symbolic_zeros=True)


# PyTorch clamps each log at -100 and the derivative's denominator at 1e-12.
_LOG_FLOOR = -100.0
_DENOM_FLOOR = 1e-12


def _clamped_logs(p):
    return jnp.maximum(jnp.log(p), _LOG_FLOOR), jnp.maximum(jnp.log1p(-p), _LOG_FLOOR)


@jax.custom_jvp
def prob_bce_terms(p, pos, neg):
    """``-pos * log(p) - neg * log(1 - p)`` from probabilities, PyTorch style.

    Each log is clamped at -100, so ``p`` of exactly 0 or 1 gives a finite loss;
    the derivative is ``(neg p - pos (1 - p)) / max(p (1 - p), 1e-12)``, which for
    ``pos = y``, ``neg = 1 - y`` is PyTorch's ``(p - y) / max(p (1 - p), 1e-12)``.
    """
    log_p, log_not_p = _clamped_logs(p)
    return _times(pos, -log_p) + _times(neg, -log_not_p)


def _prob_bce_terms_jvp(primals, tangents):
    p, pos, neg = primals
    dp, dpos, dneg = tangents
    log_p, log_not_p = _clamped_logs(p)
    out = _times(pos, -log_p) + _times(neg, -log_not_p)
    tangent = None
    if not _is_zero(dp):
        slope = (neg * p - pos * (1 - p)) / jnp.maximum(p * (1 - p), _DENOM_FLOOR)
        tangent = _accumulate(tangent, slope * dp)
    if not _is_zero(dpos):
        tangent = _accumulate(tangent, -log_p * dpos)
    if not _is_zero(dneg):
        tangent = _accumulate(tangent, -log_not_p * dneg)
    return out, _finish(tangent, out)


prob_bce_terms.defjvp(_prob_bce_terms_jvp, symbolic_zeros=True)
