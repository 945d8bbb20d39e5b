"""The overlap losses for segmentation (dice, jaccard, tversky, lovasz, bce+dice), against the math.

* Float64 NumPy references written from the formulas, one image at a time, with masked
  pixels cut out of the image (never by calling bcejax).
* The Lovász hinge against the Lovász extension of the Jaccard set function, computed as a
  Choquet integral and, on tiny images, as a maximum over every permutation.
* Parity with optax's ``dice_loss`` (Dice and its Tversky form).
* Empty images, perfect predictions, infinite logits, ``smooth=0``, fully masked images.
* ``where`` is cutting the pixels out, for values and gradients; junk in masked pixels.
* Derivatives: central differences in every differentiable argument, jacfwd = jacrev.
* Bad inputs, and the callables in ``bcejax.losses``: reductions, image weights,
  composition, jit, shard_map, pickling.
"""

from __future__ import annotations

import functools
import itertools
import pickle

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import bcejax
from bcejax import losses

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
TINY = {np.float32: 1e-36, np.float64: 1e-300}
SHAPES = [(3, 5, 4), (2, 4, 4, 2)]
# Gradients are taken on one image shape: every new shape costs each primitive a compile.
SHAPE = SHAPES[0]

# ---------------------------------------------------------------------------
# Float64 NumPy references, from the formulas, one image at a time.
# ---------------------------------------------------------------------------


def _f64(value):
    return np.asarray(value, np.float64)


def _softplus(x):
    return np.logaddexp(0.0, x)


def _images(preds, labels, where):
    """Per image: the float64 predictions and labels of its unmasked pixels, flattened."""
    preds, labels = _f64(preds), _f64(labels)
    mask = np.ones(preds.shape, bool) if where is None else np.broadcast_to(where, preds.shape)
    return [(p[m], y[m]) for p, y, m in zip(preds, labels, mask, strict=True)]


def _soft_counts(pred, y, from_logits):
    """(TP, FP, FN) of one image; ``1 - p`` is ``sigmoid(-x)`` from logits."""
    p, not_p = (helpers.sigmoid(pred), helpers.sigmoid(-pred)) if from_logits else (pred, 1 - pred)
    return np.sum(p * y), np.sum(p * (1 - y)), np.sum(not_p * y)


def _ratio(num, den):
    return num / den if den > 0 else 0.0


def ref_dice(preds, labels, *, smooth=1.0, from_logits=True, where=None):
    out = []
    for pred, y in _images(preds, labels, where):
        tp, fp, fn = _soft_counts(pred, y, from_logits)
        out.append(_ratio(fp + fn, 2 * tp + fp + fn + smooth))
    return np.array(out)


def ref_jaccard(preds, labels, *, smooth=1.0, from_logits=True, where=None):
    out = []
    for pred, y in _images(preds, labels, where):
        tp, fp, fn = _soft_counts(pred, y, from_logits)
        out.append(_ratio(fp + fn, tp + fp + fn + smooth))
    return np.array(out)


def ref_tversky(preds, labels, *, alpha=0.3, beta=0.7, smooth=1.0, from_logits=True, where=None):
    out = []
    for pred, y in _images(preds, labels, where):
        tp, fp, fn = _soft_counts(pred, y, from_logits)
        out.append(_ratio(alpha * fp + beta * fn, tp + alpha * fp + beta * fn + smooth))
    return np.array(out)


def _ref_bce(pred, y, from_logits):
    if from_logits:
        return y * _softplus(-pred) + (1 - y) * _softplus(pred)
    with np.errstate(divide="ignore"):  # PyTorch: each log clamped at -100
        log_p = np.maximum(np.log(pred), -100.0)
        log_not_p = np.maximum(np.log1p(-pred), -100.0)
    return -(y * log_p + (1 - y) * log_not_p)


def ref_bce_dice(
    preds,
    labels,
    *,
    bce_weight=1.0,
    dice_weight=1.0,
    smooth=1.0,
    from_logits=True,
    where=None,
):
    dice = ref_dice(preds, labels, smooth=smooth, from_logits=from_logits, where=where)
    bce = [
        np.mean(_ref_bce(pred, y, from_logits)) if pred.size else 0.0
        for pred, y in _images(preds, labels, where)
    ]
    return bce_weight * np.array(bce) + dice_weight * dice


def _jaccard_set_loss(mistakes, foreground):
    """Delta(M) = |M| / |F u M|, 0 for an empty union."""
    union = np.sum(mistakes | foreground)
    return np.sum(mistakes) / union if union else 0.0


