"""Every public function lowers for CPU, CUDA and TPU, with no XLA:CPU choice outside CPU.

``jax.export`` lowers a program for a platform without a device of that kind,
so these run on a CPU-only machine. The CPU-tuned formulations (optimization
barriers, flattened views of ``(N, C)`` operands) are chosen when the program
is lowered, for the platform it is lowered for: the ``cuda`` and ``tpu``
modules must hold none of them. A program exported for all three platforms at
once serializes, deserializes and runs on CPU with the values of the direct
call. Everything runs with 64-bit types off (as on a TPU) and on.
"""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from test_properties import (
    BATCH_CALLABLES,
    CALLABLES,
    LOSSES,
    PER_EXAMPLE,
    PER_EXAMPLE_CALLABLES,
    make_examples,
    make_inputs,
)

import bcejax

PLATFORMS = ("cpu", "cuda", "tpu")
RNG = np.random.default_rng(0)
# (N, C) operands large enough that XLA:CPU's views would apply to them.
X = RNG.normal(size=(1024, 16)).astype(np.float32)
Y = (RNG.random((1024, 16)) < 0.3).astype(np.float32)
W = RNG.uniform(0.5, 2.0, (1024, 16)).astype(np.float32)
PER_CLASS = np.linspace(0.5, 3.0, 16).astype(np.float32)
MASK = RNG.random((1024, 16)) < 0.8


def _mean_value_and_grad(fn):
    return jax.jit(jax.value_and_grad(lambda x, *rest: jnp.mean(fn(x, *rest))))


def _elementwise_programs():
    """value_and_grad of the mean of every elementwise loss, plain and with every option."""
    programs = {}
    weights, mask = W[:, :3], MASK[:, :3]  # the registry's per-class config has 3 classes
    for name, fn, kind, config in LOSSES:
        inputs = make_inputs(kind, shape=(1024, 3))
        programs[name] = (_mean_value_and_grad(lambda p, y, fn=fn, c=config: fn(p, y, **c)), inputs)
        programs[name + "_weights_where"] = (
            _mean_value_and_grad(
                lambda p, y, fn=fn, c=config: bcejax.reduce_loss(
                    fn(p, y, weights=weights, **c), where=mask
                )
            ),
            inputs,
        )
    programs["bce_per_class"] = (
        _mean_value_and_grad(
            lambda x, y: bcejax.sigmoid_binary_cross_entropy(
                x, y, pos_weight=PER_CLASS, weights=PER_CLASS, label_smoothing=0.1
            )
        ),
        X,
    )
    programs["focal_per_class"] = (
        _mean_value_and_grad(lambda x, y: bcejax.sigmoid_focal_loss(x, y, weights=PER_CLASS)),
        X,
    )
    return {
        name: (fn, inputs if isinstance(inputs, tuple) else (inputs, Y))
        for name, (fn, inputs) in programs.items()
    }


def _per_example_programs():
    programs = {}
    for name, fn, kind, config in PER_EXAMPLE:
        preds, labels = make_examples(kind)
        programs[name] = (
            _mean_value_and_grad(lambda p, y, fn=fn, c=config: fn(p, y, **c)),
            (preds, labels),
        )
    return programs


def _callable_programs():
    programs = {}
    for name, loss_fn, kind in CALLABLES:
        preds, labels = make_inputs(kind, shape=(1024, 16))
        programs["callable_" + name] = (
            jax.jit(jax.value_and_grad(lambda p, y, f=loss_fn: f(p, y, where=y >= 0))),
            (preds, labels),
        )
    for name, loss_fn, kind in PER_EXAMPLE_CALLABLES:
        programs["callable_" + name] = (
            jax.jit(jax.value_and_grad(lambda p, y, f=loss_fn: f(p, y))),
            make_examples(kind),
        )
    for name, loss_fn in BATCH_CALLABLES:
        programs["callable_" + name] = (
            jax.jit(jax.value_and_grad(lambda p, y, f=loss_fn: f(p, y))),
            make_examples("image"),
        )
    return programs


def _all_of(*fns):
    """One jitted program of every ``fn(scores, labels)``, as a tuple."""
    return jax.jit(lambda s, y: tuple(fn(s, y) for fn in fns))


