"""Stable elementwise primitives that every loss in bcejax is built from.

Each primitive carries a ``jax.custom_jvp`` with its closed-form derivative, so
forward mode (``jacfwd``, ``hessian``) works and the edge cases are decided
here, once:

* Softplus, sigmoid and the focal factor are written in terms of
  ``exp(-|x|)``, which never overflows (the fused kernels in ``_kernels`` use
  ``exp(+-x)`` where an overflow to inf gives the right limit).
* A term whose coefficient is exactly zero contributes exactly zero, even when
  the term itself is infinite (``0 * inf`` would be NaN).
* Tangents of inputs that are not differentiated arrive as symbolic zeros and
  are skipped, so an infinite partial derivative with respect to a label never
  leaks NaN into the derivative with respect to the logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bcejax._common import linear_tangent


def _softplus_parts(x, zero=0.0):
    """``(relu(x), relu(-x), log1p(exp(-|x|)))``: softplus(+-x) is relu(+-x) plus the last.

    The shared part is bounded by log 2, so only the relu parts can be
    infinite (at infinite ``x``). ``zero`` is 0 (see ``apart`` for why it may
    be an array).
    """
    return jnp.maximum(x, zero), jnp.maximum(-x, zero), jnp.log1p(jnp.exp(-jnp.abs(x)))


def bce_value(x, pos, neg, zero=0.0):
    relu, relu_neg, shared = _softplus_parts(x, zero)
    return _times(pos, relu_neg, zero) + _times(neg, relu, zero) + (pos + neg) * shared


def bce_slope(x, e, pos, neg, one=1.0, inv_den=None):
    """``d/dx`` of :func:`bce_value`: ``neg sigmoid(x) - pos sigmoid(-x)``, ``e = exp(-|x|)``.

    Both sigmoids share the denominator ``1 + e``, so one division serves; a
    caller that has ``inv_den = 1 / (1 + e)`` already passes it, and none is needed.
    """
    num = jnp.where(x >= one - one, neg - pos * e, neg * e - pos)
    return num / (one + e) if inv_den is None else num * inv_den


def _times(coef, term, zero=0.0):
    # A zero coefficient wins over an infinite term: 0 * inf is 0, not NaN.
    return jnp.where(coef == zero, zero, coef * term)


@jax.custom_jvp
def bce_terms(x, pos, neg):
    """``pos * softplus(-x) + neg * softplus(x)``: BCE with arbitrary coefficients.

    ``pos`` multiplies ``-log(sigmoid(x))`` and ``neg`` multiplies
    ``-log(1 - sigmoid(x))``; plain BCE has ``pos = y`` and ``neg = 1 - y``.
    """
    return bce_value(x, pos, neg)


def _bce_terms_jvp(primals, tangents):
    x, pos, neg = primals
    dx, dpos, dneg = tangents
    out = bce_value(x, pos, neg)
    relu, relu_neg, shared = _softplus_parts(x)
    return out, linear_tangent(
        out,
        (bce_slope(x, jnp.exp(-jnp.abs(x)), pos, neg), dx),
        (relu_neg + shared, dpos),
        (relu + shared, dneg),
    )


bce_terms.defjvp(_bce_terms_jvp, symbolic_zeros=True)


def smooth_pair(y, smoothing, one=1.0):
    """``(y, 1 - y)``, both moved towards 1/2 by ``smoothing``.

    ``1 - y`` is smoothed on its own, ``(1 - y)(1 - a) + a / 2``, rather than
    taken as one minus the smoothed ``y``, which would cancel. ``one`` is 1
    (see ``apart`` for why it may be an array).
    """
    keep = one - smoothing
    half = smoothing / (one + one)
    return y * keep + half, (one - y) * keep + half


def wrong_parts(x, y, y_neg, one=1.0):
    """Pieces of ``q = 1 - p_t = y_neg sigmoid(x) + y sigmoid(-x)``, ``y_neg = 1 - y``.

    With ``e = exp(-|x|)``, ``q = (c + d e) / (1 + e)`` where ``(c, d)`` is
    ``(y_neg, y)`` for ``x >= 0`` and ``(y, y_neg)`` for ``x < 0``; neither
    ``c + d e`` nor ``1 + e`` cancels, so ``q`` has full relative accuracy.
    """
    e = jnp.exp(-jnp.abs(x))
    nonneg = x >= one - one
    c = jnp.where(nonneg, y_neg, y)
    d = jnp.where(nonneg, y, y_neg)
    return e, c, d, c + d * e, one + e


@jax.custom_jvp
def prob_wrong(x, y, y_neg):
    """``q = 1 - p_t``, the probability the model gives to the wrong class."""
    _, _, _, num, den = wrong_parts(x, y, y_neg)
    return num / den


def _sigmoids(x, e, inv_den):
    """``sigmoid(x)``, ``sigmoid(-x)`` from ``e = exp(-|x|)`` and ``inv_den = 1 / (1 + e)``."""
    nonneg = x >= 0
    return jnp.where(nonneg, 1, e) * inv_den, jnp.where(nonneg, e, 1) * inv_den


def _prob_wrong_jvp(primals, tangents):
    x, y, y_neg = primals
    dx, dy, dy_neg = tangents
    e, _, _, num, den = wrong_parts(x, y, y_neg)
    out = num / den
    inv_den = 1 / den
    sig, sig_neg = _sigmoids(x, e, inv_den)
    # dq/dx = (y_neg - y) sigmoid(x) sigmoid(-x) = (y_neg - y) e / (1 + e)^2.
    return out, linear_tangent(
        out, ((y_neg - y) * e * inv_den * inv_den, dx), (sig_neg, dy), (sig, dy_neg)
    )


prob_wrong.defjvp(_prob_wrong_jvp, symbolic_zeros=True)


@jax.custom_jvp
def scaled(coef, term):
    """``coef * term`` for a term in ``[0, inf]``, with ``0 * inf = 0``; exact derivatives."""
    return _times(coef, term)


def _scaled_jvp(primals, tangents):
    coef, term = primals
    dcoef, dterm = tangents
    out = _times(coef, term)
    return out, linear_tangent(out, (term, dcoef), (coef, dterm))


scaled.defjvp(_scaled_jvp, symbolic_zeros=True)


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
    return out, linear_tangent(out, (jnp.where(jnp.isinf(loss), 0, loss), dfactor), (factor, dloss))


modulate.defjvp(_modulate_jvp, symbolic_zeros=True)


def log_wrong_parts(x, y, y_neg, one=1.0):
    """``log q`` and ``d log q / dx``, exact even where ``q`` underflows."""
    e, c, d, num, den = wrong_parts(x, y, y_neg, one)
    inv_den = one / den
    certain = c == one - one  # hard label on the side of x: q = e / (1 + e) exactly.
    safe_num = jnp.where(certain, one, num)
    log_q = jnp.where(certain, -jnp.abs(x), jnp.log(safe_num)) - jnp.log1p(e)
    sign = jnp.where(x >= one - one, one, -one)
    # d log q / dx = (y_neg - y) sigmoid(x) sigmoid(-x) / q = sign (c - d) e / ((1 + e)(c + d e)),
    # which is -sign / (1 + e) when c == 0; both forms are bounded by 2 in magnitude.
    dlog_q = sign * inv_den * jnp.where(certain, -one, (c - d) * e / safe_num)
    return e, inv_den, log_q, dlog_q


@jax.custom_jvp
def focal_factor(x, y, y_neg, gamma):
    """The focal modulating factor ``(1 - p_t) ** gamma`` for any ``gamma >= 0``.

    Computed as ``exp(gamma * log q)`` with ``log q`` exact in log space, so the
    derivative ``gamma q**gamma d(log q)/dx`` stays finite for ``0 < gamma < 1``
    at logits where ``q`` underflows to zero.
    """
    _, _, log_q, _ = log_wrong_parts(x, y, y_neg)
    return jnp.exp(_times(gamma, log_q))


def _focal_factor_jvp(primals, tangents):
    x, y, y_neg, gamma = primals
    dx, dy, dy_neg, dgamma = tangents
    e, inv_den, log_q, dlog_q = log_wrong_parts(x, y, y_neg)
    out = jnp.exp(_times(gamma, log_q))
    # d q**gamma / dq = gamma q**(gamma - 1); zero when gamma == 0. For gamma < 1 it
    # is infinite where q underflows; capped there (at 2**64 for float32) so that
    # its product with the loss, which underflows too, is 0 rather than NaN.
    cap = jnp.log(jnp.finfo(log_q.dtype).max) / 2
    power = jnp.exp(jnp.minimum(_times(gamma - 1, log_q), cap))
    slope = jnp.where(gamma == 0, 0, gamma * power)
    sig, sig_neg = _sigmoids(x, e, inv_den)
    return out, linear_tangent(
        out,
        (gamma * out * dlog_q, dx),
        (slope * sig_neg, dy),
        (slope * sig, dy_neg),
        (_times(out, log_q), dgamma),
    )


focal_factor.defjvp(_focal_factor_jvp, symbolic_zeros=True)


@jax.custom_jvp
def log_sigmoid_neg_plus(x, m):
    """``log(sigmoid(-x) + m)`` for ``m >= 0``, exact where ``sigmoid(-x)`` underflows."""
    return jnp.logaddexp(jax.nn.log_sigmoid(-x), jnp.log(m))


def _log_sigmoid_neg_plus_jvp(primals, tangents):
    x, m = primals
    dx, dm = tangents
    log_sig_neg = jax.nn.log_sigmoid(-x)
    out = jnp.logaddexp(log_sig_neg, jnp.log(m))
    # d/dx = -sigmoid(x) sigmoid(-x) / (sigmoid(-x) + m); d/dm is finite at m = 0, unlike d log m.
    return out, linear_tangent(
        out, (-jax.nn.sigmoid(x) * jnp.exp(log_sig_neg - out), dx), (jnp.exp(-out), dm)
    )


log_sigmoid_neg_plus.defjvp(_log_sigmoid_neg_plus_jvp, symbolic_zeros=True)


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
    slope = (neg * p - pos * (1 - p)) / jnp.maximum(p * (1 - p), _DENOM_FLOOR)
    return out, linear_tangent(out, (slope, dp), (-log_p, dpos), (-log_not_p, dneg))


prob_bce_terms.defjvp(_prob_bce_terms_jvp, symbolic_zeros=True)