def ref_lovasz_extension(errors, foreground):
    """Choquet integral of Delta at m = max(errors, 0): sum over the levels of m."""
    m = np.maximum(_f64(errors), 0.0)
    levels = np.unique(m[m > 0])[::-1]  # distinct positive levels, decreasing
    below = np.append(levels[1:], 0.0)[: levels.size]  # the next level down, then 0
    total = 0.0
    for hi, lo in zip(levels, below, strict=True):
        total += (hi - lo) * _jaccard_set_loss(m >= hi, foreground)
    return total


def ref_lovasz_by_permutations(errors, foreground):
    """max over the vertices of the base polytope of Delta (Delta is submodular)."""
    m = np.maximum(_f64(errors), 0.0)
    best = -np.inf
    for order in itertools.permutations(range(m.size)):
        mistakes = np.zeros(m.size, bool)
        total, previous = 0.0, 0.0
        for i in order:
            mistakes[i] = True
            current = _jaccard_set_loss(mistakes, foreground)
            total += m[i] * (current - previous)
            previous = current
        best = max(best, total)
    return best


def ref_lovasz(preds, labels, *, per_image=True, from_logits=True, where=None):
    images = _images(preds, labels, where)
    if not per_image:
        images = [(np.concatenate([p for p, _ in images]), np.concatenate([y for _, y in images]))]
    out = []
    for pred, y in images:
        errors = 1 - pred * (2 * y - 1) if from_logits else np.abs(y - pred)
        out.append(ref_lovasz_extension(errors, y == 1))
    return np.array(out) if per_image else np.float64(out[0])


def _sets_iou(pred, y):
    """Hard IoU of two boolean masks; 1 when both are empty."""
    union = np.sum(pred | y)
    return np.sum(pred & y) / union if union else 1.0


# ---------------------------------------------------------------------------
# Inputs and helpers.
# ---------------------------------------------------------------------------


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


def hard_inputs(shape, dtype, *, seed=0):
    """Logits on a coarse grid (ties) and hard labels, with an all-background and an
    all-foreground image first."""
    rng = np.random.default_rng(seed)
    logits = rng.choice([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 3.0], shape)
    labels = rng.integers(0, 2, shape).astype(np.float64)
    labels[0], labels[1] = 0.0, 1.0
    return logits.astype(dtype), labels.astype(dtype)


assert_close = functools.partial(helpers.assert_close, rtol=RTOL, atol=TINY)


def _finite(tree):
    return all(bool(np.all(np.isfinite(np.asarray(v)))) for v in jax.tree_util.tree_leaves(tree))


def numpy_central_difference(f, value, h=1e-6):
    """(f(v + h e_i) - f(v - h e_i)) / 2h for every element i of a NumPy function."""
    value = np.asarray(value, np.float64)
    out = np.zeros(value.shape)
    for i in np.ndindex(value.shape):
        step = np.zeros(value.shape)
        step[i] = h
        out[i] = (f(value + step) - f(value - step)) / (2 * h)
    return out


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

ALL_FNS = {
    "dice": bcejax.dice_loss,
    "jaccard": bcejax.jaccard_loss,
    "tversky": bcejax.tversky_loss,
    "bce_dice": bcejax.sigmoid_bce_dice_loss,
    "lovasz": bcejax.lovasz_hinge,
}

# ---------------------------------------------------------------------------
# 1. The references themselves, on numbers known in closed form.
# ---------------------------------------------------------------------------


def test_references_agree_with_each_other_and_with_hand_values():
    rng = np.random.default_rng(1)
    # Hard predictions: the overlap losses are 1 - Dice / 1 - IoU of the sets (smooth 0).
    for _ in range(5):
        y = rng.integers(0, 2, (1, 7)).astype(float)
        p = rng.integers(0, 2, (1, 7)).astype(float)
        iou = _sets_iou(p[0] == 1, y[0] == 1)
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
# 2. Values on random batches.
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
# 3. Lovász hinge against the Lovász extension, brute force.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(5))
def test_lovasz_matches_brute_force(seed, dtype):
    logits, labels = hard_inputs((5, 3, 3), dtype, seed=seed)
    rng = np.random.default_rng(100 + seed)
    mask = rng.uniform(size=logits.shape) < 0.7
    mask[2] = False
    for where in (None, mask):
        for per_image in (True, False):
            got = bcejax.lovasz_hinge(logits, labels, per_image=per_image, where=where)
            want = ref_lovasz(logits, labels, per_image=per_image, where=where)
            assert got.shape == ((5,) if per_image else ())
            assert_close(got, want, dtype, rtol=RTOL[dtype], atol=0)
    # from_logits=False: errors |y - p|, with ties on a grid of probabilities.
    probs = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], logits.shape).astype(dtype)
    for where in (None, mask):
        for per_image in (True, False):
            got = bcejax.lovasz_hinge(
                probs, labels, per_image=per_image, from_logits=False, where=where
            )
            want = ref_lovasz(probs, labels, per_image=per_image, from_logits=False, where=where)
            assert_close(got, want, dtype, atol=0)