def _other_programs():
    scores = X.ravel()
    labels = Y.ravel()
    features = RNG.normal(size=(64, 8)).astype(np.float32)
    weight = RNG.normal(size=(8, 48)).astype(np.float32)
    dense = (RNG.random((64, 48)) < 0.1).astype(np.float32)
    return {
        "linear_head": (
            jax.jit(
                jax.grad(
                    lambda f, w, y: bcejax.sigmoid_binary_cross_entropy_with_linear(
                        f, w, None, y, chunk_size=16
                    ),
                    argnums=(0, 1),
                )
            ),
            (features, weight, dense),
        ),
        "siglip": (
            jax.jit(
                jax.grad(
                    lambda x, y: bcejax.sigmoid_contrastive_loss(
                        x, y, logit_scale=4.0, logit_bias=-1.0
                    )
                )
            ),
            (features, features[::-1].copy()),
        ),
        "ghm": (
            jax.jit(jax.grad(lambda x, y: jnp.mean(bcejax.sigmoid_ghm_loss(x, y)[0]))),
            (X, Y),
        ),
        "ohem": (
            jax.jit(jax.grad(lambda x, y: bcejax.ohem_reduce(bcejax.sigmoid_focal_loss(x, y)))),
            (X, Y),
        ),
        "metrics": (
            _all_of(
                bcejax.metrics.roc_auc,
                bcejax.metrics.average_precision,
                lambda s, y: bcejax.metrics.f1_score(s, y, threshold=0.0),
                lambda s, y: bcejax.metrics.expected_calibration_error(jax.nn.sigmoid(s), y),
                lambda s, y: (
                    bcejax.metrics.StreamingBinaryMetrics.empty(from_logits=True)
                    .update(s, y)
                    .compute()
                ),
            ),
            (scores, labels),
        ),
        "calibration": (
            _all_of(
                bcejax.calibration.fit_temperature,
                bcejax.calibration.fit_platt,
                bcejax.calibration.best_threshold,
            ),
            (scores, labels),
        ),
    }


PROGRAMS = {
    **_elementwise_programs(),
    **_per_example_programs(),
    **_callable_programs(),
    **_other_programs(),
}
# Sorting and ranking flatten their scores by design, on every platform.
FLATTENS_BY_DESIGN = {"metrics", "calibration", "ohem", "callable_LovaszHinge_batch", "lovasz"}
FLATTENS_BY_DESIGN |= {"lovasz_probs", "callable_LovaszHinge"}


def _flattening_reshapes(text: str) -> list[str]:
    """Reshapes in a StableHLO module that take an operand of rank >= 2 to fewer axes."""
    found = []
    for source, target in re.findall(
        r"stablehlo\.reshape [^\n]*?: \(tensor<([^>]*)>\) -> tensor<([^>]*)>", text
    ):
        source_dims = [d for d in source.split("x")[:-1] if d != "1"]
        target_dims = [d for d in target.split("x")[:-1] if d != "1"]
        if len(source_dims) >= 2 and len(target_dims) < len(source_dims):
            found.append(f"{source} -> {target}")
    return found


@pytest.fixture(params=[False, True], ids=["x32", "x64"])
def x64(request):
    with jax.enable_x64(request.param):
        yield request.param


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_lowers_for_every_platform_without_cpu_choices(name, x64):
    fn, args = PROGRAMS[name]
    for platform in PLATFORMS:
        text = export.export(fn, platforms=(platform,))(*args).mlir_module()
        if platform == "cpu":
            continue
        assert "optimization_barrier" not in text, f"{platform}: a CPU barrier"
        if name not in FLATTENS_BY_DESIGN:
            assert not _flattening_reshapes(text), f"{platform}: {_flattening_reshapes(text)}"


@pytest.mark.parametrize("name", ["bce_per_class", "focal", "softmax_ce_int_full"])
def test_the_cpu_lowering_keeps_its_choices(name):
    # The check above would pass vacuously if the CPU paths were gone everywhere.
    fn, args = PROGRAMS[name]
    text = export.export(fn, platforms=("cpu",))(*args).mlir_module()
    assert "optimization_barrier" in text


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_multi_platform_export_runs_on_cpu(name):
    pytest.importorskip("flatbuffers")  # jax.export's serialization needs it
    fn, args = PROGRAMS[name]
    exported = export.export(fn, platforms=PLATFORMS)(*args)
    restored = export.deserialize(exported.serialize())
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        restored.call(*args),
        fn(*args),
    )


