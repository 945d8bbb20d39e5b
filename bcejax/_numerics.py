"""Stable elementwise primitives that every loss in bcejax is built from.

Each primitive carries a ``jax.custom_jvp`` with its closed-form derivative, so
forward mode (``jacfwd``, ``hessian``) works and the edge cases are decided
here, once:

* Softplus, sigmoid and the focal factor are written in terms of
  ``exp(-|x|)``, which never overflows (the fused kernels at the end use
  ``exp(+-x)`` where an overflow to inf gives the right limit).
* A term whose coefficient is exactly zero contributes exactly zero, even when
  the term itself is infinite (``0 * inf`` would be NaN).
* Tangents of inputs that are not differentiated arrive as symbolic zeros and
  are skipped, so an infinite partial derivative with respect to a label never
  leaks NaN into the derivative with respect to the logits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero


def _is_zero(tangent) -> bool:
    return isinstance(tangent, SymbolicZero)


def _accumulate(total, term):
    return term if total is None else total + term


def _finish(total, like):
    return jnp.zeros_like(like) if total is None else jnp.broadcast_to(total, like.shape)


def _softplus_parts(x, zero=0.0):
    """``(relu(x), relu(-x), log1p(exp(-|x|)))``: softplus(+-x) is relu(+-x) plus the last.

    The shared part is bounded by log 2, so only the relu parts can be
    infinite (at infinite ``x``). ``zero`` is 0 (see ``apart`` for why it may
    be an array).
    """
    return jnp.maximum(x, zero), jnp.maximum(-x, zero), jnp.log1p(jnp.exp(-jnp.abs(x)))


def _bce_value(x, pos, neg, zero=0.0):
    relu, relu_neg, shared = _softplus_parts(x, zero)
    return _times(pos, relu_neg, zero) + _times(neg, relu, zero) + (pos + neg) * shared


def _bce_slope(x, e, pos, neg, one=1.0):
    """``d/dx`` of :func:`_bce_value`: ``neg sigmoid(x) - pos sigmoid(-x)``, ``e = exp(-|x|)``.

    Both sigmoids share the denominator ``1 + e``, so one division serves.
    """
    return jnp.where(x >= one - one, neg - pos * e, neg * e - pos) / (one + e)


def _times(coef, term, zero=0.0):
    # A zero coefficient wins over an infinite term: 0 * inf is 0, not NaN.
    return jnp.where(coef == zero, zero, coef * term)


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
        tangent = _accumulate(tangent, _bce_slope(x, jnp.exp(-jnp.abs(x)), pos, neg) * dx)
    if not _is_zero(dpos) or not _is_zero(dneg):
        relu, relu_neg, shared = _softplus_parts(x)
    if not _is_zero(dpos):
        tangent = _accumulate(tangent, (relu_neg + shared) * dpos)
    if not _is_zero(dneg):
        tangent = _accumulate(tangent, (relu + shared) * dneg)
    return out, _finish(tangent, out)


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


def _wrong_parts(x, y, y_neg, one=1.0):
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
    _, _, _, num, den = _wrong_parts(x, y, y_neg)
    return num / den


def _sigmoids(x, e, den):
    """``sigmoid(x)``, ``sigmoid(-x)`` from ``e = exp(-|x|)`` and ``den = 1 + e``."""
    nonneg = x >= 0
    return jnp.where(nonneg, 1, e) / den, jnp.where(nonneg, e, 1) / den


def _prob_wrong_jvp(primals, tangents):
    x, y, y_neg = primals
    dx, dy, dy_neg = tangents
    e, _, _, num, den = _wrong_parts(x, y, y_neg)
    out = num / den
    tangent = None
    if not _is_zero(dx):
        # dq/dx = (y_neg - y) sigmoid(x) sigmoid(-x) = (y_neg - y) e / (1 + e)^2.
        tangent = _accumulate(tangent, (y_neg - y) * e / (den * den) * dx)
    if not _is_zero(dy) or not _is_zero(dy_neg):
        sig, sig_neg = _sigmoids(x, e, den)
    if not _is_zero(dy):
        tangent = _accumulate(tangent, sig_neg * dy)
    if not _is_zero(dy_neg):
        tangent = _accumulate(tangent, sig * dy_neg)
    return out, _finish(tangent, out)


prob_wrong.defjvp(_prob_wrong_jvp, symbolic_zeros=True)


@jax.custom_jvp
def scaled(coef, term):
    """``coef * term`` for a term in ``[0, inf]``, with ``0 * inf = 0``; exact derivatives."""
    return _times(coef, term)


def _scaled_jvp(primals, tangents):
    coef, term = primals
    dcoef, dterm = tangents
    out = _times(coef, term)
    tangent = None
    if not _is_zero(dcoef):
        tangent = _accumulate(tangent, term * dcoef)
    if not _is_zero(dterm):
        tangent = _accumulate(tangent, coef * dterm)
    return out, _finish(tangent, out)


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
    tangent = None
    if not _is_zero(dfactor):
        tangent = _accumulate(tangent, jnp.where(jnp.isinf(loss), 0, loss) * dfactor)
    if not _is_zero(dloss):
        tangent = _accumulate(tangent, factor * dloss)
    return out, _finish(tangent, out)


modulate.defjvp(_modulate_jvp, symbolic_zeros=True)


def _log_wrong_parts(x, y, y_neg, one=1.0):
    """``log q`` and ``d log q / dx``, exact even where ``q`` underflows."""
    e, c, d, num, den = _wrong_parts(x, y, y_neg, one)
    certain = c == one - one  # hard label on the side of x: q = e / (1 + e) exactly.
    safe_num = jnp.where(certain, one, num)
    log_q = jnp.where(certain, -jnp.abs(x), jnp.log(safe_num)) - jnp.log1p(e)
    sign = jnp.where(x >= one - one, one, -one)
    # d log q / dx = (y_neg - y) sigmoid(x) sigmoid(-x) / q = sign (c - d) e / ((1 + e)(c + d e)),
    # which is -sign / (1 + e) when c == 0; both forms are bounded by 2 in magnitude.
    dlog_q = sign * jnp.where(certain, -one / den, (c - d) * e / (den * safe_num))
    return e, den, log_q, dlog_q


@jax.custom_jvp
def focal_factor(x, y, y_neg, gamma):
    """The focal modulating factor ``(1 - p_t) ** gamma`` for any ``gamma >= 0``.

    Computed as ``exp(gamma * log q)`` with ``log q`` exact in log space, so the
    derivative ``gamma q**gamma d(log q)/dx`` stays finite for ``0 < gamma < 1``
    at logits where ``q`` underflows to zero.
    """
    _, _, log_q, _ = _log_wrong_parts(x, y, y_neg)
    return jnp.exp(_times(gamma, log_q))


def _focal_factor_jvp(primals, tangents):
    x, y, y_neg, gamma = primals
    dx, dy, dy_neg, dgamma = tangents
    e, den, log_q, dlog_q = _log_wrong_parts(x, y, y_neg)
    out = jnp.exp(_times(gamma, log_q))
    tangent = None
    if not _is_zero(dx):
        tangent = _accumulate(tangent, gamma * out * dlog_q * dx)
    if not _is_zero(dy) or not _is_zero(dy_neg):
        # d q**gamma / dq = gamma q**(gamma - 1); zero when gamma == 0. For gamma < 1 it
        # is infinite where q underflows; capped there (at 2**64 for float32) so that
        # its product with the loss, which underflows too, is 0 rather than NaN.
        cap = jnp.log(jnp.finfo(log_q.dtype).max) / 2
        power = jnp.exp(jnp.minimum(_times(gamma - 1, log_q), cap))
        slope = jnp.where(gamma == 0, 0, gamma * power)
        sig, sig_neg = _sigmoids(x, e, den)
    if not _is_zero(dy):
        tangent = _accumulate(tangent, slope * sig_neg * dy)
    if not _is_zero(dy_neg):
        tangent = _accumulate(tangent, slope * sig * dy_neg)
    if not _is_zero(dgamma):
        tangent = _accumulate(tangent, _times(out, log_q) * dgamma)
    return out, _finish(tangent, out)


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
    tangent = None
    if not _is_zero(dx):
        # -sigmoid(x) sigmoid(-x) / (sigmoid(-x) + m)
        tangent = _accumulate(tangent, -jax.nn.sigmoid(x) * jnp.exp(log_sig_neg - out) * dx)
    if not _is_zero(dm):
        tangent = _accumulate(tangent, jnp.exp(-out) * dm)  # finite at m = 0, unlike d log m
    return out, _finish(tangent, out)


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


# Fused kernels for the two losses on every training step: sigmoid BCE and focal.
#
# They compute the same values as the primitives above, shaped for XLA:CPU:
# * the loss is select-free (no jnp.where), because XLA:CPU fuses a select-free
#   elementwise loss into the reduction that consumes it, and materializes it
#   in memory otherwise, which costs more than computing it;
# * on CPU, the logit derivative is computed from inputs passed through an
#   optimization barrier, so XLA cannot share intermediates (or constants)
#   between the loss and its derivative, which would also materialize them;
# * derivatives with respect to anything but the logits (labels, weights,
#   gamma, ...) come from the composed primitives, differentiated by JAX.


def _finite(x):
    """``x`` with ``+-inf`` replaced by the largest finite float of its sign.

    Two mins and two negations instead of one ``clip``: XLA:CPU does not fuse its
    clamp into a reduction.
    """
    big = jnp.finfo(x.dtype).max
    return -jnp.minimum(-jnp.minimum(x, big), big)


def _overflow_to_inf(value):
    """``value`` unchanged, except that values within 2**-64 of the largest float become inf.

    Multiplying by 2**64 and back is exact below ~1.8e19 (float32), and turns the
    largest-float stand-in for infinity (see :func:`_finite`) back into ``inf``.
    The factor passes an optimization barrier so that XLA cannot fold it to 1.
    """
    up, down = jax.lax.optimization_barrier(
        (jnp.asarray(2.0**64, value.dtype), jnp.asarray(2.0**-64, value.dtype))
    )
    return value * up * down


def _bce_select_free(x, pos, neg):
    """``pos * softplus(-x) + neg * softplus(x)``, as :func:`bce_terms`, without selects.

    With ``z = x`` made finite, ``pos relu(-z) + neg relu(z) = max(neg z, -pos z)``
    for ``pos, neg >= 0``; no ``0 * inf`` can occur, and a wrong infinite logit
    gives the largest float, which :func:`_overflow_to_inf` makes ``inf``.
    """
    z = _finite(x)
    shared = jnp.log1p(jnp.exp(-jnp.abs(x)))
    return _overflow_to_inf(jnp.maximum(neg * z, -pos * z) + (pos + neg) * shared)


def apart(*arrays):
    """On CPU, hides from XLA that these are the loss's inputs (see above); else a no-op."""
    if jax.default_backend() != "cpu":
        return arrays
    return jax.lax.optimization_barrier(arrays)


