"""Fused kernels for the two losses on every training step: sigmoid BCE and focal.

They compute the same values as the primitives in ``_primitives``, shaped for XLA:CPU:
* the loss is select-free (no jnp.where), because XLA:CPU fuses a select-free
  elementwise loss into the reduction that consumes it, and materializes it
  in memory otherwise, which costs more than computing it;
* on CPU, the logit derivative is computed from inputs passed through an
  optimization barrier, so XLA cannot share intermediates (or constants)
  between the loss and its derivative, which would also materialize them;
* derivatives with respect to anything but the logits (labels, weights,
  gamma, ...) come from the composed primitives, differentiated by JAX.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from bcejax._common import accumulate, finish, is_symbolic_zero
from bcejax._primitives import (
    bce_slope,
    bce_terms,
    focal_factor,
    log_wrong_parts,
    modulate,
    prob_wrong,
    smooth_pair,
    wrong_parts,
)
from bcejax._xla_cpu import apart, finite, overflow_to_inf


def _bce_select_free(x, pos, neg):
    """``pos * softplus(-x) + neg * softplus(x)``, as :func:`bce_terms`, without selects.

    With ``z = x`` made finite, ``pos relu(-z) + neg relu(z) = max(neg z, -pos z)``
    for ``pos, neg >= 0``; no ``0 * inf`` can occur, and a wrong infinite logit
    gives the largest float, which :func:`overflow_to_inf` makes ``inf``.
    """
    z = finite(x)
    shared = jnp.log1p(jnp.exp(-jnp.abs(x)))
    return overflow_to_inf(jnp.maximum(neg * z, -pos * z) + (pos + neg) * shared)


def _other_tangents(composed, primals, tangents):
    """The tangent contributed by every input but the first, from the composed form."""
    if all(is_symbolic_zero(t) for t in tangents[1:]):
        return None
    x, rest = primals[0], tuple(primals[1:])
    pairs = zip(rest, tangents[1:], strict=True)
    dense = tuple(jnp.zeros_like(p) if is_symbolic_zero(t) else t for p, t in pairs)
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
    if not is_symbolic_zero(tangents[0]):
        x, y, smoothing, weights, pos_weight, one = apart(*primals, jnp.ones((), out.dtype))
        ys, ys_neg = smooth_pair(y, smoothing, one)
        pos, neg = weights * pos_weight * ys, weights * ys_neg
        slope = bce_slope(x, jnp.exp(-jnp.abs(x)), pos, neg, one)
        tangent = accumulate(tangent, slope * tangents[0])
    return out, finish(tangent, out)


sigmoid_bce.defjvp(_sigmoid_bce_jvp, symbolic_zeros=True)


def _alpha_t(ys, ys_neg, alpha, balanced, one=1.0):
    return alpha * ys + (one - alpha) * ys_neg if balanced else one


def _power(q, halves):
    """``q ** (halves / 2)`` by multiplications and at most one square root."""
    power = jax.lax.integer_pow(q, halves // 2)
    return power * jnp.sqrt(q) if halves % 2 else power


def _composed_focal(halves, balanced, x, y, smoothing, weights, alpha, gamma):
    ys, ys_neg = smooth_pair(y, smoothing)
    coef = weights * _alpha_t(ys, ys_neg, alpha, balanced)
    loss = bce_terms(x, coef * ys, coef * ys_neg)
    if halves is not None and halves % 2 == 0:
        factor = jax.lax.integer_pow(prob_wrong(x, ys, ys_neg), halves // 2)
    else:
        factor = focal_factor(x, ys, ys_neg, gamma)
    return modulate(factor, loss)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def sigmoid_focal(halves, balanced, x, y, smoothing, weights, alpha, gamma):
    """``w alpha_t (1 - p_t)**gamma BCE(x, ys)``; ``halves`` is ``2 gamma`` when known and small.

    A known gamma that is a multiple of 1/2 (2, 1.5, ...) raises ``1 - p_t`` to
    its power by multiplications and a square root, not through ``exp`` and ``log``.
    """
    ys, ys_neg = smooth_pair(y, smoothing)
    coef = weights * _alpha_t(ys, ys_neg, alpha, balanced)
    # q = (ys_neg + ys exp(-x)) / (1 + exp(-x)), with exp(-x) capped at half the largest
    # float so that the ratio is never inf / inf (the cap moves q by less than the
    # smallest normal float). One exp serves q and, as min(exp(-x), exp(x)), the log1p.
    exp_neg = jnp.minimum(jnp.exp(-x), jnp.finfo(x.dtype).max / 2)
    q = (ys_neg + ys * exp_neg) / (1 + exp_neg)
    factor = _power(q, halves) if halves is not None else q**gamma
    z = finite(x)
    ce = jnp.maximum(ys_neg * z, -ys * z) + jnp.log1p(jnp.minimum(exp_neg, 1 / exp_neg))
    return overflow_to_inf(factor * (coef * ce))


def _sigmoid_focal_jvp(halves, balanced, primals, tangents):
    out = sigmoid_focal(halves, balanced, *primals)
    composed = functools.partial(_composed_focal, halves, balanced)
    tangent = _other_tangents(composed, primals, tangents)
    if not is_symbolic_zero(tangents[0]):
        one = jnp.ones((), out.dtype)
        x, y, smoothing, weights, alpha, gamma, one = apart(*primals, one)
        zero = one - one
        ys, ys_neg = smooth_pair(y, smoothing, one)
        coef = weights * _alpha_t(ys, ys_neg, alpha, balanced, one)
        # A square root in this pass makes XLA:CPU split it (and store its parts), which
        # costs more than the log-space form: odd halves take that form here.
        if halves is None or halves % 2:
            e, inv_den, log_q, dlog_q = log_wrong_parts(x, ys, ys_neg, one)
            factor = jnp.exp(jnp.where(gamma == zero, zero, gamma * log_q))
            dfactor = gamma * factor * dlog_q
        else:
            # q**n and n q**(n-1) dq/dx directly: both are finite, and no log is needed.
            n = halves // 2
            e, _, _, num, den = wrong_parts(x, ys, ys_neg, one)
            inv_den = one / den
            q = num * inv_den
            factor = jax.lax.integer_pow(q, n)
            dq = (ys_neg - ys) * e * inv_den * inv_den
            if n == 0:
                dfactor = zero
            else:
                dfactor = (n * one) * jax.lax.integer_pow(q, n - 1) * dq
        # The cross-entropy select-free and finite: at an infinite x, where it would be
        # infinite, the factor is flat (dfactor is exactly 0), and so is their product.
        z = finite(x, one * jnp.finfo(out.dtype).max)
        ce = jnp.maximum(ys_neg * z, -ys * z) + (ys + ys_neg) * jnp.log1p(e)
        dce = bce_slope(x, e, ys, ys_neg, one, inv_den)
        dfactor_term = ce * dfactor
        tangent = accumulate(tangent, coef * (dfactor_term + factor * dce) * tangents[0])
    return out, finish(tangent, out)


sigmoid_focal.defjvp(_sigmoid_focal_jvp, symbolic_zeros=True)
