"""Softmax primitives with exact derivatives, and the softmax cross-entropy kernel."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from bcejax._common import accumulate, finish, is_symbolic_zero
from bcejax._xla_cpu import apart, finite, overflow_to_inf


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
    return finite(finite(x) - m)


def _xent_parts(with_target, x, labels, u, v):
    """The loss per row, and ``(exp(shift), sum of it, sum of the coefficients)``."""
    m = finite(jnp.max(x, -1, keepdims=True, initial=-jnp.inf))
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
        total = accumulate(total, jnp.sum(vs, -1))
        # The finite bounds as row arrays behind the barrier: XLA:CPU materializes a
        # full-size broadcast of a constant that feeds a row reduction.
        big, m_row = apart(jnp.full(m.shape, jnp.finfo(x.dtype).max, x.dtype), m)
        shifted = jnp.maximum(jnp.minimum(x, big) - m_row, -big)
        dot = accumulate(dot, jnp.sum(vs * shifted, -1))
    assert total is not None and dot is not None, "a target, dense coefficients or both"
    # A coefficient on a -inf logit leaves a loss near the largest float: inf. A row
    # of -inf (no class possible) has loss inf, or 0 with no coefficient on it.
    loss = overflow_to_inf(total * log_total - dot)
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
    if not is_symbolic_zero(dx):
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
    if (with_target and not is_symbolic_zero(du)) or (v is not None and not is_symbolic_zero(dv)):
        minus_log_p = overflow_to_inf(log_total[..., None] - _xent_shift(x, m))
    if with_target and not is_symbolic_zero(du):
        minus_log_p_t = jnp.take_along_axis(minus_log_p, labels[..., None], -1, mode="clip")
        tangent = accumulate(tangent, minus_log_p_t[..., 0] * du)
    if v is not None and not is_symbolic_zero(dv):
        tangent = accumulate(tangent, jnp.sum(minus_log_p * dv, -1))
    return out, finish(tangent, out)


softmax_cross_entropy.defjvp(_softmax_cross_entropy_jvp, symbolic_zeros=True)