def _other_tangents(composed, primals, tangents):
    """The tangent contributed by every input but the first, from the composed form."""
    if all(_is_zero(t) for t in tangents[1:]):
        return None
    x, rest = primals[0], tuple(primals[1:])
    pairs = zip(rest, tangents[1:], strict=True)
    dense = tuple(jnp.zeros_like(p) if _is_zero(t) else t for p, t in pairs)
    return jax.jvp(lambda *r: composed(x, *r), rest, dense)[1]


def _composed_bce(x, y, smoothing, weights, pos_weight):
    ys, ys_neg = smooth_pair(y, smoothing)
    return bce_terms(x, weights * pos_weight * ys, weights * ys_neg)


@jax.custom_jvp
def sigmoid_bce(x, y, smoothing, weights, pos_weight):
    """``w (pw ys softplus(-x) + (1 - ys) softplus(x))`` with ``ys`` the smoothed ``y``."""
    ys, ys_neg = smooth_pair(y, smoothing)
    return _bce_select_free(x, weights * pos_weight * ys, weights * ys_neg)


def _sigmoid_bce_jvp(primals, tangents):
    out = sigmoid_bce(*primals)
    tangent = _other_tangents(_composed_bce, primals, tangents)
    if not _is_zero(tangents[0]):
        x, y, smoothing, weights, pos_weight, one = apart(*primals, jnp.ones((), out.dtype))
        ys, ys_neg = smooth_pair(y, smoothing, one)
        pos, neg = weights * pos_weight * ys, weights * ys_neg
        slope = _bce_slope(x, jnp.exp(-jnp.abs(x)), pos, neg, one)
        tangent = _accumulate(tangent, slope * tangents[0])
    return out, _finish(tangent, out)


