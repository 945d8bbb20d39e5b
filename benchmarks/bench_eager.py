"""Eager calls (no jit) over 2^24 float32 entries: bcejax, value checks included, vs optax.

An eager call is how people explore in a notebook. bcejax checks the values
of every eager call (labels in [0, 1], logits not NaN, ...) on the device and
fetches one boolean per check; optax checks nothing. Every contender is timed
in the same process, round-robin, and the table reports medians and the ratio
to optax's time for the same loss. Run:

    python benchmarks/bench_eager.py [--log2-size 24] [--repeats 15] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import harness
import jax
import jax.numpy as jnp
import optax

import bcejax


def _contenders(n: int, num_classes: int):
    """name -> (function, args, baseline name); the functions are called as they are."""
    key_x, key_y, key_c = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(key_x, (n,), jnp.float32) * 3
    y = (jax.random.uniform(key_y, (n,)) < 0.3).astype(jnp.float32)
    class_logits = x.reshape(n // num_classes, num_classes)
    classes = jax.random.randint(key_c, (n // num_classes,), 0, num_classes)
    optax_bce = "optax sigmoid_binary_cross_entropy"
    optax_focal = "optax sigmoid_focal_loss"
    optax_ce = "optax softmax_cross_entropy_with_integer_labels"
    return {
        optax_bce: (optax.sigmoid_binary_cross_entropy, (x, y), None),
        "bcejax sigmoid_binary_cross_entropy": (
            bcejax.sigmoid_binary_cross_entropy,
            (x, y),
            optax_bce,
        ),
        optax_focal: (optax.sigmoid_focal_loss, (x, y), None),
        "bcejax sigmoid_focal_loss": (bcejax.sigmoid_focal_loss, (x, y), optax_focal),
        optax_ce: (
            optax.softmax_cross_entropy_with_integer_labels,
            (class_logits, classes),
            None,
        ),
        "bcejax softmax_cross_entropy_with_integer_labels": (
            bcejax.softmax_cross_entropy_with_integer_labels,
            (class_logits, classes),
            optax_ce,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2-size", type=int, default=24)
    parser.add_argument("--num-classes", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    n = 1 << args.log2_size
    rows = _contenders(n, args.num_classes)
    calls = {name: harness.blocking(fn, fn_args) for name, (fn, fn_args, _) in rows.items()}
    medians = harness.round_robin(calls, args.repeats)
    results = harness.table(medians, {name: base for name, (_, _, base) in rows.items()})
    fields = {
        "benchmark": "eager calls (no jit), value checks included",
        "size": n,
        "num_classes": args.num_classes,
        "dtype": "float32",
        "repeats": args.repeats,
    }
    harness.record("eager", args.out, fields, results)


if __name__ == "__main__":
    main()
