"""Every choice bcejax makes for XLA:CPU, decided when a program is lowered.

Each function here gives the same values and derivatives on every platform;
the form it lowers to is chosen with ``jax.lax.platform_dependent``, for the
platform the program is lowered for: the form below on CPU, the natural one
(natural shapes, no barrier, a select) on GPU and TPU. ``tests/test_export.py``
exports every public loss for ``cpu``, ``cuda`` and ``tpu`` and checks that the
``cuda`` and ``tpu`` modules hold none of it, and forces each branch on CPU to
compare values and gradients.

* :func:`view_call`: an elementwise kernel on 1-D views of its operands (or rows
  of a per-class operand's period), which XLA:CPU fuses and reduces fastest.
* :func:`apart`: operands behind an optimization barrier, so that XLA:CPU keeps
  a fused loss and its derivative in separate passes.
* :func:`finite` and :func:`overflow_to_inf`: infinities as the largest float
  and back, by scaling rather than a select (which splits XLA:CPU's fusions).
* :func:`slice_columns` and :func:`update_columns`: half-precision columns moved
  as integers of the same width, so XLA:CPU converts only the slice.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

# Rows of the 2-D view that _cpu_view_call gives XLA when an operand is per class.
MIN_ROW = 1024


def _suffix_size(operand_shape: tuple[int, ...], shape: tuple[int, ...]) -> int | None:
    """Size of the trailing axes an operand spans, if it is ``shape``'s suffix, else None."""
    dims = tuple(operand_shape)
    while dims and dims[0] == 1:
        dims = dims[1:]
    if dims != tuple(shape[len(shape) - len(dims) :]):
        return None
    return int(np.prod(dims, dtype=np.int64))


def view_call(kernel, *static, x, y, config):
    """``kernel(*static, x, y, *config)``, on XLA:CPU on views of its operands that it runs fast.

    The choice is made when the program is lowered, for the platform it is
    lowered for: :func:`_cpu_view_call` on CPU, the operands' natural shapes on
    every other platform (on a TPU, flattening a tiled ``(N, C)`` array is a
    relayout copy, not a free view). Both give the same values and derivatives.
    """

    def natural(*operands):
        return kernel(*static, *operands)

    def cpu(*operands):
        return _cpu_view_call(kernel, *static, x=operands[0], y=operands[1], config=operands[2:])

    return jax.lax.platform_dependent(x, y, *config, cpu=cpu, default=natural)


