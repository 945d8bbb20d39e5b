"""bcejax.scale.softmax_cross_entropy_with_linear, and the sharded label axis of the sigmoid head.

* Against a float64 NumPy reference written here (the loss and its closed-form
  logit gradient), values and gradients for features, weight and bias, every
  reduction, label smoothing, z-loss and the soft-cap, chunks that do and do not
  divide the vocabulary; float32 to 1e-5.
* Equal to ``CategoricalCrossEntropy`` / ``softmax_cross_entropy_with_integer_labels``
  on the materialized logits (plus the z-loss, after the soft-cap).
* All tokens ignored, bfloat16 operands (float32 accumulation), traced and
  differentiated config, the compiled program's memory, export for every platform.
* The vocabulary sharded inside ``shard_map`` on 4 devices (this process) and 8
  (a subprocess): equal to the unsharded loss, values and gradients. The same for
  the label axis of ``sigmoid_binary_cross_entropy_with_linear``.
* Bad inputs.
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
from bcejax.scale import softmax_cross_entropy_with_linear

TOKENS, DIM, VOCAB = 12, 5, 24
IGNORE = -100

OPTIONS = {
    "plain": {},
    "smoothing": {"label_smoothing": 0.1},
    "z_loss": {"z_loss": 1e-2},
    "softcap": {"logit_softcap": 2.0},
    "all": {"label_smoothing": 0.2, "z_loss": 0.05, "logit_softcap": 1.5},
}


def problem(seed=0, tokens=TOKENS, dim=DIM, vocab=VOCAB, ignored=(1, 4)):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(tokens, dim))
    w = rng.normal(size=(dim, vocab))
    b = rng.normal(size=vocab)
    y = rng.integers(0, vocab, tokens)
    y[list(ignored)] = IGNORE
    return f, w, b, y


def reference(f, w, b, y, *, label_smoothing=0.0, z_loss=0.0, logit_softcap=None):
    """Float64 per-token loss and its gradient in the logits ``z = f @ w + b``, in NumPy."""
    f, w, b = (np.asarray(a, np.float64) for a in (f, w, b))
    a, zeta, cap = label_smoothing, z_loss, logit_softcap
    z = f @ w + b
    x = z if cap is None else cap * np.tanh(z / cap)
    m = np.max(x, 1)
    lse = m + np.log(np.sum(np.exp(x - m[:, None]), 1))
    kept = y != IGNORE
    rows, target = np.arange(len(y)), np.where(kept, y, 0)
    loss = (1 - a) * (lse - x[rows, target]) + a * (lse - np.mean(x, 1)) + zeta * lse**2
    onehot = np.zeros_like(x)
    onehot[rows, target] = 1
    dx = (
        (1 + 2 * zeta * lse)[:, None] * np.exp(x - lse[:, None]) - (1 - a) * onehot - a / x.shape[1]
    )
    dz = dx if cap is None else dx * (1 - np.tanh(z / cap) ** 2)
    return np.where(kept, loss, 0), np.where(kept[:, None], dz, 0)


def reference_and_grads(f, w, b, y, reduction, cotangent=None, **options):
    """The reduced reference loss and its gradients in f, w, b."""
    loss, dz = reference(f, w, b, y, **options)
    count = np.sum(y != IGNORE)
    if reduction == "none":
        g, value = cotangent, loss
    elif reduction == "sum":
        g, value = np.ones(len(y)), np.sum(loss)
    else:
        g = np.full(len(y), 1 / max(count, 1))
        value = np.sum(loss) / count if count else 0.0
    dz = g[:, None] * dz
    w64 = np.asarray(w, np.float64)
    return value, (dz @ w64.T, np.asarray(f, np.float64).T @ dz, np.sum(dz, 0))


def fused(y, **kwargs):
    def loss(f, w, b):
        return softmax_cross_entropy_with_linear(f, w, b, y, **kwargs)

    return loss


def value_and_grads(fn, f, w, b, cotangent=None):
    """Value and gradients of ``fn`` (through ``cotangent`` when it returns per-token losses)."""
    if cotangent is None:
        return jax.value_and_grad(fn, argnums=(0, 1, 2))(f, w, b)
    value, vjp = jax.vjp(fn, f, w, b)
    return value, vjp(jnp.asarray(cotangent, value.dtype))


def assert_close(got, want, rtol, atol=0.0):
    value, grads = got
    want_value, want_grads = want
    np.testing.assert_allclose(value, want_value, rtol=rtol, atol=atol)
    for g, expected in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g, expected, rtol=rtol, atol=atol or rtol * 1e-3)


@pytest.mark.parametrize(
    "option, reduction",
    [(option, "mean") for option in OPTIONS] + [("all", "sum"), ("all", "none")],
)
def test_equals_the_float64_reference(option, reduction):
    """Chunks of 5 entries: 24 is not a multiple, the last chunk overlaps the fourth."""
    f, w, b, y = problem()
    cotangent = np.random.default_rng(1).normal(size=TOKENS) if reduction == "none" else None
    options = OPTIONS[option]
    loss = jax.jit(fused(y, reduction=reduction, chunk_size=5, **options))
    got = value_and_grads(loss, f, w, b, cotangent)
    assert_close(got, reference_and_grads(f, w, b, y, reduction, cotangent, **options), 1e-12)


@pytest.mark.parametrize("chunk_size", [1, 6, 100])
def test_any_chunk_size(chunk_size):
    """Chunks that divide the vocabulary (1, 6) and one larger than it (5 above does not divide)."""
    f, w, b, y = problem(2)
    options = OPTIONS["all"]
    got = value_and_grads(jax.jit(fused(y, chunk_size=chunk_size, **options)), f, w, b)
    assert_close(got, reference_and_grads(f, w, b, y, "mean", **options), 1e-12)


@pytest.mark.parametrize("option", ["smoothing", "all"])
def test_equals_the_materialized_categorical_cross_entropy(option):
    """``CategoricalCrossEntropy`` on ``f @ w + b`` (soft-capped), plus the z-loss."""
    f, w, b, y = problem(3)
    options = OPTIONS[option]
    a, zeta = options.get("label_smoothing", 0.0), options.get("z_loss", 0.0)
    cap = options.get("logit_softcap")
    cross_entropy = bcejax.losses.CategoricalCrossEntropy(
        label_smoothing=a, ignore_index=IGNORE, reduction="none"
    )

    def per_token(f, w, b):
        logits = f @ w + b
        if cap is not None:
            logits = cap * jnp.tanh(logits / cap)
        z_term = zeta * jax.nn.logsumexp(logits, -1) ** 2
        return cross_entropy(logits, y) + jnp.where(y != IGNORE, z_term, 0)

    def materialized(f, w, b):
        return jnp.sum(per_token(f, w, b)) / jnp.sum(y != IGNORE)

    mean_and_grads = value_and_grads(jax.jit(fused(y, chunk_size=7, **options)), f, w, b)
    assert_close(mean_and_grads, value_and_grads(jax.jit(materialized), f, w, b), 1e-12)
    cotangent = np.linspace(-1, 2, TOKENS)
    loss = jax.jit(fused(y, reduction="none", chunk_size=7, **options))
    got = value_and_grads(loss, f, w, b, cotangent)
    assert_close(got, value_and_grads(jax.jit(per_token), f, w, b, cotangent), 1e-12)
    if option != "all":  # the callable's mean itself, and the functional form
        mean = bcejax.losses.CategoricalCrossEntropy(label_smoothing=a, ignore_index=IGNORE)
        np.testing.assert_allclose(mean_and_grads[0], mean(f @ w + b, y), rtol=1e-13)
        functional = bcejax.softmax_cross_entropy_with_integer_labels(
            f @ w + b, y, label_smoothing=a, ignore_index=IGNORE
        )
        np.testing.assert_allclose(loss(f, w, b), functional, rtol=1e-13)


def test_float32_within_1e_5():
    f, w, b, y = problem(4)
    options = OPTIONS["all"]
    f32 = [a.astype(np.float32) for a in (f, w, b)]
    value, grads = value_and_grads(jax.jit(fused(y, chunk_size=5, **options)), *f32)
    assert value.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    assert_close((value, grads), reference_and_grads(*f32, y, "mean", **options), 1e-5, 1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_tokens_ignored(reduction):
    """Loss 0 and zero gradients, never 0 / 0."""
    f, w, b, y = problem(5)
    y = np.full_like(y, IGNORE)
    cotangent = np.ones(TOKENS) if reduction == "none" else None
    value, grads = value_and_grads(
        jax.jit(fused(y, reduction=reduction, chunk_size=5, **OPTIONS["all"])), f, w, b, cotangent
    )
    np.testing.assert_array_equal(value, np.zeros_like(value))
    for g in grads:
        np.testing.assert_array_equal(g, np.zeros_like(g))


def test_ignore_index_none_and_inside_the_vocabulary():
    """``ignore_index=None`` keeps every token; a token id (0, say) may be the one ignored."""
    f, w, b, y = problem(6, ignored=())
    want = reference_and_grads(f, w, b, y, "mean")
    assert_close(value_and_grads(jax.jit(fused(y, ignore_index=None)), f, w, b), want, 1e-12)
    y_pad = np.where(np.arange(TOKENS) % 3 == 0, 0, y)
    kept = y_pad != 0
    got = jax.jit(fused(y_pad, ignore_index=0, reduction="none"))(f, w, b)
    full = jax.jit(fused(y_pad, ignore_index=None, reduction="none"))(f, w, b)
    np.testing.assert_allclose(got, np.where(kept, full, 0), rtol=1e-13)
    mean = jax.jit(fused(y_pad, ignore_index=0))(f, w, b)
    np.testing.assert_allclose(mean, np.sum(got) / np.sum(kept), rtol=1e-13)


def test_bfloat16_operands_accumulate_in_float32():
    """bf16 in, bf16 out; equal to the float32 computation on the same values, then rounded."""
    f, w, b, y = problem(7, tokens=16, dim=8, vocab=40)
    options = OPTIONS["all"]
    bf16 = [jnp.asarray(a, jnp.bfloat16) for a in (f, w, b)]
    up = [a.astype(jnp.float32) for a in bf16]
    loss = jax.jit(fused(y, reduction="none", chunk_size=7, **options))
    cotangent = np.arange(16) / 16  # exact in bfloat16
    value, grads = value_and_grads(loss, *bf16, cotangent)
    value32, grads32 = value_and_grads(loss, *up, cotangent)
    assert value.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads)
    np.testing.assert_array_equal(value, value32.astype(jnp.bfloat16))
    for g, g32 in zip(grads, grads32, strict=True):
        np.testing.assert_array_equal(g, g32.astype(jnp.bfloat16))
    want, _ = reference(*up, y, **options)
    np.testing.assert_allclose(value.astype(np.float32), want, rtol=4e-3, atol=1e-6)
    mixed = loss(up[0], bf16[1], up[2])  # a bf16 weight with float32 features: float32 out
    assert mixed.dtype == jnp.float32
    np.testing.assert_allclose(mixed, value32, rtol=1e-6)


def test_config_may_be_traced_and_differentiated():
    """d/d label_smoothing, z_loss and logit_softcap equal the materialized loss's."""
    f, w, b, y = problem(8)

    def fused_of(a, zeta, cap):
        return softmax_cross_entropy_with_linear(
            f, w, b, y, label_smoothing=a, z_loss=zeta, logit_softcap=cap, chunk_size=5
        )

    def materialized(a, zeta, cap):
        logits = cap * jnp.tanh((f @ w + b) / cap)
        kept = y != IGNORE
        loss = bcejax.softmax_cross_entropy_with_integer_labels(
            logits, y, label_smoothing=a, ignore_index=IGNORE
        )
        loss = loss + jnp.where(kept, zeta * jax.nn.logsumexp(logits, -1) ** 2, 0)
        return jnp.sum(loss) / jnp.sum(kept)

    config = (0.15, 0.02, 1.7)
    got = jax.jit(jax.value_and_grad(fused_of, argnums=(0, 1, 2)))(*config)
    want = jax.jit(jax.value_and_grad(materialized, argnums=(0, 1, 2)))(*config)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-13)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-11)


