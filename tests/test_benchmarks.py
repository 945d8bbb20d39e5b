"""The device check runs as the README says, on whatever device JAX finds (here the CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_writes_the_table_json_and_plot(tmp_path):
    # The README's command with toy sizes: every loss, both dtypes, the linear head.
    command = ["suite.py", "--device-check", "--log2-sizes", "10", "--repeats", "1"]
    result = subprocess.run(
        [sys.executable, *command, "--out", str(tmp_path)],
        cwd=ROOT / "benchmarks",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    (record,) = tmp_path.glob("suite_cpu_*.json")
    assert record.with_suffix(".png").exists()
    entry = json.loads(record.read_text())
    losses = {(row["loss"], row["dtype"], row["contender"]) for row in entry["results"]}
    assert len({loss for loss, _, _ in losses}) == 4
    assert {dtype for _, dtype, _ in losses} == {"float32", "bfloat16"}
    assert {"optax", "plain jnp", "bcejax"} <= {name for _, _, name in losses}
    head = {(row["dtype"], row["contender"]) for row in entry["linear_head"]}
    assert head == {
        (d, c) for d in ("float32", "bfloat16") for c in ("materialized", "bcejax fused")
    }
    assert "linear head" in result.stdout