def test_a_flattening_reshape_is_found():
    text = jax.jit(lambda x: x.reshape(-1)).lower(X).as_text()
    assert _flattening_reshapes(text) == ["1024x16xf32 -> 16384xf32"]


def _default_branch(*args, default, **branches):
    return default(*args)


@contextlib.contextmanager
def _forced_default_branch():
    """Every platform choice takes its default branch; JAX's trace caches are emptied
    before (they hold the CPU branch) and after (they would hold the default one)."""
    jax.clear_caches()
    try:
        with mock.patch.object(jax.lax, "platform_dependent", _default_branch):
            yield
    finally:
        jax.clear_caches()


@pytest.mark.parametrize(
    "name", ["bce", "bce_full", "focal", "focal_frac", "softmax_ce_int_full", "bce_per_class"]
)
def test_every_branch_gives_the_same_values_and_gradients(name):
    """The CPU branch (what runs here) against the default one, forced by patching the choice."""
    fn, args = PROGRAMS[name]
    cpu = fn(*args)
    with _forced_default_branch():
        fresh = jax.jit(fn.__wrapped__)
        default = fresh(*args)
        assert "optimization_barrier" not in fresh.lower(*args).as_text()
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-9), cpu, default)


def test_overflow_to_inf_is_the_same_on_every_branch():
    from bcejax import _xla_cpu

    big = np.finfo(np.float32).max
    values = np.array([0.0, -3.5, 1e19, 1.9e19, -1.9e19, big, -big, np.inf, -np.inf], np.float32)
    with _forced_default_branch():
        default = jax.jit(_xla_cpu.overflow_to_inf)(values)
    cpu = jax.jit(lambda v: _xla_cpu.overflow_to_inf(v))(values)
    np.testing.assert_array_equal(cpu, default)
    np.testing.assert_array_equal(cpu[:3], values[:3])
    assert np.all(np.isinf(cpu[3:]))


def _example_steps():
    """The examples' jitted train steps, as ``fit`` builds them, on small models and batches."""
    examples = Path(__file__).resolve().parents[1] / "examples"
    sys.path.insert(0, str(examples))
    try:
        import optax
        import segmentation
        import sentiment
        import spam
        import training
        from flax import nnx
    finally:
        sys.path.remove(str(examples))
    rng = np.random.default_rng(0)
    flat = rng.normal(size=(8, 5)).astype(np.float32)
    image = rng.normal(size=(8, 16, 16, 1)).astype(np.float32)
    text = {"ids": rng.integers(0, 50, (8, 6)), "weights": rng.uniform(size=(8, 6))}
    cases = {
        f"spam_{name}": (spam.MLP(5, 8, nnx.Rngs(0)), spam.loss_callable(name, np.ones(8)), flat)
        for name in ("bce", "pos_weight", "focal", "asymmetric")
    }
    for name in ("bce", "dice", "bce_dice", "focal", "lovasz"):
        model = segmentation.UNet((4, 8), nnx.Rngs(0))
        cases[f"segmentation_{name}"] = (model, segmentation.loss_callable(name), image)
    for name in ("bce", "label_smoothing", "focal", "squared_error"):
        model = sentiment.WideAndDeep(50, 8, nnx.Rngs(0))
        cases[f"sentiment_{name}"] = (model, sentiment.loss_callable(name), text)
    steps = {}
    for name, (model, loss, x) in cases.items():
        labels = (rng.uniform(size=jax.eval_shape(model, x).shape) < 0.3).astype(np.float32)
        task = training.Task(name, model, loss, {})
        trainer, state = training._setup(task, optax.adam(1e-3), 8)
        mask = np.ones(8, bool)
        steps[name] = (trainer.train_step, (state.params, state.opt_state, x, labels, mask))
    return steps


def test_the_examples_train_steps_lower_for_every_platform():
    for name, (step, args) in _example_steps().items():
        for platform in ("cuda", "tpu"):
            text = export.export(step, platforms=(platform,))(*args).mlir_module()
            assert "optimization_barrier" not in text, f"{name} on {platform}: a CPU barrier"
            if "lovasz" not in name:
                assert not _flattening_reshapes(text), f"{name} on {platform}"
