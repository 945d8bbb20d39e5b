"""The evaluation an example ends with: test metrics of the best parameters, plots and
``metrics.json`` in ``--out``, written and printed by process 0 alone."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import plots
import training

from bcejax import calibration, metrics


def split_logits(task: training.Task, result: training.FitResult) -> dict[str, np.ndarray]:
    """The best parameters' logits on the validation and test splits."""
    best = result.state.best_params
    return {
        split: training.predict(result.trainer, best, task.splits[split])[1]
        for split in ("val", "test")
    }


def evaluate(
    task: training.Task, result: training.FitResult, logits: dict[str, np.ndarray] | None = None
) -> dict[str, Any] | None:
    """Test metrics, plots and ``metrics.json`` of the best parameters; returns the metrics.

    ``logits`` (per split, e.g. an ensemble's averaged logits) replaces the
    best parameters' own. Every process takes part in computing the logits;
    process 0 alone computes the metrics, writes the files and prints the
    summary, and the others return None.
    """
    logits = split_logits(task, result) if logits is None else logits
    if jax.process_index() != 0:
        return None
    out = result.out
    results: dict[str, Any] = {"example": task.name, "loss": task.loss_name}
    for split in ("val", "test"):
        loss = task.loss(jnp.asarray(logits[split]), jnp.asarray(task.splits[split]["y"]))
        results[f"{split}_loss"] = float(loss)
    y_test = task.splits["test"]["y"]
    if task.kind == "classifier":
        temperature = float(calibration.fit_temperature(logits["val"], task.splits["val"]["y"]))
        results["test"] = _classifier_metrics(logits["test"], y_test, temperature)
        plots.classifier(out, logits["test"], y_test, temperature)
    else:
        results["test"] = {
            "iou": float(metrics.iou_score(logits["test"], y_test, threshold=0.0)),
            "dice": float(metrics.dice_score(logits["test"], y_test, threshold=0.0)),
        }
        plots.segmentation(out, task.splits["test"]["x"], y_test, logits["test"])
    results["epochs"] = result.state.epoch
    results["train_seconds"] = round(result.seconds, 1)
    results["devices"] = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
    results["processes"] = jax.process_count()
    results["history"] = {k: list(v) for k, v in dataclasses.asdict(result.state.history).items()}
    plots.losses(out, results["history"])
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    _print_summary(results)
    return results


def _classifier_metrics(x: np.ndarray, y: np.ndarray, temperature: float) -> dict[str, float]:
    """The test metrics of a classifier's logits ``x``."""
    return {
        "roc_auc": float(metrics.roc_auc(x, y)),
        "average_precision": float(metrics.average_precision(x, y)),
        "f1": float(metrics.f1_score(x, y, threshold=0.0)),
        "log_loss": float(metrics.log_loss(x, y, from_logits=True)),
        "ece": float(metrics.expected_calibration_error(x, y, from_logits=True)),
        "ece_after_temperature_scaling": float(
            metrics.expected_calibration_error(x / temperature, y, from_logits=True)
        ),
        "temperature": temperature,
    }


def _print_summary(results: dict) -> None:
    test = results["test"]
    hosts = f", {results['processes']} processes" if results["processes"] > 1 else ""
    print(f"\n{results['example']} ({results['loss']}), test split, {results['devices']}{hosts}:")
    for key, value in test.items():
        print(f"  {key:<32} {value:.4f}")
    print(f"  {'epochs':<32} {results['epochs']}")
    print(f"  {'training seconds':<32} {results['train_seconds']}")
