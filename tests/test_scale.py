"""bcejax.scale: the SigLIP sigmoid contrastive loss, dense and around a ring of devices.

* The dense loss against a float64 NumPy reference, values and gradients (closed form).
* Inside ``shard_map`` on 4 simulated devices (this process) and 8 (a subprocess with its
  own ``XLA_FLAGS``): value and gradients equal to the dense loss's.
* The sharded program holds blocks of local size only, never the global logits.
* Dtypes, bad shapes.
"""

from __future__ import annotations

import textwrap

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import bcejax

B, D = 16, 8


def problem(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, D)) / np.sqrt(D)
    y = x + 0.5 * rng.normal(size=(B, D)) / np.sqrt(D)  # positives alike, as after training
    return x.astype(dtype), y.astype(dtype), 3.0, -2.0


def reference(x, y, t, b):
    """Float64 loss and gradients in x, y, t, b: d loss / d logit_ij = (sigmoid - [i = j]) / B."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    logits = t * x @ y.T + b
    z = 2 * np.eye(len(x)) - 1
    loss = np.sum(np.logaddexp(0, -z * logits)) / len(x)
    g = (np.exp(-np.logaddexp(0, -logits)) - np.eye(len(x))) / len(x)
    return loss, (t * g @ y, t * g.T @ x, np.sum(g * (x @ y.T)), np.sum(g))


def loss_and_grads(fn, x, y, t, b):
    return jax.value_and_grad(fn, argnums=(0, 1, 2, 3))(x, y, t, b)


def dense(x, y, t, b):
    return bcejax.sigmoid_contrastive_loss(x, y, logit_scale=t, logit_bias=b)


def ring(n):
    def loss(x, y, t, b):
        return bcejax.sigmoid_contrastive_loss(x, y, logit_scale=t, logit_bias=b, axis_name="d")

    return jax.shard_map(
        loss, mesh=helpers.mesh(n), in_specs=(P("d"), P("d"), P(), P()), out_specs=P()
    )


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_dense_loss_and_gradients_match_the_reference(jit):
    x, y, t, b = problem()
    fn = jax.jit(dense) if jit else dense
    value, grads = loss_and_grads(fn, x, y, t, b)
    want, want_grads = reference(x, y, t, b)
    np.testing.assert_allclose(value, want, rtol=1e-13)
    for got, expected in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_extreme_logits_stay_finite_and_exact():
    x, y, _, _ = problem(1)
    value, grads = loss_and_grads(dense, x, y, 1e4, 0.0)
    want, want_grads = reference(x, y, 1e4, 0.0)
    np.testing.assert_allclose(value, want, rtol=1e-12)
    assert all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_allclose(grads[0], want_grads[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16])
def test_low_precision_inputs(dtype):
    x, y, t, b = problem(2)
    value = dense(jnp.asarray(x, dtype), jnp.asarray(y, dtype), t, b)
    assert value.dtype == dtype
    rtol = 1e-5 if dtype == np.float32 else 2e-2
    np.testing.assert_allclose(float(value), reference(x, y, t, b)[0], rtol=rtol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ring_of_four_devices_equals_the_dense_loss(dtype):
    x, y, t, b = problem(3, dtype)
    value, grads = loss_and_grads(jax.jit(ring(4)), x, y, t, b)
    dense_value, dense_grads = loss_and_grads(dense, x, y, t, b)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(value, dense_value, rtol=rtol)
    for got, expected in zip(grads, dense_grads, strict=True):
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * 1e-2)


def test_ring_never_forms_the_global_logits():
    """Inside the sharded program every logits block is local: (4, 4), never (16, 16)."""
    x, y, t, b = problem(4, np.float32)
    text = jax.jit(jax.grad(ring(4), argnums=(0, 1))).lower(x, y, t, b).compile().as_text()
    assert "f32[4,4]" in text
    assert "[16,16]" not in text
    assert "[16,16]" in jax.jit(jax.grad(dense)).lower(x, y, t, b).compile().as_text()


def test_ring_of_eight_devices_in_a_subprocess():
    script = textwrap.dedent(
        """
        import jax
        jax.config.update("jax_enable_x64", True)
        import numpy as np
        import test_scale as t

        x, y, s, b = t.problem(5)
        value, grads = t.loss_and_grads(jax.jit(t.ring(8)), x, y, s, b)
        want, want_grads = t.loss_and_grads(t.dense, x, y, s, b)
        np.testing.assert_allclose(value, want, rtol=1e-12)
        for got, expected in zip(grads, want_grads, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
        print("ok", jax.device_count())
        """
    )
    helpers.run_on_devices(script, 8)


def test_bad_shapes():
    x, y, t, b = problem()
    with pytest.raises(ValueError, match=r"equal shapes, got \(16, 8\) and \(15, 8\)"):
        dense(x, y[:15], t, b)
    with pytest.raises(ValueError, match="must both be \\(batch, dim\\)"):
        dense(x[0], y[0], t, b)
    with pytest.raises(TypeError, match="x_emb must have a floating dtype"):
        dense(x.astype(np.int32), y, t, b)


# ---------------------------------------------------------------------------
# The fused classifier head and its BCE.
# ---------------------------------------------------------------------------


def head_problem(seed=0, batch=8, dim=5, labels=10, k=3):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(batch, dim))
    w = rng.normal(size=(dim, labels))
    b = rng.normal(size=labels)
    indices = rng.integers(-1, labels, (batch, k))
    dense_labels = np.zeros((batch, labels))
    for row, cols in enumerate(indices):
        dense_labels[row, cols[cols >= 0]] = 1.0
    return f, w, b, indices, dense_labels


def fused(labels=None, **kwargs):
    def loss(f, w, b):
        return bcejax.sigmoid_binary_cross_entropy_with_linear(f, w, b, labels, **kwargs)

    return loss


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 10, 64])
@pytest.mark.parametrize("given", ["dense", "indices"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_head_equals_the_materialized_bce(chunk_size, given, reduction):
    """Chunks that do not divide the labels (the last overlaps) included; with pos_weight."""
    f, w, b, indices, y = head_problem()
    pw = np.linspace(0.5, 2.0, 10)
    kwargs = dict(pos_weight=pw, reduction=reduction, chunk_size=chunk_size)
    if given == "dense":
        loss = fused(y, **kwargs)
    else:
        loss = fused(positive_indices=indices, **kwargs)
    callable_ = bcejax.losses.BinaryCrossEntropy(pos_weight=pw, reduction=reduction)

    def naive(f, w, b):
        return callable_(f @ w + b, y)

    value, grads = loss_and_grads_head(jax.jit(loss), f, w, b)
    want, want_grads = loss_and_grads_head(naive, f, w, b)
    np.testing.assert_allclose(value, want, rtol=1e-13)
    for got, expected in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def loss_and_grads_head(fn, f, w, b):
    return jax.value_and_grad(fn, argnums=(0, 1, 2))(f, w, b)


def test_linear_head_forward_mode_and_soft_labels():
    f, w, b, _, y = head_problem(1)
    soft = 0.8 * y + 0.1
    loss = fused(soft, chunk_size=4)

    def naive(f, w, b):
        return bcejax.losses.BinaryCrossEntropy()(f @ w + b, soft)

    np.testing.assert_allclose(jax.jacfwd(loss)(f, w, b), jax.grad(naive)(f, w, b), rtol=1e-12)
    label_grad = jax.grad(
        lambda s: bcejax.sigmoid_binary_cross_entropy_with_linear(f, w, b, s, chunk_size=4)
    )(soft)
    want = jax.grad(lambda s: bcejax.losses.BinaryCrossEntropy()(f @ w + b, s))(soft)
    np.testing.assert_allclose(label_grad, want, rtol=1e-12)


def test_linear_head_keeps_memory_to_a_chunk():
    """The compiled value_and_grad's scratch memory: a fraction of the materialized path's."""
    rng = np.random.default_rng(2)
    f = rng.normal(size=(256, 32)).astype(np.float32)
    w = (0.1 * rng.normal(size=(32, 8192))).astype(np.float32)
    b = np.zeros(8192, np.float32)
    indices = rng.integers(-1, 8192, (256, 4)).astype(np.int32)
    y = np.zeros((256, 8192), np.float32)
    for row, cols in enumerate(indices):
        y[row, cols[cols >= 0]] = 1.0
    loss = fused(positive_indices=indices, chunk_size=512)

    def naive(f, w, b):
        return bcejax.losses.BinaryCrossEntropy()(f @ w + b, y)

    def scratch(fn):
        compiled = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2))).lower(f, w, b).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    logits_bytes = 256 * 8192 * 4
    assert scratch(naive) >= 2 * logits_bytes  # the logits and their gradient, at least
    assert scratch(loss) < logits_bytes / 2
    np.testing.assert_allclose(loss(f, w, b), naive(f, w, b), rtol=1e-5)


def test_linear_head_bad_inputs():
    f, w, b, indices, y = head_problem()
    with pytest.raises(ValueError, match="must share dim"):
        bcejax.sigmoid_binary_cross_entropy_with_linear(f, w.T, b, y)
    with pytest.raises(ValueError, match="not both"):
        bcejax.sigmoid_binary_cross_entropy_with_linear(f, w, b, y, positive_indices=indices)
    with pytest.raises(ValueError, match="not both"):
        bcejax.sigmoid_binary_cross_entropy_with_linear(f, w, b)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        bcejax.sigmoid_binary_cross_entropy_with_linear(f, w, b, y, reduction="none")
    with pytest.raises(ValueError, match=r"bias must have shape \(10,\)"):
        bcejax.sigmoid_binary_cross_entropy_with_linear(f, w, b[:3], y)
    with pytest.raises(ValueError, match=r"labels must have shape \(8, 10\)"):
        bcejax.sigmoid_binary_cross_entropy_with_linear(f, w, b, y[:, :4])
    with pytest.raises(bcejax.InvalidInputError, match="positive_indices"):
        bcejax.sigmoid_binary_cross_entropy_with_linear(f, w, b, positive_indices=indices + 10)
    with pytest.raises(TypeError, match="positive_indices must have an integer dtype"):
        bcejax.sigmoid_binary_cross_entropy_with_linear(
            f, w, b, positive_indices=indices.astype(float)
        )
    with pytest.raises(bcejax.InvalidInputError, match="labels must be in"):
        bcejax.sigmoid_binary_cross_entropy_with_linear(f, w, b, 255 * y)


@pytest.mark.parametrize("operand", ["features", "weight"])
@pytest.mark.parametrize("head", ["sigmoid", "softmax"])
def test_heads_name_nan_features_and_weights(head, operand):
    f, w, b, _, y = head_problem()
    (f if operand == "features" else w)[2, 1] = np.nan
    if head == "sigmoid":
        fn, labels = bcejax.sigmoid_binary_cross_entropy_with_linear, y
    else:
        fn, labels = bcejax.softmax_cross_entropy_with_linear, np.arange(f.shape[0]) % w.shape[1]
    with pytest.raises(bcejax.InvalidInputError, match=f"NaN in {operand}: the model has diverged"):
        fn(f, w, b, labels)
    with pytest.raises(bcejax.InvalidInputError, match=f"NaN in {operand}"):
        bcejax.checked(jax.jit(fn))(f, w, b, labels)
