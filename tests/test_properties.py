"""One property suite that every public loss runs through.

A loss joins the suite with one line in ``LOSSES``: its name, the function,
whether it takes logits or probabilities, and the config to call it with.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcejax

LOSSES = [
    ("bce", bcejax.sigmoid_binary_cross_entropy, "logits", {}),
    (
        "bce_full",
        bcejax.sigmoid_binary_cross_entropy,
        "logits",
        dict(pos_weight=np.array([0.5, 2.0, 3.0], np.float32), label_smoothing=0.1),
    ),
    ("focal", bcejax.sigmoid_focal_loss, "logits", dict(alpha=0.25, gamma=2.0)),
    ("focal_frac", bcejax.sigmoid_focal_loss, "logits", dict(gamma=0.5, label_smoothing=0.05)),
    ("asymmetric", bcejax.sigmoid_asymmetric_loss, "logits", {}),
    ("asymmetric_noclip", bcejax.sigmoid_asymmetric_loss, "logits", dict(gamma_pos=1.0, clip=0.0)),
    ("poly1", bcejax.sigmoid_poly1_loss, "logits", dict(epsilon=2.0, pos_weight=1.5)),
    ("bce_probs_torch", bcejax.binary_cross_entropy, "probs", {}),
    ("bce_probs_keras", bcejax.binary_cross_entropy, "probs", dict(eps=1e-7)),
    ("focal_probs", bcejax.binary_focal_loss, "probs", dict(alpha=0.4, gamma=1.5)),
]

CALLABLES = [
    ("BinaryCrossEntropy", bcejax.losses.BinaryCrossEntropy(pos_weight=2.0), "logits"),
    ("BinaryCrossEntropy_probs", bcejax.losses.BinaryCrossEntropy(from_logits=False), "probs"),
    ("FocalLoss", bcejax.losses.FocalLoss(), "logits"),
    ("FocalLoss_probs", bcejax.losses.FocalLoss(from_logits=False, alpha=None), "probs"),
    ("AsymmetricLoss", bcejax.losses.AsymmetricLoss(), "logits"),
    ("Poly1Loss", bcejax.losses.Poly1Loss(label_smoothing=0.1), "logits"),
    ("Sum", bcejax.losses.BinaryCrossEntropy() + 0.5 * bcejax.losses.FocalLoss(), "logits"),
]

ids = [name for name, *_ in LOSSES]
callable_ids = [name for name, *_ in CALLABLES]


def make_inputs(kind, shape=(8, 3), dtype=np.float32, seed=0, soft=True):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, shape)
    preds = logits if kind == "logits" else 1 / (1 + np.exp(-logits))
    labels = rng.uniform(0, 1, shape) if soft else (rng.uniform(0, 1, shape) < 0.3)
    return preds.astype(dtype), labels.astype(dtype)


def call(fn, config):
    return functools.partial(fn, **config)


@pytest.mark.parametrize("name, fn, kind, config", LOSSES, ids=ids)
def test_jit_equals_eager(name, fn, kind, config):
    preds, labels = make_inputs(kind)
    f = call(fn, config)
    np.testing.assert_allclose(jax.jit(f)(preds, labels), f(preds, labels), rtol=1e-6)


@pytest.mark.parametrize("name, fn, kind, config", LOSSES, ids=ids)
def test_vmap_equals_loop(name, fn, kind, config):
    preds, labels = make_inputs(kind)
    f = call(fn, config)
    batched = jax.vmap(f)(preds, labels)
    looped = np.stack([f(p, y) for p, y in zip(preds, labels, strict=True)])
    np.testing.assert_allclose(batched, looped, rtol=1e-6)


@pytest.mark.parametrize("name, fn, kind, config", LOSSES, ids=ids)
def test_elementwise_shape_and_dtype(name, fn, kind, config):
    preds, labels = make_inputs(kind)
    out = call(fn, config)(preds, labels[:1])  # labels broadcast over the batch
    assert out.shape == preds.shape
    assert out.dtype == preds.dtype


@pytest.mark.parametrize("name, fn, kind, config", LOSSES, ids=ids)
def test_where_equals_slicing(name, fn, kind, config):
    preds, labels = make_inputs(kind)
    mask = np.random.default_rng(1).uniform(size=preds.shape) < 0.6
    loss = call(fn, config)(preds, labels)
    masked = bcejax.reduce_loss(loss, "mean", where=mask)
    np.testing.assert_allclose(masked, np.asarray(loss)[mask].mean(), rtol=1e-6)


@pytest.mark.parametrize("name, fn, kind, config", LOSSES, ids=ids)
def test_integer_weight_equals_repeats(name, fn, kind, config):
    preds, labels = make_inputs(kind, shape=(6, 3))
    counts = np.array([1, 2, 3, 0, 1, 4])
    weights = np.broadcast_to(counts[:, None], preds.shape).astype(np.float32)
    f = call(fn, config)
    weighted = jnp.sum(f(preds, labels, weights=weights))
    repeated = jnp.sum(f(np.repeat(preds, counts, 0), np.repeat(labels, counts, 0)))
    np.testing.assert_allclose(weighted, repeated, rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name, fn, kind, config", LOSSES, ids=ids)
def test_half_precision_close_to_float32(name, fn, kind, config, dtype):
    preds, labels = make_inputs(kind)
    if kind == "probs":  # keep probabilities representable away from the clip band
        preds = np.clip(preds, 0.01, 0.99)
    half = jnp.asarray(preds, dtype)
    f = call(fn, config)
    out = f(half, labels)
    assert out.dtype == dtype
    reference = f(np.asarray(half, np.float32), labels)
    tol = 1e-2 if dtype == jnp.bfloat16 else 2e-3
    np.testing.assert_allclose(np.asarray(out, np.float32), reference, rtol=tol, atol=tol)
    grad = jax.grad(lambda p: jnp.sum(f(p, labels)).astype(jnp.float32))(half)
    assert grad.dtype == dtype and np.all(np.isfinite(np.asarray(grad, np.float32)))


@pytest.mark.parametrize("name, fn, kind, config", LOSSES, ids=ids)
def test_jacfwd_equals_jacrev(name, fn, kind, config):
    preds, labels = make_inputs(kind, shape=(4, 3), dtype=np.float64)

    def f(p, y):
        return call(fn, config)(p, y)

    for argnum in (0, 1):
        forward = jax.jacfwd(f, argnums=argnum)(preds, labels)
        reverse = jax.jacrev(f, argnums=argnum)(preds, labels)
        np.testing.assert_allclose(forward, reverse, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        jax.hessian(lambda p: jnp.sum(f(p, labels)))(preds),
        jax.jacrev(jax.jacfwd(lambda p: jnp.sum(f(p, labels))))(preds),
        rtol=1e-10,
        atol=1e-12,
    )


@pytest.mark.parametrize("name, fn, kind, config", LOSSES, ids=ids)
def test_float64_stays_float64(name, fn, kind, config):
    preds, labels = make_inputs(kind, dtype=np.float64)
    config = {k: np.asarray(v, np.float32) for k, v in config.items()}  # config never promotes
    assert call(fn, config)(preds, labels).dtype == jnp.float64
    assert call(fn, config)(preds.astype(np.float32), labels).dtype == jnp.float32


@pytest.mark.parametrize("name, loss_fn, kind", CALLABLES, ids=callable_ids)
def test_callable_where_equals_slicing(name, loss_fn, kind):
    preds, labels = make_inputs(kind)
    mask = np.random.default_rng(2).uniform(size=preds.shape) < 0.5
    np.testing.assert_allclose(
        loss_fn(preds, labels, where=mask), loss_fn(preds[mask], labels[mask]), rtol=1e-6
    )


@pytest.mark.parametrize("name, loss_fn, kind", CALLABLES, ids=callable_ids)
def test_callable_jit_and_grad(name, loss_fn, kind):
    preds, labels = make_inputs(kind)
    value = jax.jit(lambda fn, p, y: fn(p, y))(loss_fn, preds, labels)
    np.testing.assert_allclose(value, loss_fn(preds, labels), rtol=1e-5)
    grad = jax.grad(lambda p: loss_fn(p, labels))(preds)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("fn", [bcejax.sigmoid_binary_cross_entropy, bcejax.sigmoid_focal_loss])
def test_fused_losses_are_exact_up_to_two_to_the_64(fn):
    # Wrong logits of 1e4 (loss 1e4 for BCE; focal factor 1) scaled by the weights.
    x = np.array([1e4, 1e4, np.inf], np.float32)
    y = np.zeros(3, np.float32)
    weights = np.array([1e14, 1e16, 1.0], np.float32)
    out = np.asarray(fn(x, y, weights=weights))
    np.testing.assert_allclose(out[0], 1e18, rtol=1e-6)
    assert out[1] == np.inf and out[2] == np.inf


@pytest.mark.parametrize(
    "shape, class_shape", [((256, 16), (16,)), ((64, 4, 16), (1, 16)), ((128, 4, 8), (4, 8))]
)
@pytest.mark.parametrize("fn", [bcejax.sigmoid_binary_cross_entropy, bcejax.sigmoid_focal_loss])
def test_per_class_operands_on_the_row_view(fn, shape, class_shape):
    # Sizes divisible by 1024: per-class operands are tiled along rows of the 2-D view.
    rng = np.random.default_rng(3)
    x = rng.normal(0, 3, shape).astype(np.float32)
    y = (rng.uniform(size=shape) < 0.4).astype(np.float32)
    w = rng.uniform(size=class_shape).astype(np.float32)
    full_w = np.broadcast_to(w, shape)
    np.testing.assert_allclose(fn(x, y, weights=w), fn(x, y, weights=full_w), rtol=1e-6)
    np.testing.assert_allclose(
        jax.grad(lambda x: jnp.sum(fn(x, y, weights=w)))(x),
        jax.grad(lambda x: jnp.sum(fn(x, y, weights=full_w)))(x),
        rtol=1e-6,
    )
