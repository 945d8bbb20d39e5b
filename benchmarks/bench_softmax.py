"""value_and_grad of the mean softmax cross-entropy at (4096, 1000) float32: bcejax vs optax.

An ImageNet-sized classifier head's batch. Round-robin timing, medians, ratios
to optax measured in the same run. Run:

    python benchmarks/bench_softmax.py [--batch 4096] [--classes 1000] [--repeats 21]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import harness
import jax
import jax.numpy as jnp
import optax

import bcejax


def _contenders(batch: int, classes: int):
    """name -> (function of (logits, labels), labels, baseline name)."""
    key_x, key_y = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (batch, classes), jnp.float32) * 3
    indices = jax.random.randint(key_y, (batch,), 0, classes)
    one_hot = jax.nn.one_hot(indices, classes, dtype=jnp.float32)
    weights = jnp.linspace(0.5, 2.0, classes, dtype=jnp.float32)
    optax_dense = "optax softmax_cross_entropy (one-hot)"
    optax_int = "optax softmax_cross_entropy_with_integer_labels"
    rows = {
        optax_dense: (optax.softmax_cross_entropy, one_hot, None),
        "bcejax softmax_cross_entropy (one-hot)": (
            bcejax.softmax_cross_entropy,
            one_hot,
            optax_dense,
        ),
        optax_int: (optax.softmax_cross_entropy_with_integer_labels, indices, None),
        "bcejax softmax_cross_entropy_with_integer_labels": (
            bcejax.softmax_cross_entropy_with_integer_labels,
            indices,
            optax_int,
        ),
        "bcejax integer labels + label_smoothing + class_weights": (
            lambda x, y: bcejax.softmax_cross_entropy_with_integer_labels(
                x, y, label_smoothing=0.1, class_weights=weights
            ),
            indices,
            optax_int,
        ),
        "bcejax softmax_focal_loss (gamma=2)": (bcejax.softmax_focal_loss, indices, optax_int),
    }
    return x, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    x, rows = _contenders(args.batch, args.classes)
    calls = {
        name: harness.blocking(harness.value_and_grad_of_mean(fn), (x, labels))
        for name, (fn, labels, _) in rows.items()
    }
    medians = harness.round_robin(calls, args.repeats)
    print(f"value_and_grad(mean loss), logits ({args.batch}, {args.classes}) float32")
    results = harness.table(medians, {name: base for name, (*_, base) in rows.items()})
    fields = {
        "benchmark": "softmax cross-entropy value_and_grad of the mean loss",
        "shape": [args.batch, args.classes],
        "dtype": "float32",
        "repeats": args.repeats,
    }
    harness.record("softmax", args.out, fields, results)


if __name__ == "__main__":
    main()
