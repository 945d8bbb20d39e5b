"""The elementwise binary losses against optax, and PyTorch and Keras semantics computed by hand."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from binary_inputs import DTYPES, RTOL, assert_close

import bcejax

# ---------------------------------------------------------------------------
# Parity with optax.
# ---------------------------------------------------------------------------

OPTAX_LABEL_SHAPES = [(8, 5), (5,), (8, 1), (1, 5)]


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("label_shape", OPTAX_LABEL_SHAPES, ids=str)
def test_bce_matches_optax(label_shape, soft):
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (8, 5)).astype(np.float32)
    labels = (rng.uniform(size=label_shape) if soft else rng.integers(0, 2, label_shape)).astype(
        np.float32
    )
    got = bcejax.sigmoid_binary_cross_entropy(logits, labels)
    want = optax.losses.sigmoid_binary_cross_entropy(logits, labels)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("label_shape", OPTAX_LABEL_SHAPES, ids=str)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.5])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_matches_optax(alpha, gamma, label_shape, soft):
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 3, (8, 5)).astype(np.float32)
    labels = (rng.uniform(size=label_shape) if soft else rng.integers(0, 2, label_shape)).astype(
        np.float32
    )
    got = bcejax.sigmoid_focal_loss(logits, labels, alpha=alpha, gamma=gamma)
    want = optax.losses.sigmoid_focal_loss(logits, labels, alpha=alpha, gamma=gamma)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------
# PyTorch and Keras semantics, as numbers computed by hand.
# With x = ln 3: sigmoid(x) = 3/4 and sigmoid(-x) = 1/4; sigmoid(0) = 1/2.
# ---------------------------------------------------------------------------

LN2, LN3, LN4, LN43 = math.log(2), math.log(3), math.log(4), math.log(4 / 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_bce_with_logits_pos_weight_and_weight(dtype):
    # torch.nn.BCEWithLogitsLoss(weight=w, pos_weight=pw, reduction="none"):
    #   l = -w (pw y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))), pw per class (column).
    logits = np.array([[0.0, LN3], [LN3, -LN3]], dtype)
    labels = np.array([[1.0, 0.0], [1.0, 1.0]], dtype)
    pos_weight = np.array([2.0, 0.5], dtype)
    weight = np.array([[1.0, 2.0], [0.5, 1.0]], dtype)
    expected = np.array(
        [
            # x=0, y=1, pw=2, w=1: 2 * ln 2           = 1.3862943611198906
            # x=ln3, y=0, w=2: 2 * -log(1/4) = 2 ln 4 = 2.772588722239781
            [2 * LN2, 2 * LN4],
            # x=ln3, y=1, pw=2, w=.5: .5 * 2 * -log(3/4) = ln(4/3) = 0.28768207245178085
            # x=-ln3, y=1, pw=.5, w=1: .5 * -log(1/4) = ln 2       = 0.6931471805599453
            [LN43, LN2],
        ]
    )
    np.testing.assert_allclose(
        expected,
        [[1.3862943611198906, 2.772588722239781], [0.28768207245178085, 0.6931471805599453]],
    )
    got = bcejax.sigmoid_binary_cross_entropy(logits, labels, weights=weight, pos_weight=pos_weight)
    assert_close(got, expected, dtype, rtol=4 * RTOL[dtype])
    # reduction="mean" (PyTorch's default) divides by the number of elements.
    mean = (2 * LN2 + 2 * LN4 + LN43 + LN2) / 4  # = 1.2838156863629393
    assert float(bcejax.reduce_loss(got)) == pytest.approx(mean, rel=4 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_binary_cross_entropy_at_zero_and_one(dtype):
    # torch.nn.functional.binary_cross_entropy(p, y, reduction="none"): each log is
    # clamped at -100, so a wrong certain prediction costs exactly 100.
    probs = np.array([0.0, 0.0, 1.0, 1.0, 0.25, 0.75], dtype)
    labels = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 1.0], dtype)
    # p=0,y=1: -log(0) -> 100; p=1,y=0: -log(1-1) -> 100; p=.25,y=1: ln 4; p=.75,y=1: ln(4/3).
    expected_loss = np.array([0.0, 100.0, 100.0, 0.0, LN4, LN43])
    # Gradient (p - y) / max(p (1 - p), 1e-12): at p in {0, 1}, +-1e12 when wrong, 0 when
    # right; at p=.25, y=1: -.75 / .1875 = -4; at p=.75, y=1: -.25 / .1875 = -4/3.
    expected_grad = np.array([0.0, -1e12, 1e12, 0.0, -4.0, -4.0 / 3.0])

    def f(p):
        return bcejax.binary_cross_entropy(p, labels)

    assert_close(f(probs), expected_loss, dtype, rtol=4 * RTOL[dtype])
    grad = jax.grad(lambda p: jnp.sum(f(p)))(probs)
    assert_close(grad, expected_grad, dtype, rtol=4 * RTOL[dtype])
    # weights and pos_weight scale the clamped terms: w * pw * 100.
    weighted = bcejax.binary_cross_entropy(probs, labels, weights=dtype(0.5), pos_weight=dtype(3))
    assert float(weighted[1]) == 150.0 and float(weighted[2]) == 50.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_keras_label_smoothing_from_logits(dtype):
    # keras.losses.binary_crossentropy(y, x, from_logits=True, label_smoothing=0.2):
    #   y <- 0.8 y + 0.1, then plain BCE (elementwise here; Keras averages the last axis).
    logits = np.array([0.0, LN3, LN3], dtype)
    labels = np.array([1.0, 1.0, 0.0], dtype)
    expected = np.array(
        [
            LN2,  # x=0: ln 2 whatever the label                  = 0.6931471805599453
            0.9 * LN43 + 0.1 * LN4,  # y_s=.9: .9 ln(4/3) + .1 ln 4 = 0.3975433013185918
            0.1 * LN43 + 0.9 * LN4,  # y_s=.1: .1 ln(4/3) + .9 ln 4 = 1.2764331322530795
        ]
    )
    np.testing.assert_allclose(expected[1:], [0.3975433013185918, 1.2764331322530795])
    got = bcejax.sigmoid_binary_cross_entropy(logits, labels, label_smoothing=0.2)
    assert_close(got, expected, dtype, rtol=4 * RTOL[dtype])
    # Keras' value: the mean over the last axis = 0.7890412047105389.
    assert float(jnp.mean(got)) == pytest.approx(0.7890412047105389, rel=4 * RTOL[dtype])


def test_keras_eps_clipping_at_zero_and_one():
    # keras.losses.binary_crossentropy(y, p, from_logits=False) with epsilon 1e-7 (float64):
    # p is clipped to [1e-7, 1 - 1e-7]; a certain wrong prediction costs -log(1e-7)
    # = 7 ln 10 = 16.11809565095832, a certain right one -log(1 - 1e-7) = 1.00000005e-7.
    probs = np.array([0.0, 1.0, 0.0, 1.0], np.float64)
    labels = np.array([1.0, 0.0, 0.0, 1.0], np.float64)
    got = np.asarray(bcejax.binary_cross_entropy(probs, labels, eps=1e-7))
    np.testing.assert_allclose(got[:2], 7 * math.log(10), rtol=1e-9)
    np.testing.assert_allclose(got[:2], 16.11809565095832, rtol=1e-9)
    np.testing.assert_allclose(got[2:], 1.00000005e-7, rtol=1e-7)
    # binary_focal_loss clips the same way: with gamma=0 it is the clipped BCE.
    focal = bcejax.binary_focal_loss(probs, labels, gamma=0.0, eps=1e-7)
    np.testing.assert_allclose(focal, got, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_keras_binary_focal_crossentropy_class_balancing(dtype):
    # keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.25, gamma=2):
    #   l = alpha_t (1 - p_t)^2 bce, alpha_t = .25 y + .75 (1 - y), p_t = y p + (1 - y)(1 - p).
    probs = np.array([0.75, 0.25, 0.5], dtype)
    labels = np.array([1.0, 1.0, 0.0], dtype)
    expected = np.array(
        [
            0.25 * 0.25**2 * LN43,  # 1 - p_t = .25, bce = ln(4/3) -> 0.004495032382059076
            0.25 * 0.75**2 * LN4,  # 1 - p_t = .75, bce = ln 4     -> 0.19494764453248462
            0.75 * 0.5**2 * LN2,  # 1 - p_t = .5, bce = ln 2       -> 0.1299650963549897
        ]
    )
    np.testing.assert_allclose(
        expected, [0.004495032382059076, 0.19494764453248462, 0.1299650963549897]
    )
    got = bcejax.binary_focal_loss(probs, labels, alpha=0.25, gamma=2.0)
    assert_close(got, expected, dtype, rtol=4 * RTOL[dtype])
    # The same from logits (Keras from_logits=True): sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4.
    logits = np.array([LN3, -LN3, 0.0], dtype)
    got = bcejax.sigmoid_focal_loss(logits, labels, alpha=0.25, gamma=2.0)
    assert_close(got, expected, dtype, rtol=4 * RTOL[dtype])
    # Keras smooths first: y=1, label_smoothing=.2 -> y_s=.9; at p=3/4:
    # bce = .9 ln(4/3) + .1 ln 4, 1 - p_t = .9*.25 + .1*.75 = .3, alpha_t = .25*.9 + .75*.1 = .3
    smoothed = bcejax.binary_focal_loss(
        probs[:1], labels[:1], alpha=0.25, gamma=2.0, label_smoothing=0.2
    )
    want = 0.3 * 0.3**2 * (0.9 * LN43 + 0.1 * LN4)  # = 0.010733669135601979
    assert float(smoothed[0]) == pytest.approx(want, rel=4 * RTOL[dtype])
