"""The evaluation an example ends with: test metrics of the best parameters, plots and
``metrics.json`` in ``--out``, written and printed by process 0 alone."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import baselines
import jax
import jax.numpy as jnp
import numpy as np
import plots
import training

from bcejax import calibration, metrics


def evaluate(
    task: training.Task,
    result: training.FitResult,
    logits: dict[str, np.ndarray] | None = None,
    baseline: baselines.Baseline | None = None,
) -> dict[str, Any] | None:
    """Test metrics, plots and ``metrics.json`` of the best parameters; returns the metrics.

    ``logits`` (per split, e.g. an ensemble's averaged logits) replaces the
    best parameters' own. ``baseline``, if given, is scored alike: its test
    metrics go to ``"baseline"`` and print beside the model's. Every process
    takes part in computing the logits; process 0 alone computes the metrics,
    writes the files and prints the summary, and the others return None.
    """
    logits = training.split_logits(task, result) if logits is None else logits
    if jax.process_index() != 0:
        return None
    out = result.out
    results: dict[str, Any] = {"example": task.name, "loss": task.loss_name}
    for split in ("val", "test"):
        loss = task.loss(jnp.asarray(logits[split]), jnp.asarray(task.splits[split]["y"]))
        results[f"{split}_loss"] = float(loss)
    results["test"] = _test_metrics(task, logits)
    y_test = task.splits["test"]["y"]
    if task.kind == "classifier":
        plots.classifier(out, logits["test"], y_test, results["test"]["temperature"])
    else:
        plots.segmentation(out, task.splits["test"]["x"], y_test, logits["test"])
    if baseline is not None:
        results["baseline"] = {
            "model": baseline.name,
            "val_score": baseline.val_score,
            "val_scores": baseline.val_scores,
            "seconds": round(baseline.seconds, 1),
            "test": _test_metrics(task, baseline.logits),
        }
    results["epochs"] = result.state.epoch
    results["train_seconds"] = round(result.seconds, 1)
    results["devices"] = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
    results["processes"] = jax.process_count()
    results["history"] = {k: list(v) for k, v in dataclasses.asdict(result.state.history).items()}
    plots.losses(out, results["history"])
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    _print_summary(results)
    return results


def _test_metrics(task: training.Task, logits: dict[str, np.ndarray]) -> dict[str, float]:
    """The test metrics of one model's logits (the validation logits fit its temperature)."""
    y_test = task.splits["test"]["y"]
    if task.kind == "classifier":
        temperature = float(calibration.fit_temperature(logits["val"], task.splits["val"]["y"]))
        return _classifier_metrics(logits["test"], y_test, temperature)
    return {
        "iou": float(metrics.iou_score(logits["test"], y_test, threshold=0.0)),
        "dice": float(metrics.dice_score(logits["test"], y_test, threshold=0.0)),
    }


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
    test, baseline = results["test"], results.get("baseline")
    hosts = f", {results['processes']} processes" if results["processes"] > 1 else ""
    print(f"\n{results['example']} ({results['loss']}), test split, {results['devices']}{hosts}:")
    print(f"  {'':<32} {'model':>8}" + (f" {'baseline':>9}" if baseline else ""))
    for key, value in test.items():
        beside = f" {baseline['test'][key]:>9.4f}" if baseline else ""
        print(f"  {key:<32} {value:>8.4f}{beside}")
    print(f"  {'epochs':<32} {results['epochs']:>8}")
    print(f"  {'training seconds':<32} {results['train_seconds']:>8}")
    if baseline:
        print(
            f"  baseline: {baseline['model']}, the best on the validation split "
            f"({baseline['val_score']:.4f}), fitted in {baseline['seconds']} s"
        )
