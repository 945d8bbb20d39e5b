"""What the segmentation test files share: tolerances, image shapes, random images, the losses."""

from __future__ import annotations

import functools

import helpers
import jax
import numpy as np

import bcejax

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
TINY = {np.float32: 1e-36, np.float64: 1e-300}
SHAPES = [(3, 5, 4), (2, 4, 4, 2)]
# Gradients are taken on one image shape: every new shape costs each primitive a compile.
SHAPE = SHAPES[0]

assert_close = functools.partial(helpers.assert_close, rtol=RTOL, atol=TINY)


def random_inputs(shape, dtype, *, from_logits=True, seed=0):
    """Predictions, labels (half hard, half soft) and a mask with one fully masked image."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, shape)
    preds = logits if from_logits else helpers.sigmoid(logits)
    hard = rng.integers(0, 2, shape).astype(np.float64)
    labels = np.where(rng.uniform(size=shape) < 0.5, hard, rng.uniform(size=shape))
    mask = rng.uniform(size=shape) < 0.7
    mask[1] = False
    return preds.astype(dtype), labels.astype(dtype), mask


def finite(tree):
    return all(bool(np.all(np.isfinite(np.asarray(v)))) for v in jax.tree_util.tree_leaves(tree))


ALL_FNS = {
    "dice": bcejax.dice_loss,
    "jaccard": bcejax.jaccard_loss,
    "tversky": bcejax.tversky_loss,
    "bce_dice": bcejax.sigmoid_bce_dice_loss,
    "lovasz": bcejax.lovasz_hinge,
}
