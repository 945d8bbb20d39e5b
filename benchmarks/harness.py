"""What every benchmark here shares: round-robin timing, the table, the JSON record.

Every contender is timed in the same process, round-robin, so machine noise
hits them alike; results are medians, and ratios to a baseline measured in
the same run.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import bcejax


def value_and_grad_of_mean(fn):
    """``jit(value_and_grad(mean(fn(x, y, *extra))))``: a training step's loss work."""

    def loss(x, y, *extra):
        return jnp.mean(fn(x, y, *extra))

    return jax.jit(jax.value_and_grad(loss))


def blocking(fn, args) -> Callable[[], object]:
    """A no-argument call of ``fn(*args)`` that waits for the result; compiled once here."""

    def call():
        return jax.block_until_ready(fn(*args))

    call()
    return call


def round_robin(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each contender, timed in turns.

    Within a round each contender runs once untimed first, so it is timed in
    the steady state of a training loop (its buffers recycled), not after
    another contender's buffers.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            call()
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def table(medians: dict[str, float], baselines: dict[str, str | None]) -> list[dict]:
    """Rows of name, median ms, baseline and the time ratio to the baseline; printed."""
    rows = []
    for name, median in medians.items():
        base = baselines.get(name)
        ratio = None if base is None else median / medians[base]
        row = {"name": name, "median_ms": median * 1e3, "baseline": base, "time_ratio": ratio}
        rows.append(row)
    width = max(len(name) for name in medians) + 2
    print(f"{'contender':<{width}} {'median ms':>10}  time / baseline's time")
    for row in rows:
        ratio = "" if row["time_ratio"] is None else f"{row['time_ratio']:.2f} x {row['baseline']}"
        print(f"{row['name']:<{width}} {row['median_ms']:>10.1f}  {ratio}")
    return rows


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record(name: str, out: Path, fields: dict, results: list[dict], **versions) -> Path:
    """Writes ``<name>_<platform>_<date>.json`` with the machine, the versions and results."""
    date = datetime.date.today().isoformat()
    entry = {
        **fields,
        "date": date,
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "device": str(jax.devices()[0]),
        },
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "optax": optax.__version__,
            "bcejax": bcejax.__version__,
            **versions,
        },
        "results": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}_{jax.devices()[0].platform}_{date}.json"
    path.write_text(json.dumps(entry, indent=2) + "\n")
    print(f"recorded in {path}")
    return path
