"""dice, jaccard, tversky and bce+dice against float64 references and optax, and their derivatives.

* The references one image at a time, masked pixels cut out, and on numbers known by hand.
* Parity with optax's ``dice_loss`` (Dice and its Tversky form).
* Central differences in every differentiable argument, jacfwd = jacrev.
"""

from __future__ import annotations

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from references import (
    ref_bce_dice,
    ref_dice,
    ref_jaccard,
    ref_lovasz,
    ref_lovasz_by_permutations,
    ref_lovasz_extension,
    ref_tversky,
    sets_iou,
)
from segmentation_inputs import ALL_FNS, DTYPES, RTOL, SHAPE, SHAPES, assert_close, random_inputs

import bcejax

# The smooth losses: (function, reference, config).
SMOOTH_CASES = {
    "dice": (bcejax.dice_loss, ref_dice, dict(smooth=1.0)),
    "dice_s0": (bcejax.dice_loss, ref_dice, dict(smooth=0.0)),
    "jaccard": (bcejax.jaccard_loss, ref_jaccard, dict(smooth=0.5)),
    "jaccard_s0": (bcejax.jaccard_loss, ref_jaccard, dict(smooth=0.0)),
    "tversky": (bcejax.tversky_loss, ref_tversky, {}),
    "tversky_fp": (bcejax.tversky_loss, ref_tversky, dict(alpha=0.8, beta=0.2, smooth=0.1)),
    "tversky_2_0": (bcejax.tversky_loss, ref_tversky, dict(alpha=2.0, beta=0.0, smooth=3.0)),
    "bce_dice": (bcejax.sigmoid_bce_dice_loss, ref_bce_dice, {}),
    "bce_dice_w": (
        bcejax.sigmoid_bce_dice_loss,
        ref_bce_dice,
        dict(bce_weight=0.3, dice_weight=2.0, smooth=0.5),
    ),
}


# ---------------------------------------------------------------------------
# The references themselves, on numbers known in closed form.
# ---------------------------------------------------------------------------


def test_references_agree_with_each_other_and_with_hand_values():
    rng = np.random.default_rng(1)
    # Hard predictions: the overlap losses are 1 - Dice / 1 - IoU of the sets (smooth 0).
    for _ in range(5):
        y = rng.integers(0, 2, (1, 7)).astype(float)
        p = rng.integers(0, 2, (1, 7)).astype(float)
        iou = sets_iou(p[0] == 1, y[0] == 1)
        dice = 2 * iou / (1 + iou)
        kwargs = dict(smooth=0.0, from_logits=False)
        np.testing.assert_allclose(ref_dice(p, y, **kwargs), 1 - dice, atol=1e-15)
        np.testing.assert_allclose(ref_jaccard(p, y, **kwargs), 1 - iou, atol=1e-15)
        np.testing.assert_allclose(
            ref_tversky(p, y, alpha=1.0, beta=1.0, **kwargs), 1 - iou, atol=1e-15
        )
        # Lovász at an indicator vector of mistakes is Delta of the set: 1 - IoU.
        np.testing.assert_allclose(ref_lovasz(p, y, from_logits=False), 1 - iou, atol=1e-15)
    # The Choquet integral is the max over the permutations (the Lovász extension).
    for seed in range(4):
        rng = np.random.default_rng(seed)
        errors = rng.choice([-0.5, 0.0, 0.3, 1.0, 1.2, 2.0], 6)
        foreground = rng.integers(0, 2, 6) == 1
        np.testing.assert_allclose(
            ref_lovasz_extension(errors, foreground),
            ref_lovasz_by_permutations(errors, foreground),
            rtol=1e-13,
        )
    # Hand value: F = {0}, logits 0.5 on both pixels: errors 0.5 (fg) and 1.5 (bg);
    # (1.5 - 0.5) Delta({1}) + 0.5 Delta({0, 1}) = 1 * 1/2 + 0.5 * 1 = 1.
    assert ref_lovasz(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]])) == pytest.approx([1.0])
    # One foreground pixel at logit 0: error 1, Delta = 1.
    assert ref_lovasz(np.zeros((1, 1)), np.ones((1, 1))) == pytest.approx([1.0])