def test_lovasz_matches_max_over_permutations():
    for seed in range(3):
        logits, labels = hard_inputs((3, 2, 3), np.float64, seed=seed)
        got = bcejax.lovasz_hinge(logits, labels)
        for i in range(3):
            errors = 1 - logits[i] * (2 * labels[i] - 1)
            want = ref_lovasz_by_permutations(errors.ravel(), labels[i].ravel() == 1)
            np.testing.assert_allclose(got[i], want, rtol=1e-12, atol=0)


def test_lovasz_of_hard_predictions_is_one_minus_iou():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, SHAPE).astype(np.float64)
    probs = rng.integers(0, 2, SHAPE).astype(np.float64)
    labels[0], probs[0] = 0.0, 0.0  # empty and right: IoU 1
    want = [1 - _sets_iou(p == 1, y == 1) for p, y in zip(probs, labels, strict=True)]
    np.testing.assert_allclose(
        bcejax.lovasz_hinge(probs, labels, from_logits=False), want, rtol=1e-14, atol=0
    )
    # Logits +-1 put hinge errors of 0 or 2 on the same sets: twice the loss.
    np.testing.assert_allclose(
        bcejax.lovasz_hinge(2 * probs - 1, labels), 2 * np.array(want), rtol=1e-14, atol=0
    )


@pytest.mark.parametrize(
    "from_logits, per_image, masked",
    [(True, True, False), (True, True, True), (True, False, True), (False, True, True)],
    ids=["logits", "logits-where", "logits-batch-where", "probs-where"],
)
def test_lovasz_gradient_matches_finite_differences(from_logits, per_image, masked):
    rng = np.random.default_rng(11)
    shape = SHAPE
    labels = rng.integers(0, 2, shape).astype(np.float64)
    labels[0] = 0.0
    if from_logits:
        preds = rng.normal(0.0, 1.5, shape)
        errors = 1 - preds * (2 * labels - 1)
        preds = np.where(np.abs(errors) < 1e-3, preds + 0.01, preds)  # away from the hinge
    else:
        preds = rng.uniform(0.02, 0.98, shape)  # |y - p| > 0: away from the kink of abs
    mask = rng.uniform(size=shape) < 0.75 if masked else None
    cotangent = rng.uniform(0.5, 1.5, shape[:1] if per_image else ())
    kwargs = dict(per_image=per_image, from_logits=from_logits, where=mask)

    def f(x):
        return jnp.sum(cotangent * bcejax.lovasz_hinge(x, labels, **kwargs))

    def ref(x):
        return np.sum(cotangent * ref_lovasz(x, labels, **kwargs))

    grad = jax.grad(f)(preds)
    # Random errors have no ties: the loss is linear around preds.
    np.testing.assert_allclose(grad, numpy_central_difference(ref, preds), rtol=1e-7, atol=1e-9)
    if mask is not None:
        assert np.all(np.asarray(grad)[~mask] == 0)


# ---------------------------------------------------------------------------
# 4. Parity with optax.
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
# 5. Empty images, perfect predictions, degenerate denominators.
# ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames="from_logits")
def _all_values_and_grads(preds, labels, smooth, where=None, *, from_logits=True):
    """{name: (loss per image, (d/dpreds, d/dlabels) of its sum)} for the five losses.

    One compile for all five: compiling each primitive eagerly costs more.
    """
    out = {}
    for name, fn in ALL_FNS.items():
        kwargs = dict(from_logits=from_logits, where=where)
        if name != "lovasz":
            kwargs["smooth"] = smooth

        def total(x, y, fn=fn, kwargs=kwargs):
            loss = fn(x, y, **kwargs)
            return jnp.sum(loss), loss

        (_, loss), grads = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(preds, labels)
        out[name] = (loss, grads)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_images(dtype):
    labels = np.zeros(SHAPE, dtype)
    logits = np.full(SHAPE, -20.0, dtype)
    for name, (value, grads) in _all_values_and_grads(logits, labels, 1.0).items():
        assert value.dtype == dtype and value.shape == SHAPE[:1]
        assert _finite(grads), name
        if name == "lovasz":
            assert np.all(np.asarray(value) == 0)  # hinge margin 21 >= 1
        else:
            assert np.all(np.asarray(value) >= 0) and np.all(np.asarray(value) < 1e-5), name
    # smooth 0 with logits -20: a finite ratio of two tiny counts, finite gradients.
    for name, result in _all_values_and_grads(logits, labels, 0.0).items():
        assert _finite(result), name
    # Probabilities exactly 0 and smooth 0: exactly 0, never 0 / 0.
    probs = np.zeros(SHAPE, dtype)
    for name, (value, grads) in _all_values_and_grads(
        probs, labels, 0.0, from_logits=False
    ).items():
        assert np.all(np.asarray(value) == 0), name
        assert _finite(grads), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_infinite_logits_right_give_zero(dtype):
    labels = np.zeros(SHAPE, dtype)
    labels[0, 1:, 1:] = 1.0
    logits = np.where(labels == 1, np.inf, -np.inf).astype(dtype)
    for name, (value, grads) in _all_values_and_grads(logits, labels, 1.0).items():
        assert np.all(np.asarray(value) == 0), name
        assert _finite(grads[0]), name  # d/dlabels of the BCE is -x: infinite, rightly