def _cpu_view_call(kernel, *static, x, y, config):
    """``kernel(*static, x, y, *config)`` on views of its operands that XLA:CPU runs fast.

    Operands of the full shape are raveled (scalars are kept) and the result is
    reshaped back. XLA:CPU runs the fused loss and its reduction several times
    faster on 1-D arrays than on ``(N, C)`` ones, and ~20 times faster than on
    ``(N, 1)``. An operand that spans trailing axes only (a per-class
    ``pos_weight``, say) would be materialized by raveling; the full operands
    are viewed as rows of a multiple of its size instead, and it is tiled along
    one row.
    """
    shape = jnp.broadcast_shapes(x.shape, y.shape, *(jnp.shape(c) for c in config))
    operands: Sequence[Any] = (x, y, *config)
    full = [a.ndim > 0 and a.shape == shape for a in operands]
    partial = [a for a, f in zip(operands, full, strict=True) if a.ndim > 0 and not f]
    size = int(np.prod(shape, dtype=np.int64))
    row = 1
    if partial:
        periods = [_suffix_size(a.shape, shape) for a in partial]
        row = max(p or 0 for p in periods)
        row *= -(-MIN_ROW // max(row, 1))  # a multiple of the period, at least MIN_ROW
        if None in periods or row == 0 or size % row:
            return kernel(*static, *operands)  # no such view: keep the natural shape
    view = (-1,) if row == 1 else (size // row, row)
    kept = iter(apart(*(a.reshape(view) for a, f in zip(operands, full, strict=True) if f)))

    def tiled(a):
        # Broadcast over the trailing axes it spans, then repeated along one row.
        flat = a.reshape(-1)  # its leading axes are 1: it spans the trailing ones in order
        return jnp.tile(flat, row // flat.size)

    operands = [
        next(kept) if f else (a if a.ndim == 0 else tiled(a))
        for a, f in zip(operands, full, strict=True)
    ]
    return kernel(*static, *operands).reshape(shape)


def finite(x, big=None):
    """``x`` with ``+-inf`` replaced by the largest finite float of its sign.

    Two mins and two negations instead of one ``clip``: XLA:CPU does not fuse its
    clamp into a reduction. ``big`` is that float (see ``apart`` for why it may
    be an array).
    """
    big = jnp.finfo(x.dtype).max if big is None else big
    return -jnp.minimum(-jnp.minimum(x, big), big)


def overflow_to_inf(value):
    """``value`` unchanged, except that values above ``2**64`` below the largest float become inf.

    That is ``|value| > max / 2**64`` (about 1.8e19 in float32): the largest-float
    stand-in for infinity (see :func:`finite`) becomes ``inf`` again. Chosen when
    the program is lowered: on CPU, multiplying by 2**64 and back, exact below
    the bound, with the factor passed through an optimization barrier so that
    XLA cannot fold it to 1 (a select would split XLA:CPU's fusion); elsewhere,
    a select.
    """
    return jax.lax.platform_dependent(
        value, cpu=_overflow_to_inf_by_scaling, default=_overflow_to_inf_by_select
    )


def _overflow_to_inf_by_scaling(value):
    up, down = jax.lax.optimization_barrier(
        (jnp.asarray(2.0**64, value.dtype), jnp.asarray(2.0**-64, value.dtype))
    )
    return value * up * down


def _overflow_to_inf_by_select(value):
    bound = jnp.asarray(jnp.finfo(value.dtype).max * 2.0**-64, value.dtype)
    return jnp.where(jnp.abs(value) > bound, jnp.sign(value) * jnp.inf, value)


def apart(*arrays):
    """The arrays, hidden from XLA:CPU behind an optimization barrier; elsewhere as they are.

    On CPU, a fused loss's derivative computed from its inputs passed through
    the barrier keeps XLA from sharing intermediates between the loss and the
    derivative, which would materialize them (see _kernels). The choice is made
    when the program is lowered, for the platform it is lowered for.
    """
    return jax.lax.platform_dependent(*arrays, cpu=_barrier, default=lambda *a: a)


def _barrier(*arrays):
    # One barrier each: inside shard_map, a barrier's outputs vary over the devices if any
    # of its inputs does, and each array keeps its own type on every branch.
    return tuple(jax.lax.optimization_barrier(a) for a in arrays)


def _slice_as_bits(w, start, size):
    bits = lax.bitcast_convert_type(w, _BITS[w.dtype.itemsize])
    return lax.bitcast_convert_type(lax.dynamic_slice_in_dim(bits, start, size, 1), w.dtype)


def _update_as_bits(w, update, start):
    bits = _BITS[w.dtype.itemsize]
    w = lax.bitcast_convert_type(w, bits)
    w = lax.dynamic_update_slice_in_dim(w, lax.bitcast_convert_type(update, bits), start, 1)
    return lax.bitcast_convert_type(w, update.dtype)


_BITS = {1: jnp.uint8, 2: jnp.uint16}


def slice_columns(w: jax.Array, start: ArrayLike, size: int) -> jax.Array:
    """``w[:, start:start + size]``.

    XLA:CPU computes half precision in float32, a slice included: it would
    convert the whole of a half-precision ``w`` before the loop, a float32
    copy of the weight. Sliced as unsigned integers of the same width (a free
    reinterpretation), only the slice is ever converted.
    """
    plain = functools.partial(lax.dynamic_slice_in_dim, slice_size=size, axis=1)
    if w.dtype.itemsize not in _BITS:
        return plain(w, start)
    return lax.platform_dependent(
        w, start, cpu=functools.partial(_slice_as_bits, size=size), default=plain
    )


def update_columns(w: jax.Array, update: jax.Array, start: ArrayLike) -> jax.Array:
    """``w`` with columns ``start:start + update.shape[1]`` replaced, in place (as above)."""
    plain = functools.partial(lax.dynamic_update_slice_in_dim, axis=1)
    if w.dtype.itemsize not in _BITS:
        return plain(w, update, start)
    return lax.platform_dependent(w, update, start, cpu=_update_as_bits, default=plain)