sigmoid_bce.defjvp(_sigmoid_bce_jvp, symbolic_zeros=True)


def _alpha_t(ys, ys_neg, alpha, balanced, one=1.0):
    return alpha * ys + (one - alpha) * ys_neg if balanced else one


def _composed_focal(gamma_int, balanced, x, y, smoothing, weights, alpha, gamma):
    ys, ys_neg = smooth_pair(y, smoothing)
    coef = weights * _alpha_t(ys, ys_neg, alpha, balanced)
    loss = bce_terms(x, coef * ys, coef * ys_neg)
    if gamma_int is not None:
        factor = jax.lax.integer_pow(prob_wrong(x, ys, ys_neg), gamma_int)
    else:
        factor = focal_factor(x, ys, ys_neg, gamma)
    return modulate(factor, loss)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def sigmoid_focal(gamma_int, balanced, x, y, smoothing, weights, alpha, gamma):
    """``w alpha_t (1 - p_t)**gamma BCE(x, ys)``; ``gamma_int`` is gamma when a small int."""
    ys, ys_neg = smooth_pair(y, smoothing)
    coef = weights * _alpha_t(ys, ys_neg, alpha, balanced)
    # sigmoid(+-x) as 1 / (1 + exp(-+x)): exp overflows to inf and the ratio to 0, as it should.
    exp_neg, exp_pos = jnp.exp(-x), jnp.exp(x)
    q = ys_neg / (1 + exp_neg) + ys / (1 + exp_pos)
    factor = jax.lax.integer_pow(q, gamma_int) if gamma_int is not None else q**gamma
    z = _finite(x)
    ce = jnp.maximum(ys_neg * z, -ys * z) + jnp.log1p(jnp.minimum(exp_neg, exp_pos))
    return _overflow_to_inf(factor * (coef * ce))