def test_vmap_equals_a_loop():
    f, w, b, y = problem(9)
    loss = jax.jit(fused(y, chunk_size=5, **OPTIONS["all"]))
    stacked = np.stack([f, 2 * f])
    batched = jax.jit(jax.vmap(loss, in_axes=(0, None, None)))(stacked, w, b)
    np.testing.assert_allclose(batched, [loss(x, w, b) for x in stacked], rtol=1e-14)


def test_compiled_memory_is_a_chunk_not_the_logits():
    """value_and_grad's scratch: no tokens x vocabulary array, a fraction of optax's path."""
    rng = np.random.default_rng(10)
    tokens, dim, vocab = 128, 16, 4096
    f = rng.normal(size=(tokens, dim)).astype(np.float32)
    w = (0.1 * rng.normal(size=(dim, vocab))).astype(np.float32)
    b = np.zeros(vocab, np.float32)
    y = rng.integers(0, vocab, tokens)
    loss = fused(y, chunk_size=256)

    def materialized(f, w, b):
        return jnp.mean(bcejax.softmax_cross_entropy_with_integer_labels(f @ w + b, y))

    def compiled(fn):
        return jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2))).lower(f, w, b).compile()

    logits_bytes = tokens * vocab * 4
    assert compiled(materialized).memory_analysis().temp_size_in_bytes >= 2 * logits_bytes
    program = compiled(loss)
    assert program.memory_analysis().temp_size_in_bytes < logits_bytes / 4
    assert f"[{tokens},{vocab}]" not in program.as_text()
    np.testing.assert_allclose(loss(f, w, b), materialized(f, w, b), rtol=1e-5)


