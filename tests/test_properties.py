"""One property suite that every public loss runs through.

A loss joins the suite with one line in ``LOSSES``: its name, the function,
whether it takes logits or probabilities, and the config to call it with.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import re

import helpers
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


def jit_value_and_grad(loss_fn, preds, labels):
    """The callable's value through jit as an argument, checked against the eager one,
    and its gradient, checked finite."""
    value = jax.jit(lambda fn, p, y: fn(p, y))(loss_fn, preds, labels)
    np.testing.assert_allclose(value, loss_fn(preds, labels), rtol=1e-5)
    grad = jax.grad(lambda p: loss_fn(p, labels))(preds)
    assert np.all(np.isfinite(grad))
    return value, grad


def assert_jit_equals_eager(f, preds, labels):
    np.testing.assert_allclose(jax.jit(f)(preds, labels), f(preds, labels), rtol=1e-6)


def assert_float64_stays_float64(fn, config, preds, labels):
    """Float64 inputs give float64, float32 ones float32: a float32 config never promotes."""
    config = {k: np.asarray(v, np.float32) for k, v in config.items()}
    assert call(fn, config)(preds, labels).dtype == jnp.float64
    assert call(fn, config)(preds.astype(np.float32), labels).dtype == jnp.float32


def assert_half_close_to_float32(f, preds, labels, dtype, *, bfloat16_tol):
    """``f`` in ``dtype`` is close to ``f`` of the same values in float32; its gradient
    keeps ``dtype`` and is finite."""
    half = jnp.asarray(preds, dtype)
    out = f(half, labels)
    assert out.dtype == dtype
    reference = f(np.asarray(half, np.float32), labels)
    tol = bfloat16_tol if dtype == jnp.bfloat16 else 2e-3
    np.testing.assert_allclose(np.asarray(out, np.float32), reference, rtol=tol, atol=tol)
    grad = jax.grad(lambda p: jnp.sum(f(p, labels)).astype(jnp.float32))(half)
    assert grad.dtype == dtype and np.all(np.isfinite(np.asarray(grad, np.float32)))


@pytest.mark.parametrize("name, fn, kind, config", LOSSES, ids=ids)
def test_jit_equals_eager(name, fn, kind, config):
    assert_jit_equals_eager(call(fn, config), *make_inputs(kind))


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
    assert_half_close_to_float32(call(fn, config), preds, labels, dtype, bfloat16_tol=1e-2)


@pytest.mark.parametrize("name, fn, kind, config", LOSSES, ids=ids)
def test_jacfwd_equals_jacrev(name, fn, kind, config):
    preds, labels = make_inputs(kind, shape=(4, 3), dtype=np.float64)

    def f(p, y):
        return call(fn, config)(p, y)

    for argnum in (0, 1):  # compiled whole: much faster than op-by-op
        forward = jax.jit(jax.jacfwd(f, argnums=argnum))(preds, labels)
        reverse = jax.jit(jax.jacrev(f, argnums=argnum))(preds, labels)
        np.testing.assert_allclose(forward, reverse, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        jax.jit(jax.hessian(lambda p: jnp.sum(f(p, labels))))(preds),
        jax.jit(jax.jacrev(jax.jacfwd(lambda p: jnp.sum(f(p, labels)))))(preds),
        rtol=1e-10,
        atol=1e-12,
    )


@pytest.mark.parametrize("name, fn, kind, config", LOSSES, ids=ids)
def test_float64_stays_float64(name, fn, kind, config):
    assert_float64_stays_float64(fn, config, *make_inputs(kind, dtype=np.float64))


@pytest.mark.parametrize("name, loss_fn, kind", CALLABLES, ids=callable_ids)
def test_callable_where_equals_slicing(name, loss_fn, kind):
    preds, labels = make_inputs(kind)
    mask = np.random.default_rng(2).uniform(size=preds.shape) < 0.5
    np.testing.assert_allclose(
        loss_fn(preds, labels, where=mask), loss_fn(preds[mask], labels[mask]), rtol=1e-6
    )


@pytest.mark.parametrize("name, loss_fn, kind", CALLABLES, ids=callable_ids)
def test_callable_jit_and_grad(name, loss_fn, kind):
    jit_value_and_grad(loss_fn, *make_inputs(kind))


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


# Per-example and per-image losses: the leading axis indexes examples (images).
# Each kind of input says what the labels are: soft distributions over the last
# axis, integer classes, binary images, or signed targets.
PER_EXAMPLE = [
    ("softmax_ce", bcejax.softmax_cross_entropy, "soft", {}),
    (
        "softmax_ce_full",
        bcejax.softmax_cross_entropy,
        "soft",
        dict(label_smoothing=0.1, class_weights=np.array([1.0, 2.0, 0.5, 1.0, 3.0], np.float32)),
    ),
    ("softmax_ce_int", bcejax.softmax_cross_entropy_with_integer_labels, "integer", {}),
    (
        "softmax_ce_int_full",
        bcejax.softmax_cross_entropy_with_integer_labels,
        "integer",
        dict(label_smoothing=0.2, class_weights=np.arange(1, 6, dtype=np.float32)),
    ),
    ("softmax_focal", bcejax.softmax_focal_loss, "integer", dict(gamma=2.0, alpha=0.5)),
    ("softmax_focal_frac", bcejax.softmax_focal_loss, "integer", dict(gamma=0.5)),
    ("poly_ce", bcejax.poly_loss_cross_entropy, "soft", dict(epsilon=2.0)),
    ("hinge", bcejax.hinge_loss, "signed", {}),
    ("dice", bcejax.dice_loss, "image", {}),
    ("dice_probs", bcejax.dice_loss, "image_probs", dict(from_logits=False, smooth=0.5)),
    ("jaccard", bcejax.jaccard_loss, "image", {}),
    ("tversky", bcejax.tversky_loss, "image", dict(alpha=0.4, beta=0.6)),
    ("lovasz", bcejax.lovasz_hinge, "image", {}),
    ("lovasz_probs", bcejax.lovasz_hinge, "image_probs", dict(from_logits=False)),
    ("bce_dice", bcejax.sigmoid_bce_dice_loss, "image", dict(dice_weight=0.5)),
]

per_example_ids = [name for name, *_ in PER_EXAMPLE]


def make_examples(kind, batch=6, dtype=np.float32, seed=0):
    """``(predictions, labels)`` with ``batch`` examples along the leading axis."""
    rng = np.random.default_rng(seed)
    if kind in ("image", "image_probs"):
        logits = rng.normal(0, 2, (batch, 5, 3))
        labels = (rng.uniform(size=logits.shape) < 0.3).astype(dtype)
        preds = logits if kind == "image" else 1 / (1 + np.exp(-logits))
        return preds.astype(dtype), labels
    if kind == "signed":
        return rng.normal(0, 2, (batch, 3)).astype(dtype), rng.choice([-1.0, 1.0], (batch, 3))
    logits = rng.normal(0, 3, (batch, 5)).astype(dtype)
    if kind == "integer":
        return logits, rng.integers(0, 5, batch)
    return logits, rng.dirichlet(np.ones(5), batch).astype(dtype)


def _batch_mask(kind, mask):
    """A mask over the examples, shaped to broadcast against the predictions."""
    return mask[:, None, None] if kind.startswith("image") else mask


@pytest.mark.parametrize("name, fn, kind, config", PER_EXAMPLE, ids=per_example_ids)
def test_per_example_shape_dtype_and_independence(name, fn, kind, config):
    preds, labels = make_examples(kind)
    out = call(fn, config)(preds, labels)
    batch_shape = preds.shape if kind == "signed" else preds.shape[:1]
    assert out.shape == batch_shape and out.dtype == preds.dtype
    # Each example's loss depends on that example alone, wherever it sits in the batch.
    order = np.random.default_rng(4).permutation(len(preds))
    np.testing.assert_allclose(call(fn, config)(preds[order], labels[order]), out[order], rtol=1e-6)
    single = np.stack([call(fn, config)(preds[i : i + 1], labels[i : i + 1])[0] for i in range(2)])
    np.testing.assert_allclose(out[:2], single, rtol=1e-6)


@pytest.mark.parametrize("name, fn, kind, config", PER_EXAMPLE, ids=per_example_ids)
def test_per_example_jit_equals_eager(name, fn, kind, config):
    assert_jit_equals_eager(call(fn, config), *make_examples(kind))


@pytest.mark.parametrize("name, fn, kind, config", PER_EXAMPLE, ids=per_example_ids)
def test_per_example_vmap_equals_loop(name, fn, kind, config):
    batches = [make_examples(kind, seed=s) for s in (0, 1)]
    preds = np.stack([p for p, _ in batches])
    labels = np.stack([y for _, y in batches])
    f = call(fn, config)
    looped = np.stack([f(p, y) for p, y in batches])
    np.testing.assert_allclose(jax.vmap(f)(preds, labels), looped, rtol=1e-6)


@pytest.mark.parametrize(
    "name, fn, kind, config",
    [entry for entry in PER_EXAMPLE if entry[2] != "signed"],
    ids=[name for name, *_, kind, _ in PER_EXAMPLE if kind != "signed"],
)
def test_per_example_where_equals_slicing(name, fn, kind, config):
    preds, labels = make_examples(kind)
    mask = np.array([True, False, True, True, False, True])
    dropped = ~mask.reshape(-1, *[1] * (preds.ndim - 1))
    preds = np.where(dropped, np.nan, preds).astype(preds.dtype)  # must not leak
    f = call(fn, config)
    out = f(preds, labels, where=_batch_mask(kind, mask))
    np.testing.assert_allclose(out[mask], f(preds[mask], labels[mask]), rtol=1e-6)
    assert np.all(np.asarray(out)[~mask] == 0)
    grad = jax.grad(lambda p: jnp.sum(f(p, labels, where=_batch_mask(kind, mask))))(preds)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~mask] == 0)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name, fn, kind, config", PER_EXAMPLE, ids=per_example_ids)
def test_per_example_half_precision_close_to_float32(name, fn, kind, config, dtype):
    preds, labels = make_examples(kind)
    if kind == "image_probs":
        preds = np.clip(preds, 0.01, 0.99)
    assert_half_close_to_float32(call(fn, config), preds, labels, dtype, bfloat16_tol=2e-2)


@pytest.mark.parametrize("name, fn, kind, config", PER_EXAMPLE, ids=per_example_ids)
def test_per_example_derivatives(name, fn, kind, config):
    preds, labels = make_examples(kind, batch=3, dtype=np.float64)

    def total(p):
        return jnp.sum(call(fn, config)(p, labels))

    # Each transform compiled whole (jit): op-by-op dispatch of these would compile
    # every small op on its own, which is most of the time of an eager run.
    f = call(fn, config)
    np.testing.assert_allclose(
        jax.jit(jax.jacfwd(f))(preds, labels),
        jax.jit(jax.jacrev(f))(preds, labels),
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        jax.jit(jax.hessian(total))(preds),
        jax.jit(jax.jacrev(jax.jacfwd(total)))(preds),
        rtol=1e-9,
        atol=1e-12,
    )
    # Central differences in float64 (Lovász and hinge are piecewise linear: no kink here).
    grad = np.asarray(jax.jit(jax.grad(total))(preds)).ravel()
    total = jax.jit(total)
    h = 1e-6
    for i in np.random.default_rng(5).choice(preds.size, 6, replace=False):
        step = np.zeros(preds.size)
        step[i] = h
        step = step.reshape(preds.shape)
        numeric = (total(preds + step) - total(preds - step)) / (2 * h)
        np.testing.assert_allclose(grad[i], numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name, fn, kind, config", PER_EXAMPLE, ids=per_example_ids)
def test_per_example_float64_stays_float64(name, fn, kind, config):
    assert_float64_stays_float64(fn, config, *make_examples(kind, dtype=np.float64))


PER_EXAMPLE_CALLABLES = [
    ("CategoricalCrossEntropy", bcejax.losses.CategoricalCrossEntropy(), "integer"),
    (
        "CategoricalCrossEntropy_onehot",
        bcejax.losses.CategoricalCrossEntropy(
            label_smoothing=0.1, class_weights=np.array([1.0, 2.0, 0.5, 1.0, 3.0], np.float32)
        ),
        "soft",
    ),
    ("DiceLoss", bcejax.losses.DiceLoss(), "image"),
    ("JaccardLoss", bcejax.losses.JaccardLoss(smooth=0.5), "image"),
    ("TverskyLoss", bcejax.losses.TverskyLoss(), "image"),
    ("LovaszHinge", bcejax.losses.LovaszHinge(), "image"),
    ("BCE+Dice", bcejax.losses.BinaryCrossEntropy() + bcejax.losses.DiceLoss(), "image"),
]

per_example_callable_ids = [name for name, *_ in PER_EXAMPLE_CALLABLES]


@pytest.mark.parametrize("name, loss_fn, kind", PER_EXAMPLE_CALLABLES, ids=per_example_callable_ids)
def test_per_example_callable_where_equals_slicing(name, loss_fn, kind):
    preds, labels = make_examples(kind)
    mask = np.array([True, False, True, True, False, True])
    np.testing.assert_allclose(
        loss_fn(preds, labels, where=_batch_mask(kind, mask)),
        loss_fn(preds[mask], labels[mask]),
        rtol=1e-6,
    )


@pytest.mark.parametrize("name, loss_fn, kind", PER_EXAMPLE_CALLABLES, ids=per_example_callable_ids)
def test_per_example_callable_weight_equals_repeats(name, loss_fn, kind):
    preds, labels = make_examples(kind)
    counts = np.array([1, 2, 3, 0, 1, 4])
    terms = loss_fn.terms if isinstance(loss_fn, bcejax.losses.SumOfLosses) else ((1, loss_fn),)
    for _, term in terms:
        summed = dataclasses.replace(term, reduction="sum")
        weights = _batch_mask(kind, counts.astype(np.float32))
        np.testing.assert_allclose(
            summed(preds, labels, weights=weights),
            summed(np.repeat(preds, counts, 0), np.repeat(labels, counts, 0)),
            rtol=1e-5,
        )


@pytest.mark.parametrize("name, loss_fn, kind", PER_EXAMPLE_CALLABLES, ids=per_example_callable_ids)
def test_per_example_callable_jit_and_grad(name, loss_fn, kind):
    _, grad = jit_value_and_grad(loss_fn, *make_examples(kind))
    assert np.any(grad != 0)


# ---------------------------------------------------------------------------
# Losses of a whole batch (one scalar): the same properties where they apply.
# ---------------------------------------------------------------------------


def _linear_head(x, y):
    """The fused head with features ``x``, weight ``y.T`` and fixed soft labels."""
    labels = np.eye(len(x)) * 0.8 + 0.1
    return bcejax.sigmoid_binary_cross_entropy_with_linear(x, y.T, None, labels, chunk_size=4)


def _lm_head(x, y):
    """The language-model head with features ``x``, weight ``y.T`` and fixed classes."""
    classes = np.arange(len(x)) % y.shape[0]
    return bcejax.softmax_cross_entropy_with_linear(x, y.T, None, classes, chunk_size=4)


def _soft_labels(y):
    """Soft labels in ``(0, 1)`` from the second input, so that they are differentiable."""
    return jax.nn.sigmoid(y)


BATCH_LEVEL = [
    (
        "siglip",
        functools.partial(bcejax.sigmoid_contrastive_loss, logit_scale=4.0, logit_bias=-1.0),
    ),
    ("linear_head", _linear_head),
    ("lm_head", _lm_head),
    ("soft_fbeta", lambda x, y: bcejax.soft_fbeta_loss(x, _soft_labels(y), beta=2.0)),
    ("ghm", lambda x, y: bcejax.sigmoid_ghm_loss(x, _soft_labels(y), bins=4)[0].mean()),
    (
        "ohem",
        lambda x, y: bcejax.ohem_reduce(
            bcejax.sigmoid_binary_cross_entropy(x, _soft_labels(y)), top_k=0.5
        ),
    ),
]
batch_level_ids = [name for name, _ in BATCH_LEVEL]


def batch_inputs(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6, 4)) / 2
    return x.astype(dtype), (x + 0.3 * rng.normal(size=(6, 4))).astype(dtype)


@pytest.mark.parametrize("name, fn", BATCH_LEVEL, ids=batch_level_ids)
def test_batch_level_jit_equals_eager_and_dtypes(name, fn):
    x, y = batch_inputs()
    value = fn(x, y)
    assert value.shape == () and value.dtype == np.float32
    np.testing.assert_allclose(jax.jit(fn)(x, y), value, rtol=1e-6)
    assert fn(*batch_inputs(np.float64)).dtype == np.float64
    for dtype in (jnp.bfloat16, jnp.float16):
        half = fn(jnp.asarray(x, dtype), jnp.asarray(y, dtype))
        assert half.dtype == dtype
        np.testing.assert_allclose(float(half), float(value), rtol=2e-2)


# Reverse mode only: the language-model head's hand-written rule is a custom_vjp.
REVERSE_ONLY = {"lm_head"}


@pytest.mark.parametrize("name, fn", BATCH_LEVEL, ids=batch_level_ids)
def test_batch_level_derivatives(name, fn):
    x, y = batch_inputs(np.float64)
    reverse = jax.jit(jax.jacrev(fn, argnums=(0, 1)))(x, y)
    if name not in REVERSE_ONLY:
        forward = jax.jit(jax.jacfwd(fn, argnums=(0, 1)))(x, y)
        for a, b in zip(forward, reverse, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        hessian = jax.jit(jax.hessian(fn))(x, y)
        assert hessian.shape == x.shape * 2 and np.all(np.isfinite(hessian))
    h = 1e-6
    step = np.zeros_like(x)
    step[2, 1] = h
    finite = (fn(x + step, y) - fn(x - step, y)) / (2 * h)
    np.testing.assert_allclose(reverse[0][2, 1], finite, rtol=1e-7)


BATCH_CALLABLES = [
    ("SoftFBetaLoss", bcejax.losses.SoftFBetaLoss()),
    ("SoftFBetaLoss_macro", bcejax.losses.SoftFBetaLoss(beta=2.0, average="macro")),
    ("LovaszHinge_batch", bcejax.losses.LovaszHinge(per_image=False)),
]
batch_callable_ids = [name for name, _ in BATCH_CALLABLES]


@pytest.mark.parametrize("name, loss_fn", BATCH_CALLABLES, ids=batch_callable_ids)
def test_batch_callable_where_equals_slicing_jit_and_grad(name, loss_fn):
    preds, labels = make_examples("image")
    mask = np.array([True, False, True, True, False, True])
    where = np.broadcast_to(mask.reshape(-1, *[1] * (preds.ndim - 1)), preds.shape)
    np.testing.assert_allclose(
        loss_fn(preds, labels, where=where), loss_fn(preds[mask], labels[mask]), rtol=1e-6
    )
    value, grad = jit_value_and_grad(loss_fn, preds, labels)
    assert value.shape == ()
    assert np.any(grad != 0)


def _names_called(fn):
    """The names a registry entry calls: a function, a partial of one, or a small wrapper."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return {fn.__name__, *fn.__code__.co_names}


