"""Derivatives of the six elementwise binary losses, checked against the math.

* Closed forms, and central differences in every differentiable argument.
* Finite values, gradients and Hessians on the extreme grid, the config traced.
"""

from __future__ import annotations

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from binary_inputs import DTYPES, GRID_LOGITS, RTOL, assert_close, grid, random_inputs, resolve
from references import coef, f64, smooth, softplus

import bcejax


def split_static(config):
    """(traced, static): a clip of exactly 0 stays static when differentiating the config.

    At a clip of 0 the derivative in the clip is -(1 - y) p^g / sigmoid(-x), infinite
    where sigmoid(-x) underflows; it has its own test on finite logits below.
    """
    static = {k: v for k, v in config.items() if k == "clip" and np.all(np.asarray(v) == 0)}
    return {k: v for k, v in config.items() if k not in static}, static


# ---------------------------------------------------------------------------
# Gradients: closed form, and central differences in every argument.
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
    c = {k: f64(v) for k, v in config.items()}
    y = smooth(f64(labels), c.get("label_smoothing", 0.0))
    want = coef(c.get("weights")) * (
        (1 - y) * helpers.sigmoid(f64(x)) - coef(c.get("pos_weight")) * y * helpers.sigmoid(-f64(x))
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
        gamma_neg * p ** (gamma_neg - 1) * softplus(x) + p**gamma_neg / helpers.sigmoid(-x)
    )
    # The closed form against a one-sided difference of the (static-clip) float64 loss.
    h = 1e-7
    one_sided = (f(h, x, y) - f(0.0, x, y)) / h
    np.testing.assert_allclose(one_sided, want, rtol=1e-5, atol=1e-12)
    grad = jax.jit(jax.vmap(jax.grad(f), (None, 0, 0)))(dtype(0), x.astype(dtype), y.astype(dtype))
    assert np.all(np.isfinite(grad)), grad
    assert_close(grad, want, dtype, rtol=1e-5 if dtype == np.float32 else 1e-12)


# ---------------------------------------------------------------------------
# Finite values, gradients and Hessians on the extreme grid.
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
    x = f64(logits)
    with np.errstate(divide="ignore"):  # log(0) = -inf where the BCE underflows
        log_q, log_bce = -softplus(np.abs(x)), np.log(softplus(-np.abs(x)))
    want = gamma * np.tanh(-x / 2) * np.exp((gamma - 1) * log_q + log_bce) - x * np.exp(
        gamma * log_q
    )
    assert_close(grad, want, dtype, rtol=1e-5 if dtype == np.float32 else 1e-10)