def test_exports_for_every_platform():
    """bfloat16: the weight is sliced by a path chosen per platform."""
    f, w, b, y = problem(11)
    args = [jnp.asarray(a, jnp.bfloat16) for a in (f, w, b)]
    step = jax.jit(jax.value_and_grad(fused(y, chunk_size=5, logit_softcap=3.0), (0, 1, 2)))
    exported = jax.export.export(step, platforms=("cpu", "cuda", "tpu"))(*args)
    value, _ = exported.call(*args)
    np.testing.assert_allclose(float(value), float(step(*args)[0]), rtol=1e-6)


def test_labels_out_of_range_are_errors_when_checked_and_nan_otherwise():
    f, w, b, y = problem(12)
    bad = y.copy()
    bad[3] = VOCAB
    with pytest.raises(bcejax.InvalidInputError, match=r"class indices in \[0, 24\)"):
        softmax_cross_entropy_with_linear(f, w, b, bad)
    with pytest.raises(bcejax.InvalidInputError, match="ignore_index=-100"):
        bcejax.checked(jax.jit(fused(bad)))(f, w, b)
    per_token = jax.jit(fused(bad, reduction="none"))(f, w, b)
    assert np.isnan(per_token[3]) and np.all(np.isfinite(np.delete(per_token, 3)))