@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_fully_masked_images_give_zero(from_logits):
    preds, labels, mask = random_inputs(SHAPE, np.float64, from_logits=from_logits)
    labels = labels.round()
    mask[2] = False  # images 1 and 2 have no pixel left
    for smooth in (0.0, 1.0):
        results = _all_values_and_grads(preds, labels, smooth, mask, from_logits=from_logits)
        for name, (value, grads) in results.items():
            assert np.all(np.asarray(value)[1:] == 0), name
            assert value[0] > 0
            assert _finite(grads), name
            assert np.all(np.asarray(grads[0])[1:] == 0), name
    # The whole batch masked, per_image=False: 0.
    nothing = np.zeros_like(mask)
    kwargs = dict(per_image=False, from_logits=from_logits, where=nothing)
    assert bcejax.lovasz_hinge(preds, labels, **kwargs) == 0
    grad = jax.grad(lambda x: bcejax.lovasz_hinge(x, labels, **kwargs))(preds)
    assert np.all(np.asarray(grad) == 0)


@pytest.mark.parametrize("smooth", [1.0, 0.0])
@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
@pytest.mark.parametrize("name", ["dice", "jaccard", "tversky", "bce_dice"])
def test_perfect_prediction_keeps_relative_accuracy(name, from_logits, smooth):
    """A near-perfect float32 prediction: 1 - ratio would lose every digit of the loss."""
    fn = ALL_FNS[name]
    ref = {"dice": ref_dice, "jaccard": ref_jaccard, "tversky": ref_tversky}.get(name)
    ref = ref or ref_bce_dice
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 2, SHAPE).astype(np.float32)
    labels[:, 0, 0] = 1.0  # every image has foreground
    margin = rng.uniform(10.0, 14.0, labels.shape)
    logits = margin * (2 * labels - 1)
    preds = (logits if from_logits else helpers.sigmoid(logits)).astype(np.float32)
    got = fn(preds, labels, smooth=smooth, from_logits=from_logits)
    want = ref(preds, labels, smooth=smooth, from_logits=from_logits)
    assert np.all(want < 1e-3)
    assert_close(got, want, np.float32, rtol=1e-5)
    if from_logits:
        assert np.all(np.asarray(bcejax.lovasz_hinge(preds, labels)) == 0)


# ---------------------------------------------------------------------------
# 6. where is cutting the pixels out; junk in masked pixels changes nothing.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_where_equals_cutting_pixels_out(from_logits):
    preds, labels, _ = random_inputs(SHAPE, np.float64, from_logits=from_logits, seed=9)
    labels = labels.round()  # hard labels, for the Lovász hinge too
    labels[0, 0] = 0.3  # and one soft label for the others
    # 12 of the 20 pixels of each image kept: one cut-out shape, (1, 12).
    rng = np.random.default_rng(9)
    mask = np.stack([rng.permutation(20) < 12 for _ in range(SHAPE[0])]).reshape(SHAPE)
    lovasz_labels = labels.round()
    got = _all_values_and_grads(preds, labels, 1.0, mask, from_logits=from_logits)
    got_lovasz = _all_values_and_grads(preds, lovasz_labels, 1.0, mask, from_logits=from_logits)
    got["lovasz"] = got_lovasz["lovasz"]
    for i in range(SHAPE[0]):
        x, y = preds[i][mask[i]][None], labels[i][mask[i]][None]
        cut = _all_values_and_grads(x, y, 1.0, from_logits=from_logits)
        cut["lovasz"] = _all_values_and_grads(x, y.round(), 1.0, from_logits=from_logits)["lovasz"]
        for name, (value, grads) in got.items():
            want_value, want_grads = cut[name]
            np.testing.assert_allclose(value[i], want_value[0], rtol=1e-13, err_msg=name)
            for grad, want in zip(grads, want_grads, strict=True):
                np.testing.assert_allclose(
                    grad[i][mask[i]], want[0], rtol=1e-13, atol=1e-300, err_msg=name
                )
                assert np.all(np.asarray(grad[i])[~mask[i]] == 0), name

    # Junk in the masked pixels: NaN (or out-of-range) predictions, 8-bit void labels.
    junk_preds = np.where(mask, preds, np.nan if from_logits else 7.0)
    for name, fn in ALL_FNS.items():
        y = lovasz_labels if name == "lovasz" else labels
        junk_labels = np.where(mask, y, 255.0)
        # Eager: the value checks must skip the masked pixels.
        np.testing.assert_array_equal(
            fn(junk_preds, junk_labels, where=mask, from_logits=from_logits),
            fn(preds, y, where=mask, from_logits=from_logits),
            err_msg=name,
        )
        junk = _all_values_and_grads(junk_preds, junk_labels, 1.0, mask, from_logits=from_logits)
        clean = got_lovasz if name == "lovasz" else got
        np.testing.assert_array_equal(junk[name][0], clean[name][0], err_msg=name)
        np.testing.assert_array_equal(junk[name][1][0], clean[name][1][0], err_msg=name)
        assert _finite(junk[name][1][1]), name
        assert np.all(np.asarray(junk[name][1][1])[~mask] == 0), name


