"""The kernel of the fused linear + softmax cross-entropy head, a vocabulary chunk at a time.

:func:`token_losses` is a ``jax.custom_vjp``: the forward pass keeps, per
token, the running maximum and the sum of exponentials of the logits seen so
far (an online log-sum-exp), the target logit and, with label smoothing, the
sum of the logits; the backward pass recomputes each chunk's logits from the
log-sum-exp and forms the chunk's logit gradient, which it multiplies into the
gradients of the features, the weight and the bias at once. No array larger
than ``tokens x chunk`` is formed besides the operands and their gradients.

With ``axis_name`` the weight and bias are this device's slice of the
vocabulary (consecutive slices in the order of the mesh axis) and every
per-token statistic is combined across the axis before the loss is formed.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from bcejax import _xla_cpu


class HeadConfig(NamedTuple):
    """Static configuration of :func:`token_losses` (hashable, so a ``nondiff_argnum``)."""

    chunk: int  # vocabulary entries per chunk, at most the local vocabulary
    num_classes: int  # the whole vocabulary, across the axis
    ignore_index: int | None
    smoothing: bool  # label smoothing may be nonzero: the sum of the logits is needed
    softcap: bool  # logits are capped with cap * tanh(z / cap)
    softcap_grad: bool  # the cap is traced: its cotangent is accumulated
    axis_name: tuple[Hashable, ...] | None


def varying(x: jax.Array, axis_name: tuple[Hashable, ...] | None) -> jax.Array:
    """A fresh constant ``x`` typed as varying over ``axis_name`` (or as it is without one).

    A scan carry that meets this device's slice must have the slice's type from the start.
    """
    return x if axis_name is None else lax.pcast(x, axis_name, to="varying")


def _chunk_logits(
    cfg: HeadConfig, f: jax.Array, w: jax.Array, b: jax.Array, cap: jax.Array, c: jax.Array
) -> tuple[jax.Array, jax.Array, Any, jax.Array, jax.Array, jax.Array, jax.Array]:
    """Chunk ``c`` of the logits: ``z``, ``x`` (capped, or ``z``), ``tanh(z / cap)`` or None,
    the local columns, which of them are this chunk's (``valid``), the first column and the
    weight's columns in the compute dtype.

    The last chunk ends at the last class instead of being padded: its
    columns that an earlier chunk already took are not ``valid``.
    """
    local = w.shape[1]
    start = jnp.minimum(c * cfg.chunk, local - cfg.chunk)
    w_c = _xla_cpu.slice_columns(w, start, cfg.chunk).astype(f.dtype)
    z = f @ w_c + lax.dynamic_slice_in_dim(b, start, cfg.chunk)
    columns = start + jnp.arange(cfg.chunk)
    valid = columns >= c * cfg.chunk
    if not cfg.softcap:
        return z, z, None, columns, valid, start, w_c
    t = jnp.tanh(z / cap)
    return z, cap * t, t, columns, valid, start, w_c


def _local_targets(cfg: HeadConfig, labels: jax.Array, local: int) -> jax.Array:
    """Each token's target as a column of this device's slice (outside ``[0, local)`` if not)."""
    if cfg.axis_name is None:
        return labels
    return labels - lax.axis_index(cfg.axis_name) * local


def _num_chunks(cfg: HeadConfig, local: int) -> int:
    return -(-local // cfg.chunk)


def _statistics(
    cfg: HeadConfig, f: jax.Array, w: jax.Array, b: jax.Array, labels: jax.Array, cap: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per token: max logit, sum of exp(logit - max), target logit, sum of logits (all devices)."""
    tokens, local = f.shape[0], w.shape[1]
    targets = _local_targets(cfg, labels, local)[:, None]

    def step(carry, c):
        m, s, x_t, x_sum = carry
        _, x, _, columns, valid, _, _ = _chunk_logits(cfg, f, w, b, cap, c)
        x_valid = jnp.where(valid, x, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(x_valid, -1))
        # Rescale the running sum to the new maximum; exp(-inf) = 0 at the first chunk.
        s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(x_valid - m_new[:, None]), -1)
        # The target logit is taken from the chunk itself, so it is the very value in
        # the log-sum-exp and lse - x_t >= 0 holds exactly.
        x_t = x_t + jnp.sum(jnp.where((columns == targets) & valid, x, 0), -1)
        if cfg.smoothing:
            x_sum = x_sum + jnp.sum(jnp.where(valid, x, 0), -1)
        return (m_new, s, x_t, x_sum), None

    zeros = jnp.zeros(tokens, f.dtype)
    init: tuple[jax.Array, ...] = (jnp.full(tokens, -jnp.inf, f.dtype), zeros, zeros, zeros)
    init = tuple(varying(a, cfg.axis_name) for a in init)
    (m, s, x_t, x_sum), _ = lax.scan(step, init, jnp.arange(_num_chunks(cfg, local)))
    if cfg.axis_name is not None:
        m_all = lax.pmax(m, cfg.axis_name)
        s = lax.psum(s * jnp.exp(m - m_all), cfg.axis_name)
        x_t, x_sum = lax.psum((x_t, x_sum), cfg.axis_name)
        m = m_all
    return m, s, x_t, x_sum


