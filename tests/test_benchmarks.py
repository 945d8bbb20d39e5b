"""The benchmarks run as the README says, on whatever device JAX finds (here the CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_benchmark(script, *args, out):
    """The script's JSON record and its printed table, run with one round at toy sizes."""
    result = subprocess.run(
        [sys.executable, script, *args, "--repeats", "1", "--out", str(out)],
        cwd=ROOT / "benchmarks",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (record,) = out.glob("*.json")
    return json.loads(record.read_text()), result.stdout


@pytest.mark.slow
def test_device_check_writes_the_table_json_and_plot(tmp_path):
    # The README's command with toy sizes: every loss, both dtypes, the linear head.
    entry, stdout = _run_benchmark("suite.py", "--device-check", "--log2-sizes", "10", out=tmp_path)
    (record,) = tmp_path.glob("suite_cpu_*.json")
    assert record.with_suffix(".png").exists()
    losses = {(row["loss"], row["dtype"], row["contender"]) for row in entry["results"]}
    assert len({loss for loss, _, _ in losses}) == 4
    assert {dtype for _, dtype, _ in losses} == {"float32", "bfloat16"}
    assert {"optax", "plain jnp", "bcejax"} <= {name for _, _, name in losses}
    head = {(row["dtype"], row["contender"]) for row in entry["linear_head"]}
    assert head == {
        (d, c) for d in ("float32", "bfloat16") for c in ("materialized", "bcejax fused")
    }
    assert "linear head" in stdout


@pytest.mark.slow
def test_binary_benchmark_has_every_option_row_in_both_layouts(tmp_path):
    entry, _ = _run_benchmark("bench_binary.py", "--log2-size", "10", out=tmp_path)
    rows = entry["results"]
    shapes = {tuple(row["shape"]) for row in rows}
    assert shapes == {(1024,), (64, 16)}
    names = {row["name"] for row in rows}
    assert sum("(in step)" in name for name in names) == 3
    for option in ("pos_weight (per class)", "(per example, (N, 1))", "(per class, broadcast)"):
        assert any(option in name for name in names), option
    focal = [row for row in rows if row["name"].startswith("bcejax sigmoid_focal_loss")]
    assert len(focal) == 4 and all(row["baseline"].startswith("optax") for row in focal)


@pytest.mark.slow
def test_softmax_and_segmentation_benchmarks_report_their_floor(tmp_path):
    entry, _ = _run_benchmark("bench_softmax.py", "--shapes", "64x10", out=tmp_path / "softmax")
    softmax = entry["results"]
    bcejax_rows = [row for row in softmax if row["name"].startswith("bcejax")]
    assert len(bcejax_rows) == 6
    assert all(row["baseline"].startswith("optax") for row in bcejax_rows)
    assert all(row["fraction_of_floor"] > 0 for row in softmax)
    entry, _ = _run_benchmark(
        "bench_segmentation.py", "--batch", "2", "--size", "16", out=tmp_path / "segmentation"
    )
    images = entry["results"]
    assert {row["name"] for row in images} >= {"bcejax sigmoid_bce_dice_loss", "bcejax dice_loss"}
    assert all(row["fraction_of_floor"] > 0 for row in images)


@pytest.mark.slow
def test_step_benchmark_times_every_example_with_both_losses(tmp_path):
    entry, stdout = _run_benchmark("bench_steps.py", "--small", out=tmp_path)
    rows = entry["results"]
    assert {row["example"] for row in rows} == {"spam", "sentiment", "segmentation"}
    for example in ("spam", "sentiment"):
        assert {row["loss"] for row in rows if row["example"] == example} == {
            "bcejax BCE",
            "optax BCE",
        }
    assert all(row["step_ms"] > 0 and row["loss_share"] > 0 for row in rows)
    assert "flax" in entry["versions"] and "loss share" in stdout


def test_the_step_benchmark_compares_the_same_loss(monkeypatch):
    """optax's stand-ins give the bcejax callables' values, a mask dropping some entries."""
    import jax
    import jax.numpy as jnp

    import bcejax

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_steps

    keys = jax.random.split(jax.random.key(0), 3)
    for shape, bcejax_loss, optax_loss in [
        ((16,), bcejax.losses.BinaryCrossEntropy(), bench_steps.optax_bce),
        (
            (4, 8, 8),
            bcejax.losses.BinaryCrossEntropy() + bcejax.losses.DiceLoss(),
            bench_steps.optax_bce_dice,
        ),
    ]:
        x = 3 * jax.random.normal(keys[0], shape)
        y = (jax.random.uniform(keys[1], shape) < 0.3).astype(jnp.float32)
        where = jax.random.uniform(keys[2], shape) < 0.8
        want = bcejax_loss(x, y, where=where)
        assert float(optax_loss(x, y, where=where)) == pytest.approx(float(want), rel=1e-5)
