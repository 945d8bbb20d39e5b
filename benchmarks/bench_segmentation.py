"""value_and_grad of the mean BCE + Dice loss at (32, 256, 256) float32: bcejax vs plain jnp.

The plain composition is what a user writes by hand: optax's sigmoid BCE
averaged over each image's pixels plus a soft Dice from ``jax.nn.sigmoid``.
The floor is one pass over the same bytes: read the logits and the masks, write
a gradient (``value_and_grad`` of the mean of their product). Round-robin
timing, medians, ratios measured in the same run. Run:

    python benchmarks/bench_segmentation.py [--batch 32] [--size 256] [--repeats 21]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import harness
import jax
import jax.numpy as jnp
import optax

import bcejax


def plain_bce_dice(logits, labels, smooth=1.0):
    """Per image: mean pixel BCE + 1 - (2 TP + s) / (sum p + sum y + s)."""
    axes = tuple(range(1, logits.ndim))
    bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels), axes)
    p = jax.nn.sigmoid(logits)
    dice = 1 - (2 * jnp.sum(p * labels, axes) + smooth) / (
        jnp.sum(p, axes) + jnp.sum(labels, axes) + smooth
    )
    return bce + dice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    shape = (args.batch, args.size, args.size)
    key_x, key_y = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, shape, jnp.float32) * 3
    y = (jax.random.uniform(key_y, shape) < 0.1).astype(jnp.float32)  # a small foreground
    plain = "plain jnp: optax BCE mean per image + soft Dice"
    floor = "floor: read the logits and masks, write the gradient"
    rows = {
        floor: (lambda x, y: x * y, None),
        plain: (plain_bce_dice, None),
        "bcejax sigmoid_bce_dice_loss": (bcejax.sigmoid_bce_dice_loss, plain),
        "bcejax dice_loss": (bcejax.dice_loss, plain),
        # The BCE term alone: how close to the floor the exps and logs let any of these get.
        "bcejax sigmoid_binary_cross_entropy alone": (bcejax.sigmoid_binary_cross_entropy, plain),
        "bcejax lovasz_hinge": (bcejax.lovasz_hinge, plain),
    }
    calls = {
        name: harness.blocking(harness.value_and_grad_of_mean(fn), (x, y))
        for name, (fn, _) in rows.items()
    }
    medians = harness.round_robin(calls, args.repeats)
    print(f"value_and_grad(mean loss), images {shape} float32")
    results = harness.table(medians, {name: base for name, (_, base) in rows.items()})
    for row in results:
        row["fraction_of_floor"] = medians[floor] / (row["median_ms"] / 1e3)
        print(f"{row['name']}: {row['fraction_of_floor']:.2f} of the floor")
    fields = {
        "benchmark": "segmentation value_and_grad of the mean per-image loss",
        "shape": list(shape),
        "dtype": "float32",
        "repeats": args.repeats,
    }
    harness.record("segmentation", args.out, fields, results)


if __name__ == "__main__":
    main()
