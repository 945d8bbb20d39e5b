"""Bad inputs to the softmax losses, with messages that say what is wrong."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from softmax_inputs import CE, CE_INT, FOCAL, POLY, X2

import bcejax
from bcejax.losses import CategoricalCrossEntropy


@pytest.mark.parametrize("fn", [CE_INT, FOCAL], ids=["ce_int", "focal"])
def test_integer_label_out_of_range(fn):
    with pytest.raises(bcejax.InvalidInputError, match=r"class indices in \[0, 3\)"):
        fn(X2, np.array([0, 4], np.int32))
    with pytest.raises(bcejax.InvalidInputError, match=r"class indices in \[0, 3\)"):
        bcejax.checked(fn)(X2, np.array([0, 4], np.int32))
    # a plain jit carries no checks: the loss of the bad example is NaN, the others are right
    got = np.asarray(jax.jit(fn)(X2, np.array([0, 4], np.int32)))
    assert np.isnan(got[1]) and np.isfinite(got[0])
    got = np.asarray(jax.jit(fn)(X2, np.array([-1, 1], np.int32)))
    assert np.isnan(got[0]) and np.isfinite(got[1])
    # an example that a batch-shaped where drops is exempt: its loss is 0, no error
    got = np.asarray(fn(X2, np.array([0, 4], np.int32), where=np.array([True, False])))
    assert got[1] == 0 and np.isfinite(got[0])


def test_integer_label_messages():
    # 1-based labels: 1..K
    with pytest.raises(bcejax.InvalidInputError, match="1-based; subtract 1"):
        CE_INT(X2, np.array([3, 1], np.int32))
    with pytest.raises(
        bcejax.InvalidInputError, match=r"\(min 1, max 3\): labels look 1-based; subtract 1"
    ):
        bcejax.checked(CE_INT)(X2, np.array([3, 1], np.int32))
    # negative padding labels without ignore_index
    with pytest.raises(bcejax.InvalidInputError, match="pass ignore_index=-100"):
        CE_INT(X2, np.array([-100, 1], np.int32))
    with pytest.raises(
        bcejax.InvalidInputError,
        match=r"\(min -100, max 1\): to skip examples labelled -100, pass ignore_index=-100",
    ):
        bcejax.checked(CE_INT)(X2, np.array([-100, 1], np.int32))
    # with ignore_index, another out-of-range value is still an error, naming both
    with pytest.raises(bcejax.InvalidInputError, match=r"\[0, 3\) or ignore_index=-100"):
        CE_INT(X2, np.array([5, -100], np.int32), ignore_index=-100)
    with pytest.raises(bcejax.InvalidInputError, match=r"or ignore_index=-100"):
        bcejax.checked(lambda x, t: CE_INT(x, t, ignore_index=-100))(X2, np.array([5, 1]))
    # ignored labels pass the checks, eagerly and in checked mode
    ok = np.array([-100, 1], np.int32)
    np.testing.assert_allclose(
        bcejax.checked(lambda x, t: CE_INT(x, t, ignore_index=-100))(X2, ok),
        CE_INT(X2, ok, ignore_index=-100),
    )


@pytest.mark.parametrize("fn", [CE_INT, FOCAL], ids=["ce_int", "focal"])
def test_float_labels_to_the_integer_version(fn):
    with pytest.raises(TypeError, match="labels must have an integer dtype, got float"):
        fn(X2, np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="use softmax_cross_entropy for one-hot labels"):
        fn(X2, np.eye(3)[[0, 1]])


@pytest.mark.parametrize("fn", [CE_INT, FOCAL], ids=["ce_int", "focal"])
def test_label_shape_must_be_the_batch_shape(fn):
    with pytest.raises(
        ValueError, match=r"labels with shape \(3,\) do not match the batch shape \(2,\)"
    ):
        fn(X2, np.array([0, 1, 2], np.int32))
    with pytest.raises(ValueError, match=r"\(2, 3\).*class axes"):
        fn(X2, np.zeros((2, 1), np.int32))


@pytest.mark.parametrize("fn", [CE, POLY], ids=["ce", "poly"])
def test_soft_label_shape_and_range(fn):
    with pytest.raises(ValueError, match=r"labels with shape \(2, 4\).*logits with shape \(2, 3\)"):
        fn(X2, np.full((2, 4), 0.25))
    # Labels that do not sum to 1 are applied as written (optax and PyTorch accept them).
    multi_hot = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    expected = CE(X2, np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])) + CE(
        X2, np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    )
    if fn is CE:
        np.testing.assert_allclose(fn(X2, multi_hot), expected, rtol=1e-12)
    np.testing.assert_array_equal(bcejax.checked(fn)(X2, multi_hot), fn(X2, multi_hot))
    bad = np.array([[1.5, -0.5, 0.0], [0.0, 1.0, 0.0]])
    with pytest.raises(bcejax.InvalidInputError, match=r"must be in \[0, 1\]"):
        fn(X2, bad)
    with pytest.raises(bcejax.InvalidInputError, match=r"must be in \[0, 1\]"):
        bcejax.checked(fn)(X2, bad)
    # masked examples are exempt, by a batch mask or a logits-shaped one
    for where in (np.array([True, False]), np.array([[True] * 3, [False] * 3])):
        padded = np.array([[0.5, 0.5, 0.0], [255.0, 1.0, 0.0]])
        assert np.asarray(fn(X2, padded, where=where))[1] == 0
        got = bcejax.checked(lambda x, y, w: fn(x, y, where=w))(X2, padded, where)
        assert np.asarray(got)[1] == 0


def test_class_weights_bad_shape_and_sign():
    t = np.array([0, 1], np.int32)
    y = np.eye(3)[t]
    for call in (
        lambda w: CE_INT(X2, t, class_weights=w),
        lambda w: CE(X2, y, class_weights=w),
    ):
        with pytest.raises(
            ValueError, match=r"one weight per class, shape \(3,\), got shape \(4,\)"
        ):
            call(np.ones(4))
        with pytest.raises(ValueError, match=r"got shape \(2, 3\)"):
            call(np.ones((2, 3)))
        with pytest.raises(bcejax.InvalidInputError, match="class_weights must be >= 0"):
            call(np.array([1.0, -1.0, 1.0]))
        with pytest.raises(bcejax.InvalidInputError, match="class_weights must be >= 0"):
            bcejax.checked(call)(np.array([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(3,\), got shape \(4,\)"):
        FOCAL(X2, t, alpha=np.ones(4))
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        FOCAL(X2, t, alpha=-0.5)
    with pytest.raises(bcejax.InvalidInputError, match="class_weights must be >= 0"):
        CategoricalCrossEntropy(class_weights=np.array([1.0, -1.0, 1.0]))(X2, t)


def test_structural_errors():
    t = np.array([0, 1], np.int32)
    with pytest.raises(TypeError, match="logits must have a floating dtype"):
        CE_INT(X2.astype(np.int32), t)
    with pytest.raises(ValueError, match=r"label_smoothing must be >= 0\.0 and < 1\.0"):
        CE_INT(X2, t, label_smoothing=1.0)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        FOCAL(X2, t, gamma=-1.0)
    with pytest.raises(ValueError, match="out of range for logits with 2 dimensions"):
        CE_INT(X2, t, axis=2)
    with pytest.raises(ValueError, match="names an axis twice"):
        CE(X2, np.eye(3)[t], axis=(1, -1))
    with pytest.raises(ValueError, match="fits neither the logits' shape"):
        CE(X2, np.eye(3)[t], where=np.ones(4, bool))
    with pytest.raises(bcejax.InvalidInputError, match="NaN in logits"):
        CE_INT(np.array([[np.nan, 0.0, 1.0]]), t[:1])


def test_mask_and_alpha_messages_name_what_was_given():
    t = np.array([0, 1], np.int32)
    with pytest.raises(ValueError, match=r"where with shape \(4,\) fits neither"):
        CE_INT(X2, t, where=np.ones(4, bool))
    with pytest.raises(ValueError, match=r"alpha must have one weight per class, shape \(3,\)"):
        FOCAL(X2, t, alpha=np.ones(4))
