"""Bad inputs to the metrics: labels 255 and -1, eagerly and checked; shapes, weights, bins."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from metric_inputs import SCALAR_METRICS, bcejax_metric

import bcejax
from bcejax import metrics
from bcejax.metrics import StreamingBinaryMetrics

ALL_FUNCTIONS = [
    *SCALAR_METRICS,
    "confusion_matrix",
    "roc_curve",
    "precision_recall_curve",
    "expected_calibration_error",
    "reliability_diagram",
]
GOOD_S = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.2])
GOOD_Y = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
BAD_LABELS = {"255": 255.0, "minus-1": -1.0}


def _with_bad_label(bad, dtype=np.float64):
    labels = GOOD_Y.copy()
    labels[3] = bad
    return labels.astype(dtype)


@pytest.mark.parametrize("bad", list(BAD_LABELS))
@pytest.mark.parametrize("name", ALL_FUNCTIONS)
def test_bad_labels_raise_eagerly(name, bad):
    fn = bcejax_metric(name)
    with pytest.raises(bcejax.InvalidInputError, match="labels"):
        fn(GOOD_S, _with_bad_label(BAD_LABELS[bad]))
    # the same label, masked out, is junk and passes
    keep = np.arange(GOOD_S.size) != 3
    fn(GOOD_S, _with_bad_label(BAD_LABELS[bad]), where=keep)


def test_uint8_mask_labels_raise():
    with pytest.raises(bcejax.InvalidInputError, match="labels"):
        metrics.roc_auc(GOOD_S, _with_bad_label(255, np.uint8))
    with pytest.raises(bcejax.InvalidInputError, match="labels"):
        metrics.f1_score(GOOD_S, _with_bad_label(-1, np.int32))


@pytest.mark.parametrize(
    "name", ["roc_auc", "average_precision", "f1_score", "log_loss", "expected_calibration_error"]
)
def test_bad_labels_raise_under_checked(name):
    fn = bcejax_metric(name)
    checked = bcejax.checked(fn)
    np.testing.assert_allclose(checked(GOOD_S, GOOD_Y), fn(GOOD_S, GOOD_Y), rtol=1e-12)
    for bad in BAD_LABELS.values():
        with pytest.raises(bcejax.InvalidInputError, match="labels"):
            checked(GOOD_S, _with_bad_label(bad))


def test_streaming_update_rejects_bad_labels():
    state = StreamingBinaryMetrics.empty()
    with pytest.raises(bcejax.InvalidInputError, match="labels"):
        state.update(GOOD_S, _with_bad_label(255.0))
    checked = bcejax.checked(lambda st, s, y: st.update(s, y))
    checked(state, GOOD_S, GOOD_Y)
    with pytest.raises(bcejax.InvalidInputError, match="labels"):
        checked(state, GOOD_S, _with_bad_label(-1.0))


@pytest.mark.parametrize("name", ["roc_auc", "f1_score", "log_loss", "confusion_matrix"])
def test_negative_sample_weight_raises(name):
    weights = np.ones(GOOD_S.size)
    weights[2] = -0.5
    fn = bcejax_metric(name)
    with pytest.raises(bcejax.InvalidInputError):
        fn(GOOD_S, GOOD_Y, sample_weight=weights)
    with pytest.raises(bcejax.InvalidInputError):
        bcejax.checked(lambda s, y, w: fn(s, y, sample_weight=w))(GOOD_S, GOOD_Y, weights)


@pytest.mark.parametrize("name", ["roc_auc", "average_precision", "f1_score", "log_loss"])
def test_shapes_that_do_not_broadcast_raise(name):
    fn = bcejax_metric(name)
    with pytest.raises(ValueError, match=r"(?s)(?=.*\(6,\))(?=.*\(4,\))"):
        fn(GOOD_S, GOOD_Y[:4])
    with pytest.raises(ValueError, match=r"(?s)(?=.*\(6,\))(?=.*\(3,\))"):
        fn(GOOD_S, GOOD_Y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match=r"(?s)(?=.*\(6,\))(?=.*\(5,\))"):
        fn(GOOD_S, GOOD_Y, where=np.ones(5, bool))


def test_shape_error_names_both_arguments():
    with pytest.raises(ValueError, match=r"(?s)(?=.*labels)(?=.*\(6,\))(?=.*\(4,\))") as info:
        metrics.roc_auc(GOOD_S, GOOD_Y[:4])
    assert not isinstance(info.value, bcejax.InvalidInputError)


@pytest.mark.parametrize("n_bins", [0, -3])
def test_bad_n_bins(n_bins):
    with pytest.raises(ValueError, match="n_bins"):
        metrics.expected_calibration_error(GOOD_S, GOOD_Y, n_bins=n_bins)
    with pytest.raises(ValueError, match="n_bins"):
        metrics.reliability_diagram(GOOD_S, GOOD_Y, n_bins=n_bins)


@pytest.mark.parametrize("num_bins", [1, 0])
def test_bad_num_bins(num_bins):
    with pytest.raises(ValueError, match="num_bins"):
        StreamingBinaryMetrics.empty(num_bins=num_bins)


def test_fbeta_requires_beta():
    with pytest.raises(TypeError):
        metrics.fbeta_score(GOOD_S, GOOD_Y)
    np.testing.assert_allclose(
        metrics.fbeta_score(GOOD_S, GOOD_Y, beta=1.0), metrics.f1_score(GOOD_S, GOOD_Y)
    )


THRESHOLD_METRICS = [
    "accuracy",
    "precision",
    "recall",
    "f1_score",
    "balanced_accuracy",
    "matthews_corrcoef",
    "iou_score",
    "dice_score",
]


@pytest.mark.parametrize("name", THRESHOLD_METRICS)
def test_threshold_metrics_take_the_arguments_of_confusion_matrix(name):
    fn = getattr(metrics, name)
    assert inspect.signature(fn) == inspect.signature(metrics.confusion_matrix)
    assert fn.__name__ == name
    got = fn(GOOD_S, GOOD_Y, threshold=0.3, sample_weight=np.ones(6), where=np.ones(6, bool))
    assert np.isfinite(float(got))
    with pytest.raises(TypeError, match=rf"{name}\(\) got an unexpected keyword .*'thresold'"):
        fn(GOOD_S, GOOD_Y, thresold=0.3)
    with pytest.raises(TypeError, match=rf"{name}\(\) .*takes \(scores"):
        fn(GOOD_S, GOOD_Y, 0.3)
