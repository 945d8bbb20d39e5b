"""value_and_grad of the mean binary loss over 2^24 float32 entries: bcejax vs optax (and Keras).

Every contender is timed in the same process, round-robin, so machine noise
hits them alike; the table reports medians and ratios measured in the same
run. Two layouts: 1-D (one label per example) and (2^20, 16) (multi-label,
16 classes). Rows:

* plain BCE against optax's;
* BCE with each option, however it arrives in a training step: as an input
  array, computed from the labels inside the step (affine, ``jnp.where``),
  per class, per example ``(N, 1)``; each against plain bcejax BCE;
* focal loss (gamma 2 and 1.5) against optax's ``sigmoid_focal_loss`` and,
  where Keras is installed, Keras' ``binary_focal_crossentropy`` on the JAX
  backend (PyTorch's ``BCEWithLogitsLoss`` likewise, where torch is installed).

Run:

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
_bce = bcejax.sigmoid_binary_cross_entropy
PLAIN = "bcejax BCE"
OPTAX = "optax BCE"


def _option_rows(shape, w, pw):
    """Plain BCE with each way an option reaches the loss: name -> (loss of (x, y, w, pw))."""
    rows = {
        "+ weights (input)": lambda x, y, w, pw: _bce(x, y, weights=w),
        "+ weights = 0.5 y + 0.5 (in step)": lambda x, y, w, pw: _bce(x, y, weights=y * 0.5 + 0.5),
        "+ weights = where(y > 0, 2, 0.5) (in step)": lambda x, y, w, pw: _bce(
            x, y, weights=jnp.where(y > 0, 2.0, 0.5)
        ),
        # The same loss as the row above, its label-dependent weights folded into scalars.
        "+ pos_weight 4 + weights 0.5 (where(y > 0, 2, 0.5) folded)": lambda x, y, w, pw: _bce(
            x, y, pos_weight=4.0, weights=0.5
        ),
        "+ pos_weight 3 + label_smoothing 0.1 + weights (input)": lambda x, y, w, pw: _bce(
            x, y, weights=w, pos_weight=3.0, label_smoothing=0.1
        ),
        "+ pos_weight 3 + label_smoothing 0.1 + weights (in step)": lambda x, y, w, pw: _bce(
            x, y, weights=y * 0.5 + 0.5, pos_weight=3.0, label_smoothing=0.1
        ),
    }
    if len(shape) == 2:
        rows["+ pos_weight (per class)"] = lambda x, y, w, pw: _bce(x, y, pos_weight=pw)
        rows["+ weights (per example, (N, 1))"] = lambda x, y, w, pw: _bce(x, y, weights=w[:, :1])
        rows["+ weights (per class, broadcast)"] = lambda x, y, w, pw: _bce(x, y, weights=pw)
    return rows


def _focal_rows(gammas):
    """name -> (loss of (x, y), baseline); bcejax's focal against optax's and Keras'."""
    rows = {}
    keras_focal = _keras_focal()
    for gamma in gammas:
        suffix = f"(alpha=0.25, gamma={gamma})"
        optax_name = f"optax sigmoid_focal_loss {suffix}"
        bcejax_name = f"bcejax sigmoid_focal_loss {suffix}"
        rows[optax_name] = (
            lambda x, y, g=gamma: optax.sigmoid_focal_loss(x, y, alpha=0.25, gamma=g),
            None,
        )
        rows[bcejax_name] = (
            lambda x, y, g=gamma: bcejax.sigmoid_focal_loss(x, y, alpha=0.25, gamma=g),
            optax_name,
        )
        if keras_focal is not None:
            # Its ratio reads "Keras takes N times bcejax's time".
            rows[f"keras binary_focal_crossentropy {suffix}"] = (
                lambda x, y, g=gamma: keras_focal(y, x, gamma=g),
                bcejax_name,
            )
    return rows


def _keras_focal():
    """Keras' elementwise focal loss on the JAX backend, or None where Keras is not installed."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError:
        return None
    if keras.backend.backend() != "jax":
        return None

    def focal(labels, logits, gamma):
        # Keras averages over the last axis; a trailing axis of 1 keeps every entry.
        return keras.losses.binary_focal_crossentropy(
            labels[..., None],
            logits[..., None],
            apply_class_balancing=True,
            alpha=0.25,
            gamma=gamma,
            from_logits=True,
        )

    return focal


def _contenders(shape):
    """name -> (compiled function, args, baseline name)."""
    key_x, key_y, key_w = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(key_x, shape, jnp.float32) * 3
    y = (jax.random.uniform(key_y, shape) < 0.3).astype(jnp.float32)
    w = jax.random.uniform(key_w, shape, jnp.float32)
    pw = jnp.linspace(0.5, 4.0, shape[-1], dtype=jnp.float32)
    rows = {
        OPTAX: (_mean_loss(optax.sigmoid_binary_cross_entropy), (x, y), None),
        PLAIN: (_mean_loss(_bce), (x, y), OPTAX),
    }
    for name, fn in _option_rows(shape, w, pw).items():
        rows[f"bcejax BCE {name}"] = (_mean_loss(fn), (x, y, w, pw), PLAIN)
    for name, (fn, base) in _focal_rows((2.0, 1.5)).items():
        rows[name] = (_mean_loss(fn), (x, y), base)
    return rows, (x, y)


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


def _run_layout(shape, repeats):
    rows, (x, y) = _contenders(shape)
    calls = {name: harness.blocking(fn, fn_args) for name, (fn, fn_args, _) in rows.items()}
    baselines = {name: base for name, (_, _, base) in rows.items()}
    torch_row = _torch_contender(x, y)
    if torch_row is not None:
        calls["torch BCEWithLogitsLoss (forward + backward)"] = torch_row[0]
        baselines["torch BCEWithLogitsLoss (forward + backward)"] = PLAIN
    medians = harness.round_robin(calls, repeats)
    print(f"\nvalue_and_grad(mean loss), shape {shape} float32 on {jax.devices()[0].platform}")
    table = harness.table(medians, baselines)
    torch_version = None if torch_row is None else torch_row[1]
    return [{**row, "shape": list(shape)} for row in table], torch_version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2-size", type=int, default=24)
    parser.add_argument("--num-classes", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    n = 2**args.log2_size
    results, versions = [], {}
    for shape in ((n,), (n // args.num_classes, args.num_classes)):
        rows, torch_version = _run_layout(shape, args.repeats)
        results += rows
        if torch_version is not None:
            versions["torch"] = torch_version
    try:
        import keras

        versions["keras"] = keras.__version__
    except ImportError:
        pass
    fields = {
        "benchmark": "binary value_and_grad of the mean loss",
        "elements": n,
        "dtype": "float32",
        "repeats": args.repeats,
    }
    harness.record("binary", args.out, fields, results, **versions)


if __name__ == "__main__":
    main()
