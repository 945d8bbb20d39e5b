"""Values and derivatives of the six elementwise binary losses, checked against the math.

* Float64 NumPy references written from the formulas (never by calling bcejax).
* Random inputs (soft labels, per-class ``pos_weight``, weights, traced config).
* An extreme grid of logits and probabilities, and infinite logits.
* Parity with optax, and PyTorch / Keras semantics as numbers computed by hand.
* Gradients: closed forms, central differences in every differentiable argument,
  and finiteness of values, gradients and Hessians on the extreme grid.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import bcejax

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-6, np.float64: 1e-12}
# Absolute slack for values that underflow: well below every value that is compared.
TINY = {np.float32: 1e-36, np.float64: 1e-300}

# ---------------------------------------------------------------------------
# Float64 NumPy references, from the formulas.
# ---------------------------------------------------------------------------


def _f64(value):
    return None if value is None else np.asarray(value, np.float64)


def _softplus(x):
    """``log(1 + e^x)`` without overflow: ``-log(sigmoid(-x))``."""
    return np.logaddexp(0.0, x)


def _smooth(y, a):
    return y * (1 - a) + a / 2


def _coef(value):
    """A missing weight is 1."""
    return 1.0 if value is None else _f64(value)


def _alpha_t(y, alpha):
    return 1.0 if alpha is None else alpha * y + (1 - alpha) * (1 - y)


def _prob_wrong_logits(x, y):
    """``1 - p_t = (1 - y) p + y (1 - p)``; both terms are >= 0, so no cancellation."""
    return (1 - y) * helpers.sigmoid(x) + y * helpers.sigmoid(-x)


def ref_sigmoid_bce(x, y, *, weights=None, pos_weight=None, label_smoothing=0.0):
    x, y = _f64(x), _smooth(_f64(y), float(label_smoothing))
    pos = _coef(pos_weight) * y * _softplus(-x)  # -log sigmoid(x)
    neg = (1 - y) * _softplus(x)  # -log(1 - sigmoid(x))
    return _coef(weights) * (pos + neg)


def ref_sigmoid_focal(x, y, *, alpha=None, gamma=2.0, weights=None, label_smoothing=0.0):
    x, y = _f64(x), _smooth(_f64(y), float(label_smoothing))
    bce = y * _softplus(-x) + (1 - y) * _softplus(x)
    factor = _prob_wrong_logits(x, y) ** float(gamma)  # numpy: 0.0 ** 0 == 1
    return _coef(weights) * _alpha_t(y, _f64(alpha)) * factor * bce


def ref_sigmoid_asymmetric(x, y, *, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, weights=None):
    x, y, m = _f64(x), _f64(y), float(clip)
    positive = y * helpers.sigmoid(-x) ** float(gamma_pos) * _softplus(-x)
    shifted = np.maximum(helpers.sigmoid(x) - m, 0.0)  # p_m
    # -log(1 - p_m), with 1 - p_m = min(1 - p + m, 1); for m = 0 it is softplus(x).
    nll = _softplus(x) if m == 0 else -np.log(np.minimum(helpers.sigmoid(-x) + m, 1.0))
    negative = (1 - y) * shifted ** float(gamma_neg) * nll
    return _coef(weights) * (positive + negative)


def ref_sigmoid_poly1(x, y, *, epsilon=1.0, weights=None, pos_weight=None, label_smoothing=0.0):
    bce = ref_sigmoid_bce(
        x, y, weights=weights, pos_weight=pos_weight, label_smoothing=label_smoothing
    )
    q = _prob_wrong_logits(_f64(x), _smooth(_f64(y), float(label_smoothing)))
    return bce + float(epsilon) * _coef(weights) * q


def _clip_probs(p, eps, dtype):
    # The bounds are those of the input dtype: 1 - eps rounds in float32 (so does Keras').
    lo = np.asarray(eps, dtype)
    hi = np.asarray(1, dtype) - lo
    return np.clip(p, np.float64(lo), np.float64(hi))


def ref_bce_probs(
    p,
    y,
    *,
    weights=None,
    pos_weight=None,
    label_smoothing=0.0,
    eps=None,
    dtype=np.float64,
):
    p, y = _f64(p), _smooth(_f64(y), float(label_smoothing))
    if eps is not None:  # Keras: clip p to [eps, 1 - eps]
        p = _clip_probs(p, eps, dtype)
    with np.errstate(divide="ignore"):  # PyTorch: each log clamped at -100
        log_p = np.maximum(np.log(p), -100.0)
        log_not_p = np.maximum(np.log1p(-p), -100.0)
    return -_coef(weights) * (_coef(pos_weight) * y * log_p + (1 - y) * log_not_p)


def ref_binary_focal(
    p,
    y,
    *,
    alpha=None,
    gamma=2.0,
    weights=None,
    label_smoothing=0.0,
    eps=1e-7,
    dtype=np.float64,
):
    y = _smooth(_f64(y), float(label_smoothing))
    p = _clip_probs(_f64(p), eps, dtype)
    bce = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    q = y * (1 - p) + (1 - y) * p  # from the clipped p
    return _coef(weights) * _alpha_t(y, _f64(alpha)) * q ** float(gamma) * bce


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


def reference(case, preds, labels, config, dtype):
    config = {key: _f64(value) for key, value in config.items()}
    if case.kind == "probs":
        config["dtype"] = dtype
    return case.ref(preds, labels, **config)


def case_rtol(case, dtype):
    return case.rtol32 if dtype == np.float32 else RTOL[dtype]


assert_close = functools.partial(helpers.assert_close, rtol=RTOL, atol=TINY)


def split_static(config):
    """(traced, static): a clip of exactly 0 stays static when differentiating the config.

    At a clip of 0 the derivative in the clip is -(1 - y) p^g / sigmoid(-x), infinite
    where sigmoid(-x) underflows; it has its own test on finite logits below.
    """
    static = {k: v for k, v in config.items() if k == "clip" and np.all(np.asarray(v) == 0)}
    return {k: v for k, v in config.items() if k not in static}, static


# ---------------------------------------------------------------------------
# 1. The references themselves, on numbers known in closed form.
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
# 2. Values on random inputs.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_values_match_reference(case, dtype):
    inputs = random_inputs(case.kind, dtype)
    config = resolve(case.config, inputs, dtype)
    got = case.fn(inputs["preds"], inputs["labels"], **config)
    want = reference(case, inputs["preds"], inputs["labels"], config, dtype)
    assert_close(got, want, dtype, rtol=case_rtol(case, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_values_with_traced_config_under_jit(case, dtype):
    inputs = random_inputs(case.kind, dtype, seed=1)
    config = resolve(case.config, inputs, dtype)

    @jax.jit
    def f(preds, labels, config):
        assert all(isinstance(v, jax.core.Tracer) for v in config.values())
        return case.fn(preds, labels, **config)

    got = f(inputs["preds"], inputs["labels"], config)
    want = reference(case, inputs["preds"], inputs["labels"], config, dtype)
    assert_close(got, want, dtype, rtol=case_rtol(case, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_values_with_broadcast_labels(case, dtype):
    """Labels of shape (C,) broadcast over the batch of predictions (N, C)."""
    inputs = random_inputs(case.kind, dtype, seed=2)
    labels = inputs["labels"][0]
    config = resolve(case.config, inputs, dtype)
    got = case.fn(inputs["preds"], labels, **config)
    want = reference(case, inputs["preds"], labels, config, dtype)
    assert got.shape == inputs["preds"].shape
    assert_close(got, want, dtype, rtol=case_rtol(case, dtype))


# ---------------------------------------------------------------------------
# 3. The extreme grid, infinite logits, probabilities of exactly 0 and 1.
# ---------------------------------------------------------------------------

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


def scalar_config(config):
    """The grid broadcasts every config as a scalar: replace the arrays by numbers."""
    return {key: {"W": 1.5, "PW": 2.5}.get(value, value) for key, value in config.items()}


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


# ---------------------------------------------------------------------------
# 4. Parity with optax.
# ---------------------------------------------------------------------------

OPTAX_LABEL_SHAPES = [(8, 5), (5,), (8, 1), (1, 5)]


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("label_shape", OPTAX_LABEL_SHAPES, ids=str)
def test_bce_matches_optax(label_shape, soft):
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (8, 5)).astype(np.float32)
    labels = (rng.uniform(size=label_shape) if soft else rng.integers(0, 2, label_shape)).astype(
        np.float32
    )
    got = bcejax.sigmoid_binary_cross_entropy(logits, labels)
    want = optax.losses.sigmoid_binary_cross_entropy(logits, labels)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("label_shape", OPTAX_LABEL_SHAPES, ids=str)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.5])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_matches_optax(alpha, gamma, label_shape, soft):
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 3, (8, 5)).astype(np.float32)
    labels = (rng.uniform(size=label_shape) if soft else rng.integers(0, 2, label_shape)).astype(
        np.float32
    )
    got = bcejax.sigmoid_focal_loss(logits, labels, alpha=alpha, gamma=gamma)
    want = optax.losses.sigmoid_focal_loss(logits, labels, alpha=alpha, gamma=gamma)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------
# 5. PyTorch and Keras semantics, as numbers computed by hand.
# With x = ln 3: sigmoid(x) = 3/4 and sigmoid(-x) = 1/4; sigmoid(0) = 1/2.
# ---------------------------------------------------------------------------

LN2, LN3, LN4, LN43 = math.log(2), math.log(3), math.log(4), math.log(4 / 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_bce_with_logits_pos_weight_and_weight(dtype):
    # torch.nn.BCEWithLogitsLoss(weight=w, pos_weight=pw, reduction="none"):
    #   l = -w (pw y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))), pw per class (column).
    logits = np.array([[0.0, LN3], [LN3, -LN3]], dtype)
    labels = np.array([[1.0, 0.0], [1.0, 1.0]], dtype)
    pos_weight = np.array([2.0, 0.5], dtype)
    weight = np.array([[1.0, 2.0], [0.5, 1.0]], dtype)
    expected = np.array(
        [
            # x=0, y=1, pw=2, w=1: 2 * ln 2           = 1.3862943611198906
            # x=ln3, y=0, w=2: 2 * -log(1/4) = 2 ln 4 = 2.772588722239781
            [2 * LN2, 2 * LN4],
            # x=ln3, y=1, pw=2, w=.5: .5 * 2 * -log(3/4) = ln(4/3) = 0.28768207245178085
            # x=-ln3, y=1, pw=.5, w=1: .5 * -log(1/4) = ln 2       = 0.6931471805599453
            [LN43, LN2],
        ]
    )
    np.testing.assert_allclose(
        expected,
        [[1.3862943611198906, 2.772588722239781], [0.28768207245178085, 0.6931471805599453]],
    )
    got = bcejax.sigmoid_binary_cross_entropy(logits, labels, weights=weight, pos_weight=pos_weight)
    assert_close(got, expected, dtype, rtol=4 * RTOL[dtype])
    # reduction="mean" (PyTorch's default) divides by the number of elements.
    mean = (2 * LN2 + 2 * LN4 + LN43 + LN2) / 4  # = 1.2838156863629393
    assert float(bcejax.reduce_loss(got)) == pytest.approx(mean, rel=4 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_binary_cross_entropy_at_zero_and_one(dtype):
    # torch.nn.functional.binary_cross_entropy(p, y, reduction="none"): each log is
    # clamped at -100, so a wrong certain prediction costs exactly 100.
    probs = np.array([0.0, 0.0, 1.0, 1.0, 0.25, 0.75], dtype)
    labels = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 1.0], dtype)
    # p=0,y=1: -log(0) -> 100; p=1,y=0: -log(1-1) -> 100; p=.25,y=1: ln 4; p=.75,y=1: ln(4/3).
    expected_loss = np.array([0.0, 100.0, 100.0, 0.0, LN4, LN43])
    # Gradient (p - y) / max(p (1 - p), 1e-12): at p in {0, 1}, +-1e12 when wrong, 0 when
    # right; at p=.25, y=1: -.75 / .1875 = -4; at p=.75, y=1: -.25 / .1875 = -4/3.
    expected_grad = np.array([0.0, -1e12, 1e12, 0.0, -4.0, -4.0 / 3.0])

    def f(p):
        return bcejax.binary_cross_entropy(p, labels)

    assert_close(f(probs), expected_loss, dtype, rtol=4 * RTOL[dtype])
    grad = jax.grad(lambda p: jnp.sum(f(p)))(probs)
    assert_close(grad, expected_grad, dtype, rtol=4 * RTOL[dtype])
    # weights and pos_weight scale the clamped terms: w * pw * 100.
    weighted = bcejax.binary_cross_entropy(probs, labels, weights=dtype(0.5), pos_weight=dtype(3))
    assert float(weighted[1]) == 150.0 and float(weighted[2]) == 50.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_keras_label_smoothing_from_logits(dtype):
    # keras.losses.binary_crossentropy(y, x, from_logits=True, label_smoothing=0.2):
    #   y <- 0.8 y + 0.1, then plain BCE (elementwise here; Keras averages the last axis).
    logits = np.array([0.0, LN3, LN3], dtype)
    labels = np.array([1.0, 1.0, 0.0], dtype)
    expected = np.array(
        [
            LN2,  # x=0: ln 2 whatever the label                  = 0.6931471805599453
            0.9 * LN43 + 0.1 * LN4,  # y_s=.9: .9 ln(4/3) + .1 ln 4 = 0.3975433013185918
            0.1 * LN43 + 0.9 * LN4,  # y_s=.1: .1 ln(4/3) + .9 ln 4 = 1.2764331322530795
        ]
    )
    np.testing.assert_allclose(expected[1:], [0.3975433013185918, 1.2764331322530795])
    got = bcejax.sigmoid_binary_cross_entropy(logits, labels, label_smoothing=0.2)
    assert_close(got, expected, dtype, rtol=4 * RTOL[dtype])
    # Keras' value: the mean over the last axis = 0.7890412047105389.
    assert float(jnp.mean(got)) == pytest.approx(0.7890412047105389, rel=4 * RTOL[dtype])


def test_keras_eps_clipping_at_zero_and_one():
    # keras.losses.binary_crossentropy(y, p, from_logits=False) with epsilon 1e-7 (float64):
    # p is clipped to [1e-7, 1 - 1e-7]; a certain wrong prediction costs -log(1e-7)
    # = 7 ln 10 = 16.11809565095832, a certain right one -log(1 - 1e-7) = 1.00000005e-7.
    probs = np.array([0.0, 1.0, 0.0, 1.0], np.float64)
    labels = np.array([1.0, 0.0, 0.0, 1.0], np.float64)
    got = np.asarray(bcejax.binary_cross_entropy(probs, labels, eps=1e-7))
    np.testing.assert_allclose(got[:2], 7 * math.log(10), rtol=1e-9)
    np.testing.assert_allclose(got[:2], 16.11809565095832, rtol=1e-9)
    np.testing.assert_allclose(got[2:], 1.00000005e-7, rtol=1e-7)
    # binary_focal_loss clips the same way: with gamma=0 it is the clipped BCE.
    focal = bcejax.binary_focal_loss(probs, labels, gamma=0.0, eps=1e-7)
    np.testing.assert_allclose(focal, got, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_keras_binary_focal_crossentropy_class_balancing(dtype):
    # keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.25, gamma=2):
    #   l = alpha_t (1 - p_t)^2 bce, alpha_t = .25 y + .75 (1 - y), p_t = y p + (1 - y)(1 - p).
    probs = np.array([0.75, 0.25, 0.5], dtype)
    labels = np.array([1.0, 1.0, 0.0], dtype)
    expected = np.array(
        [
            0.25 * 0.25**2 * LN43,  # 1 - p_t = .25, bce = ln(4/3) -> 0.004495032382059076
            0.25 * 0.75**2 * LN4,  # 1 - p_t = .75, bce = ln 4     -> 0.19494764453248462
            0.75 * 0.5**2 * LN2,  # 1 - p_t = .5, bce = ln 2       -> 0.1299650963549897
        ]
    )
    np.testing.assert_allclose(
        expected, [0.004495032382059076, 0.19494764453248462, 0.1299650963549897]
    )
    got = bcejax.binary_focal_loss(probs, labels, alpha=0.25, gamma=2.0)
    assert_close(got, expected, dtype, rtol=4 * RTOL[dtype])
    # The same from logits (Keras from_logits=True): sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4.
    logits = np.array([LN3, -LN3, 0.0], dtype)
    got = bcejax.sigmoid_focal_loss(logits, labels, alpha=0.25, gamma=2.0)
    assert_close(got, expected, dtype, rtol=4 * RTOL[dtype])
    # Keras smooths first: y=1, label_smoothing=.2 -> y_s=.9; at p=3/4:
    # bce = .9 ln(4/3) + .1 ln 4, 1 - p_t = .9*.25 + .1*.75 = .3, alpha_t = .25*.9 + .75*.1 = .3
    smoothed = bcejax.binary_focal_loss(
        probs[:1], labels[:1], alpha=0.25, gamma=2.0, label_smoothing=0.2
    )
    want = 0.3 * 0.3**2 * (0.9 * LN43 + 0.1 * LN4)  # = 0.010733669135601979
    assert float(smoothed[0]) == pytest.approx(want, rel=4 * RTOL[dtype])


# ---------------------------------------------------------------------------
# 6. Gradients: closed form, and central differences in every argument.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "config",
    [{}, dict(weights="W", pos_weight="PW", label_smoothing=0.1)],
    ids=["plain", "full"],
)
def test_bce_logit_gradient_closed_form(config, dtype):
    inputs = random_inputs("logits", dtype, seed=5)
    # Random rows, then the extreme logits (in two rows of 5) with labels 1 and 0.
    x = np.concatenate([inputs["preds"], GRID_LOGITS[None, :5].astype(dtype)])
    x = np.concatenate([x, GRID_LOGITS[None, 4:].astype(dtype)])
    labels = np.concatenate([inputs["labels"], np.ones((1, 5), dtype), np.zeros((1, 5), dtype)])
    inputs["W"] = np.concatenate([inputs["W"], np.full((2, 5), 1.5, dtype)])
    config = resolve(config, inputs, dtype)
    grad = jax.jit(
        jax.grad(lambda x: jnp.sum(bcejax.sigmoid_binary_cross_entropy(x, labels, **config)))
    )(x)
    # d/dx = w ((1 - y) sigmoid(x) - pw y sigmoid(-x)), y smoothed.
    c = {k: _f64(v) for k, v in config.items()}
    y = _smooth(_f64(labels), c.get("label_smoothing", 0.0))
    want = _coef(c.get("weights")) * (
        (1 - y) * helpers.sigmoid(_f64(x))
        - _coef(c.get("pos_weight")) * y * helpers.sigmoid(-_f64(x))
    )
    assert_close(grad, want, dtype, rtol=4 * RTOL[dtype])


# (name, loss, kind, config): every argument but eps is differentiated in turn.
FD_CASES = [
    (
        "bce",
        bcejax.sigmoid_binary_cross_entropy,
        "logits",
        dict(weights="W", pos_weight="PW", label_smoothing=0.1),
    ),
    (
        "focal",
        bcejax.sigmoid_focal_loss,
        "logits",
        dict(alpha=0.3, gamma=1.5, weights="W", label_smoothing=0.1),
    ),
    (
        "focal_g0.5",
        bcejax.sigmoid_focal_loss,
        "logits",
        dict(alpha=0.6, gamma=0.5, weights="W", label_smoothing=0.05),
    ),
    (
        "focal_g2",
        bcejax.sigmoid_focal_loss,
        "logits",
        dict(alpha=0.3, gamma=2.0, weights="W", label_smoothing=0.1),
    ),
    (
        "asym",
        bcejax.sigmoid_asymmetric_loss,
        "logits",
        dict(gamma_pos=1.5, gamma_neg=2.5, clip=0.05, weights="W"),
    ),
    (
        "asym_noclip",
        bcejax.sigmoid_asymmetric_loss,
        "logits",
        dict(gamma_pos=0.5, gamma_neg=3.5, clip=0.0, weights="W"),
    ),
    (
        "poly1",
        bcejax.sigmoid_poly1_loss,
        "logits",
        dict(epsilon=1.5, weights="W", pos_weight="PW", label_smoothing=0.1),
    ),
    (
        "bce_probs_torch",
        bcejax.binary_cross_entropy,
        "probs",
        dict(weights="W", pos_weight="PW", label_smoothing=0.1),
    ),
    (
        "bce_probs_keras",
        bcejax.binary_cross_entropy,
        "probs",
        dict(weights="W", pos_weight="PW", label_smoothing=0.1, eps=1e-7),
    ),
    (
        "focal_probs",
        bcejax.binary_focal_loss,
        "probs",
        dict(alpha=0.3, gamma=1.5, weights="W", label_smoothing=0.1),
    ),
]
NOT_DIFFERENTIATED = ("eps",)  # the derivative in eps is that of a clip
FD_PARAMS = [
    pytest.param(fn, kind, config, arg, id=f"{name}-{arg}")
    for name, fn, kind, config in FD_CASES
    for arg in ["preds", "labels", *config]
    if arg not in NOT_DIFFERENTIATED
    # d/dclip at clip = 0: test_asymmetric_clip_gradient_at_zero.
    and not (arg == "clip" and config[arg] == 0)
]


def fd_inputs(kind):
    """Smooth points: logits away from the clip kink p = m, soft labels in (.05, .95)."""
    rng = np.random.default_rng(6)
    logits = np.linspace(-4.3, 4.1, 12).reshape(4, 3)
    preds = logits if kind == "logits" else helpers.sigmoid(logits)
    return dict(
        preds=preds,
        labels=rng.uniform(0.05, 0.95, (4, 3)),
        W=rng.uniform(0.5, 2.0, (4, 3)),
        PW=rng.uniform(0.5, 3.0, (3,)),
    )


@pytest.mark.parametrize("fn, kind, config, arg", FD_PARAMS)
def test_gradient_matches_central_differences(fn, kind, config, arg):
    inputs = fd_inputs(kind)
    config = resolve(config, inputs, np.float64)
    args = dict(preds=inputs["preds"], labels=inputs["labels"], **config)
    cotangent = np.random.default_rng(7).uniform(0.5, 1.5, (4, 3))

    def f(value):
        kwargs = {**args, arg: value}
        preds, labels = kwargs.pop("preds"), kwargs.pop("labels")
        return jnp.sum(cotangent * fn(preds, labels, **kwargs))

    grad = jax.jit(jax.grad(f))(jnp.asarray(args[arg], np.float64))
    assert grad.dtype == np.float64
    differences = helpers.central_difference(f, args[arg])
    np.testing.assert_allclose(grad, differences, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma_neg", [2.0])
def test_asymmetric_clip_gradient_at_zero(gamma_neg, dtype):
    """A margin scheduled from 0 (clip traced): its derivative at 0 is finite and right."""
    x, y = np.meshgrid([-1e4, -3.0, -1.0, 0.0, 1.0, 3.0], [0.0, 1.0, 0.3], indexing="ij")
    x, y = x.ravel(), y.ravel()

    def f(clip, x, y):
        return bcejax.sigmoid_asymmetric_loss(x, y, gamma_neg=gamma_neg, clip=clip)

    # Near m = 0, p_m = p - m (for p > 0), so with nll = -log(1 - p) = softplus(x):
    # d/dm [p_m^g (-log(1 - p_m))] = -(g p^(g-1) nll + p^g / (1 - p)).
    p = helpers.sigmoid(x)
    want = -(1 - y) * (
        gamma_neg * p ** (gamma_neg - 1) * _softplus(x) + p**gamma_neg / helpers.sigmoid(-x)
    )
    # The closed form against a one-sided difference of the (static-clip) float64 loss.
    h = 1e-7
    one_sided = (f(h, x, y) - f(0.0, x, y)) / h
    np.testing.assert_allclose(one_sided, want, rtol=1e-5, atol=1e-12)
    grad = jax.jit(jax.vmap(jax.grad(f), (None, 0, 0)))(dtype(0), x.astype(dtype), y.astype(dtype))
    assert np.all(np.isfinite(grad)), grad
    assert_close(grad, want, dtype, rtol=1e-5 if dtype == np.float32 else 1e-12)


# ---------------------------------------------------------------------------
# 7. Finite values, gradients and Hessians on the extreme grid.
# ---------------------------------------------------------------------------

GAMMAS = [0.0, 0.25, 0.5, 1.0, 2.0, 5.0]
# family -> (kind, [(label, loss, config)]); one compiled program per family and dtype.
GRID_FAMILIES = {
    "focal": (
        "logits",
        [(f"gamma={g}", bcejax.sigmoid_focal_loss, dict(gamma=g)) for g in GAMMAS]
        + [
            (
                f"gamma={g},alpha,w",
                bcejax.sigmoid_focal_loss,
                dict(gamma=g, alpha=0.25, weights=2.0),
            )
            for g in (0.5, 2.0)
        ]
        + [
            (f"gamma={g},smoothed", bcejax.sigmoid_focal_loss, dict(gamma=g, label_smoothing=0.1))
            for g in (0.25, 1.0)
        ],
    ),
    "asymmetric": (
        "logits",
        [
            (
                f"gamma_pos=gamma_neg={g},clip={clip}",
                bcejax.sigmoid_asymmetric_loss,
                dict(gamma_pos=g, gamma_neg=g, clip=clip, weights=0.5),
            )
            for g in GAMMAS
            for clip in (0.0, 0.05)
        ],
    ),
    "focal_probs": (
        "probs",
        [(f"gamma={g}", bcejax.binary_focal_loss, dict(gamma=g, alpha=0.25)) for g in GAMMAS]
        + [
            (
                "gamma=0.5,smoothed",
                bcejax.binary_focal_loss,
                dict(gamma=0.5, weights=2.0, label_smoothing=0.1, eps=1e-4),
            )
        ],
    ),
    "bce_poly1": (
        "logits",
        [
            ("bce", bcejax.sigmoid_binary_cross_entropy, {}),
            (
                "bce_full",
                bcejax.sigmoid_binary_cross_entropy,
                dict(pos_weight=2.0, weights=0.5, label_smoothing=0.1),
            ),
            ("poly1", bcejax.sigmoid_poly1_loss, dict(epsilon=-1.0)),
            (
                "poly1_full",
                bcejax.sigmoid_poly1_loss,
                dict(epsilon=2.0, pos_weight=2.0, weights=0.5, label_smoothing=0.1),
            ),
        ],
    ),
    "bce_probs": (
        "probs",
        [
            ("torch", bcejax.binary_cross_entropy, dict(pos_weight=2.0)),
            (
                "keras",
                bcejax.binary_cross_entropy,
                dict(weights=0.5, label_smoothing=0.1, eps=1e-7),
            ),
        ],
    ),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", list(GRID_FAMILIES))
def test_extreme_grid_finite_values_gradients_hessians(family, dtype):
    """Per element: value, d/dpreds, d/dlabels and the Hessian in preds; and the gradient
    of the summed loss in every numeric config argument (gamma, gamma_pos, gamma_neg,
    alpha, clip, weights, pos_weight, label_smoothing, epsilon), traced."""
    kind, members = GRID_FAMILIES[family]
    preds, labels = grid(kind, dtype)
    if kind == "probs":  # derivatives in p need room on both sides: 0 < p < 1
        inside = (preds > 0) & (preds < 1)
        preds, labels = preds[inside], labels[inside]

    def results(fn, config, xs, ys):
        def f(x, y):  # one element: scalars in, a scalar out
            return fn(x, y, **config)

        out = dict(
            value=jax.vmap(f)(xs, ys),
            d_preds=jax.vmap(jax.grad(f))(xs, ys),
            d_labels=jax.vmap(jax.grad(f, argnums=1))(xs, ys),
            hessian=jax.vmap(jax.hessian(f))(xs, ys),
        )
        traced, static = split_static(
            {k: v for k, v in config.items() if k not in NOT_DIFFERENTIATED}
        )
        static.update({k: v for k, v in config.items() if k in NOT_DIFFERENTIATED})
        if traced:
            total = jax.grad(lambda c: jnp.sum(fn(xs, ys, **c, **static)))(traced)
            out.update({f"d_sum/d_{k}": v for k, v in total.items()})
        return out

    configs = [{k: dtype(v) for k, v in config.items()} for _, _, config in members]

    @jax.jit
    def everything(xs, ys):
        return [
            results(fn, config, xs, ys) for (_, fn, _), config in zip(members, configs, strict=True)
        ]

    for (label, _, _), out in zip(members, everything(preds, labels), strict=True):
        for name, value in out.items():
            value = np.asarray(value)
            assert value.dtype == dtype, (label, name)
            finite = np.isfinite(value)
            where = f"preds={preds[~finite]}, labels={labels[~finite]}" if value.ndim else ""
            assert finite.all(), f"{family} {label}: {name} not finite {where}: {value}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.25, 0.5])
def test_focal_label_gradient_finite_at_hard_labels(gamma, dtype):
    # Right, confident predictions: q = 1 - p_t ~ e^-|x| and BCE ~ e^-|x|, so
    # d/dy [q^gamma BCE] = gamma q^(gamma-1) (dq/dy) BCE + q^gamma dBCE/dy
    #                    ~ +-(gamma + |x|) e^(-gamma |x|): 0 in floating point at |x| = 1e4.
    logits = np.array([-1e4, 1e4, -30.0, 30.0], dtype)
    labels = np.array([0.0, 1.0, 0.0, 1.0], dtype)

    def f(y):
        return jnp.sum(bcejax.sigmoid_focal_loss(logits, y, gamma=gamma))

    grad = np.asarray(jax.jit(jax.grad(f))(labels))
    assert np.all(np.isfinite(grad)), grad
    # The same derivative in float64, in log space: dq/dy = 1 - 2p, dBCE/dy = -x.
    x = _f64(logits)
    with np.errstate(divide="ignore"):  # log(0) = -inf where the BCE underflows
        log_q, log_bce = -_softplus(np.abs(x)), np.log(_softplus(-np.abs(x)))
    want = gamma * np.tanh(-x / 2) * np.exp((gamma - 1) * log_q + log_bce) - x * np.exp(
        gamma * log_q
    )
    assert_close(grad, want, dtype, rtol=1e-5 if dtype == np.float32 else 1e-10)
