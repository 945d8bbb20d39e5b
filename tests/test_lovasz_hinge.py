"""The Lovász hinge against the Lovász extension of the Jaccard set function, by brute force.

The extension is computed as a Choquet integral and, on tiny images, as a maximum over every
permutation; ``where`` cuts pixels out of an image or of the whole batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import ref_lovasz, ref_lovasz_by_permutations, sets_iou
from segmentation_inputs import DTYPES, RTOL, SHAPE, assert_close, random_inputs

import bcejax


def hard_inputs(shape, dtype, *, seed=0):
    """Logits on a coarse grid (ties) and hard labels, with an all-background and an
    all-foreground image first."""
    rng = np.random.default_rng(seed)
    logits = rng.choice([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 3.0], shape)
    labels = rng.integers(0, 2, shape).astype(np.float64)
    labels[0], labels[1] = 0.0, 1.0
    return logits.astype(dtype), labels.astype(dtype)


def numpy_central_difference(f, value, h=1e-6):
    """(f(v + h e_i) - f(v - h e_i)) / 2h for every element i of a NumPy function."""
    value = np.asarray(value, np.float64)
    out = np.zeros(value.shape)
    for i in np.ndindex(value.shape):
        step = np.zeros(value.shape)
        step[i] = h
        out[i] = (f(value + step) - f(value - step)) / (2 * h)
    return out


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
    want = [1 - sets_iou(p == 1, y == 1) for p, y in zip(probs, labels, strict=True)]
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
