"""Fused linear heads against the materialized logits: memory and time of value_and_grad.

Two heads, each against the path that forms ``features @ weight + bias``:

* ``--head sigmoid`` (the default): ``sigmoid_binary_cross_entropy_with_linear``
  at B=2048, D=256, L=131072 float32 against ``BinaryCrossEntropy()`` on 1 GiB
  of logits. The fused path takes 16 positive indices per example (padded
  with -1), the materialized one the same labels dense.
* ``--head softmax``: ``softmax_cross_entropy_with_linear`` (mean over the
  tokens) against ``optax.softmax_cross_entropy_with_integer_labels`` on the
  materialized logits, at (tokens, D, V) = (2048, 256, 65536) and
  (4096, 256, 131072), float32 and bfloat16 operands. A third contender,
  ``scan``, is the same chunked online log-sum-exp differentiated by JAX
  (a ``jax.checkpoint``-ed ``scan``) instead of the library's hand-written
  reverse-mode rule; it runs on the shapes up to ``--scan-up-to`` logits.

Each contender runs in its own process so that its peak RSS is its own, and
is compared with a process that holds only the inputs; the scratch memory
comes from the compiled program's ``memory_analysis``. Times are medians of
``--repeats`` calls after one untimed call. Run:

    python benchmarks/bench_linear.py [--batch 2048] [--dim 256] [--labels 131072]
    python benchmarks/bench_linear.py --head softmax [--chunk 1024] [--repeats 1]
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
import optax

import bcejax
from bcejax.scale import softmax_cross_entropy_with_linear

SOFTMAX_SHAPES = ((2048, 256, 65536), (4096, 256, 131072))


def _inputs(batch: int, dim: int, labels: int, k: int = 16):
    keys = jax.random.split(jax.random.key(0), 3)
    features = jax.random.normal(keys[0], (batch, dim), jnp.float32)
    weight = jax.random.normal(keys[1], (dim, labels), jnp.float32) / jnp.sqrt(dim)
    bias = jnp.full((labels,), -4.0, jnp.float32)
    indices = jax.random.randint(keys[2], (batch, k), -1, labels)
    return features, weight, bias, indices


def _softmax_inputs(tokens: int, dim: int, vocabulary: int, dtype: str):
    keys = jax.random.split(jax.random.key(0), 4)
    features = jax.random.normal(keys[0], (tokens, dim), dtype)
    weight = (jax.random.normal(keys[1], (dim, vocabulary), dtype) / jnp.sqrt(dim)).astype(dtype)
    bias = (0.1 * jax.random.normal(keys[2], (vocabulary,), dtype)).astype(dtype)
    labels = jax.random.randint(keys[3], (tokens,), 0, vocabulary)
    return features, weight, bias, labels


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(step, operands, repeats: int) -> dict:
    """Compile time, scratch, loss, median seconds and peak RSS of ``step(*operands)``."""
    start = time.perf_counter()
    compiled = step.lower(*operands).compile()
    compile_seconds = time.perf_counter() - start
    scratch = compiled.memory_analysis().temp_size_in_bytes
    value = float(jax.block_until_ready(step(*operands))[0])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(*operands))
        times.append(time.perf_counter() - start)
    return {
        "loss": value,
        "median_s": statistics.median(times),
        "compile_s": compile_seconds,
        "scratch_mib": scratch / 2**20,
        "peak_rss_mib": _rss_mib(),
    }


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
    return {"path": path, **_time(step, (features, weight, bias, operand), repeats)}


def _scan_softmax_loss(f, w, b, y, chunk: int):
    """Mean cross-entropy by an online log-sum-exp in a checkpointed scan, left to autodiff."""
    compute = jnp.promote_types(f.dtype, jnp.float32)
    f, b = f.astype(compute), b.astype(compute)
    vocabulary = w.shape[1]
    chunk = min(chunk, vocabulary)

    def step(carry, c):
        m, s, x_t = carry
        start = jnp.minimum(c * chunk, vocabulary - chunk)
        w_c = jax.lax.dynamic_slice_in_dim(w, start, chunk, 1).astype(compute)
        x = f @ w_c + jax.lax.dynamic_slice_in_dim(b, start, chunk)
        columns = start + jnp.arange(chunk)
        valid = columns >= c * chunk
        x_valid = jnp.where(valid, x, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(x_valid, -1))
        s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(x_valid - m_new[:, None]), -1)
        x_t = x_t + jnp.sum(jnp.where((columns == y[:, None]) & valid, x, 0), -1)
        return (m_new, s, x_t), None

    tokens = f.shape[0]
    init = (jnp.full(tokens, -jnp.inf, compute), jnp.zeros(tokens, compute))
    init = (*init, jnp.zeros(tokens, compute))
    (m, s, x_t), _ = jax.lax.scan(jax.checkpoint(step), init, jnp.arange(-(-vocabulary // chunk)))
    return jnp.mean(m + jnp.log(s) - x_t)


def _measure_softmax(
    path: str, tokens: int, dim: int, vocabulary: int, dtype: str, repeats: int, chunk: int
) -> dict:
    features, weight, bias, labels = _softmax_inputs(tokens, dim, vocabulary, dtype)
    if path == "inputs":
        jax.block_until_ready((features, weight, bias, labels))
        return {"path": path, "peak_rss_mib": _rss_mib()}
    if path == "materialized":

        def loss(f, w, b, y):
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(f @ w + b, y))

    elif path == "fused":

        def loss(f, w, b, y):
            return softmax_cross_entropy_with_linear(f, w, b, y, chunk_size=chunk)

    else:

        def loss(f, w, b, y):
            return _scan_softmax_loss(f, w, b, y, chunk)

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    return {"path": path, **_time(step, (features, weight, bias, labels), repeats)}


def _run(arguments: list[str]) -> dict:
    command = [sys.executable, __file__, *arguments]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(arguments)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _ratios(rows: list[dict]) -> None:
    """Adds each row's ratios to the materialized row's; prints the table."""
    floor = rows[0]["peak_rss_mib"]
    base = next(row for row in rows if row["path"] == "materialized")
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
            f"compile {row['compile_s']:.1f} s  loss {row['loss']:.6f}",
            flush=True,
        )


def _sigmoid(args) -> None:
    sizes = ["--batch", str(args.batch), "--dim", str(args.dim), "--labels", str(args.labels)]
    sizes += ["--chunk", str(args.chunk or 4096), "--repeats", str(args.repeats or 3)]
    rows = [_run(["--path", path, *sizes]) for path in ("inputs", "materialized", "fused")]
    print(f"value_and_grad, B={args.batch} D={args.dim} L={args.labels} float32")
    _ratios(rows)
    fields = {
        "benchmark": "fused linear + BCE vs materialized logits, value_and_grad",
        "shape": {"batch": args.batch, "dim": args.dim, "labels": args.labels},
        "chunk_size": args.chunk or 4096,
        "repeats": args.repeats or 3,
    }
    harness.record("linear", args.out, fields, rows)


def _softmax(args) -> None:
    chunk, repeats = args.chunk or 1024, args.repeats or 1
    results = []
    for tokens, dim, vocabulary in SOFTMAX_SHAPES:
        for dtype in args.dtypes:
            paths = ["inputs", "materialized", "fused"]
            if tokens * vocabulary <= args.scan_up_to:
                paths.append("scan")
            sizes = ["--batch", str(tokens), "--dim", str(dim), "--labels", str(vocabulary)]
            sizes += ["--dtype", dtype, "--chunk", str(chunk), "--repeats", str(repeats)]
            print(f"value_and_grad, tokens={tokens} D={dim} V={vocabulary} {dtype}", flush=True)
            rows = []
            for path in paths:
                rows.append(_run(["--head", "softmax", "--path", path, *sizes]))
            _ratios(rows)
            shape = {"tokens": tokens, "dim": dim, "vocabulary": vocabulary, "dtype": dtype}
            results.append({"shape": shape, "rows": rows})
    fields = {
        "benchmark": "fused linear + softmax cross-entropy vs materialized logits "
        "(optax.softmax_cross_entropy_with_integer_labels), value_and_grad of the mean",
        "chunk_size": chunk,
        "repeats": repeats,
    }
    harness.record("linear_softmax", args.out, fields, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", choices=("sigmoid", "softmax"), default="sigmoid")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--labels", type=int, default=131072)
    parser.add_argument("--chunk", type=int, help="default: 4096 (sigmoid), 1024 (softmax)")
    parser.add_argument("--repeats", type=int, help="default: 3 (sigmoid), 1 (softmax)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument(
        "--scan-up-to",
        type=int,
        default=2048 * 65536,
        help="run the checkpointed-scan contender up to this many logits (tokens x V)",
    )
    parser.add_argument(
        "--path", choices=("inputs", "materialized", "fused", "scan"), help=argparse.SUPPRESS
    )
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.path:  # one contender, in this process
        sizes = (args.batch, args.dim, args.labels)
        if args.head == "sigmoid":
            result = _measure(args.path, *sizes, args.repeats, args.chunk)
        else:
            result = _measure_softmax(args.path, *sizes, args.dtype, args.repeats, args.chunk)
        print(json.dumps(result))
    elif args.head == "sigmoid":
        _sigmoid(args)
    else:
        _softmax(args)


if __name__ == "__main__":
    main()
