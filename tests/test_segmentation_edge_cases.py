"""The segmentation losses on empty images, perfect predictions, infinite logits, masked pixels.

``where`` is cutting the pixels out, for values and gradients; junk in masked pixels changes
nothing.
"""

from __future__ import annotations

import functools

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import ref_bce_dice, ref_dice, ref_jaccard, ref_tversky
from segmentation_inputs import ALL_FNS, DTYPES, SHAPE, assert_close, finite, random_inputs

import bcejax

# ---------------------------------------------------------------------------
# Empty images, perfect predictions, degenerate denominators.
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
        assert finite(grads), name
        if name == "lovasz":
            assert np.all(np.asarray(value) == 0)  # hinge margin 21 >= 1
        else:
            assert np.all(np.asarray(value) >= 0) and np.all(np.asarray(value) < 1e-5), name
    # smooth 0 with logits -20: a finite ratio of two tiny counts, finite gradients.
    for name, result in _all_values_and_grads(logits, labels, 0.0).items():
        assert finite(result), name
    # Probabilities exactly 0 and smooth 0: exactly 0, never 0 / 0.
    probs = np.zeros(SHAPE, dtype)
    for name, (value, grads) in _all_values_and_grads(
        probs, labels, 0.0, from_logits=False
    ).items():
        assert np.all(np.asarray(value) == 0), name
        assert finite(grads), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_infinite_logits_right_give_zero(dtype):
    labels = np.zeros(SHAPE, dtype)
    labels[0, 1:, 1:] = 1.0
    logits = np.where(labels == 1, np.inf, -np.inf).astype(dtype)
    for name, (value, grads) in _all_values_and_grads(logits, labels, 1.0).items():
        assert np.all(np.asarray(value) == 0), name
        assert finite(grads[0]), name  # d/dlabels of the BCE is -x: infinite, rightly


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
            assert finite(grads), name
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
# where is cutting the pixels out; junk in masked pixels changes nothing.
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
        assert finite(junk[name][1][1]), name
        assert np.all(np.asarray(junk[name][1][1])[~mask] == 0), name
