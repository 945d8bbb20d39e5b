"""The examples' training steps with the bcejax loss and with optax's nearest loss in its place.

Each step is the example's own: its Flax model, its loss on the model's
logits, ``value_and_grad`` and an adamw update, jitted. Two steps per size,
timed side by side (round-robin, medians): one with the example's bcejax loss
callable, one with what a user of optax writes instead:

* spam and sentiment: ``BinaryCrossEntropy()`` against the mean of
  ``optax.sigmoid_binary_cross_entropy``;
* segmentation: ``BinaryCrossEntropy() + DiceLoss()`` against the mean of
  ``optax.sigmoid_binary_cross_entropy`` plus a soft Dice in plain ``jnp``,
  and ``LovaszHinge()``, which optax lacks.

Every loss takes the step's mask (``where``: the padding of a short batch),
as the examples' losses do; here it keeps every entry.

The loss's share of a step is the time of ``value_and_grad`` of the loss
alone, at the logits' shape, over the time of the whole step. Each example
runs at its own size and at a larger one: spam at batch 64 and 4,096;
sentiment at its vocabulary (32,807 n-grams) and at 65,536; segmentation at
32 images of 64x64 and 8 of 512x512. The data is random, of the examples'
shapes: the step's time does not depend on the values. Run:

    python benchmarks/bench_steps.py [--repeats 11] [--small]

``--small`` runs only the examples' own sizes (the tests use it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import harness
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import bcejax

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import segmentation
import sentiment
import spam


def optax_bce(logits, labels, *, where=None):
    """What a user of optax writes: the mean of its sigmoid BCE over the kept entries."""
    loss = optax.sigmoid_binary_cross_entropy(logits, labels)
    return jnp.sum(loss * where) / jnp.sum(where)


def optax_bce_dice(logits, labels, *, where=None, smooth=1.0):
    """optax's BCE averaged over the kept pixels plus a soft Dice of each image's kept pixels.

    ``bench_segmentation.plain_bce_dice`` with the example's mask, as the
    bcejax callables take it: what a user of optax writes for padded batches.
    """
    kept = where.astype(logits.dtype)
    bce = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, labels) * kept) / jnp.sum(kept)
    p, y, axes = jax.nn.sigmoid(logits) * kept, labels * kept, (1, 2)
    dice = 1 - (2 * jnp.sum(p * y, axes) + smooth) / (jnp.sum(p, axes) + jnp.sum(y, axes) + smooth)
    return bce + jnp.mean(dice)


def step(model: nnx.Module, loss_fn: Callable) -> Callable:
    """The example's jitted step: ``value_and_grad`` of the loss of the model, an adamw update."""
    graphdef, params = nnx.split(model)
    optimizer = optax.adamw(1e-3, weight_decay=1e-4)

    def loss_of(params, x, y, where):
        logits = nnx.merge(graphdef, params)(x)
        return loss_fn(logits, y, where=where)

    @jax.jit
    def train_step(params, opt_state, x, y, where):
        loss, grads = jax.value_and_grad(loss_of)(params, x, y, where)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    return lambda x, y, where: train_step(params, opt_state, x, y, where)


def loss_alone(loss_fn: Callable) -> Callable:
    """``value_and_grad`` of the loss alone, in the logits, jitted."""
    return jax.jit(jax.value_and_grad(lambda x, y, where: loss_fn(x, y, where=where)))


def cases(small: bool) -> list[dict]:
    """Each example at each size: its model, a batch, its logits' shape and its losses."""
    rng = np.random.default_rng(0)
    bce = bcejax.losses.BinaryCrossEntropy()
    out = []
    features = spam.load(0)["train"]["x"].shape[1]  # the example's columns
    for batch in (64,) if small else (64, 4096):
        x = rng.normal(size=(batch, features)).astype(np.float32)
        model = spam.MLP(features, 64, nnx.Rngs(0))
        out.append(
            dict(
                example="spam",
                size=f"batch {batch}",
                model=model,
                x=x,
                logits=(batch,),
                losses={"bcejax BCE": bce, "optax BCE": optax_bce},
            )
        )
    for vocabulary in (32_807,) if small else (32_807, 65_536):
        ids = rng.integers(2, vocabulary, size=(64, sentiment.MAX_NGRAMS), dtype=np.int32)
        weights = rng.uniform(size=ids.shape).astype(np.float32)
        model = sentiment.WideAndDeep(vocabulary, 64, nnx.Rngs(0))
        out.append(
            dict(
                example="sentiment",
                size=f"vocabulary {vocabulary}, batch 64",
                model=model,
                x={"ids": ids, "weights": weights},
                logits=(64,),
                losses={"bcejax BCE": bce, "optax BCE": optax_bce},
            )
        )
    for batch, side in ((32, 64),) if small else ((32, 64), (8, 512)):
        x = rng.normal(size=(batch, side, side, 1)).astype(np.float32)
        model = segmentation.UNet((8, 16, 32), nnx.Rngs(0))
        losses = {
            "bcejax BCE + Dice": bce + bcejax.losses.DiceLoss(),
            "optax BCE + jnp Dice": optax_bce_dice,
            "bcejax Lovasz hinge": bcejax.losses.LovaszHinge(),
        }
        out.append(
            dict(
                example="segmentation",
                size=f"{batch} x {side}x{side}",
                model=model,
                x=x,
                logits=(batch, side, side),
                losses=losses,
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--small", action="store_true", help="the examples' own sizes only")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    results = []
    for case in cases(args.small):
        shape = case["logits"]
        labels = jnp.asarray(np.random.default_rng(1).uniform(size=shape) < 0.3, jnp.float32)
        where = jnp.ones(shape, bool)
        logits = jax.random.normal(jax.random.key(0), shape)
        steps, alone = {}, {}
        for name, loss_fn in case["losses"].items():
            steps[name] = harness.blocking(step(case["model"], loss_fn), (case["x"], labels, where))
            alone[name] = harness.blocking(loss_alone(loss_fn), (logits, labels, where))
        step_times = harness.round_robin(steps, args.repeats)
        loss_times = harness.round_robin(alone, args.repeats)
        first = next(iter(case["losses"]))
        print(f"\n{case['example']}, {case['size']}")
        print(
            f"{'loss':<24} {'step ms':>9} {'loss ms':>9} {'loss share':>11} {'step / ' + first:>24}"
        )
        for name in case["losses"]:
            row = {
                "example": case["example"],
                "size": case["size"],
                "loss": name,
                "step_ms": step_times[name] * 1e3,
                "loss_ms": loss_times[name] * 1e3,
                "loss_share": loss_times[name] / step_times[name],
                "step_ratio": step_times[name] / step_times[first],
            }
            results.append(row)
            print(
                f"{name:<24} {row['step_ms']:>9.2f} {row['loss_ms']:>9.3f} "
                f"{row['loss_share']:>10.1%} {row['step_ratio']:>24.2f}"
            )
    fields = {"benchmark": "training steps of the examples", "repeats": args.repeats}
    harness.record("steps", args.out, fields, results, flax=_version("flax"))


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
