"""The segmentation callables: reductions over images, weights, composition, jit, shard_map."""

from __future__ import annotations

import pickle

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from references import ref_lovasz
from segmentation_inputs import SHAPE, finite, random_inputs

import bcejax
from bcejax import losses

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
        assert finite(grad)
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
    assert finite(grad)
    assert np.all(np.asarray(grad)[~B_MASK] == 0)
    clean = jax.grad(lambda x: loss_fn(x, B_LABELS, where=B_MASK))(B_PREDS)
    np.testing.assert_allclose(grad, clean, rtol=1e-12, atol=1e-15)
    elementwise = loss_fn.terms[0][1]
    grad = jax.grad(lambda x: elementwise(x, JUNK_LABELS, weights=weights, where=B_MASK))(
        JUNK_PREDS
    )
    assert finite(grad)
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