def test_every_loss_function_is_in_a_registry():
    """Adding a loss function means adding its line to a registry here, which runs it
    through the suite (tests/test_export.py reads LOSSES and PER_EXAMPLE too)."""
    entries = [fn for _, fn, *_ in LOSSES + PER_EXAMPLE + BATCH_LEVEL]
    registered = set().union(*map(_names_called, entries))
    missing = sorted(set(helpers.loss_functions()) - registered)
    assert not missing, f"add these to LOSSES, PER_EXAMPLE or BATCH_LEVEL: {missing}"


def test_every_callable_is_in_a_registry():
    """Adding a callable means adding its line here, which runs it through the suite."""
    registered = {type(fn) for _, fn, _ in CALLABLES + PER_EXAMPLE_CALLABLES}
    registered |= {type(fn) for _, fn in BATCH_CALLABLES}
    registered |= {
        type(term)
        for _, fn, _ in CALLABLES + PER_EXAMPLE_CALLABLES
        if isinstance(fn, bcejax.losses.SumOfLosses)
        for _, term in fn.terms
    }
    public = {
        getattr(bcejax.losses, name)
        for name in bcejax.losses.__all__
        if isinstance(getattr(bcejax.losses, name), type)
        and issubclass(getattr(bcejax.losses, name), bcejax.losses.Loss)
    }
    assert public - {bcejax.losses.Loss} <= registered | {bcejax.losses.SumOfLosses}
    for cls in public:
        assert "__call__" not in vars(cls) or cls is bcejax.losses.Loss
        if isinstance(cls.level, property):  # chosen by the config (LovaszHinge's per_image)
            continue
        assert cls.level in bcejax.losses.LEVELS or cls is bcejax.losses.SumOfLosses


