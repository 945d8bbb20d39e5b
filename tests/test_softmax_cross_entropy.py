"""softmax_cross_entropy and its integer-label form against float64 references and PyTorch.

* Label smoothing, class weights, ignore_index, optax's ``where`` (batch-shaped and
  logits-shaped masks) and class axes given as ints and tuples, over random inputs.
* PyTorch ``CrossEntropyLoss`` semantics as numbers derived by hand.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import log_softmax, ref_ce, ref_ce_int, ref_focal, ref_poly
from softmax_inputs import (
    CE,
    CE_INT,
    DTYPES,
    FOCAL,
    POLY,
    RTOL,
    assert_close,
    class_axes,
    layout_grid,
    random_problem,
    ref_masks,
    to_layout,
    where_of,
)

from bcejax.losses import CategoricalCrossEntropy

LN2, LN3, LN5 = math.log(2), math.log(3), math.log(5)


def test_references_on_numbers_known_in_closed_form():
    # softmax([0, ln 2, ln 5]) = [1/8, 2/8, 5/8]
    x = np.array([0.0, LN2, LN5])
    np.testing.assert_allclose(log_softmax(x), np.log([1 / 8, 2 / 8, 5 / 8]), rtol=1e-15)
    # label 2: -log(5/8) = ln 1.6; focal gamma 2: (3/8)^2 ln 1.6; poly eps 2: ln 1.6 + 2 (3/8)
    assert ref_ce_int(x, 2) == pytest.approx(math.log(1.6), rel=1e-15)
    assert ref_focal(x, 2, gamma=2.0) == pytest.approx((3 / 8) ** 2 * math.log(1.6), rel=1e-14)
    assert ref_poly(x, [0.0, 0.0, 1.0], epsilon=2.0) == pytest.approx(
        math.log(1.6) + 0.75, rel=1e-14
    )
    # masking class 0 leaves softmax([ln 2, ln 5]) = [2/7, 5/7]
    mask = np.array([False, True, True])
    assert ref_ce_int(x, 2, mask=mask) == pytest.approx(math.log(7 / 5), rel=1e-14)


# (name, label_smoothing, class_weights?, where)
CE_CONFIGS = [
    ("plain", 0.0, False, None),
    ("smoothing", 0.1, False, None),
    ("class_weights", 0.0, True, None),
    ("smoothing_weights", 0.2, True, None),
    ("where_batch", 0.1, True, "batch"),
    ("where_classes", 0.15, True, "classes"),
]


@pytest.mark.parametrize(
    "name, smoothing, weighted, where, layout, dtype",
    layout_grid(CE_CONFIGS, {"smoothing_weights", "where_batch", "where_classes"}),
)
def test_softmax_cross_entropy_matches_reference(name, smoothing, weighted, where, layout, dtype):
    p = random_problem(layout, dtype, seed=1, class_mask=where == "classes")
    weights = p["class_weights"] if weighted else None
    got = CE(
        p["logits"],
        p["labels"],
        p["axis"],
        where_of(p, where),
        label_smoothing=smoothing,
        class_weights=weights,
    )
    want = ref_ce(
        p["x"],
        p["y"],
        smoothing=smoothing,
        class_weights=None if weights is None else weights.reshape(-1),
        **ref_masks(p, where),
    )
    assert got.shape == p["batch_shape"]
    assert_close(got, want, dtype)
    if where == "classes":
        assert got.reshape(-1)[0] == 0  # the fully masked example


# (name, label_smoothing, class_weights?, where, ignore_index)
CE_INT_CONFIGS = [
    *[(*c, None) for c in CE_CONFIGS],
    ("ignore_-100", 0.0, False, None, -100),
    ("ignore_-100_smoothing_weights", 0.1, True, None, -100),
    ("ignore_class_1", 0.1, True, None, 1),
    ("ignore_where_classes", 0.1, True, "classes", -100),
]


@pytest.mark.parametrize(
    "name, smoothing, weighted, where, ignore_index, layout, dtype",
    layout_grid(
        CE_INT_CONFIGS,
        {"smoothing_weights", "where_batch", "where_classes", "ignore_-100_smoothing_weights"},
    ),
)
def test_integer_labels_match_reference(
    name, smoothing, weighted, where, ignore_index, layout, dtype
):
    p = random_problem(layout, dtype, seed=2, class_mask=where == "classes")
    t = p["t"].copy()
    if ignore_index is not None and ignore_index < 0:
        t.reshape(-1)[::3] = ignore_index
    weights = p["class_weights"] if weighted else None
    got = CE_INT(
        p["logits"],
        t,
        p["axis"],
        where_of(p, where),
        label_smoothing=smoothing,
        class_weights=weights,
        ignore_index=ignore_index,
    )
    want = ref_ce_int(
        p["x"],
        t,
        smoothing=smoothing,
        ignore_index=ignore_index,
        class_weights=None if weights is None else weights.reshape(-1),
        **ref_masks(p, where),
    )
    assert got.shape == p["batch_shape"]
    assert_close(got, want, dtype)
    if ignore_index is not None:
        assert np.all(np.asarray(got)[t == ignore_index] == 0)


@pytest.mark.parametrize("dtype", [np.float64])
def test_integer_labels_equal_their_one_hot(dtype):
    """Same smoothing, weights and class mask: the integer version is the one-hot version."""
    p = random_problem("4d_axes13", dtype, seed=3, class_mask=True)
    one_hot = to_layout(
        np.eye(p["x"].shape[-1], dtype=dtype)[p["t"]],
        p["batch_shape"],
        p["class_weights"].shape,
        class_axes(p["axis"], 4),
    )
    config = dict(label_smoothing=0.1, class_weights=p["class_weights"])
    got = CE_INT(p["logits"], p["t"], p["axis"], p["where_classes"], **config)
    # The one-hot labels of an example whose target class is masked do not sum to 1 over
    # its unmasked classes: jit skips bcejax's value checks.
    want = jax.jit(CE, static_argnums=2)(
        p["logits"], one_hot, p["axis"], p["where_classes"], **config
    )
    assert_close(got, np.asarray(want, np.float64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_traced_config_under_jit(dtype):
    """Numeric config traced by jit gives the eager values."""
    p = random_problem("2d", dtype, seed=10)
    config = dict(
        smoothing=dtype(0.1), weights=p["class_weights"], gamma=dtype(2.5), eps=dtype(-0.5)
    )

    @jax.jit
    def f(x, y, t, c):
        assert all(isinstance(v, jax.core.Tracer) for v in c.values())
        return (
            CE(x, y, label_smoothing=c["smoothing"], class_weights=c["weights"]),
            CE_INT(x, t, label_smoothing=c["smoothing"], class_weights=c["weights"]),
            FOCAL(x, t, gamma=c["gamma"], alpha=c["weights"]),
            POLY(x, y, epsilon=c["eps"]),
        )

    ce, ce_int, focal, poly = f(p["logits"], p["labels"], p["t"], config)
    w = p["class_weights"]
    assert_close(ce, ref_ce(p["x"], p["y"], smoothing=0.1, class_weights=w), dtype)
    assert_close(ce_int, ref_ce_int(p["x"], p["t"], smoothing=0.1, class_weights=w), dtype)
    assert_close(focal, ref_focal(p["x"], p["t"], gamma=2.5, alpha=w), dtype)
    assert_close(poly, ref_poly(p["x"], p["y"], epsilon=-0.5), dtype)


# ---------------------------------------------------------------------------
# PyTorch CrossEntropyLoss semantics, by hand.
# ---------------------------------------------------------------------------

# Row 0: softmax([0, ln 2, ln 5]) = [1/8, 2/8, 5/8], -log p = [ln 8, ln 4, ln 1.6]; label 2.
# Row 1: softmax([0, 0, 0]) = 1/3 each, -log p = ln 3; label 0.
# Row 2: ignored (label -100).
TORCH_LOGITS = np.array([[0.0, LN2, LN5], [0.0, 0.0, 0.0], [3.0, 1.0, 2.0]])
TORCH_LABELS = np.array([2, 0, -100], np.int32)
TORCH_WEIGHTS = np.array([1.0, 2.0, 0.5])  # w, and label_smoothing a = 0.3: a / K = 0.1
# l = w_t (1 - a)(-log p_t) + (a / K) sum_c w_c (-log p_c)
# Row 0: 0.5 * 0.7 * ln 1.6 + 0.1 (ln 8 + 2 ln 4 + 0.5 ln 1.6)
#      = 0.4 ln 1.6 + 0.7 ln 2 = 0.4 (3 ln 2 - ln 5) + 0.7 ln 2 = 1.9 ln 2 - 0.4 ln 5
# Row 1: 1 * 0.7 * ln 3 + 0.1 (1 + 2 + 0.5) ln 3 = 1.05 ln 3
TORCH_NONE = np.array([1.9 * LN2 - 0.4 * LN5, 1.05 * LN3, 0.0])  # [0.673204, 1.153543, 0]
# mean: divided by the weights of the non-ignored targets, w_2 + w_0 = 0.5 + 1 = 1.5
TORCH_MEAN = (1.9 * LN2 - 0.4 * LN5 + 1.05 * LN3) / 1.5  # 1.217832


@pytest.mark.parametrize("dtype", DTYPES)
def test_pytorch_semantics_by_hand(dtype):
    np.testing.assert_allclose(TORCH_NONE, [0.6732044780902559, 1.1535429031015154, 0.0], 1e-15)
    logits = TORCH_LOGITS.astype(dtype)

    @jax.jit
    def outputs(logits, weights):
        config = dict(label_smoothing=0.3, class_weights=weights, ignore_index=-100)
        return dict(
            none=CE_INT(logits, TORCH_LABELS, **config),
            mean=CategoricalCrossEntropy(**config)(logits, TORCH_LABELS),
            sum=CategoricalCrossEntropy(**config, reduction="sum")(logits, TORCH_LABELS),
            callable_none=CategoricalCrossEntropy(**config, reduction="none")(logits, TORCH_LABELS),
            # Probability targets: -sum_c w_c y_c log p_c, with y = [0, .5, .5] on row 0:
            soft=CE(logits[:1], jnp.array([[0.0, 0.5, 0.5]], logits.dtype), class_weights=weights),
            # Row 0 with class 1 masked: softmax([0, ln 5]) = [1/6, 5/6]; K = 2, a = 0.3:
            # a/K = 0.15; label 2: 0.85 ln 1.2 + 0.15 ln 6 (the masked class adds nothing).
            masked=CE_INT(
                logits[:1],
                TORCH_LABELS[:1],
                where=np.array([[True, False, True]]),
                label_smoothing=0.3,
            ),
        )

    out = outputs(logits, TORCH_WEIGHTS.astype(dtype))
    rtol = 4 * RTOL[dtype]
    assert_close(out["none"], TORCH_NONE, dtype, rtol=rtol)
    assert_close(out["callable_none"], TORCH_NONE, dtype, rtol=rtol)
    assert_close(out["mean"], TORCH_MEAN, dtype, rtol=rtol)
    assert_close(out["sum"], TORCH_NONE.sum(), dtype, rtol=rtol)
    # 0.5 * 2 ln 4 + 0.5 * 0.5 ln 1.6 = 2 ln 2 + 0.25 ln 1.6
    assert_close(out["soft"], [2 * LN2 + 0.25 * math.log(1.6)], dtype, rtol=rtol)
    assert_close(out["masked"], [0.85 * math.log(1.2) + 0.15 * math.log(6)], dtype, rtol=rtol)
    if dtype == np.float64:  # eagerly, with the value checks on
        got = CE_INT(
            logits,
            TORCH_LABELS,
            label_smoothing=0.3,
            class_weights=TORCH_WEIGHTS,
            ignore_index=-100,
        )
        assert_close(got, TORCH_NONE, dtype, rtol=rtol)
