"""What the softmax test files share: the functions, tolerances, and random problems in layouts."""

from __future__ import annotations

import functools

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcejax

CE = bcejax.softmax_cross_entropy
CE_INT = bcejax.softmax_cross_entropy_with_integer_labels
FOCAL = bcejax.softmax_focal_loss
POLY = bcejax.poly_loss_cross_entropy

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
# Absolute slack for float32: rounding of log-sum-exp (~1e-7 of the terms), far below the values.
ATOL = {np.float32: 2e-6, np.float64: 1e-13}

assert_close = functools.partial(helpers.assert_close, rtol=RTOL, atol=ATOL)


def sum_grad(fn):
    """The gradient of ``sum(fn(x))`` in ``x``."""
    return jax.grad(lambda x: jnp.sum(fn(x)))


X2 = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
# the finite extremes
EXTREME_FINITE = np.array(
    [[1e4, 0.0, -1e4], [-1e4, 0.0, 1e4], [0.0, -1e4, 1e4], [30.0, -30.0, 0.0]]
)

# ---------------------------------------------------------------------------
# Random problems in several layouts: classes along an int axis or a tuple of axes.
# Everything is drawn with the classes last and flat (what the references take), then
# laid out with the classes along ``axis`` (what bcejax takes).
# ---------------------------------------------------------------------------

LAYOUTS = {
    "2d": ((6, 5), -1),
    "3d_axis0": ((4, 3, 5), 0),
    "3d_axis1": ((3, 4, 5), 1),
    "3d_axis2": ((3, 5, 4), 2),
    "4d_axes13": ((2, 3, 4, 5), (1, 3)),
}


def class_axes(axis, ndim):
    axes = (axis,) if isinstance(axis, int) else axis
    return tuple(sorted(a % ndim for a in axes))


def layout_grid(configs, keep):
    """Every config in the 2-D layout, in both dtypes; those named in ``keep`` in the other
    layouts too, in float64 (the layout moves the classes; float32 changes nothing there)."""
    return [
        pytest.param(*config, layout, dtype, id=f"{config[0]}-{layout}-{dtype.__name__}")
        for layout in LAYOUTS
        for dtype in DTYPES
        for config in configs
        if layout == "2d" or (config[0] in keep and dtype == np.float64)
    ]


def to_layout(flat, batch_shape, class_shape, axes):
    """``(*batch, K)`` with the classes last -> the logits' layout, classes along ``axes``.

    The flat class index is row-major over the class axes in increasing order."""
    full = np.asarray(flat).reshape(*batch_shape, *class_shape)
    nb = len(batch_shape)
    return np.moveaxis(full, list(range(nb, nb + len(axes))), list(axes))


def random_problem(layout, dtype, seed=0, *, class_mask=False):
    """Logits, soft and integer labels, class weights and masks, flat and laid out."""
    shape, axis = LAYOUTS[layout]
    axes = class_axes(axis, len(shape))
    batch_shape = tuple(n for a, n in enumerate(shape) if a not in axes)
    class_shape = tuple(shape[a] for a in axes)
    num_classes = int(np.prod(class_shape))
    rng = np.random.default_rng(seed)
    flat_shape = (*batch_shape, num_classes)
    x = rng.normal(0.0, 2.5, flat_shape).astype(dtype)
    mask = None
    if class_mask:
        mask = rng.uniform(size=flat_shape) < 0.6
        rows = mask.reshape(-1, num_classes)
        rows[0] = False  # a fully masked example
        rows[1] = True  # an example with every class
    # Soft labels: Dirichlet rows, every third one-hot, each a distribution over its
    # unmasked classes (what bcejax checks).
    y = rng.dirichlet(np.full(num_classes, 0.5), batch_shape)
    hard = (np.arange(int(np.prod(batch_shape))) % 3 == 0).reshape(batch_shape)
    y = np.where(hard[..., None], np.eye(num_classes)[np.argmax(y, -1)], y)
    if mask is not None:
        y = np.where(mask, y + 0.05, 0.0)
        sums = y.sum(-1, keepdims=True)
        y = np.where(sums > 0, y / np.where(sums > 0, sums, 1), 1.0 / num_classes)
    t = rng.integers(0, num_classes, batch_shape).astype(np.int32)
    weights = rng.uniform(0.2, 3.0, class_shape).astype(dtype)
    batch_mask = rng.uniform(size=batch_shape) < 0.6
    batch_mask.reshape(-1)[:2] = (False, True)

    def lay(a):
        return to_layout(a, batch_shape, class_shape, axes)

    return dict(
        axis=axis,
        x=x,
        y=y.astype(dtype),
        t=t,
        mask=mask,
        class_weights=weights,
        batch_mask=batch_mask,
        logits=lay(x),
        labels=lay(y.astype(dtype)),
        where_classes=None if mask is None else lay(mask),
        batch_shape=batch_shape,
    )


def where_of(p, kind):
    return {None: None, "batch": p["batch_mask"], "classes": p["where_classes"]}[kind]


def ref_masks(p, kind):
    return dict(
        mask=p["mask"] if kind == "classes" else None,
        batch_mask=p["batch_mask"] if kind == "batch" else None,
    )