def _sigmoid_focal_jvp(gamma_int, balanced, primals, tangents):
    out = sigmoid_focal(gamma_int, balanced, *primals)
    composed = functools.partial(_composed_focal, gamma_int, balanced)
    tangent = _other_tangents(composed, primals, tangents)
    if not _is_zero(tangents[0]):
        one = jnp.ones((), out.dtype)
        x, y, smoothing, weights, alpha, gamma, one = apart(*primals, one)
        zero = one - one
        ys, ys_neg = smooth_pair(y, smoothing, one)
        coef = weights * _alpha_t(ys, ys_neg, alpha, balanced, one)
        if gamma_int is None:
            e, den, log_q, dlog_q = _log_wrong_parts(x, ys, ys_neg, one)
            factor = jnp.exp(jnp.where(gamma == zero, zero, gamma * log_q))
            dfactor = gamma * factor * dlog_q
        else:
            # q**n and n q**(n-1) dq/dx directly: both are finite, and no log is needed.
            e, _, _, num, den = _wrong_parts(x, ys, ys_neg, one)
            inv_den = one / den
            q = num * inv_den
            factor = jax.lax.integer_pow(q, gamma_int)
            dq = (ys_neg - ys) * e * inv_den * inv_den
            if gamma_int == 0:
                dfactor = zero
            else:
                dfactor = (gamma_int * one) * jax.lax.integer_pow(q, gamma_int - 1) * dq
        ce = _bce_value(x, ys, ys_neg, zero)
        dce = _bce_slope(x, e, ys, ys_neg, one)
        # Where the loss is infinite (infinite x), the factor is flat: that term's limit is 0.
        dfactor_term = jnp.where(jnp.isinf(ce), zero, ce) * dfactor
        tangent = _accumulate(tangent, coef * (dfactor_term + factor * dce) * tangents[0])
    return out, _finish(tangent, out)