def test_bad_inputs():
    f, w, b, y = problem()
    call = softmax_cross_entropy_with_linear
    with pytest.raises(ValueError, match="must share dim"):
        call(f, w.T, b, y)
    with pytest.raises(ValueError, match=r"features.reshape\(-1, dim\)"):
        call(f[None], w, b, y)
    with pytest.raises(ValueError, match=r"bias must have shape \(24,\)"):
        call(f, w, b[:3], y)
    with pytest.raises(ValueError, match=r"labels must have shape \(12,\)"):
        call(f, w, b, y[:5])
    with pytest.raises(TypeError, match="labels must have an integer dtype"):
        call(f, w, b, y.astype(float))
    with pytest.raises(TypeError, match="features must have a floating dtype"):
        call(f.astype(np.int32), w, b, y)
    with pytest.raises(ValueError, match="z_loss must be >= 0"):
        call(f, w, b, y, z_loss=-1e-4)
    with pytest.raises(ValueError, match=r"logit_softcap must be > 0.*None for no cap"):
        call(f, w, b, y, logit_softcap=0.0)
    with pytest.raises(ValueError, match="label_smoothing must be >= 0"):
        call(f, w, b, y, label_smoothing=1.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        call(f, w, b, y, reduction="avg")
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        call(f, w, b, y, chunk_size=0)


# ---------------------------------------------------------------------------
# The vocabulary (softmax head) and the labels (sigmoid head) sharded over a mesh axis.
# ---------------------------------------------------------------------------


def vocab_mesh(n):
    return jax.make_mesh(
        (n,), ("v",), devices=jax.devices()[:n], axis_types=(jax.sharding.AxisType.Auto,)
    )


def sharded_softmax(n, y, **kwargs):
    """The loss inside shard_map: weight and bias split along the vocabulary, the rest shared."""

    def loss(f, w, b, a, zeta, cap):
        return softmax_cross_entropy_with_linear(
            f, w, b, y, label_smoothing=a, z_loss=zeta, logit_softcap=cap, axis_name="v", **kwargs
        )

    specs = (P(), P(None, "v"), P("v"), P(), P(), P())
    return jax.shard_map(loss, mesh=vocab_mesh(n), in_specs=specs, out_specs=P(), check_vma=True)


def unsharded_softmax(y, **kwargs):
    def loss(f, w, b, a, zeta, cap):
        return softmax_cross_entropy_with_linear(
            f, w, b, y, label_smoothing=a, z_loss=zeta, logit_softcap=cap, **kwargs
        )

    return loss


def sharded_softmax_check(n, dtype=np.float64, reduction="mean"):
    """Values and gradients (operands and config) of the sharded loss against the unsharded."""
    f, w, b, y = problem(13, vocab=7 * n)
    f, w, b = (a.astype(dtype) for a in (f, w, b))
    config = (0.1, 0.02, 2.5)
    kwargs = dict(
        chunk_size=3, reduction=reduction
    )  # 7 entries per device: the last chunk overlaps
    cotangent = np.linspace(0.5, 1.5, TOKENS) if reduction == "none" else None

    def grads_of(fn):
        fn = jax.jit(fn)
        if cotangent is None:
            return jax.value_and_grad(fn, argnums=range(6))(f, w, b, *config)
        value, vjp = jax.vjp(fn, f, w, b, *config)
        return value, vjp(jnp.asarray(cotangent, value.dtype))

    got = grads_of(sharded_softmax(n, y, **kwargs))
    want = grads_of(unsharded_softmax(y, **kwargs))
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert_close(got, want, rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize(
    "dtype, reduction", [(np.float64, "mean"), (np.float64, "none"), (np.float32, "mean")]
)
def test_vocabulary_sharded_over_four_devices(dtype, reduction):
    sharded_softmax_check(4, dtype, reduction)


@pytest.mark.slow
def test_vocabulary_sharded_over_eight_devices_in_a_subprocess():
    script = textwrap.dedent(
        """
        import jax
        jax.config.update("jax_enable_x64", True)
        import test_scale_softmax as t

        t.sharded_softmax_check(8)
        t.sharded_softmax_check(8, reduction="none")
        print("ok", jax.device_count())
        """
    )
    helpers.run_on_devices(script, 8)


@pytest.mark.parametrize("given, reduction", [("dense", "mean"), ("indices", "sum")])
def test_sigmoid_head_labels_sharded_over_four_devices(given, reduction):
    """Weight, bias, dense labels and pos_weight split along the labels; 32 labels, 4 devices."""
    rng = np.random.default_rng(14)
    batch, dim, labels = 8, 5, 32
    f, w, b = rng.normal(size=(batch, dim)), rng.normal(size=(dim, labels)), rng.normal(size=labels)
    pos_weight = rng.uniform(0.5, 2.0, labels)
    indices = rng.integers(-1, labels, (batch, 3))
    dense = np.zeros((batch, labels))
    for row, cols in enumerate(indices):
        dense[row, cols[cols >= 0]] = 1.0
    call = bcejax.sigmoid_binary_cross_entropy_with_linear
    kwargs = dict(reduction=reduction, chunk_size=3)  # 8 local labels: the last chunk overlaps

    if given == "dense":

        def loss(f, w, b, y, pw, axis_name=None):
            return call(f, w, b, y, pos_weight=pw, axis_name=axis_name, **kwargs)

        operands, specs = (dense, pos_weight), (P(None, "v"), P("v"))
    else:

        def loss(f, w, b, y, pw, axis_name=None):
            return call(f, w, b, positive_indices=y, pos_weight=pw, axis_name=axis_name, **kwargs)

        operands, specs = (indices, 1.5), (P(), P())

    sharded = jax.shard_map(
        lambda *args: loss(*args, axis_name="v"),
        mesh=vocab_mesh(4),
        in_specs=(P(), P(None, "v"), P("v"), *specs),
        out_specs=P(),
        check_vma=True,
    )
    got = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1, 2)))(f, w, b, *operands)
    want = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(f, w, b, *operands)
    materialized = bcejax.losses.BinaryCrossEntropy(pos_weight=operands[1], reduction=reduction)(
        f @ w + b, dense
    )
    np.testing.assert_allclose(want[0], materialized, rtol=1e-13)
    assert_close(got, want, 1e-12, atol=1e-14)
