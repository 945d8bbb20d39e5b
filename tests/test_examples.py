"""The examples run as a user runs them: ``--quick`` in a subprocess, outputs checked.

Each run is a fresh process (as from the README), so the device count can be
set with ``XLA_FLAGS`` before JAX starts.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER_KEYS = {"roc_auc", "average_precision", "f1", "log_loss", "ece"}


def run_example(name: str, out: Path, *args: str, devices: int = 1, check: bool = True):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env.pop("JAX_ENABLE_X64", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{name}.py"), "--out", str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def spam_quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("spam")
    result = run_example("spam", out, "--quick")
    return out, result


def test_spam_quick_writes_sane_outputs(spam_quick):
    out, result = spam_quick
    metrics = read_metrics(out)
    test = metrics["test"]
    assert CLASSIFIER_KEYS <= set(test)
    assert all(math.isfinite(v) for v in test.values())
    assert 0.85 < test["roc_auc"] <= 1.0  # chance is 0.5; a full run reaches 0.93
    assert 0.0 < test["log_loss"] < 0.5  # always predicting the 9% base rate gives 0.31
    assert 0.0 <= test["ece"] < 0.2
    assert metrics["epochs"] == 3 and metrics["loss"] == "bce"
    assert len(metrics["history"]["val_loss"]) == 3
    for plot in ("loss_curves.png", "roc_pr.png", "reliability.png"):
        assert (out / plot).stat().st_size > 1000
    assert "roc_auc" in result.stdout  # the printed summary


def test_spam_focal_loss(tmp_path):
    run_example("spam", tmp_path, "--quick", "--loss", "focal")
    metrics = read_metrics(tmp_path)
    assert metrics["loss"] == "focal"
    assert metrics["test"]["roc_auc"] > 0.85


def test_resume_continues_where_the_run_stopped(tmp_path, spam_quick):
    whole, parts = spam_quick[0], tmp_path / "parts"
    run_example("spam", parts, "--quick", "--epochs", "2")
    resumed = run_example("spam", parts, "--quick", "--resume")
    assert "resumed from the checkpoint after epoch 2" in resumed.stdout
    assert "epoch   1:" not in resumed.stdout  # the finished epochs are not run again
    # the same shuffles and optimizer state: the same history as the uninterrupted run
    want, got = read_metrics(whole), read_metrics(parts)
    assert got["history"]["val_loss"] == pytest.approx(want["history"]["val_loss"], rel=1e-5)
    assert got["test"]["roc_auc"] == pytest.approx(want["test"]["roc_auc"], rel=1e-5)


def test_four_devices_shard_the_batch(tmp_path):
    result = run_example("spam", tmp_path, "--quick", devices=4)
    metrics = read_metrics(tmp_path)
    assert metrics["devices"] == "4 x cpu"
    assert metrics["test"]["roc_auc"] > 0.85, result.stdout


def test_non_finite_loss_stops_the_run_with_the_step(tmp_path):
    result = run_example("spam", tmp_path, "--quick", "--lr", "1e12", check=False)
    assert result.returncode == 1
    assert "training stopped: the training loss is nan at step" in result.stderr
    assert "learning rate" in result.stderr
    assert not (tmp_path / "metrics.json").exists()


def test_sentiment_quick(tmp_path):
    """With the squared-error loss, the one loss that is not a bcejax callable."""
    run_example("sentiment", tmp_path, "--quick", "--loss", "mse")
    metrics = read_metrics(tmp_path)
    assert metrics["loss"] == "mse"
    assert CLASSIFIER_KEYS <= set(metrics["test"])
    assert all(math.isfinite(v) for v in metrics["test"].values())
    assert metrics["test"]["roc_auc"] > 0.75  # a full run reaches 0.88
    assert (tmp_path / "roc_pr.png").exists()


def test_quickstart_notebook_runs(monkeypatch):
    """Every code cell of the notebook, in order, in one namespace (as a kernel runs them)."""
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setattr("matplotlib.pyplot.show", lambda *a, **k: None)
    notebook = json.loads((ROOT / "examples" / "quickstart.ipynb").read_text())
    namespace: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "quickstart.ipynb", "exec"), namespace)
    rows = namespace["rows"]
    assert set(rows) == {"BCE", "focal (alpha 0.25, gamma 2)"}
    for row in rows.values():
        assert float(row["ROC-AUC"]) > 0.88
        assert float(row["ECE, temperature-scaled"]) < 0.1


def test_segmentation_quick(tmp_path):
    run_example("segmentation", tmp_path, "--quick")
    metrics = read_metrics(tmp_path)
    test = metrics["test"]
    assert set(test) == {"iou", "dice"}
    # predicting no foreground gives 0, predicting all of it about 0.075; a full run 0.93
    assert 0.2 < test["iou"] <= test["dice"] <= 1.0
    assert metrics["history"]["val_score"][-1] is not None  # the validation IoU per epoch
    for plot in ("loss_curves.png", "overlays.png"):
        assert (tmp_path / plot).stat().st_size > 1000