sigmoid_focal.defjvp(_sigmoid_focal_jvp, symbolic_zeros=True)


def _shifted(x, axis):
    """``(m, x - m, log(sum(exp(x - m))))`` with ``m`` the max over ``axis``, kept."""
    # An entry equal to its row's max shifts to exactly 0, so a row holding +inf
    # gives 0 there and -inf elsewhere instead of inf - inf = NaN, and a row of
    # -inf (every class masked) is uniform instead of NaN.
    m = jnp.max(x, axis, keepdims=True, initial=-jnp.inf)  # an empty row: -inf
    shifted = jnp.where(x == m, 0, x - m)
    return m, shifted, jnp.log(jnp.sum(jnp.exp(shifted), axis, keepdims=True))


def _log_softmax_value(x, axis):
    _, shifted, log_sum = _shifted(x, axis)
    return shifted - log_sum


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def log_softmax(x, axis):
    """``x - logsumexp(x)`` over ``axis`` (a tuple), exact for infinite entries."""
    return _log_softmax_value(x, axis)


@log_softmax.defjvp
def _log_softmax_jvp(axis, primals, tangents):
    (x,), (dx,) = primals, tangents
    out = _log_softmax_value(x, axis)
    return out, dx - jnp.sum(jnp.exp(out) * dx, axis, keepdims=True)


def _logsumexp_value(x, axis):
    m, _, log_sum = _shifted(x, axis)
    return jnp.squeeze(m + log_sum, axis)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def logsumexp(x, axis):
    """``log(sum(exp(x)))`` over ``axis`` (a tuple); ``-inf`` for a row of ``-inf``."""
    return _logsumexp_value(x, axis)


@logsumexp.defjvp
def _logsumexp_jvp(axis, primals, tangents):
    # The derivative is softmax(x), uniform on a row of -inf rather than NaN.
    (x,), (dx,) = primals, tangents
    return _logsumexp_value(x, axis), jnp.sum(jnp.exp(_log_softmax_value(x, axis)) * dx, axis)


# The softmax cross-entropy kernel. The target's term is gathered rather than
# masked out of a dense product, ``exp`` is computed once and shared by the
# normalizer and the derivative (on CPU, recomputing it costs more than storing
# it), and the shift is select-free so that it fuses into the row reductions.


def _xent_shift(x, m):
    """``x - m`` for the row max ``m``, select-free and finite (``+-inf`` as the largest float).

    A ``+inf`` entry shifts to 0 (so ``k`` of them share the probability), a
    ``-inf`` entry to minus the largest float, whose product with a zero
    coefficient is 0, and with a positive one a loss that reads as ``inf``.
    """
    return _finite(_finite(x) - m)


