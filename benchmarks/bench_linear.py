"""Fused linear head + BCE against the materialized path: peak memory and time of value_and_grad.

At B=2048, D=256, L=131072 float32 (the defaults), the materialized path forms
``features @ weight + bias``, 1 GiB of logits, and its gradient. Each path runs
in its own process so that its peak RSS is its own; the scratch memory comes
from the compiled program's ``memory_analysis``. The fused path takes the
labels as positive indices (16 per example, padded with -1); the materialized
one the same labels dense. Medians of ``--repeats`` calls after one untimed
call. Run:

    python benchmarks/bench_linear.py [--batch 2048] [--dim 256] [--labels 131072]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import harness
import jax
import jax.numpy as jnp

import bcejax


def _inputs(batch: int, dim: int, labels: int, k: int = 16):
    keys = jax.random.split(jax.random.key(0), 3)
    features = jax.random.normal(keys[0], (batch, dim), jnp.float32)
    weight = jax.random.normal(keys[1], (dim, labels), jnp.float32) / jnp.sqrt(dim)
    bias = jnp.full((labels,), -4.0, jnp.float32)
    indices = jax.random.randint(keys[2], (batch, k), -1, labels)
    return features, weight, bias, indices


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(path: str, batch: int, dim: int, labels: int, repeats: int, chunk: int) -> dict:
    features, weight, bias, indices = _inputs(batch, dim, labels)
    if path == "inputs":  # the process with its inputs only: the floor under both paths
        jax.block_until_ready((features, weight, bias, indices))
        return {"path": path, "peak_rss_mib": _rss_mib()}
    if path == "materialized":
        rows = jnp.arange(batch)[:, None]
        dense = jnp.zeros((batch, labels), jnp.float32)
        dense = dense.at[rows, jnp.where(indices < 0, labels, indices)].set(1.0, mode="drop")

        def loss(f, w, b, y):
            return bcejax.losses.BinaryCrossEntropy()(f @ w + b, y)

        operand = dense
    else:

        def loss(f, w, b, y):
            return bcejax.sigmoid_binary_cross_entropy_with_linear(
                f, w, b, positive_indices=y, chunk_size=chunk
            )

        operand = indices
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    start = time.perf_counter()
    compiled = step.lower(features, weight, bias, operand).compile()
    compile_seconds = time.perf_counter() - start
    scratch = compiled.memory_analysis().temp_size_in_bytes
    value = float(jax.block_until_ready(step(features, weight, bias, operand))[0])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(features, weight, bias, operand))
        times.append(time.perf_counter() - start)
    return {
        "path": path,
        "loss": value,
        "median_s": statistics.median(times),
        "compile_s": compile_seconds,
        "scratch_mib": scratch / 2**20,
        "peak_rss_mib": _rss_mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--labels", type=int, default=131072)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--path", choices=("inputs", "materialized", "fused"), help=argparse.SUPPRESS
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    sizes = (args.batch, args.dim, args.labels, args.repeats, args.chunk)
    if args.path:  # one path, in this process
        print(json.dumps(_measure(args.path, *sizes)))
        return
    rows = []
    for path in ("inputs", "materialized", "fused"):
        command = [sys.executable, __file__, "--path", path]
        command += ["--batch", str(args.batch), "--dim", str(args.dim)]
        command += ["--labels", str(args.labels), "--chunk", str(args.chunk)]
        command += ["--repeats", str(args.repeats)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    floor, base = rows[0]["peak_rss_mib"], rows[1]
    print(f"value_and_grad, B={args.batch} D={args.dim} L={args.labels} float32")
    print(f"process with its inputs only: peak RSS {floor:.0f} MiB")
    for row in rows[1:]:
        row["time_ratio"] = row["median_s"] / base["median_s"]
        row["scratch_ratio"] = row["scratch_mib"] / base["scratch_mib"]
        row["rss_ratio"] = row["peak_rss_mib"] / base["peak_rss_mib"]
        row["rss_above_inputs_mib"] = row["peak_rss_mib"] - floor
        row["rss_above_inputs_ratio"] = row["rss_above_inputs_mib"] / (base["peak_rss_mib"] - floor)
        print(
            f"{row['path']:<13} {row['median_s'] * 1e3:9.0f} ms ({row['time_ratio']:.2f}x)  "
            f"scratch {row['scratch_mib']:6.0f} MiB ({row['scratch_ratio']:.3f}x)  "
            f"peak RSS {row['peak_rss_mib']:6.0f} MiB ({row['rss_ratio']:.2f}x; above the "
            f"inputs {row['rss_above_inputs_mib']:.0f} MiB, {row['rss_above_inputs_ratio']:.3f}x)  "
            f"compile {row['compile_s']:.1f} s  loss {row['loss']:.6f}"
        )
    fields = {
        "benchmark": "fused linear + BCE vs materialized logits, value_and_grad",
        "shape": {"batch": args.batch, "dim": args.dim, "labels": args.labels},
        "chunk_size": args.chunk,
        "repeats": args.repeats,
    }
    harness.record("linear", args.out, fields, rows)


if __name__ == "__main__":
    main()
