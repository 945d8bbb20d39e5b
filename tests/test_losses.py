"""The callables: reductions, composition, pytree behaviour, pickling."""

from __future__ import annotations

import dataclasses
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcejax
from bcejax import losses

RNG = np.random.default_rng(0)
X = RNG.normal(0, 2, (8, 4)).astype(np.float32)
Y = (RNG.uniform(size=(8, 4)) < 0.3).astype(np.float32)
P = (1 / (1 + np.exp(-X))).astype(np.float32)
W = RNG.uniform(0, 2, (8, 4)).astype(np.float32)


@pytest.mark.parametrize(
    "loss_fn, functional",
    [
        (
            losses.BinaryCrossEntropy(pos_weight=3.0, label_smoothing=0.1),
            lambda x, y, w: bcejax.sigmoid_binary_cross_entropy(
                x, y, weights=w, pos_weight=3.0, label_smoothing=0.1
            ),
        ),
        (
            losses.FocalLoss(alpha=0.3, gamma=1.5),
            lambda x, y, w: bcejax.sigmoid_focal_loss(x, y, alpha=0.3, gamma=1.5, weights=w),
        ),
        (
            losses.AsymmetricLoss(gamma_pos=1.0, gamma_neg=3.0, clip=0.1),
            lambda x, y, w: bcejax.sigmoid_asymmetric_loss(
                x, y, gamma_pos=1.0, gamma_neg=3.0, clip=0.1, weights=w
            ),
        ),
        (
            losses.Poly1Loss(epsilon=-0.5),
            lambda x, y, w: bcejax.sigmoid_poly1_loss(x, y, epsilon=-0.5, weights=w),
        ),
    ],
    ids=["bce", "focal", "asl", "poly1"],
)
def test_callable_is_the_reduced_functional(loss_fn, functional):
    elementwise = functional(X, Y, W)
    np.testing.assert_allclose(loss_fn(X, Y, weights=W), elementwise.mean(), rtol=1e-6)
    as_sum = type(loss_fn)(**{**_config(loss_fn), "reduction": "sum"})
    np.testing.assert_allclose(as_sum(X, Y, weights=W), elementwise.sum(), rtol=1e-6)
    as_none = type(loss_fn)(**{**_config(loss_fn), "reduction": "none"})
    np.testing.assert_allclose(as_none(X, Y, weights=W), elementwise, rtol=1e-6)


def _config(loss_fn):
    return {f: getattr(loss_fn, f) for f in loss_fn.__dataclass_fields__}


def test_from_probabilities():
    np.testing.assert_allclose(
        losses.BinaryCrossEntropy(from_logits=False)(P, Y),
        bcejax.binary_cross_entropy(P, Y).mean(),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        losses.BinaryCrossEntropy(from_logits=False, eps=1e-7)(P, Y),
        bcejax.binary_cross_entropy(P, Y, eps=1e-7).mean(),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        losses.FocalLoss(from_logits=False)(P, Y),
        bcejax.binary_focal_loss(P, Y, alpha=0.25).mean(),
        rtol=1e-6,
    )
    # Logits and probabilities of the same model give the same BCE.
    np.testing.assert_allclose(
        losses.BinaryCrossEntropy()(X, Y), losses.BinaryCrossEntropy(from_logits=False)(P, Y), 1e-5
    )


def test_composition():
    bce, focal = losses.BinaryCrossEntropy(), losses.FocalLoss()
    combined = bce + 0.5 * focal
    expected = bce(X, Y) + 0.5 * focal(X, Y)
    np.testing.assert_allclose(combined(X, Y), expected, rtol=1e-6)
    np.testing.assert_allclose((2 * combined)(X, Y), 2 * expected, rtol=1e-6)
    np.testing.assert_allclose((combined * 2 + bce)(X, Y), 2 * expected + bce(X, Y), rtol=1e-6)
    assert isinstance(combined, losses.Loss)
    assert "0.5 * FocalLoss(" in repr(combined)
    grad = jax.grad(lambda x: combined(x, Y))(X)
    assert np.all(np.isfinite(grad))
    with pytest.raises(TypeError):
        bce + 1.0


