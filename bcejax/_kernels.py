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

from bcejax._common import accumulate, apart, finish, finite, is_symbolic_zero, overflow_to_inf
from bcejax._primitives import (
    bce_slope,
    bce_terms,
    bce_value,
    focal_factor,
    log_wrong_parts,
    modulate,
    prob_wrong,
    smooth_pair,
    wrong_parts,
)


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
    z = finite(x)
    ce = jnp.maximum(ys_neg * z, -ys * z) + jnp.log1p(jnp.minimum(exp_neg, exp_pos))
    return overflow_to_inf(factor * (coef * ce))


def _sigmoid_focal_jvp(gamma_int, balanced, primals, tangents):
    out = sigmoid_focal(gamma_int, balanced, *primals)
    composed = functools.partial(_composed_focal, gamma_int, balanced)
    tangent = _other_tangents(composed, primals, tangents)
    if not is_symbolic_zero(tangents[0]):
        one = jnp.ones((), out.dtype)
        x, y, smoothing, weights, alpha, gamma, one = apart(*primals, one)
        zero = one - one
        ys, ys_neg = smooth_pair(y, smoothing, one)
        coef = weights * _alpha_t(ys, ys_neg, alpha, balanced, one)
        if gamma_int is None:
            e, den, log_q, dlog_q = log_wrong_parts(x, ys, ys_neg, one)
            factor = jnp.exp(jnp.where(gamma == zero, zero, gamma * log_q))
            dfactor = gamma * factor * dlog_q
        else:
            # q**n and n q**(n-1) dq/dx directly: both are finite, and no log is needed.
            e, _, _, num, den = wrong_parts(x, ys, ys_neg, one)
            inv_den = one / den
            q = num * inv_den
            factor = jax.lax.integer_pow(q, gamma_int)
            dq = (ys_neg - ys) * e * inv_den * inv_den
            if gamma_int == 0:
                dfactor = zero
            else:
                dfactor = (gamma_int * one) * jax.lax.integer_pow(q, gamma_int - 1) * dq
        ce = bce_value(x, ys, ys_neg, zero)
        dce = bce_slope(x, e, ys, ys_neg, one)
        # Where the loss is infinite (infinite x), the factor is flat: that term's limit is 0.
        dfactor_term = jnp.where(jnp.isinf(ce), zero, ce) * dfactor
        tangent = accumulate(tangent, coef * (dfactor_term + factor * dce) * tangents[0])
    return out, finish(tangent, out)


sigmoid_focal.defjvp(_sigmoid_focal_jvp, symbolic_zeros=True)
