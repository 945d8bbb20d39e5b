"""What the metrics test files share: model-like scores with ties, weights, masks and junk."""

from __future__ import annotations

import functools

import helpers
import jax
import numpy as np
from references import SKLEARN

from bcejax import metrics

SHAPE = (8, 25)
JUNK_LABEL = 255.0
SCALAR_METRICS = list(SKLEARN)


def bcejax_metric(name, **config):
    """The bcejax function of a metric name, with fbeta's required beta bound."""
    fn = getattr(metrics, name)
    if name == "fbeta_score":
        config = {"beta": 2.0, **config}
    return functools.partial(fn, **config) if config else fn


def model_data(shape, *, seed, decimals=1):
    """Labels ~ Bernoulli(sigmoid(z)), scores sigmoid(z + noise) rounded (ties, 0 and 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, shape)
    labels = (rng.uniform(size=shape) < helpers.sigmoid(z)).astype(np.float64)
    scores = np.round(helpers.sigmoid(z + rng.normal(0.0, 1.0, shape)), decimals)
    weights = rng.uniform(0.0, 2.0, shape)
    weights[rng.uniform(size=shape) < 0.15] = 0.0
    mask = rng.uniform(size=shape) < 0.8
    return scores, labels, weights, mask


SCORES, LABELS, WEIGHTS, MASK = model_data(SHAPE, seed=0)
JUNK_SCORES = np.where(MASK, SCORES, np.nan)
JUNK_LABELS = np.where(MASK, LABELS, JUNK_LABEL)
assert np.any(SCORES == 0.0) and np.any(SCORES == 1.0) and np.any(WEIGHTS == 0.0)

VARIANTS = {
    "plain": (SCORES, LABELS, None, None),
    "weights": (SCORES, LABELS, WEIGHTS, None),
    "where": (JUNK_SCORES, JUNK_LABELS, None, MASK),
    "weights-where": (JUNK_SCORES, JUNK_LABELS, WEIGHTS, MASK),
}


def call(fn, scores, labels, sample_weight, where, *, jit):
    """Calls a metric eagerly or jitted, passing only the optional arrays that are given."""
    kwargs = {}
    if sample_weight is not None:
        kwargs["sample_weight"] = sample_weight
    if where is not None:
        kwargs["where"] = where
    if jit:
        fn = jax.jit(fn)
    return fn(scores, labels, **kwargs)


def assert_scalar(got, dtype):
    assert got.shape == (), got.shape
    assert got.dtype == dtype, got.dtype
