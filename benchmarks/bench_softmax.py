"""value_and_grad of the mean softmax cross-entropy, float32: bcejax vs optax vs the floor.

Two shapes: (4096, 1000), an ImageNet-sized classifier head's batch, and
(8192, 32768), a language model's vocabulary. Each bcejax row (integer labels
or one-hot, with and without label smoothing, class weights, an ignored
index) is compared with what an optax user writes for the same loss, and with
the floor: one pass that reads the logits (and the dense labels, for one-hot
rows) and writes a gradient of their size (``value_and_grad`` of their mean,
or of the mean of their product). Round-robin timing, medians, ratios from
the same run. Run:

    python benchmarks/bench_softmax.py [--shapes 4096x1000 8192x32768] [--repeats 11]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import harness
import jax
import jax.numpy as jnp
import optax

import bcejax

FLOOR = "floor: read the logits, write the gradient"
FLOOR_DENSE = "floor: read the logits and dense labels, write the gradient"
_int = bcejax.softmax_cross_entropy_with_integer_labels
_optax_int = optax.softmax_cross_entropy_with_integer_labels


def _optax_ignoring(x, y, ignore_index):
    kept = y != ignore_index
    return jnp.where(kept, _optax_int(x, jnp.where(kept, y, 0)), 0)


def _rows(classes):
    """name -> (loss of (logits, labels, one_hot, class_weights), baseline)."""
    smooth = 0.1
    pairs = {
        "integer labels": (
            lambda x, y, h, cw: _optax_int(x, y),
            lambda x, y, h, cw: _int(x, y),
        ),
        "one-hot": (
            lambda x, y, h, cw: optax.softmax_cross_entropy(x, h),
            lambda x, y, h, cw: bcejax.softmax_cross_entropy(x, h),
        ),
        "integer labels + label_smoothing": (
            lambda x, y, h, cw: optax.softmax_cross_entropy(x, optax.smooth_labels(h, smooth)),
            lambda x, y, h, cw: _int(x, y, label_smoothing=smooth),
        ),
        "one-hot + label_smoothing": (
            lambda x, y, h, cw: optax.softmax_cross_entropy(x, optax.smooth_labels(h, smooth)),
            lambda x, y, h, cw: bcejax.softmax_cross_entropy(x, h, label_smoothing=smooth),
        ),
        "integer labels + class_weights": (
            lambda x, y, h, cw: _optax_int(x, y) * cw[y],
            lambda x, y, h, cw: _int(x, y, class_weights=cw),
        ),
        "integer labels + ignore_index": (
            lambda x, y, h, cw: _optax_ignoring(x, y, 0),
            lambda x, y, h, cw: _int(x, y, ignore_index=0),
        ),
    }
    rows = {
        FLOOR: (lambda x, y, h, cw: x, None),
        FLOOR_DENSE: (lambda x, y, h, cw: x * h, None),
    }
    for name, (optax_fn, bcejax_fn) in pairs.items():
        rows[f"optax {name}"] = (optax_fn, None)
        rows[f"bcejax {name}"] = (bcejax_fn, f"optax {name}")
    return rows


def _floor_of(name):
    """The floor a row is measured against: one-hot rows read their dense labels too."""
    return FLOOR_DENSE if "one-hot" in name else FLOOR


def _run(batch, classes, repeats):
    key_x, key_y = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (batch, classes), jnp.float32) * 3
    labels = jax.random.randint(key_y, (batch,), 0, classes)
    one_hot = jax.nn.one_hot(labels, classes, dtype=jnp.float32)
    class_weights = jnp.linspace(0.5, 2.0, classes, dtype=jnp.float32)
    rows = _rows(classes)
    calls = {
        name: harness.blocking(
            harness.value_and_grad_of_mean(fn), (x, labels, one_hot, class_weights)
        )
        for name, (fn, _) in rows.items()
    }
    medians = harness.round_robin(calls, repeats)
    print(f"\nvalue_and_grad(mean loss), logits ({batch}, {classes}) float32")
    results = harness.table(medians, {name: base for name, (_, base) in rows.items()})
    for row in results:
        row["shape"] = [batch, classes]
        row["fraction_of_floor"] = medians[_floor_of(row["name"])] / (row["median_ms"] / 1e3)
    for row in results:
        if row["name"].startswith("bcejax"):
            print(f"{row['name']}: {row['fraction_of_floor']:.2f} of the floor")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["4096x1000", "8192x32768"])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    results = []
    for shape in args.shapes:
        batch, classes = (int(n) for n in shape.split("x"))
        results += _run(batch, classes, args.repeats)
    fields = {
        "benchmark": "softmax cross-entropy value_and_grad of the mean loss",
        "dtype": "float32",
        "repeats": args.repeats,
    }
    harness.record("softmax", args.out, fields, results)


if __name__ == "__main__":
    main()