@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probs"])
def test_lovasz_batch_where_equals_cutting_pixels_out(from_logits):
    preds, labels, mask = random_inputs(SHAPE, np.float64, from_logits=from_logits, seed=10)
    labels = labels.round()
    kwargs = dict(per_image=False, from_logits=from_logits)
    want = bcejax.lovasz_hinge(preds[mask][None], labels[mask][None], **kwargs)
    np.testing.assert_allclose(
        bcejax.lovasz_hinge(preds, labels, where=mask, **kwargs), want, rtol=1e-14
    )
    junk = np.where(mask, preds, np.nan)
    np.testing.assert_array_equal(
        bcejax.lovasz_hinge(junk, np.where(mask, labels, 255.0), where=mask, **kwargs),
        bcejax.lovasz_hinge(preds, labels, where=mask, **kwargs),
    )


# ---------------------------------------------------------------------------
# 7. Derivatives.
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


# ---------------------------------------------------------------------------
# 8. Bad inputs.
# ---------------------------------------------------------------------------

X = np.random.default_rng(15).normal(size=SHAPE).astype(np.float32)
Y = (np.random.default_rng(16).uniform(size=SHAPE) < 0.4).astype(np.float32)


@pytest.mark.parametrize("name", list(ALL_FNS))
def test_shape_errors(name):
    fn = ALL_FNS[name]
    with pytest.raises(ValueError, match="channel axis"):
        fn(X[..., None], Y)
    with pytest.raises(ValueError, match="channel axis"):
        fn(X, Y[..., None])
    with pytest.raises(ValueError, match=r"must have the shape of logits, \(3, 5, 4\)"):
        fn(X, Y[:, :3])
    with pytest.raises(ValueError, match=r"must have the shape of logits, \(3, 5, 4\)"):
        fn(X, np.zeros((3, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"batch axis.*logits\[None\]"):
        fn(X[0, 0], Y[0, 0])
    with pytest.raises(ValueError, match="without adding axes"):
        fn(X, Y, where=np.ones((2, *SHAPE), bool))
    with pytest.raises(TypeError, match="floating dtype"):
        fn(X.astype(np.int32), Y)


@pytest.mark.parametrize("name", list(ALL_FNS))
def test_value_errors(name):
    fn = ALL_FNS[name]
    with pytest.raises(bcejax.InvalidInputError, match="8-bit mask; divide by 255"):
        fn(X, 255 * Y)
    with pytest.raises(bcejax.InvalidInputError, match=r"probabilities in \[0, 1\].*from_logits"):
        fn(X, Y, from_logits=False)
    with pytest.raises(bcejax.InvalidInputError, match="NaN"):
        fn(np.where(Y == 1, np.nan, X), Y)
    # Under jit, only through bcejax.checked.
    with pytest.raises(bcejax.InvalidInputError, match="8-bit"):
        bcejax.checked(lambda x, y: fn(x, y))(X, 255 * Y)


def test_negative_config_errors():
    for fn in (bcejax.dice_loss, bcejax.jaccard_loss, bcejax.tversky_loss):
        with pytest.raises(ValueError, match="smooth must be >= 0"):
            fn(X, Y, smooth=-1.0)
    with pytest.raises(ValueError, match="smooth must be >= 0"):
        bcejax.sigmoid_bce_dice_loss(X, Y, smooth=-0.5)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        bcejax.tversky_loss(X, Y, alpha=-0.1)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        bcejax.tversky_loss(X, Y, beta=-0.1)
    with pytest.raises(ValueError, match="smooth must be >= 0"):
        losses.DiceLoss(smooth=-1.0)(X, Y)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        losses.TverskyLoss(alpha=-1.0)(X, Y)


def test_callable_errors():
    for loss_fn in (losses.DiceLoss(), losses.JaccardLoss(), losses.LovaszHinge()):
        with pytest.raises(ValueError, match="weigh whole images"):
            loss_fn(X, Y, weights=np.ones(SHAPE, np.float32))
        with pytest.raises(ValueError, match="weigh whole images"):
            loss_fn(X, Y, weights=np.ones((2,), np.float32))
        with pytest.raises(bcejax.InvalidInputError, match=">= 0"):
            loss_fn(X, Y, weights=np.array([1.0, -1.0, 1.0], np.float32))
    with pytest.raises(ValueError, match="drop weights"):
        losses.LovaszHinge(per_image=False)(X, Y, weights=np.ones((3,), np.float32))
    with pytest.raises(ValueError, match="reduction must be one of"):
        losses.DiceLoss(reduction="avg")


# ---------------------------------------------------------------------------
# 9. The callables.
# ---------------------------------------------------------------------------

B_PREDS, B_LABELS, B_MASK = random_inputs(SHAPE, np.float64, seed=17)
B_LABELS = B_LABELS.round()  # image 1 fully masked

OVERLAP_CALLABLES = [
    (losses.DiceLoss(smooth=0.5), lambda x, y, **k: bcejax.dice_loss(x, y, smooth=0.5, **k)),
    (losses.JaccardLoss(), bcejax.jaccard_loss),
    (
        losses.TverskyLoss(alpha=0.6, beta=0.4, smooth=0.2),
        lambda x, y, **k: bcejax.tversky_loss(x, y, alpha=0.6, beta=0.4, smooth=0.2, **k),
    ),
    (losses.LovaszHinge(), bcejax.lovasz_hinge),
    (
        losses.DiceLoss(from_logits=False),
        lambda x, y, **k: bcejax.dice_loss(helpers.sigmoid(x), y, from_logits=False, **k),
    ),
]
OVERLAP_IDS = ["dice", "jaccard", "tversky", "lovasz", "dice_probs"]


def _with(loss_fn, **changes):
    config = {f: getattr(loss_fn, f) for f in loss_fn.__dataclass_fields__}
    return type(loss_fn)(**{**config, **changes})


def _preds_for(loss_fn):
    return helpers.sigmoid(B_PREDS) if not loss_fn.from_logits else B_PREDS


@pytest.mark.parametrize("loss_fn, functional", OVERLAP_CALLABLES, ids=OVERLAP_IDS)
def test_callable_reductions_over_images(loss_fn, functional):
    x = _preds_for(loss_fn)
    per_image = np.asarray(functional(B_PREDS, B_LABELS))
    assert per_image.shape == (3,)
    none, total = _with(loss_fn, reduction="none"), _with(loss_fn, reduction="sum")
    np.testing.assert_allclose(none(x, B_LABELS), per_image, rtol=1e-13)
    np.testing.assert_allclose(total(x, B_LABELS), per_image.sum(), rtol=1e-13)
    np.testing.assert_allclose(loss_fn(x, B_LABELS), per_image.mean(), rtol=1e-13)
    # The fully masked image (1) is left out of the mean: 2 images count.
    masked = np.asarray(functional(B_PREDS, B_LABELS, where=B_MASK))
    assert not B_MASK[1].any() and B_MASK[0].any() and B_MASK[2].any()
    assert masked[1] == 0
    np.testing.assert_allclose(none(x, B_LABELS, where=B_MASK), masked, rtol=1e-13)
    np.testing.assert_allclose(total(x, B_LABELS, where=B_MASK), masked.sum(), rtol=1e-13)
    np.testing.assert_allclose(loss_fn(x, B_LABELS, where=B_MASK), masked.sum() / 2, rtol=1e-13)
    # Every image masked: mean 0, zero gradient.
    nothing = np.zeros_like(B_MASK)
    assert loss_fn(x, B_LABELS, where=nothing) == 0
    grad = jax.grad(lambda x: loss_fn(x, B_LABELS, where=nothing))(x)
    assert np.all(np.asarray(grad) == 0)


@pytest.mark.parametrize("loss_fn, functional", OVERLAP_CALLABLES, ids=OVERLAP_IDS)
def test_callable_image_weights(loss_fn, functional):
    x = _preds_for(loss_fn)
    w = np.array([0.5, 2.0, 3.0])
    per_image = np.asarray(functional(B_PREDS, B_LABELS))
    total = _with(loss_fn, reduction="sum")
    for reduction in ("none", "sum", "mean"):
        fn = _with(loss_fn, reduction=reduction)
        np.testing.assert_array_equal(
            fn(x, B_LABELS, weights=w), fn(x, B_LABELS, weights=w[:, None, None])
        )
    np.testing.assert_allclose(
        _with(loss_fn, reduction="none")(x, B_LABELS, weights=w), w * per_image, rtol=1e-13
    )
    # mean divides by the number of images, not by the summed weights (PyTorch).
    np.testing.assert_allclose(loss_fn(x, B_LABELS, weights=w), (w * per_image).mean(), rtol=1e-13)
    masked = np.asarray(functional(B_PREDS, B_LABELS, where=B_MASK))
    np.testing.assert_allclose(
        loss_fn(x, B_LABELS, weights=w, where=B_MASK), (w * masked).sum() / 2, rtol=1e-13
    )
    # An integer weight k is k copies of the image (sum), 0 drops it.
    counts = np.array([1, 0, 2])
    repeated = total(np.repeat(x, counts, 0), np.repeat(B_LABELS, counts, 0))
    np.testing.assert_allclose(total(x, B_LABELS, weights=counts), repeated, rtol=1e-13)
    # A single weight broadcasts over the images.
    np.testing.assert_allclose(
        total(x, B_LABELS, weights=np.array([2.0])), 2 * total(x, B_LABELS), rtol=1e-13
    )


def test_callable_four_dimensional_weights():
    preds, labels, _ = random_inputs((2, 4, 4, 2), np.float64, seed=18)
    w = np.array([0.3, 1.7])
    fn = losses.TverskyLoss(reduction="none")
    np.testing.assert_array_equal(
        fn(preds, labels, weights=w[:, None, None, None]), fn(preds, labels, weights=w)
    )
    np.testing.assert_allclose(
        fn(preds, labels, weights=w), w * bcejax.tversky_loss(preds, labels), rtol=1e-13
    )


def test_lovasz_per_batch_callable_is_the_scalar_functional():
    for reduction in ("mean", "sum", "none"):
        fn = losses.LovaszHinge(per_image=False, reduction=reduction)
        for where in (None, B_MASK):
            got = fn(B_PREDS, B_LABELS, where=where)
            want = bcejax.lovasz_hinge(B_PREDS, B_LABELS, per_image=False, where=where)
            assert got.shape == ()
            np.testing.assert_allclose(got, want, rtol=1e-14)
            np.testing.assert_allclose(
                want, ref_lovasz(B_PREDS, B_LABELS, per_image=False, where=where), rtol=1e-12
            )


def test_bce_plus_dice_is_the_sum_of_its_parts():
    bce, dice = losses.BinaryCrossEntropy(), losses.DiceLoss()
    combo = bce + dice
    assert isinstance(combo, losses.SumOfLosses)
    for where in (None, B_MASK):
        np.testing.assert_allclose(
            combo(B_PREDS, B_LABELS, where=where),
            bce(B_PREDS, B_LABELS, where=where) + dice(B_PREDS, B_LABELS, where=where),
            rtol=1e-14,
        )
        grad = jax.grad(lambda x, where=where: combo(x, B_LABELS, where=where))(B_PREDS)
        assert _finite(grad)
        if where is not None:
            assert np.all(np.asarray(grad)[~where] == 0)
    # Without masks, per image: the mean of the BCE over all pixels and the mean Dice
    # are the means over the images of sigmoid_bce_dice_loss.
    np.testing.assert_allclose(
        combo(B_PREDS, B_LABELS),
        np.mean(bcejax.sigmoid_bce_dice_loss(B_PREDS, B_LABELS)),
        rtol=1e-13,
    )
    half = losses.BinaryCrossEntropy() + 0.5 * losses.DiceLoss(smooth=0.2)
    np.testing.assert_allclose(
        half(B_PREDS, B_LABELS),
        np.mean(bcejax.sigmoid_bce_dice_loss(B_PREDS, B_LABELS, dice_weight=0.5, smooth=0.2)),
        rtol=1e-13,
    )


JUNK_PREDS = np.where(B_MASK, B_PREDS, np.nan)
JUNK_LABELS = np.where(B_MASK, B_LABELS, 255.0)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_bce_plus_dice_ignores_junk_in_masked_pixels(jit):
    """NaN logits and 255 labels (a void class) in masked pixels are cut out, never checked."""
    combo = losses.BinaryCrossEntropy(pos_weight=2.0) + losses.DiceLoss()
    call = jax.jit(combo.__call__) if jit else combo
    clean = combo(B_PREDS, B_LABELS, where=B_MASK)
    np.testing.assert_allclose(call(JUNK_PREDS, JUNK_LABELS, where=B_MASK), clean, rtol=1e-13)
    # the smallest case: one kept pixel, one junk pixel
    x, y, m = np.array([[0.5, np.nan]]), np.array([[1.0, 255.0]]), np.array([[True, False]])
    want = float(bcejax.sigmoid_binary_cross_entropy(0.5, 1.0, pos_weight=2.0))
    want += float(bcejax.dice_loss(x[:, :1], y[:, :1])[0])
    np.testing.assert_allclose(call(x, y, where=m), want, rtol=1e-13)


@pytest.mark.parametrize(
    "loss_fn",
    [
        losses.BinaryCrossEntropy() + losses.DiceLoss(),
        losses.FocalLoss() + losses.JaccardLoss(),
        losses.AsymmetricLoss(reduction="sum") + losses.LovaszHinge(),
        losses.Poly1Loss() + losses.TverskyLoss(),
    ],
    ids=["bce+dice", "focal+jaccard", "asymmetric+lovasz", "poly1+tversky"],
)
def test_bce_plus_dice_gradient_ignores_nan_in_masked_pixels(loss_fn):
    weights = np.where(B_MASK, 1.5, np.nan)  # junk weights in masked pixels too
    grad = jax.grad(lambda x: loss_fn(x, JUNK_LABELS, where=B_MASK))(JUNK_PREDS)
    assert _finite(grad)
    assert np.all(np.asarray(grad)[~B_MASK] == 0)
    clean = jax.grad(lambda x: loss_fn(x, B_LABELS, where=B_MASK))(B_PREDS)
    np.testing.assert_allclose(grad, clean, rtol=1e-12, atol=1e-15)
    elementwise = loss_fn.terms[0][1]
    grad = jax.grad(lambda x: elementwise(x, JUNK_LABELS, weights=weights, where=B_MASK))(
        JUNK_PREDS
    )
    assert _finite(grad)
    assert np.all(np.asarray(grad)[~B_MASK] == 0)


def test_elementwise_callable_where_must_not_add_axes():
    with pytest.raises(ValueError, match=r"where with shape \(2, 3\) would broadcast the loss"):
        losses.BinaryCrossEntropy()(np.zeros(3), np.ones(3), where=np.ones((2, 3), bool))


@pytest.mark.parametrize(
    "loss_fn",
    [
        losses.DiceLoss(smooth=0.5),
        losses.JaccardLoss(from_logits=False, reduction="sum"),
        losses.TverskyLoss(alpha=0.2, beta=0.9),
        losses.LovaszHinge(per_image=False),
        losses.BinaryCrossEntropy() + 0.5 * losses.DiceLoss(),
    ],
    ids=["dice", "jaccard", "tversky", "lovasz", "bce+dice"],
)
def test_callable_pickle_and_jit_argument(loss_fn):
    restored = pickle.loads(pickle.dumps(loss_fn))
    assert restored == loss_fn
    assert hash(restored) == hash(loss_fn)
    assert repr(restored) == repr(loss_fn)
    probs = getattr(loss_fn, "from_logits", True) is False
    x = helpers.sigmoid(B_PREDS) if probs else B_PREDS
    eager = loss_fn(x, B_LABELS, where=B_MASK)
    jitted = jax.jit(lambda f, x, y, m: f(x, y, where=m))(restored, x, B_LABELS, B_MASK)
    np.testing.assert_allclose(jitted, eager, rtol=1e-13)


def test_callable_config_is_a_differentiable_leaf():
    fn = losses.TverskyLoss(alpha=jnp.asarray(0.3), beta=jnp.asarray(0.7), smooth=jnp.asarray(0.5))
    grads = jax.jit(jax.grad(lambda f: f(B_PREDS, B_LABELS)))(fn)
    assert isinstance(grads, losses.TverskyLoss)

    def functional(alpha, beta, smooth):
        return jnp.mean(
            bcejax.tversky_loss(B_PREDS, B_LABELS, alpha=alpha, beta=beta, smooth=smooth)
        )

    want = jax.grad(functional, argnums=(0, 1, 2))(0.3, 0.7, 0.5)
    np.testing.assert_allclose([grads.alpha, grads.beta, grads.smooth], want, rtol=1e-12)


def test_callables_in_shard_map_are_the_global_mean():
    """The batch sharded over 4 devices, one shard without a pixel left: the global mean."""
    assert jax.device_count() == 4
    preds, labels, mask = random_inputs((8, 5, 4), np.float64, seed=19)
    labels = labels.round()
    mask[2:4] = False  # the second shard holds no pixel at all
    weights = np.linspace(0.5, 2.0, 8)
    dice, lovasz = losses.DiceLoss(smooth=0.3), losses.LovaszHinge()
    combo = losses.BinaryCrossEntropy() + losses.DiceLoss()  # BCE weights are per pixel

    def losses_of(x, y, m, w, axis_name=None):
        common = dict(where=m, axis_name=axis_name)
        return (
            dice(x, y, weights=w, **common),
            lovasz(x, y, weights=w, **common),
            combo(x, y, **common),
        )

    sharded = jax.jit(
        jax.shard_map(
            lambda *args: losses_of(*args, axis_name="d"),
            mesh=helpers.mesh(),
            in_specs=(P("d"),) * 4,
            out_specs=(P(), P(), P()),
        )
    )
    single = jax.jit(losses_of)
    got, want = sharded(preds, labels, mask, weights), single(preds, labels, mask, weights)
    np.testing.assert_allclose(got, want, rtol=1e-13)
