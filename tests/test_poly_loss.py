"""poly_loss_cross_entropy against its float64 reference and optax's PolyLoss cases."""

from __future__ import annotations

import math

import jax
import numpy as np
import optax
import pytest
from references import ref_poly
from softmax_inputs import CE, POLY, assert_close, layout_grid, random_problem, ref_masks, where_of


@pytest.mark.parametrize(
    "epsilon, layout, dtype", layout_grid([(2.0,), (-1.0,), (0.5,), (0.0,)], {2.0})
)
def test_poly_matches_reference(epsilon, layout, dtype):
    p = random_problem(layout, dtype, seed=7)
    got = POLY(p["logits"], p["labels"], epsilon=epsilon, axis=p["axis"])
    assert got.shape == p["batch_shape"]
    assert_close(got, ref_poly(p["x"], p["y"], epsilon=epsilon), dtype)


@pytest.mark.parametrize("dtype", [np.float64])
@pytest.mark.parametrize("where", ["batch", "classes"])
def test_poly_matches_reference_with_where(where, dtype):
    p = random_problem("3d_axis2", dtype, seed=8, class_mask=where == "classes")
    got = POLY(p["logits"], p["labels"], epsilon=1.5, axis=2, where=where_of(p, where))
    assert_close(got, ref_poly(p["x"], p["y"], epsilon=1.5, **ref_masks(p, where)), dtype)


# optax's PolyLossTest, "computed using tf version of poly1_cross_entropy"
POLY_LOGITS = np.array([0.14, 1.456, 2.356, -0.124, -2.47])
POLY_LABELS = np.array([0.1, 0.15, 0.2, 0.25, 0.3])
POLY_SCALAR = {2: 4.5317, 1: 3.7153, -1: 2.0827, 0: 2.8990, -0.5: 2.4908, 1.15: 3.8378}
POLY_SCALAR.update({1.214: 3.8900, 5.45: 7.3480})
POLY_BATCHED_LOGITS = np.array([[4.0, 2.0, 1.0], [0.0, 5.0, 1.0]])
POLY_BATCHED_LABELS = np.array([[1.0, 0.0, 0.0], [0.0, 0.8, 0.2]])
POLY_BATCHED = {
    2: [0.4823, 1.2567],
    1: [0.3261, 1.0407],
    0: [0.1698, 0.8247],
    -0.5: [0.0917, 0.7168],
    1.15: [0.3495, 1.0731],
    1.214: [0.3595, 1.0870],
    5.45: [1.0211, 2.0018],
}


@jax.jit
def _poly_and_optax(logits, labels, eps):
    return (
        POLY(logits, labels, epsilon=eps),
        optax.losses.poly_loss_cross_entropy(logits, labels, epsilon=eps),
    )


@pytest.mark.parametrize("eps", list(POLY_SCALAR))
def test_optax_poly_scalar(eps):
    got, want = _poly_and_optax(POLY_LOGITS, POLY_LABELS, eps)
    np.testing.assert_allclose(got, POLY_SCALAR[eps], atol=1e-4)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("eps", list(POLY_BATCHED))
def test_optax_poly_batched(eps):
    got, want = _poly_and_optax(POLY_BATCHED_LOGITS, POLY_BATCHED_LABELS, eps)
    np.testing.assert_allclose(got, POLY_BATCHED[eps], atol=1e-4)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # By hand, row 0: p_0 = e^4 / (e^4 + e^2 + e), CE = -log p_0, poly term eps (1 - p_0).
    p0 = math.exp(4) / (math.exp(4) + math.exp(2) + math.exp(1))
    assert float(got[0]) == pytest.approx(-math.log(p0) + eps * (1 - p0), rel=1e-12)


POLY_EPS0_CASES = [
    (
        [[4.0, 2.0, 1.0], [0.0, 5.0, 1.0], [0.134, 1.234, 3.235]],
        [[1.0, 0.0, 0.0], [0.0, 0.8, 0.2], [0.34, 0.33, 0.33]],
    ),
    ([[4.0, 2.0, 1.0], [0.0, 5.0, 1.0]], [[1.0, 0.0, 0.0], [0.0, 0.8, 0.2]]),
    (
        [[4.0, 2.0, 1.0, 0.134, 1.3515], [0.0, 5.0, 1.0, 0.5215, 5.616]],
        [[0.5, 0.0, 0.0, 0.0, 0.5], [0.0, 0.12, 0.2, 0.56, 0.12]],
    ),
    ([1.89, 2.39], [0.34, 0.66]),
    ([0.314], [1.0]),
]


@pytest.mark.parametrize("case", range(len(POLY_EPS0_CASES)))
def test_optax_poly_epsilon_zero_is_cross_entropy(case):
    logits, labels = (np.asarray(a) for a in POLY_EPS0_CASES[case])

    @jax.jit
    def losses(x, y, eps):
        return (
            POLY(x, y, epsilon=0.0),
            POLY(x, y, epsilon=eps),  # a traced epsilon of 0: no static shortcut
            CE(x, y),
            optax.softmax_cross_entropy(x, y),
        )

    got, traced, ce, optax_ce = losses(logits, labels, 0.0)
    np.testing.assert_allclose(got, ce, rtol=1e-14)
    np.testing.assert_allclose(traced, ce, rtol=1e-14)
    np.testing.assert_allclose(got, optax_ce, rtol=1e-12)