def test_hand_values():
    dtype = np.float64
    # Logit 0 on y = (1, 0, 1, 0): TP = FP = FN = 1 (halves of 2 pixels each).
    x = np.zeros((1, 4), dtype)
    y = np.array([[1.0, 0.0, 1.0, 0.0]], dtype)
    assert_close(bcejax.dice_loss(x, y), [2 / (2 + 2 + 1)], dtype)
    assert_close(bcejax.jaccard_loss(x, y), [2 / (1 + 2 + 1)], dtype)
    assert_close(bcejax.tversky_loss(x, y, alpha=0.3, beta=0.7), [1 / 3], dtype)
    assert_close(bcejax.sigmoid_bce_dice_loss(x, y, smooth=0.0), [np.log(2) + 1 / 2], dtype)
    # Logits 0.5: errors 0.5 on the foreground, 1.5 on the background;
    # (1.5 - 0.5) Delta(background) + 0.5 Delta(all) = 1 * 2/4 + 0.5 * 1 = 1.
    assert_close(bcejax.lovasz_hinge(x + 0.5, y), [1.0], dtype)
    # Hard probabilities: Lovász is 1 - IoU of the sets (here 1 - 1/3), dice 1 - 2/4.
    p = np.array([[1.0, 1.0, 0.0, 0.0]], dtype)
    assert_close(bcejax.lovasz_hinge(p, y, from_logits=False), [2 / 3], dtype)
    assert_close(bcejax.dice_loss(p, y, from_logits=False, smooth=0.0), [0.5], dtype)


# ---------------------------------------------------------------------------
# Values on random batches.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True], ids=["all", "where"])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
@pytest.mark.parametrize(
    "dtype, shape",
    [(np.float32, SHAPES[0]), (np.float64, SHAPES[0]), (np.float64, SHAPES[1])],
    ids=["float32", "float64", "float64-4d"],
)
@pytest.mark.parametrize("name", list(SMOOTH_CASES))
def test_values_match_reference(name, dtype, shape, from_logits, masked):
    fn, ref, config = SMOOTH_CASES[name]
    preds, labels, mask = random_inputs(shape, dtype, from_logits=from_logits)
    where = mask if masked else None
    got = fn(preds, labels, from_logits=from_logits, where=where, **config)
    assert got.shape == shape[:1]
    want = ref(preds, labels, from_logits=from_logits, where=where, **config)
    assert_close(got, want, dtype)


def test_where_broadcasts_over_the_channel_axis():
    preds, labels, mask = random_inputs((2, 4, 4, 2), np.float64)
    pixels = mask[..., :1]  # (2, 4, 4, 1): drops both channels of a pixel
    full = np.broadcast_to(pixels, preds.shape)
    for name, fn in ALL_FNS.items():
        # Two compiled programs, fused differently: equal to the last bits of float64.
        np.testing.assert_allclose(
            fn(preds, labels.round() if name == "lovasz" else labels, where=pixels),
            fn(preds, labels.round() if name == "lovasz" else labels, where=full),
            rtol=1e-14,
        )


@pytest.mark.parametrize("dtype", DTYPES)
def test_tversky_special_cases_are_jaccard_and_dice(dtype):
    for from_logits in (True, False):
        preds, labels, mask = random_inputs((3, 5, 4), dtype, from_logits=from_logits, seed=3)
        for where in (None, mask):
            common = dict(from_logits=from_logits, where=where)
            for s in (0.0, 0.7, 2.0):
                np.testing.assert_allclose(
                    bcejax.tversky_loss(preds, labels, alpha=1.0, beta=1.0, smooth=s, **common),
                    bcejax.jaccard_loss(preds, labels, smooth=s, **common),
                    rtol=RTOL[dtype],
                )
                np.testing.assert_allclose(
                    bcejax.tversky_loss(preds, labels, alpha=0.5, beta=0.5, smooth=s / 2, **common),
                    bcejax.dice_loss(preds, labels, smooth=s, **common),
                    rtol=RTOL[dtype],
                )


def test_tversky_alpha_weighs_false_positives():
    # All false positives (no foreground): only alpha matters; all false negatives: only beta.
    x = np.full((1, 4), 2.0)
    background, foreground = np.zeros((1, 4)), np.ones((1, 4))
    base = bcejax.tversky_loss(x, background, alpha=0.3, beta=0.7)
    assert bcejax.tversky_loss(x, background, alpha=0.3, beta=0.1) == base
    assert bcejax.tversky_loss(x, background, alpha=0.6, beta=0.7) > base
    base = bcejax.tversky_loss(-x, foreground, alpha=0.3, beta=0.7)
    np.testing.assert_allclose(bcejax.tversky_loss(-x, foreground, alpha=0.9, beta=0.7), base)
    assert bcejax.tversky_loss(-x, foreground, alpha=0.3, beta=0.9) > base