# ---------------------------------------------------------------------------
# Each input is checked once: at the public function's door, never again by a
# helper or by the function a callable passes it on to.
# ---------------------------------------------------------------------------


def _checks_traced(fn, *args):
    """The value checks in the program of ``fn(*args)``, one string for each check made."""
    return re.findall(r"bcejax_check\[check=(.*?)\]", str(jax.make_jaxpr(fn)(*args)))


def _assert_each_checked_once(fn, *args):
    made = _checks_traced(fn, *args)
    assert made, "no value is checked"
    repeated = {c: n for c, n in collections.Counter(made).items() if n > 1}
    assert not repeated, f"checked more than once: {repeated}"


@pytest.mark.parametrize("name, fn, kind, config", LOSSES, ids=ids)
def test_each_input_is_checked_once(name, fn, kind, config):
    preds, labels = make_inputs(kind)
    config = {"weights": np.ones_like(preds), **config}
    _assert_each_checked_once(call(fn, config), preds, labels)


@pytest.mark.parametrize("name, fn, kind, config", PER_EXAMPLE, ids=per_example_ids)
def test_each_input_is_checked_once_per_example(name, fn, kind, config):
    preds, labels = make_examples(kind)
    keep = _batch_mask(kind, np.array([True, False, True, True, False, True]))
    if "where" in inspect.signature(fn).parameters:
        config = {"where": np.broadcast_to(keep, preds.shape[: keep.ndim]), **config}
    _assert_each_checked_once(call(fn, config), preds, labels)


@pytest.mark.parametrize(
    "name, loss_fn, kind",
    [c for c in CALLABLES + PER_EXAMPLE_CALLABLES if len(getattr(c[1], "terms", ())) < 2],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_each_input_is_checked_once_by_a_callable(name, loss_fn, kind):
    preds, labels = make_inputs(kind) if kind in ("logits", "probs") else make_examples(kind)
    weights = np.ones(preds.shape[:1] if kind in ("integer", "soft") else preds.shape, np.float32)
    if kind.startswith("image"):
        weights = weights[:, :1, :1]
    _assert_each_checked_once(
        lambda p, y: loss_fn(p, y, weights=weights, where=weights > 0), preds, labels
    )


@pytest.mark.parametrize("name, fn", BATCH_LEVEL, ids=batch_level_ids)
def test_each_input_is_checked_once_batch_level(name, fn):
    _assert_each_checked_once(fn, *batch_inputs())
