"""The scikit-learn baseline each example trains beside its model, on the same split and features.

A baseline is the candidate model, among a few scikit-learn settings, that
scores best on the validation split: logistic regression (``C`` from a grid)
and histogram gradient boosting (learning rate and leaves from a grid), each
fitted on the training split. Only the chosen one sees the test split, once,
after the choice. The example names its candidates and the features they
read (:class:`Features`); :func:`fit` returns the chosen one's name, its
validation score and its logits (``decision_function``: the log-odds) on the
test split, which :mod:`evaluation` scores as it scores the model's.

With ``--quick`` the baseline is skipped unless ``--baseline on`` is given;
``--baseline off`` skips it always.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from bcejax import metrics


@dataclasses.dataclass(frozen=True)
class Features:
    """What a baseline reads: per split, ``(x, y)`` with one row of ``x`` per label in ``y``.

    ``x`` is a NumPy array or a SciPy sparse matrix (logistic regression reads
    either; gradient boosting, dense only). For segmentation a row is a pixel:
    ``shapes`` gives, per split, the masks' shape the logits are reshaped to.
    """

    train: tuple[Any, np.ndarray]
    val: tuple[Any, np.ndarray]
    test: tuple[Any, np.ndarray]
    shapes: dict[str, tuple[int, ...]] | None = None


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The chosen candidate: its name, validation score, logits per split and fitting time.

    ``logits`` holds ``"val"`` and ``"test"``, shaped as the labels of the
    split; ``val_scores``, every candidate's validation score by name.
    """

    name: str
    val_score: float
    logits: dict[str, np.ndarray]
    seconds: float
    val_scores: dict[str, float]


def logistic_regression(c_values=(0.1, 1.0, 10.0)) -> dict[str, Callable[[], Any]]:
    """Candidates: L2-regularized logistic regression, one per inverse strength ``C``."""
    return {
        f"LogisticRegression(C={c:g})": lambda c=c: LogisticRegression(C=c, max_iter=5000)
        for c in c_values
    }


def gradient_boosting(
    learning_rates=(0.03, 0.1), leaves=(7, 31), max_iter: int = 300
) -> dict[str, Callable[[], Any]]:
    """Candidates: histogram gradient boosting, one per learning rate and leaf count.

    ``max_iter`` trees, no early stopping: the validation split chooses among
    the candidates and is not carved out of the training split.
    """
    return {
        f"HistGradientBoostingClassifier(learning_rate={rate:g}, max_leaf_nodes={n})": (
            lambda rate=rate, n=n: HistGradientBoostingClassifier(
                learning_rate=rate,
                max_leaf_nodes=n,
                max_iter=max_iter,
                early_stopping=False,
                random_state=0,
            )
        )
        for rate in learning_rates
        for n in leaves
    }


def fit(
    candidates: dict[str, Callable[[], Any]],
    features: Features,
    score: Callable[[np.ndarray, np.ndarray], float],
) -> Baseline:
    """Fits every candidate on the training split; the best by ``score`` on the validation split.

    ``score(logits, labels)`` is higher for better; ties go to the candidate
    named first. The test split is read once, by the chosen candidate.
    """
    start = time.perf_counter()
    best: Any = None
    best_score, best_name, best_val = -np.inf, "", None
    (x_train, y_train), (x_val, y_val) = features.train, features.val
    scores = {}
    for name, make in candidates.items():
        model = make().fit(x_train, y_train)
        val_logits = model.decision_function(x_val)
        scores[name] = value = float(score(val_logits, y_val))
        if value > best_score:
            best, best_score, best_name, best_val = model, value, name, val_logits
    logits = {"val": best_val, "test": best.decision_function(features.test[0])}
    shapes = features.shapes or {}
    logits = {
        split: np.asarray(value, np.float32).reshape(shapes.get(split, value.shape))
        for split, value in logits.items()
    }
    return Baseline(best_name, best_score, logits, time.perf_counter() - start, scores)


def roc_auc(logits: np.ndarray, labels: np.ndarray) -> float:
    """The classifiers' validation score."""
    return float(metrics.roc_auc(logits, labels))


def iou(logits: np.ndarray, labels: np.ndarray) -> float:
    """The segmentation validation score: IoU of the pixels with a positive logit."""
    return float(metrics.iou_score(logits, labels, threshold=0.0))


def wanted(args: argparse.Namespace) -> bool:
    """Whether this run trains the baseline: ``--baseline on``, or ``auto`` without ``--quick``.

    Process 0 alone trains it: it is what process 0 reports.
    """
    chosen = args.baseline == "on" or (args.baseline == "auto" and not args.quick)
    return chosen and jax.process_index() == 0
