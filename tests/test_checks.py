"""Bad inputs raise the documented error, with a message that says what is wrong and what to do."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcejax

LOGIT_LOSSES = [
    bcejax.sigmoid_binary_cross_entropy,
    bcejax.sigmoid_focal_loss,
    bcejax.sigmoid_asymmetric_loss,
    bcejax.sigmoid_poly1_loss,
]
PROB_LOSSES = [bcejax.binary_cross_entropy, bcejax.binary_focal_loss]
ALL = LOGIT_LOSSES + PROB_LOSSES

X = np.linspace(-2, 2, 6, dtype=np.float32)
P = np.linspace(0.05, 0.95, 6, dtype=np.float32)
Y = np.array([0, 1, 0, 1, 1, 0], np.float32)


def _preds(fn):
    return X if fn in LOGIT_LOSSES else P


@pytest.mark.parametrize("fn", ALL)
def test_integer_predictions_are_a_type_error(fn):
    with pytest.raises(TypeError, match=r"must have a floating dtype, got int32.*astype"):
        fn(np.arange(6, dtype=np.int32), Y)


@pytest.mark.parametrize("fn", ALL)
def test_shapes_that_do_not_broadcast_name_both(fn):
    with pytest.raises(ValueError, match=r"labels with shape \(4,\).*with shape \(6,\)"):
        fn(_preds(fn), Y[:4])


@pytest.mark.parametrize("fn", ALL)
def test_negative_weights(fn):
    weights = np.where(Y > 0, -1.0, 1.0).astype(np.float32)
    with pytest.raises(bcejax.InvalidInputError, match=r"weights must be >= 0 \(min -1"):
        fn(_preds(fn), Y, weights=weights)
    checked = bcejax.checked(lambda p, y, w: fn(p, y, weights=w))
    with pytest.raises(bcejax.InvalidInputError, match="weights must be >= 0"):
        checked(_preds(fn), Y, weights)


def test_weights_that_do_not_broadcast_are_named():
    with pytest.raises(ValueError, match=r"weights with shape \(5,\)"):
        bcejax.sigmoid_binary_cross_entropy(X, Y, weights=np.ones(5, np.float32))


@pytest.mark.parametrize("fn", ALL)
@pytest.mark.parametrize(
    "labels, hint",
    [
        (Y * 255, "8-bit mask; divide by 255"),
        (Y * 2 - 1, r"\{-1, 1\}; map them to \{0, 1\}"),
        (Y + 0.5, "clip or rescale"),
        (np.where(Y > 0, np.nan, 0).astype(np.float32), "NaN labels"),
    ],
)
def test_labels_out_of_range_eager(fn, labels, hint):
    with pytest.raises(bcejax.InvalidInputError, match=r"labels must be in \[0, 1\].*" + hint):
        fn(_preds(fn), labels)


@pytest.mark.parametrize("fn", PROB_LOSSES)
def test_logits_passed_as_probabilities(fn):
    with pytest.raises(bcejax.InvalidInputError, match=r"probs must be probabilities.*from_logits"):
        fn(X, Y)


@pytest.mark.parametrize("fn", LOGIT_LOSSES)
def test_nan_logits(fn):
    with pytest.raises(bcejax.InvalidInputError, match=r"NaN in logits.*diverged"):
        fn(np.where(Y > 0, np.nan, X).astype(np.float32), Y)


@pytest.mark.parametrize("fn", LOGIT_LOSSES)
def test_infinite_logits_are_allowed(fn):
    out = fn(np.array([np.inf, -np.inf], np.float32), np.array([1, 0], np.float32))
    np.testing.assert_array_equal(out, [0, 0])


def test_bool_and_int_labels_are_accepted():
    expected = bcejax.sigmoid_binary_cross_entropy(X, Y)
    np.testing.assert_array_equal(bcejax.sigmoid_binary_cross_entropy(X, Y > 0), expected)
    np.testing.assert_array_equal(bcejax.sigmoid_binary_cross_entropy(X, Y.astype(int)), expected)


@pytest.mark.parametrize(
    "fn, kwargs, match",
    [
        (bcejax.sigmoid_focal_loss, dict(gamma=-1.0), r"gamma must be >= 0.0, got -1.0"),
        (bcejax.sigmoid_focal_loss, dict(alpha=1.5), r"alpha must be >= 0.0 and <= 1.0"),
        (bcejax.binary_focal_loss, dict(gamma=-0.5), r"gamma must be >= 0.0"),
        (bcejax.sigmoid_asymmetric_loss, dict(gamma_neg=-1.0), r"gamma_neg must be >= 0"),
        (bcejax.sigmoid_asymmetric_loss, dict(gamma_pos=-1.0), r"gamma_pos must be >= 0"),
        (bcejax.sigmoid_asymmetric_loss, dict(clip=1.5), r"clip must be >= 0.0 and <= 1.0"),
        (bcejax.sigmoid_binary_cross_entropy, dict(label_smoothing=1.0), r"label_smoothing"),
        (bcejax.sigmoid_binary_cross_entropy, dict(label_smoothing=-0.1), r"label_smoothing"),
        (bcejax.sigmoid_binary_cross_entropy, dict(pos_weight=-2.0), r"pos_weight must be >= 0"),
        (bcejax.binary_cross_entropy, dict(eps=0.0), r"eps must be > 0.*eps=None"),
        (bcejax.binary_cross_entropy, dict(eps=0.7), r"eps must be > 0.0 and < 0.5"),
    ],
)
def test_config_out_of_range(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(_preds(fn), Y, **kwargs)


def test_config_checks_also_run_under_jit():
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        jax.jit(lambda x, y: bcejax.sigmoid_focal_loss(x, y, gamma=-1.0))(X, Y)


@pytest.mark.parametrize("reduction", ["avg", "batchmean", None])
def test_bad_reduction(reduction):
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum', 'none'\)"):
        bcejax.losses.BinaryCrossEntropy(reduction=reduction)
    with pytest.raises(ValueError, match="reduction must be one of"):
        bcejax.reduce_loss(X, reduction)


def test_plain_jit_pays_nothing_and_checks_nothing():
    # Values are unknown at trace time: the compiled function has no checks in it.
    out = jax.jit(bcejax.sigmoid_binary_cross_entropy)(X, Y * 255)
    assert out.shape == X.shape
    text = jax.jit(bcejax.sigmoid_binary_cross_entropy).lower(X, Y).as_text()
    assert "check" not in text.lower()


@pytest.mark.parametrize(
    "labels, match",
    [
        (
            Y * 255,
            r"labels must be in \[0, 1\] \(min 0.0, max 255.0\): .* 8-bit mask; divide by 255",
        ),
        (Y * 2 - 1, r"labels must be in \[0, 1\] \(min -1.0, max 1.0\): labels in \{-1, 1\}; map"),
    ],
)
def test_checked_mode_raises_under_jit(labels, match):
    def step(x, y):
        return jnp.mean(bcejax.sigmoid_binary_cross_entropy(x, y))

    checked = bcejax.checked(step)
    np.testing.assert_allclose(checked(X, Y), step(X, Y), rtol=1e-6)
    with pytest.raises(bcejax.InvalidInputError, match=match):
        checked(X, labels)


def test_checked_mode_probabilities_and_nan_logits():
    checked_probs = bcejax.checked(lambda p, y: bcejax.binary_cross_entropy(p, y).mean())
    with pytest.raises(bcejax.InvalidInputError, match="probs must be probabilities"):
        checked_probs(X, Y)
    checked_logits = bcejax.checked(lambda x, y: bcejax.sigmoid_focal_loss(x, y).mean())
    with pytest.raises(bcejax.InvalidInputError, match="NaN in logits"):
        checked_logits(np.full(6, np.nan, np.float32), Y)


def test_checked_mode_with_callable_and_grad():
    loss_fn = bcejax.losses.FocalLoss()
    grad_fn = bcejax.checked(jax.grad(lambda x, y: loss_fn(x, y)))
    assert np.all(np.isfinite(grad_fn(X, Y)))
    with pytest.raises(bcejax.InvalidInputError, match="8-bit"):
        grad_fn(X, Y * 255)


def test_invalid_input_error_is_a_value_error():
    assert issubclass(bcejax.InvalidInputError, ValueError)


def test_reduce_loss_rejects_masks_that_add_axes():
    with pytest.raises(ValueError, match="must not add axes"):
        bcejax.reduce_loss(X, "mean", where=np.ones((3, 6), bool))
