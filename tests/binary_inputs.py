"""What the elementwise binary test files share: tolerances, random inputs and the extreme grid."""

from __future__ import annotations

import functools

import helpers
import numpy as np

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-6, np.float64: 1e-12}
# Absolute slack for values that underflow: well below every value that is compared.
TINY = {np.float32: 1e-36, np.float64: 1e-300}

assert_close = functools.partial(helpers.assert_close, rtol=RTOL, atol=TINY)


def random_inputs(kind, dtype, *, shape=(16, 5), seed=0):
    """Predictions, labels (half hard, half soft), weights and a per-class pos_weight."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 4.0, shape)
    preds = logits if kind == "logits" else 1 / (1 + np.exp(-logits))
    hard = rng.integers(0, 2, shape).astype(np.float64)
    labels = np.where(rng.uniform(size=shape) < 0.5, hard, rng.uniform(size=shape))
    return dict(
        preds=preds.astype(dtype),
        labels=labels.astype(dtype),
        W=rng.uniform(0.1, 3.0, shape).astype(dtype),
        PW=rng.uniform(0.2, 4.0, shape[-1:]).astype(dtype),
    )


def resolve(config, inputs, dtype):
    """The config with "W"/"PW" replaced by arrays and every number cast to ``dtype``."""
    return {
        key: np.asarray(inputs[value] if isinstance(value, str) else value, dtype)
        for key, value in config.items()
    }


GRID_LOGITS = np.array([-1e4, -100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0, 1e4])
GRID_PROBS = np.array([0.0, 1e-30, 1e-12, 1e-7, 0.3, 0.5, 0.7, 1 - 1e-7, 1 - 1e-12, 1.0])
GRID_LABELS = np.array([0.0, 1.0, 0.3])


def grid(kind, dtype):
    """Every (prediction, label) pair of the grid, flattened, in ``dtype``."""
    preds = GRID_LOGITS if kind == "logits" else GRID_PROBS
    if kind == "probs" and dtype == np.float64:  # the smallest normal: log < -100
        preds = np.append(preds, np.finfo(np.float64).tiny)
    p, y = np.meshgrid(preds, GRID_LABELS, indexing="ij")
    return p.ravel().astype(dtype), y.ravel().astype(dtype)