def test_repr_equality_hash_and_frozen():
    loss_fn = losses.FocalLoss(alpha=0.5, gamma=1.0)
    assert repr(loss_fn) == (
        "FocalLoss(alpha=0.5, gamma=1.0, from_logits=True, label_smoothing=0.0, reduction='mean')"
    )
    assert loss_fn == losses.FocalLoss(alpha=0.5, gamma=1.0)
    assert loss_fn != losses.FocalLoss(alpha=0.5, gamma=2.0)
    with pytest.raises(AttributeError):
        loss_fn.gamma = 3.0


@pytest.mark.parametrize(
    "loss_fn",
    [
        losses.BinaryCrossEntropy(pos_weight=np.array([1.0, 2.0, 3.0, 4.0], np.float32)),
        losses.FocalLoss(),
        losses.AsymmetricLoss(),
        losses.Poly1Loss(),
        losses.BinaryCrossEntropy() + 0.25 * losses.FocalLoss(),
    ],
    ids=lambda f: type(f).__name__,
)
def test_pickle_and_jit_argument(loss_fn):
    restored = pickle.loads(pickle.dumps(loss_fn))
    np.testing.assert_allclose(restored(X, Y), loss_fn(X, Y), rtol=1e-6)
    as_argument = jax.jit(lambda fn, x, y: fn(x, y))(loss_fn, X, Y)
    np.testing.assert_allclose(as_argument, loss_fn(X, Y), rtol=1e-5)


def test_pytree_leaves_and_static_fields():
    loss_fn = losses.BinaryCrossEntropy(pos_weight=2.0, label_smoothing=0.1, reduction="sum")
    leaves, treedef = jax.tree_util.tree_flatten(loss_fn)
    assert leaves == [2.0, 0.1]
    rebuilt = jax.tree_util.tree_unflatten(treedef, [3.0, 0.0])
    assert rebuilt.pos_weight == 3.0 and rebuilt.reduction == "sum"


def test_config_can_be_learned():
    # d(loss)/d(gamma) flows through the callable's pytree leaves.
    def loss_of(loss_fn):
        return loss_fn(X, Y)

    grads = jax.grad(loss_of)(losses.FocalLoss(alpha=0.25, gamma=jnp.float32(2.0)))
    assert isinstance(grads, losses.FocalLoss)
    assert np.isfinite(grads.gamma) and grads.gamma < 0  # larger gamma, smaller loss


@pytest.mark.parametrize(
    "loss_fn, shape, labels",
    [
        (bcejax.losses.CategoricalCrossEntropy(), (0, 5), np.zeros(0, np.int32)),
        (bcejax.losses.CategoricalCrossEntropy(), (0, 5), np.zeros((0, 5), np.float32)),
        (bcejax.losses.LovaszHinge(), (0, 3, 3), np.zeros((0, 3, 3), np.float32)),
        (bcejax.losses.LovaszHinge(per_image=False), (0, 3, 3), np.zeros((0, 3, 3), np.float32)),
        (bcejax.losses.DiceLoss(), (0, 3, 3), np.zeros((0, 3, 3), np.float32)),
    ],
    ids=["integer", "one-hot", "lovasz", "lovasz-batch", "dice"],
)
def test_an_empty_batch_sums_to_zero(loss_fn, shape, labels):
    # Found by fuzzing: a batch of 0 examples (every weight 0, repeated) failed with
    # "integer modulo by zero" in a reshape to (0, -1).
    logits = np.zeros(shape, np.float32)
    assert float(dataclasses.replace(loss_fn, reduction="sum")(logits, labels)) == 0.0
    assert float(jax.jit(lambda x, y: loss_fn(x, y))(logits, labels)) == 0.0
