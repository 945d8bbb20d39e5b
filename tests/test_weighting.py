"""Label smoothing and class-weight helpers against hand-computed values."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import bcejax


def test_smooth_binary_labels():
    out = bcejax.smooth_binary_labels(np.array([0, 1, 0.5], np.float32), 0.2)
    np.testing.assert_allclose(out, [0.1, 0.9, 0.5], rtol=1e-6)
    np.testing.assert_allclose(
        bcejax.sigmoid_binary_cross_entropy(np.float32(1.5), out),
        bcejax.sigmoid_binary_cross_entropy(
            np.float32(1.5), np.array([0, 1, 0.5], np.float32), label_smoothing=0.2
        ),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="label_smoothing"):
        bcejax.smooth_binary_labels(np.ones(2), 1.0)


def test_pos_weight_from_labels():
    labels = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 1], [0, 0, 1]], np.float32)
    # class 0: 2 neg / 2 pos; class 1: no positives -> 1; class 2: 2 / 2.
    np.testing.assert_allclose(bcejax.pos_weight_from_labels(labels), [1.0, 1.0, 1.0])
    labels = np.array([[1, 0], [0, 1], [0, 0], [0, 0]], np.float32)
    np.testing.assert_allclose(bcejax.pos_weight_from_labels(labels), [3.0, 3.0])
    mask = np.array([[1, 1], [1, 1], [1, 0], [0, 0]], bool)
    np.testing.assert_allclose(bcejax.pos_weight_from_labels(labels, where=mask), [2.0, 1.0])
    assert np.all(np.isfinite(jax.jit(bcejax.pos_weight_from_labels)(np.zeros((5, 3)))))


def test_inverse_frequency_weights_match_scikit_learn_balanced():
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0] * 90 + [1] * 9 + [2] * 1)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    np.testing.assert_allclose(
        bcejax.inverse_frequency_weights(np.bincount(y)), expected, rtol=1e-6
    )
    np.testing.assert_allclose(bcejax.inverse_frequency_weights([4, 0]), [0.5, 0.0])


def test_class_balanced_weights():
    counts = np.array([1000.0, 100.0, 10.0])
    beta = 0.99
    effective = (1 - beta**counts) / (1 - beta)
    expected = (1 / effective) / (1 / effective).sum() * 3
    np.testing.assert_allclose(bcejax.class_balanced_weights(counts, beta), expected, rtol=1e-6)
    np.testing.assert_allclose(bcejax.class_balanced_weights(counts, 0.0), [1, 1, 1], rtol=1e-6)
    inverse = (1 / counts) / (1 / counts).sum() * 3
    np.testing.assert_allclose(bcejax.class_balanced_weights(counts, 1.0), inverse, rtol=1e-6)
    # beta close to 1 is accurate (no 1 - beta^n cancellation) and tends to inverse frequency.
    np.testing.assert_allclose(bcejax.class_balanced_weights(counts, 1 - 1e-9), inverse, rtol=1e-5)
    out = bcejax.class_balanced_weights([5, 0, 5], 0.9)
    np.testing.assert_allclose(out, [1.5, 0.0, 1.5], rtol=1e-6)
    with pytest.raises(ValueError, match="counts must be 1-D"):
        bcejax.class_balanced_weights(np.ones((2, 2)))
    with pytest.raises(ValueError, match="beta must be"):
        bcejax.class_balanced_weights(counts, 1.5)


def test_weights_that_depend_on_the_label_are_a_pos_weight():
    # The README's advice for weights computed from hard labels in a training step:
    # w = a y + b (1 - y) is pos_weight a / b with weights b, without an array of weights.
    x = jax.random.normal(jax.random.key(0), (64, 16), dtype=np.float64) * 4
    y = (jax.random.uniform(jax.random.key(1), (64, 16)) < 0.3).astype(np.float64)
    per_class = np.linspace(0.5, 2.0, 16)
    computed = bcejax.sigmoid_binary_cross_entropy(
        x, y, weights=np.where(y > 0, 2.0 * per_class, 0.5)
    )
    folded = bcejax.sigmoid_binary_cross_entropy(x, y, pos_weight=4.0 * per_class, weights=0.5)
    np.testing.assert_allclose(folded, computed, rtol=1e-12)