def _xent_parts(with_target, x, labels, u, v):
    """The loss per row, and ``(exp(shift), sum of it, sum of the coefficients)``."""
    m = _finite(jnp.max(x, -1, keepdims=True, initial=-jnp.inf))
    # One min only for exp (a -inf entry gives exp(-inf) = 0): the second costs a
    # quarter of the time on CPU. A row of -inf sums to 0; its log is taken as 0.
    e = jnp.exp(jnp.minimum(x, jnp.finfo(x.dtype).max) - m)
    total_exp = jnp.sum(e, -1)
    log_total = jnp.log(jnp.where(total_exp > 0, total_exp, 1))
    total, dot = None, None
    if with_target:
        x_t = jnp.take_along_axis(x, labels[..., None], -1, mode="clip")[..., 0]
        total, dot = u, u * _xent_shift(x_t, m[..., 0])
    if v is not None:
        vs = jnp.broadcast_to(v, x.shape)
        total = _accumulate(total, jnp.sum(vs, -1))
        # The finite bounds as row arrays behind the barrier: XLA:CPU materializes a
        # full-size broadcast of a constant that feeds a row reduction.
        big, m_row = apart(jnp.full(m.shape, jnp.finfo(x.dtype).max, x.dtype), m)
        shifted = jnp.maximum(jnp.minimum(x, big) - m_row, -big)
        dot = _accumulate(dot, jnp.sum(vs * shifted, -1))
    # A coefficient on a -inf logit leaves a loss near the largest float: inf. A row
    # of -inf (no class possible) has loss inf, or 0 with no coefficient on it.
    loss = _overflow_to_inf(total * log_total - dot)
    loss = jnp.where(total_exp > 0, loss, jnp.where(total > 0, jnp.inf, 0))
    return loss, (m, e, total_exp, log_total, total)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def softmax_cross_entropy(with_target, x, labels, u, v):
    """``sum_c coef_c (-log softmax(x)_c)`` over the last axis, ``coef = u onehot(labels) + v``.

    ``with_target`` (static) says whether ``labels`` (integer, one per row)
    and ``u`` (one coefficient per row) are used; ``v`` is a dense coefficient
    broadcastable to ``x`` or None. A zero coefficient adds 0, even on a
    ``-inf`` logit. The derivative in ``x`` is ``sum(coef) softmax(x) - coef``.
    """
    return _xent_parts(with_target, x, labels, u, v)[0]


def _softmax_cross_entropy_jvp(with_target, primals, tangents):
    x, labels, u, v = primals
    dx, _, du, dv = tangents
    out, (m, e, total_exp, log_total, total) = _xent_parts(with_target, x, labels, u, v)
    tangent = None
    if not _is_zero(dx):
        scale = total / jnp.where(total_exp > 0, total_exp, 1)  # sum(coef) softmax(x) = scale e
        # Scaled after the sum: in reverse mode the row scale and the cotangent
        # then meet in one row value, one multiply per entry.
        tangent = jnp.sum(e * dx, -1) * scale
        # The target's coefficient takes its tangent entry by a gather (a scatter-add
        # of one value per row in reverse mode), not as a dense one-hot.
        if with_target:
            dx_t = jnp.take_along_axis(dx, labels[..., None], -1, mode="clip")[..., 0]
            tangent = tangent - u * dx_t
        if v is not None:
            tangent = tangent - jnp.sum(jnp.broadcast_to(v, x.shape) * dx, -1)
    if (with_target and not _is_zero(du)) or (v is not None and not _is_zero(dv)):
        minus_log_p = _overflow_to_inf(log_total[..., None] - _xent_shift(x, m))
    if with_target and not _is_zero(du):
        minus_log_p_t = jnp.take_along_axis(minus_log_p, labels[..., None], -1, mode="clip")
        tangent = _accumulate(tangent, minus_log_p_t[..., 0] * du)
    if v is not None and not _is_zero(dv):
        tangent = _accumulate(tangent, jnp.sum(minus_log_p * dv, -1))
    return out, _finish(tangent, out)


softmax_cross_entropy.defjvp(_softmax_cross_entropy_jvp, symbolic_zeros=True)