# ---------------------------------------------------------------------------
# Parity with optax.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("smooth", [1.0, 0.3, 0.0])
def test_dice_and_tversky_match_optax(smooth, shape, dtype):
    preds, labels, _ = random_inputs(shape, dtype, seed=4)
    hard = labels.round()
    # optax computes 1 - ratio: its own rounding is ~eps / loss.
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    for y in (labels, hard):
        want = optax.losses.dice_loss(preds[..., None], y[..., None], smooth=smooth / 2)
        np.testing.assert_allclose(bcejax.dice_loss(preds, y, smooth=smooth), want, rtol=rtol)
        for alpha, beta in [(0.3, 0.7), (0.9, 0.1), (1.0, 1.0)]:
            want = optax.losses.dice_loss(
                preds[..., None], y[..., None], smooth=smooth, alpha=alpha, beta=beta
            )
            got = bcejax.tversky_loss(preds, y, alpha=alpha, beta=beta, smooth=smooth)
            np.testing.assert_allclose(got, want, rtol=rtol)


# ---------------------------------------------------------------------------
# Derivatives.
# ---------------------------------------------------------------------------

FD_CASES = {
    "dice": (bcejax.dice_loss, dict(smooth=0.7)),
    "jaccard": (bcejax.jaccard_loss, dict(smooth=0.4)),
    "tversky": (bcejax.tversky_loss, dict(alpha=0.35, beta=0.8, smooth=0.6)),
    "bce_dice": (
        bcejax.sigmoid_bce_dice_loss,
        dict(bce_weight=0.6, dice_weight=1.3, smooth=0.5),
    ),
}


@pytest.mark.parametrize("masked", [False, True], ids=["all", "where"])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
@pytest.mark.parametrize("name", list(FD_CASES))
def test_gradient_matches_central_differences(name, from_logits, masked):
    """d/d(preds, soft labels, every numeric config): central differences along random
    directions of the arrays (as jax.test_util.check_grads) and along each scalar."""
    fn, config = FD_CASES[name]
    rng = np.random.default_rng(12)
    logits = rng.normal(0.0, 1.5, SHAPE)
    preds = logits if from_logits else helpers.sigmoid(logits)
    labels = rng.uniform(0.05, 0.95, SHAPE)
    mask = rng.uniform(size=SHAPE) < 0.7 if masked else None
    cotangent = rng.uniform(0.5, 1.5, SHAPE[:1])
    names = list(config)
    args = [preds, labels, *(np.float64(config[k]) for k in names)]

    def f(*args):
        x, y, *values = args
        kwargs = dict(zip(names, values, strict=True))
        return jnp.sum(cotangent * fn(x, y, from_logits=from_logits, where=mask, **kwargs))

    grads = jax.grad(f, argnums=tuple(range(len(args))))(*args)
    assert all(g.dtype == np.float64 for g in grads)
    h = 1e-6
    for k, (arg, grad) in enumerate(zip(args, grads, strict=True)):
        directions = [np.float64(1.0)] if np.ndim(arg) == 0 else rng.uniform(-1, 1, (3, *SHAPE))
        for direction in directions:
            plus = [a + h * direction if i == k else a for i, a in enumerate(args)]
            minus = [a - h * direction if i == k else a for i, a in enumerate(args)]
            difference = (float(f(*plus)) - float(f(*minus))) / (2 * h)
            np.testing.assert_allclose(np.sum(grad * direction), difference, rtol=1e-6, atol=1e-9)
    if mask is not None:
        assert np.all(np.asarray(grads[0])[~mask] == 0)
        assert np.all(np.asarray(grads[1])[~mask] == 0)


def test_jacfwd_equals_jacrev():
    preds, labels, mask = random_inputs(SHAPE, np.float64, seed=13)
    mask[1, :2] = True
    hard = labels.round()

    @jax.jit
    def jacobians(x, y, hard, where):
        out = {}
        for name, fn in ALL_FNS.items():
            if name == "lovasz":
                # The Lovász hinge is piecewise linear in the logits; labels are sets.
                def f(x, fn=fn):
                    return fn(x, hard, where=where)

                out[name] = ((jax.jacfwd(f)(x),), (jax.jacrev(f)(x),))
            else:

                def f(x, y, fn=fn):
                    return fn(x, y, where=where)

                out[name] = (jax.jacfwd(f, (0, 1))(x, y), jax.jacrev(f, (0, 1))(x, y))
        return out

    for name, (forward, reverse) in jacobians(preds, labels, hard, mask).items():
        for a, b in zip(forward, reverse, strict=True):
            assert a.shape == (SHAPE[0], *SHAPE)
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, err_msg=name)


def test_tversky_config_derivatives_jacfwd_equals_jacrev():
    preds, labels, _ = random_inputs(SHAPE, np.float64, seed=14)

    def f(alpha, beta, smooth):
        return bcejax.tversky_loss(preds, labels, alpha=alpha, beta=beta, smooth=smooth)

    config = (0.3, 0.7, 0.5)
    forward = jax.jit(jax.jacfwd(f, argnums=(0, 1, 2)))(*config)
    reverse = jax.jit(jax.jacrev(f, argnums=(0, 1, 2)))(*config)
    for a, b in zip(forward, reverse, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
