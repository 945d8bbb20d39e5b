"""Values of the six elementwise binary losses against float64 references, extreme inputs included.

* Random inputs: soft labels, per-class ``pos_weight``, weights, traced config, broadcast labels.
* An extreme grid of logits and probabilities, infinite logits, probabilities of exactly 0 and 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from binary_inputs import DTYPES, RTOL, TINY, assert_close, grid, random_inputs, resolve
from references import (
    f64,
    ref_bce_probs,
    ref_binary_focal,
    ref_sigmoid_asymmetric,
    ref_sigmoid_bce,
    ref_sigmoid_focal,
    ref_sigmoid_poly1,
)

import bcejax

# ---------------------------------------------------------------------------
# The cases: a loss, its reference, and a config. "W" and "PW" stand for random
# weights (the shape of the inputs) and a per-class pos_weight of shape (C,).
# ---------------------------------------------------------------------------


class Case(NamedTuple):
    name: str
    fn: Callable[..., Any]
    ref: Callable[..., Any]
    kind: str  # "logits" or "probs"
    config: dict
    # float32 tolerance where the formula itself amplifies float32 rounding (see FP32_*).
    rtol32: float = RTOL[np.float32]


# Asymmetric clip: p_m = sigmoid(x) - m and 1 - p_m = 1 - p + m cancel where p is just
# above m, and the negative term scales as p_m ** gamma_neg: its float32 relative error
# grows like eps32 * (gamma_neg + 1) p / p_m, whatever the implementation.
FP32_CLIPPED = 1e-5


BCE = (bcejax.sigmoid_binary_cross_entropy, ref_sigmoid_bce, "logits")
FOCAL = (bcejax.sigmoid_focal_loss, ref_sigmoid_focal, "logits")
ASYM = (bcejax.sigmoid_asymmetric_loss, ref_sigmoid_asymmetric, "logits")
POLY = (bcejax.sigmoid_poly1_loss, ref_sigmoid_poly1, "logits")
PBCE = (bcejax.binary_cross_entropy, ref_bce_probs, "probs")
PFOCAL = (bcejax.binary_focal_loss, ref_binary_focal, "probs")

CASES = [
    Case("bce", *BCE, {}),
    Case("bce_full", *BCE, dict(weights="W", pos_weight="PW", label_smoothing=0.1)),
    Case("focal", *FOCAL, {}),
    Case("focal_g0_alpha", *FOCAL, dict(gamma=0.0, alpha=0.75)),
    Case("focal_g0.5", *FOCAL, dict(gamma=0.5)),
    Case(
        "focal_full",
        *FOCAL,
        dict(alpha=0.25, gamma=1.5, weights="W", label_smoothing=0.05),
    ),
    Case("focal_g3.5", *FOCAL, dict(alpha=0.4, gamma=3.5)),
    Case("asym", *ASYM, {}, FP32_CLIPPED),
    Case(
        "asym_full",
        *ASYM,
        dict(gamma_pos=1.0, gamma_neg=2.5, clip=0.1, weights="W"),
        FP32_CLIPPED,
    ),
    Case("asym_noclip", *ASYM, dict(gamma_pos=0.5, gamma_neg=3.0, clip=0.0)),
    Case("asym_g0", *ASYM, dict(gamma_pos=0.0, gamma_neg=0.0, clip=0.2), FP32_CLIPPED),
    Case("poly1", *POLY, {}),
    Case(
        "poly1_full",
        *POLY,
        dict(epsilon=-0.5, weights="W", pos_weight="PW", label_smoothing=0.1),
    ),
    Case("poly1_eps2", *POLY, dict(epsilon=2.0, pos_weight=3.0)),
    Case("bce_probs_torch", *PBCE, {}),
    Case(
        "bce_probs_torch_full",
        *PBCE,
        dict(weights="W", pos_weight="PW", label_smoothing=0.1),
    ),
    Case("bce_probs_keras", *PBCE, dict(eps=1e-7, pos_weight="PW")),
    Case("focal_probs", *PFOCAL, {}),
    Case(
        "focal_probs_full",
        *PFOCAL,
        dict(alpha=0.25, gamma=0.5, weights="W", label_smoothing=0.1, eps=1e-4),
    ),
    Case("focal_probs_g3", *PFOCAL, dict(alpha=0.6, gamma=3.0, eps=1e-3)),
]
CASE_IDS = [case.name for case in CASES]
PROB_CASES = [case for case in CASES if case.kind == "probs"]


def reference(case, preds, labels, config, dtype):
    config = {key: f64(value) for key, value in config.items()}
    if case.kind == "probs":
        config["dtype"] = dtype
    return case.ref(preds, labels, **config)


def case_rtol(case, dtype):
    return case.rtol32 if dtype == np.float32 else RTOL[dtype]


def scalar_config(config):
    """The grid broadcasts every config as a scalar: replace the arrays by numbers."""
    return {key: {"W": 1.5, "PW": 2.5}.get(value, value) for key, value in config.items()}


def traced(fn):
    """``fn`` under jit, its keyword config passed as traced arrays."""

    @jax.jit
    def call(preds, labels, config):
        assert all(isinstance(v, jax.core.Tracer) for v in config.values())
        return fn(preds, labels, **config)

    return lambda preds, labels, **config: call(preds, labels, config)


def assert_matches_reference(case, dtype, *, seed, wrap=None, broadcast=False):
    """``case.fn`` (through ``wrap``) on random inputs has the shape of the predictions and
    the values of the float64 reference; ``broadcast`` takes one row of labels (C,)."""
    inputs = random_inputs(case.kind, dtype, seed=seed)
    preds, labels = inputs["preds"], inputs["labels"]
    if broadcast:
        labels = labels[0]
    config = resolve(case.config, inputs, dtype)
    got = (wrap or (lambda fn: fn))(case.fn)(preds, labels, **config)
    assert got.shape == preds.shape
    want = reference(case, preds, labels, config, dtype)
    assert_close(got, want, dtype, rtol=case_rtol(case, dtype))


# ---------------------------------------------------------------------------
# The references themselves, on numbers known in closed form.
# ---------------------------------------------------------------------------


def test_references_agree_with_each_other():
    x = np.linspace(-8, 8, 33)
    y = np.linspace(0, 1, 33)
    hard = np.round(y)
    p = helpers.sigmoid(x)
    bce = ref_sigmoid_bce(x, y)
    np.testing.assert_allclose(ref_bce_probs(p, y), bce, rtol=1e-12)
    np.testing.assert_allclose(ref_sigmoid_focal(x, y, gamma=0.0), bce, rtol=1e-12)
    np.testing.assert_allclose(ref_sigmoid_poly1(x, y, epsilon=0.0), bce, rtol=1e-12)
    np.testing.assert_allclose(
        ref_binary_focal(p, y, gamma=1.5, alpha=0.3, eps=1e-15),
        ref_sigmoid_focal(x, y, gamma=1.5, alpha=0.3),
        rtol=1e-10,
    )
    # Without a margin and with gamma_pos = gamma_neg, ASL on hard labels is focal loss.
    np.testing.assert_allclose(
        ref_sigmoid_asymmetric(x, hard, gamma_pos=2.0, gamma_neg=2.0, clip=0.0),
        ref_sigmoid_focal(x, hard, gamma=2.0),
        rtol=1e-12,
    )
    assert ref_sigmoid_bce(0.0, 1.0) == pytest.approx(math.log(2), rel=1e-15)
    # Asymmetric margin: at p = 0.75, m = 0.25, y = 0: p_m = 1/2, loss = (1/2)^2 ln 2.
    assert ref_sigmoid_asymmetric(math.log(3), 0.0, gamma_neg=2.0, clip=0.25) == pytest.approx(
        0.25 * math.log(2), rel=1e-14
    )


# ---------------------------------------------------------------------------
# Values on random inputs.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_values_match_reference(case, dtype):
    assert_matches_reference(case, dtype, seed=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_values_with_traced_config_under_jit(case, dtype):
    assert_matches_reference(case, dtype, seed=1, wrap=traced)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_values_with_broadcast_labels(case, dtype):
    """Labels of shape (C,) broadcast over the batch of predictions (N, C)."""
    assert_matches_reference(case, dtype, seed=2, broadcast=True)


# ---------------------------------------------------------------------------
# The extreme grid, infinite logits, probabilities of exactly 0 and 1.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_extreme_grid_values(case, dtype):
    preds, labels = grid(case.kind, dtype)
    config = resolve(scalar_config(case.config), {}, dtype)
    got = np.asarray(case.fn(preds, labels, **config))
    assert np.all(np.isfinite(got)), got
    assert np.all(got >= 0) or case.name.startswith("poly1"), got
    # float32: values below the smallest normal may be flushed to zero.
    atol = 1e-37 if dtype == np.float32 else TINY[dtype]
    want = reference(case, preds, labels, config, dtype)
    assert_close(got, want, dtype, rtol=case_rtol(case, dtype), atol=atol)


# (loss, config) for infinite logits; asymmetric with clip > 0 is tested apart.
INF_CASES = [
    ("bce", bcejax.sigmoid_binary_cross_entropy, {}),
    ("bce_weighted", bcejax.sigmoid_binary_cross_entropy, dict(weights=0.5, pos_weight=3.0)),
    ("focal_g0", bcejax.sigmoid_focal_loss, dict(gamma=0.0)),
    ("focal_g0.5", bcejax.sigmoid_focal_loss, dict(gamma=0.5, alpha=0.25)),
    ("focal_g2", bcejax.sigmoid_focal_loss, dict(gamma=2.0, alpha=0.25, weights=2.0)),
    ("focal_g2.5", bcejax.sigmoid_focal_loss, dict(gamma=2.5)),
    ("asym_noclip", bcejax.sigmoid_asymmetric_loss, dict(gamma_pos=1.0, clip=0.0)),
    ("asym_noclip_g0", bcejax.sigmoid_asymmetric_loss, dict(gamma_neg=0.0, clip=0.0)),
    (
        "asym_noclip_frac",
        bcejax.sigmoid_asymmetric_loss,
        dict(gamma_pos=0.5, gamma_neg=1.5, clip=0.0),
    ),
    ("poly1", bcejax.sigmoid_poly1_loss, {}),
    ("poly1_neg", bcejax.sigmoid_poly1_loss, dict(epsilon=-1.0, pos_weight=2.0)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["eager", "jit_traced"])
@pytest.mark.parametrize("name, fn, config", INF_CASES, ids=[c[0] for c in INF_CASES])
def test_infinite_logits_with_hard_labels(name, fn, config, mode, dtype):
    logits = np.array([np.inf, -np.inf, np.inf, -np.inf], dtype)
    labels = np.array([1, 0, 0, 1], dtype)  # right, right, wrong, wrong
    config = {key: dtype(value) for key, value in config.items()}
    if mode == "eager":
        got = fn(logits, labels, **config)
    else:  # config traced, a clip of 0 included
        got = jax.jit(lambda x, y, c: fn(x, y, **c))(logits, labels, config)
    got = np.asarray(got)
    assert not np.any(np.isnan(got)), got
    np.testing.assert_array_equal(got, np.array([0, 0, np.inf, np.inf], dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma_neg", [0.0, 1.0, 4.0, 2.5])
def test_infinite_logits_asymmetric_with_clip(gamma_neg, dtype):
    """With a margin m > 0, 1 - p_m >= m: a confident false positive costs
    (1 - m)^gamma_neg * -log(m), not infinity; a missed positive is still +inf."""
    m = 0.05
    logits = np.array([np.inf, -np.inf, np.inf, -np.inf], dtype)
    labels = np.array([1, 0, 0, 1], dtype)
    for got in (
        bcejax.sigmoid_asymmetric_loss(logits, labels, gamma_neg=gamma_neg, clip=m),
        jax.jit(lambda x, y, g, c: bcejax.sigmoid_asymmetric_loss(x, y, gamma_neg=g, clip=c))(
            logits, labels, dtype(gamma_neg), dtype(m)
        ),
    ):
        got = np.asarray(got)
        assert got.dtype == dtype and not np.any(np.isnan(got))
        assert got[0] == 0 and got[1] == 0 and got[3] == np.inf
        want = (1 - m) ** gamma_neg * -math.log(m)
        assert got[2] == pytest.approx(want, rel=4 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("how", ["jit_kwarg", "callable"])
def test_asymmetric_traced_zero_clip_on_extreme_grid(how, dtype):
    """Finite logits, hard labels: a traced clip of 0 gives what a static one gives.

    Regression: -log(sigmoid(-x) + m) was -log(0) = inf where sigmoid(-x) underflows
    (float64 x=1e4, float32 x=100), so y=0 gave inf instead of x and y=1 gave
    0 * inf = NaN instead of 0.
    """
    logits, labels = grid("logits", dtype)
    want = ref_sigmoid_asymmetric(logits, labels, gamma_pos=1.0, gamma_neg=2.0, clip=0.0)
    if how == "jit_kwarg":
        f = jax.jit(bcejax.sigmoid_asymmetric_loss)  # keyword config is traced by jit
        got = f(logits, labels, gamma_pos=1.0, gamma_neg=2.0, clip=0.0)
    else:  # the callable's config is a pytree leaf, so it is traced too
        loss = bcejax.losses.AsymmetricLoss(
            gamma_pos=1.0, gamma_neg=2.0, clip=0.0, reduction="none"
        )
        got = jax.jit(lambda fn, x, y: fn(x, y))(loss, logits, labels)
    assert np.all(np.isfinite(got)), (logits, labels, got)
    atol = 1e-37 if dtype == np.float32 else TINY[dtype]
    assert_close(got, want, dtype, rtol=4 * RTOL[dtype], atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", PROB_CASES, ids=[c.name for c in PROB_CASES])
def test_probabilities_zero_and_one_are_finite(case, dtype):
    probs = np.array([0, 0, 1, 1], dtype)
    labels = np.array([0, 1, 0, 1], dtype)
    config = resolve(scalar_config(case.config), {}, dtype)
    got = np.asarray(case.fn(probs, labels, **config))
    assert np.all(np.isfinite(got)) and np.all(got >= 0), got
    assert_close(got, reference(case, probs, labels, config, dtype), dtype)
    grad = jax.grad(lambda p: jnp.sum(case.fn(p, labels, **config)))(probs)
    assert np.all(np.isfinite(grad)), grad
