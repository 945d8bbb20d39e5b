"""value_and_grad of the mean binary loss over 2^24 float32 elements: bcejax vs optax (vs PyTorch).

Every contender is timed in the same process, round-robin, so machine noise
hits them alike; the table reports medians and ratios to the matching optax
(or plain bcejax BCE) time. The shape is (2^24 / 16, 16), a multi-label batch
with a per-class ``pos_weight``. Run:

    python benchmarks/bench_binary.py [--log2-size 24] [--repeats 15] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import harness
import jax
import jax.numpy as jnp
import numpy as np
import optax

import bcejax

_mean_loss = harness.value_and_grad_of_mean
TORCH = "torch BCEWithLogitsLoss (forward + backward)"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2-size", type=int, default=24)
    parser.add_argument("--num-classes", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    n = 2**args.log2_size
    rows, (x, y, _, _) = _contenders(n, args.num_classes)
    calls = {name: harness.blocking(fn, fn_args) for name, (fn, fn_args, _) in rows.items()}
    baselines = {name: base for name, (_, _, base) in rows.items()}
    torch_row = _torch_contender(x, y)
    torch_version = None
    if torch_row is not None:
        run, torch_version = torch_row
        run()
        calls[TORCH] = run
        baselines[TORCH] = "bcejax sigmoid_binary_cross_entropy"

    medians = harness.round_robin(calls, args.repeats)
    print(f"value_and_grad(mean loss), {n:,} float32 elements on {jax.devices()[0].platform}")
    results = harness.table(medians, baselines)
    fields = {
        "benchmark": "binary value_and_grad of the mean loss",
        "elements": n,
        "shape": [n // args.num_classes, args.num_classes],
        "dtype": "float32",
        "repeats": args.repeats,
    }
    harness.record("binary", args.out, fields, results, torch=torch_version)


if __name__ == "__main__":
    main()