def _token_masks(cfg: HeadConfig, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Tokens that count (not ``ignore_index``), and those whose label is a valid class."""
    kept = jnp.ones(labels.shape, bool) if cfg.ignore_index is None else labels != cfg.ignore_index
    in_range = ((labels >= 0) & (labels < cfg.num_classes)) | ~kept
    return kept, in_range


def _forward(
    cfg: HeadConfig,
    f: jax.Array,
    w: jax.Array,
    b: jax.Array,
    labels: jax.Array,
    smoothing: jax.Array,
    z_coef: jax.Array,
    cap: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    m, s, x_t, x_sum = _statistics(cfg, f, w, b, labels, cap)
    log_s = jnp.log(s)
    lse = m + log_s
    # lse - x = (m - x) + log s: the difference of the large terms is taken first.
    loss = log_s + z_coef * lse**2
    if cfg.smoothing:
        loss = loss + (1 - smoothing) * (m - x_t) + smoothing * (m - x_sum / cfg.num_classes)
    else:
        loss = loss + (m - x_t)
    kept, in_range = _token_masks(cfg, labels)
    # As softmax_cross_entropy_with_integer_labels: an out-of-range label gives NaN.
    loss = jnp.where(in_range, jnp.where(kept, loss, 0), jnp.nan)
    return loss, (f, w, b, labels, smoothing, z_coef, cap, lse, x_t, x_sum)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def token_losses(cfg: HeadConfig, *operands: jax.Array) -> jax.Array:
    """Per-token loss ``(tokens,)`` of ``(f, w, b, labels, smoothing, z_coef, cap)``, as
    :func:`_forward` takes them; ``f``, ``b`` and the scalars in the compute dtype."""
    return _forward(cfg, *operands)[0]


def _backward(
    cfg: HeadConfig, residuals: tuple[jax.Array, ...], g: jax.Array
) -> tuple[jax.Array | None, ...]:
    f, w, b, labels, smoothing, z_coef, cap, lse, x_t, x_sum = residuals
    kept, in_range = _token_masks(cfg, labels)
    g = jnp.where(kept & in_range, g, 0)
    local = w.shape[1]
    targets = _local_targets(cfg, labels, local)[:, None]
    # d loss / d x = r softmax(x) - u onehot(target) - v, per token.
    r = (g * (1 + 2 * z_coef * lse))[:, None]
    u = (g * (1 - smoothing) if cfg.smoothing else g)[:, None]
    v = (g * smoothing / cfg.num_classes)[:, None] if cfg.smoothing else None

    def step(carry, c):
        df, dw, db, dcap = carry
        z, x, t, columns, valid, start, w_c = _chunk_logits(cfg, f, w, b, cap, c)
        dx = r * jnp.exp(x - lse[:, None]) - jnp.where(columns == targets, u, 0)
        if v is not None:
            dx = dx - v
        dx = jnp.where(valid, dx, 0)
        if cfg.softcap:
            # d(cap tanh(z / cap)) = (1 - t)(1 + t) dz + (t - (z / cap)(1 - t)(1 + t)) dcap.
            slope = (1 - t) * (1 + t)
            if cfg.softcap_grad:
                dcap = dcap + jnp.sum(dx * (t - (z / cap) * slope))
            dx = dx * slope
        df = df + dx @ w_c.T
        # Written, not added: the scan runs backwards, so the last chunk's columns that
        # the chunk before it also covers (0 here) are overwritten with their gradient next.
        dw = _xla_cpu.update_columns(dw, (f.T @ dx).astype(dw.dtype), start)
        db = lax.dynamic_update_slice_in_dim(db, jnp.sum(dx, 0), start, 0)
        return (df, dw, db, dcap), None

    init: tuple[jax.Array, ...] = (
        jnp.zeros(f.shape, f.dtype),
        jnp.zeros(w.shape, w.dtype),
        jnp.zeros(b.shape, b.dtype),
    )
    init = (*init, jnp.zeros((), cap.dtype))
    init = tuple(varying(a, cfg.axis_name) for a in init)
    chunks = jnp.arange(_num_chunks(cfg, local))
    (df, dw, db, dcap), _ = lax.scan(step, init, chunks, reverse=True)
    if cfg.axis_name is not None:
        # The features and the cap are shared by every slice of the vocabulary.
        df, dcap = lax.psum((df, dcap), cfg.axis_name)
    # g is 0 on the tokens that do not count, so these sums cover the others only.
    dz_coef = jnp.sum(g * lse**2)
    dsmoothing = jnp.zeros_like(smoothing)
    if cfg.smoothing:
        dsmoothing = jnp.sum(g * (x_t - x_sum / cfg.num_classes))
    return df, dw, db, None, dsmoothing, dz_coef, dcap


token_losses.defvjp(_forward, _backward)
