"""reduce_loss semantics, and exact global means across 4 simulated devices."""

from __future__ import annotations

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import bcejax

RNG = np.random.default_rng(0)
LOSS = RNG.uniform(0, 3, (16, 3)).astype(np.float32)
# Uneven masks: the four shards of 4 rows hold 0, 3, 9 and 12 valid entries.
MASK = np.zeros((16, 3), bool)
MASK[4:5] = True
MASK[8:11] = True
MASK[12:16] = True
WEIGHTS = RNG.uniform(0.5, 2, (16, 3)).astype(np.float32)


def test_mean_sum_none():
    np.testing.assert_allclose(bcejax.reduce_loss(LOSS), LOSS.mean(), rtol=1e-6)
    np.testing.assert_allclose(bcejax.reduce_loss(LOSS, "sum"), LOSS.sum(), rtol=1e-6)
    np.testing.assert_array_equal(bcejax.reduce_loss(LOSS, "none"), LOSS)


def test_mean_divides_by_unmasked_count_not_weights():
    out = bcejax.reduce_loss(LOSS, "mean", where=MASK, weights=WEIGHTS)
    np.testing.assert_allclose(out, (LOSS * WEIGHTS)[MASK].sum() / MASK.sum(), rtol=1e-6)


def test_axis():
    out = bcejax.reduce_loss(LOSS, "mean", where=MASK, axis=0)
    expected = (LOSS * MASK).sum(0) / MASK.sum(0)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(bcejax.reduce_loss(LOSS, "mean", axis=(0, 1)), LOSS.mean(), 1e-6)


def test_none_zeroes_masked_entries_even_if_nan():
    loss = np.where(MASK, LOSS, np.nan).astype(np.float32)
    np.testing.assert_array_equal(bcejax.reduce_loss(loss, "none", where=MASK), LOSS * MASK)
    np.testing.assert_allclose(bcejax.reduce_loss(loss, where=MASK), LOSS[MASK].mean(), 1e-6)
    grad = jax.grad(lambda loss: bcejax.reduce_loss(loss, where=MASK))(loss)
    np.testing.assert_allclose(grad, MASK / MASK.sum(), rtol=1e-6)


def test_no_valid_entry_gives_zero_with_zero_gradient():
    empty = np.zeros_like(MASK)
    assert bcejax.reduce_loss(LOSS, where=empty) == 0
    grad = jax.grad(lambda loss: bcejax.reduce_loss(loss, where=empty))(LOSS)
    np.testing.assert_array_equal(grad, np.zeros_like(LOSS))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32, jnp.float64])
def test_accumulates_in_float32_and_returns_input_dtype(dtype):
    # 2^12 ones: a bfloat16 accumulator would stall at 256, a float16 one at 2048.
    loss = jnp.ones((1 << 12,), dtype)
    out = bcejax.reduce_loss(loss, "sum")
    assert out.dtype == dtype
    assert float(out) == 1 << 12


def _sharded(fn, n_args):
    return jax.jit(
        jax.shard_map(
            fn, mesh=helpers.mesh(), in_specs=(P("d"),) * n_args, out_specs=P(), check_vma=True
        )
    )


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reduce_loss_axis_name_is_the_global_reduction(reduction):
    assert jax.device_count() == 4
    sharded = _sharded(
        lambda loss, m, w: bcejax.reduce_loss(loss, reduction, where=m, weights=w, axis_name="d"), 3
    )
    expected = bcejax.reduce_loss(LOSS, reduction, where=MASK, weights=WEIGHTS)
    np.testing.assert_allclose(sharded(LOSS, MASK, WEIGHTS), expected, rtol=1e-6)
    grad_sharded = jax.grad(lambda loss: sharded(loss, MASK, WEIGHTS))(LOSS)

    def single(loss):
        return bcejax.reduce_loss(loss, reduction, where=MASK, weights=WEIGHTS)

    grad_single = jax.grad(single)(LOSS)
    np.testing.assert_allclose(grad_sharded, grad_single, rtol=1e-6)


def test_mean_without_mask_counts_every_shard():
    sharded = _sharded(lambda loss: bcejax.reduce_loss(loss, axis_name="d"), 1)
    np.testing.assert_allclose(sharded(LOSS), LOSS.mean(), rtol=1e-6)


CALLABLES = [
    bcejax.losses.BinaryCrossEntropy(pos_weight=2.0, label_smoothing=0.1),
    bcejax.losses.FocalLoss(),
    bcejax.losses.AsymmetricLoss(),
    bcejax.losses.Poly1Loss(),
    bcejax.losses.BinaryCrossEntropy() + 0.5 * bcejax.losses.FocalLoss(gamma=1.5),
]


@pytest.mark.parametrize("loss_fn", CALLABLES, ids=lambda f: type(f).__name__)
def test_callables_in_shard_map_equal_single_device(loss_fn):
    logits = RNG.normal(0, 2, (16, 3)).astype(np.float32)
    labels = (RNG.uniform(size=(16, 3)) < 0.4).astype(np.float32)

    sharded = _sharded(lambda x, y, m, w: loss_fn(x, y, where=m, weights=w, axis_name="d"), 4)
    single = lambda x: loss_fn(x, labels, where=MASK, weights=WEIGHTS)  # noqa: E731
    np.testing.assert_allclose(sharded(logits, labels, MASK, WEIGHTS), single(logits), rtol=1e-6)
    grad_sharded = jax.grad(lambda x: sharded(x, labels, MASK, WEIGHTS))(logits)
    np.testing.assert_allclose(grad_sharded, jax.grad(single)(logits), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("check_vma", [True, False])
def test_gradient_inside_shard_map(check_vma):
    """The README's pattern: a gradient inside shard_map is exact with check_vma=True.

    With check_vma=False JAX transposes the psum of the reduction into another
    psum, and the gradient taken inside comes out n times too large (n = 4
    devices here); taken outside the shard_map it is exact in both modes.
    """
    x = RNG.normal(size=(16, 3)).astype(np.float32)
    y = (RNG.random((16, 3)) < 0.5).astype(np.float32)

    def local_mean(x, y):
        loss = bcejax.sigmoid_binary_cross_entropy(x, y)
        return bcejax.reduce_loss(loss, axis_name="d")

    inside = helpers.sharded_grad(local_mean, check_vma)(x, y)
    outside = jax.grad(
        jax.shard_map(
            local_mean,
            mesh=helpers.mesh(),
            in_specs=(P("d"), P("d")),
            out_specs=P(),
            check_vma=check_vma,
        )
    )(x, y)
    single = jax.grad(lambda x: bcejax.reduce_loss(bcejax.sigmoid_binary_cross_entropy(x, y)))(x)
    np.testing.assert_allclose(outside, single, rtol=1e-6)
    np.testing.assert_allclose(inside, single * (1 if check_vma else 4), rtol=1e-6)
