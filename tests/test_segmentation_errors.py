"""Bad inputs to the segmentation losses and callables, with messages that say what is wrong."""

from __future__ import annotations

import numpy as np
import pytest
from segmentation_inputs import ALL_FNS, SHAPE

import bcejax
from bcejax import losses

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
    for weight in ("bce_weight", "dice_weight"):
        with pytest.raises(ValueError, match=f"{weight} must be >= 0"):
            bcejax.sigmoid_bce_dice_loss(X, Y, **{weight: -1.0})
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
