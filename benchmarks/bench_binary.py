"""value_and_grad of the mean binary loss over 2^24 float32 elements: bcejax vs optax (vs PyTorch).

Every contender is timed in the same process, round-robin, so machine noise
hits them alike; the table reports medians and ratios to the matching optax
(or plain bcejax BCE) time. The shape is (2^24 / 16, 16), a multi-label batch
with a per-class ``pos_weight``. Run:

    python benchmarks/bench_binary.py [--log2-size 24] [--repeats 15] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import bcejax


def _mean_loss(fn):
    def loss(x, y, *extra):
        return jnp.mean(fn(x, y, *extra))

    return jax.jit(jax.value_and_grad(loss))


def _contenders(n: int, num_classes: int):
    """name -> (compiled function, args, baseline name)."""
    key_x, key_y, key_w = jax.random.split(jax.random.key(0), 3)
    shape = (n // num_classes, num_classes)
    x = jax.random.normal(key_x, shape, jnp.float32) * 3
    y = (jax.random.uniform(key_y, shape) < 0.3).astype(jnp.float32)
    w = jax.random.uniform(key_w, shape, jnp.float32)
    pw = jnp.linspace(0.5, 4.0, num_classes, dtype=jnp.float32)
    rows = {
        "optax sigmoid_binary_cross_entropy": (
            _mean_loss(optax.sigmoid_binary_cross_entropy),
            (x, y),
            None,
        ),
        "bcejax sigmoid_binary_cross_entropy": (
            _mean_loss(bcejax.sigmoid_binary_cross_entropy),
            (x, y),
            "optax sigmoid_binary_cross_entropy",
        ),
        "bcejax BCE + pos_weight (scalar) + label_smoothing + weights": (
            _mean_loss(
                lambda x, y, w: bcejax.sigmoid_binary_cross_entropy(
                    x, y, weights=w, pos_weight=3.0, label_smoothing=0.1
                )
            ),
            (x, y, w),
            "bcejax sigmoid_binary_cross_entropy",
        ),
        "bcejax BCE + pos_weight (per class) + label_smoothing + weights": (
            _mean_loss(
                lambda x, y, w, pw: bcejax.sigmoid_binary_cross_entropy(
                    x, y, weights=w, pos_weight=pw, label_smoothing=0.1
                )
            ),
            (x, y, w, pw),
            "bcejax sigmoid_binary_cross_entropy",
        ),
        "optax sigmoid_focal_loss (alpha=0.25, gamma=2)": (
            _mean_loss(lambda x, y: optax.sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0)),
            (x, y),
            None,
        ),
        "bcejax sigmoid_focal_loss (alpha=0.25, gamma=2)": (
            _mean_loss(lambda x, y: bcejax.sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0)),
            (x, y),
            "optax sigmoid_focal_loss (alpha=0.25, gamma=2)",
        ),
        "optax sigmoid_focal_loss (alpha=0.25, gamma=1.5)": (
            _mean_loss(lambda x, y: optax.sigmoid_focal_loss(x, y, alpha=0.25, gamma=1.5)),
            (x, y),
            None,
        ),
        "bcejax sigmoid_focal_loss (alpha=0.25, gamma=1.5)": (
            _mean_loss(lambda x, y: bcejax.sigmoid_focal_loss(x, y, alpha=0.25, gamma=1.5)),
            (x, y),
            "optax sigmoid_focal_loss (alpha=0.25, gamma=1.5)",
        ),
    }
    return rows, (x, y, w, pw)


def _torch_contender(x, y):
    # Idle OpenMP threads must sleep, not spin, or they steal the cores XLA is timed on.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    xt = torch.from_numpy(np.array(x)).requires_grad_(True)
    yt = torch.from_numpy(np.array(y))
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def run():
        xt.grad = None
        loss = loss_fn(xt, yt)
        loss.backward()
        return loss.item()

    return run, torch.__version__


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2-size", type=int, default=24)
    parser.add_argument("--num-classes", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    n = 2**args.log2_size
    rows, (x, y, _, _) = _contenders(n, args.num_classes)
    calls = {}
    for name, (fn, fn_args, _) in rows.items():
        jax.block_until_ready(fn(*fn_args))  # compile
        calls[name] = lambda fn=fn, fn_args=fn_args: jax.block_until_ready(fn(*fn_args))
    torch_row = _torch_contender(x, y)
    torch_version = None
    if torch_row is not None:
        run, torch_version = torch_row
        run()
        calls["torch BCEWithLogitsLoss (forward + backward)"] = run

    # Round-robin, so machine noise hits every contender alike; within a round each
    # contender runs once untimed first, so it is timed in the steady state of a
    # training loop (its buffers recycled), not after another contender's buffers.
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            call()
            times[name].append(_timed(call))
    medians = {name: statistics.median(t) for name, t in times.items()}

    baselines = {name: base for name, (_, _, base) in rows.items()}
    baselines["torch BCEWithLogitsLoss (forward + backward)"] = (
        "bcejax sigmoid_binary_cross_entropy"
    )
    table = []
    for name, median in medians.items():
        base = baselines.get(name)
        ratio = None if base is None else median / medians[base]
        table.append(
            {"name": name, "median_ms": median * 1e3, "baseline": base, "time_ratio": ratio}
        )

    print(f"value_and_grad(mean loss), {n:,} float32 elements on {jax.devices()[0].platform}")
    print(f"{'contender':<66} {'median ms':>10}  time / baseline's time")
    for row in table:
        ratio = "" if row["time_ratio"] is None else f"{row['time_ratio']:.2f} x {row['baseline']}"
        print(f"{row['name']:<66} {row['median_ms']:>10.1f}  {ratio}")

    record = {
        "benchmark": "binary value_and_grad of the mean loss",
        "elements": n,
        "shape": [n // args.num_classes, args.num_classes],
        "dtype": "float32",
        "repeats": args.repeats,
        "date": datetime.date.today().isoformat(),
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
            "torch": torch_version,
        },
        "results": table,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    device = jax.devices()[0].platform
    path = args.out / f"binary_{device}_{record['date']}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"recorded in {path}")


if __name__ == "__main__":
    main()
