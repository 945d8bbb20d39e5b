"""The benchmark suite: bcejax against optax and the plain jnp forms, up to the bandwidth floor.

For each loss (sigmoid BCE, focal, softmax cross-entropy, BCE + Dice; PyTorch's
BCE and cross-entropy too when torch is installed), size
(2^16 to 2^26 elements) and dtype (float32, bfloat16), it times the forward
pass and ``value_and_grad`` of the mean loss, round-robin in one process, and
reports the median, the bytes the pass must move divided by the time (GB/s),
and the ratio to a measured floor: a fused elementwise pass over the same
bytes on the same device (reading the inputs; for ``value_and_grad`` also
writing one array of the inputs' size). A ratio of 1 means the loss runs as
fast as memory can feed it. It also reports the compile time of
``jit(value_and_grad)`` per loss. On a GPU it runs there (whatever
``jax.devices()[0]`` is). Results: ``results/suite_<platform>_<date>.json`` and
a plot of GB/s against size. Run:

    python benchmarks/suite.py [--quick] [--repeats 3]

On an accelerator, ``--device-check`` is the short run: 2^24 and 2^26
elements, float32 and bfloat16, the four losses and the fused linear head,
within about five minutes on one GPU:

    python benchmarks/suite.py --device-check
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import harness
import jax
import jax.numpy as jnp
import numpy as np
import optax

import bcejax


def _binary(n, dtype, key):
    kx, ky = jax.random.split(key)
    x = (3 * jax.random.normal(kx, (n,), jnp.float32)).astype(dtype)
    y = (jax.random.uniform(ky, (n,)) < 0.3).astype(dtype)
    return x, y


def _softmax(n, dtype, key, classes=1024):
    kx, ky = jax.random.split(key)
    x = (3 * jax.random.normal(kx, (n // classes, classes), jnp.float32)).astype(dtype)
    return x, jax.random.randint(ky, (n // classes,), 0, classes)


def _images(n, dtype, key, side=256):
    kx, ky = jax.random.split(key)
    shape = (n // side**2, side, side)
    x = (3 * jax.random.normal(kx, shape, jnp.float32)).astype(dtype)
    return x, (jax.random.uniform(ky, shape) < 0.1).astype(dtype)


def _plain_bce_dice(x, y):
    """The obvious jnp composition: optax's BCE averaged per image plus a soft Dice."""
    axes = tuple(range(1, x.ndim))
    bce = jnp.mean(optax.sigmoid_binary_cross_entropy(x, y), axes)
    p = jax.nn.sigmoid(x)
    dice = 1 - (2 * jnp.sum(p * y, axes) + 1) / (jnp.sum(p, axes) + jnp.sum(y, axes) + 1)
    return bce + dice


def _plain_bce(x, y):
    return jnp.logaddexp(0.0, x) - x * y


def _plain_focal(x, y):
    p = jax.nn.sigmoid(x)
    p_t = p * y + (1 - p) * (1 - y)
    return (1 - p_t) ** 2 * _plain_bce(x, y)


def _plain_softmax_ce(x, labels):
    log_p = jax.nn.log_softmax(x)
    return -jnp.take_along_axis(log_p, labels[:, None], -1)[:, 0]


# loss -> (inputs, {contender: function}); the first contender is the baseline.
LOSSES = {
    "sigmoid BCE": (
        _binary,
        {
            "optax": optax.sigmoid_binary_cross_entropy,
            "plain jnp": _plain_bce,
            "bcejax": bcejax.sigmoid_binary_cross_entropy,
        },
    ),
    "focal (gamma 2)": (
        _binary,
        {
            "optax": optax.sigmoid_focal_loss,
            "plain jnp": _plain_focal,
            "bcejax": lambda x, y: bcejax.sigmoid_focal_loss(x, y, alpha=None),
        },
    ),
    "softmax CE (1024 classes)": (
        _softmax,
        {
            "optax": optax.softmax_cross_entropy_with_integer_labels,
            "plain jnp": _plain_softmax_ce,
            "bcejax": bcejax.softmax_cross_entropy_with_integer_labels,
        },
    ),
    "BCE + Dice (256 x 256 images)": (
        _images,
        {"plain jnp": _plain_bce_dice, "bcejax": bcejax.sigmoid_bce_dice_loss},
    ),
}


# PyTorch's equivalents, timed when torch is installed (it is not a dependency).
TORCH = {
    "sigmoid BCE": lambda F, x, y: F.binary_cross_entropy_with_logits(x, y),
    "softmax CE (1024 classes)": lambda F, x, y: F.cross_entropy(x, y),
}


def _torch_calls(loss_name, x, y):
    """``{"torch forward": call, "torch value_and_grad": call}``, or {} without torch."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return {}
    if loss_name not in TORCH:
        return {}
    fn = TORCH[loss_name]
    dtype = torch.bfloat16 if x.dtype == jnp.bfloat16 else torch.float32
    xt = torch.from_numpy(np.asarray(x.astype(jnp.float32))).to(dtype)
    if jnp.issubdtype(y.dtype, jnp.integer):
        yt = torch.from_numpy(np.asarray(y)).long()
    else:
        yt = torch.from_numpy(np.asarray(y.astype(jnp.float32))).to(dtype)
    xg = xt.clone().requires_grad_()

    def forward():
        with torch.no_grad():
            return fn(F, xt, yt).item()

    def value_and_grad():
        xg.grad = None
        loss = fn(F, xg, yt)
        loss.backward()
        return loss.item()

    forward(), value_and_grad()
    return {"torch forward": forward, "torch value_and_grad": value_and_grad}


def _forward(fn):
    return jax.jit(lambda x, y: jnp.mean(fn(x, y).astype(jnp.float32)))


def _value_and_grad(fn):
    return jax.jit(jax.value_and_grad(lambda x, y: jnp.mean(fn(x, y).astype(jnp.float32))))


def _floors(x, y):
    """The same bytes in one fused elementwise pass: read both (and write one array)."""
    y_row = y.astype(x.dtype) if y.ndim == x.ndim else y[..., None].astype(x.dtype)
    forward = jax.jit(lambda x, y: jnp.sum((x * y_row).astype(jnp.float32)))
    both = jax.jit(lambda x, y: (jnp.sum((x * y_row).astype(jnp.float32)), x * y_row))
    return forward, both


def _bytes(x, y, grad: bool) -> int:
    return x.nbytes + y.nbytes + (x.nbytes if grad else 0)


def run(sizes, dtypes, repeats):
    rows, key = [], jax.random.key(0)
    for loss_name, (make, contenders) in LOSSES.items():
        for dtype in dtypes:
            for n in sizes:
                x, y = make(n, dtype, key)
                floor_fwd, floor_grad = _floors(x, y)
                calls = {"floor forward": harness.blocking(floor_fwd, (x, y))}
                calls["floor value_and_grad"] = harness.blocking(floor_grad, (x, y))
                for name, fn in contenders.items():
                    calls[f"{name} forward"] = harness.blocking(_forward(fn), (x, y))
                    calls[f"{name} value_and_grad"] = harness.blocking(_value_and_grad(fn), (x, y))
                extra = _torch_calls(loss_name, x, y)
                calls.update(extra)
                medians = harness.round_robin(calls, repeats)
                baseline = next(iter(contenders))
                names = [*contenders, *(["torch"] if extra else [])]
                for mode, grad in (("forward", False), ("value_and_grad", True)):
                    floor = medians[f"floor {mode}"]
                    for name in names:
                        seconds = medians[f"{name} {mode}"]
                        rows.append(
                            {
                                "loss": loss_name,
                                "contender": name,
                                "mode": mode,
                                "dtype": jnp.dtype(dtype).name,
                                "size": n,
                                "median_ms": seconds * 1e3,
                                "gb_per_s": _bytes(x, y, grad) / seconds / 1e9,
                                "floor_ms": floor * 1e3,
                                "fraction_of_floor": floor / seconds,
                                "time_vs_baseline": seconds / medians[f"{baseline} {mode}"],
                            }
                        )
                print(
                    f"{loss_name:<30} {jnp.dtype(dtype).name:<9} 2^{int(np.log2(n)):<3} "
                    + "  ".join(
                        f"{r['contender']} {r['mode'][:3]} {r['median_ms']:8.2f} ms "
                        f"({r['fraction_of_floor']:.2f} of floor)"
                        for r in rows[-2 * len(names) :]
                    )
                )
    return rows


def linear_head(batch: int, dim: int, labels: int, dtype, repeats: int) -> list[dict]:
    """``value_and_grad`` of the fused head against BCE of the materialized logits."""
    kf, kw, ky = jax.random.split(jax.random.key(2), 3)
    f = jax.random.normal(kf, (batch, dim), dtype)
    w = (jax.random.normal(kw, (dim, labels), jnp.float32) / dim**0.5).astype(dtype)
    y = (jax.random.uniform(ky, (batch, labels)) < 0.01).astype(dtype)

    def fused(f, w):
        return bcejax.sigmoid_binary_cross_entropy_with_linear(f, w, None, y)

    def materialized(f, w):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(f @ w, y))

    calls = {
        name: harness.blocking(jax.jit(jax.value_and_grad(fn, argnums=(0, 1))), (f, w))
        for name, fn in (("materialized", materialized), ("bcejax fused", fused))
    }
    medians = harness.round_robin(calls, repeats)
    shape = f"{batch} x {dim} x {labels}"
    rows = [
        {
            "loss": f"linear head + BCE ({shape})",
            "contender": name,
            "mode": "value_and_grad",
            "dtype": jnp.dtype(dtype).name,
            "median_ms": seconds * 1e3,
            "time_vs_baseline": seconds / medians["materialized"],
        }
        for name, seconds in medians.items()
    ]
    for row in rows:
        print(f"{row['loss']:<30} {row['dtype']:<9} {row['contender']} {row['median_ms']:8.2f} ms")
    return rows


def compile_times(size: int):
    """Seconds to compile ``jit(value_and_grad)`` of each loss, float32, at ``size``."""
    result, key = {}, jax.random.key(1)
    for loss_name, (make, contenders) in LOSSES.items():
        x, y = make(size, jnp.float32, key)
        for name, fn in contenders.items():
            start = time.perf_counter()
            _value_and_grad(fn).lower(x, y).compile()
            result[f"{loss_name} / {name}"] = time.perf_counter() - start
    return result


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(LOSSES), figsize=(4.2 * len(LOSSES), 3.8), sharey=True)
    for ax, loss_name in zip(axes, LOSSES, strict=True):
        names = sorted({r["contender"] for r in rows if r["loss"] == loss_name})
        for contender in names:
            for mode, style in (("forward", "--"), ("value_and_grad", "-")):
                picked = [
                    r
                    for r in rows
                    if r["loss"] == loss_name
                    and r["contender"] == contender
                    and r["mode"] == mode
                    and r["dtype"] == "float32"
                ]
                sizes = [r["size"] for r in picked]
                ax.plot(
                    sizes,
                    [r["gb_per_s"] for r in picked],
                    style,
                    marker="o",
                    ms=3,
                    label=f"{contender} {mode}",
                )
        ax.set_xscale("log", base=2)
        ax.set_title(loss_name, fontsize=10)
        ax.set_xlabel("elements")
    axes[0].set_ylabel("GB/s (float32)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"bcejax benchmark suite on {jax.devices()[0].device_kind}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2^16 and 2^20 only, float32")
    parser.add_argument(
        "--device-check",
        action="store_true",
        help="the short accelerator run: 2^24 and 2^26, float32 and bfloat16, and the linear head",
    )
    parser.add_argument(
        "--log2-sizes", type=int, nargs="+", help="the sizes to run instead (e.g. 10 12: a test)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.device_check:
        sizes = [2**24, 2**26]
    elif args.quick:
        sizes = [2**16, 2**20]
    else:
        sizes = [2**k for k in range(16, 27, 2)]
    if args.log2_sizes:
        sizes = [2**k for k in args.log2_sizes]
    dtypes = [jnp.float32] if args.quick else [jnp.float32, jnp.bfloat16]
    rows = run(sizes, dtypes, args.repeats)
    head = []
    if args.device_check:
        # (batch, dim, labels): 2^28 logits, a gigabyte in float32; a toy size for a test run.
        batch, dim, labels = (16, 8, 64) if args.log2_sizes else (4096, 256, 65536)
        for dtype in dtypes:
            head += linear_head(batch, dim, labels, dtype, args.repeats)
    compiled = compile_times(min(2**20, max(sizes)))
    for name, seconds in compiled.items():
        print(f"compile jit(value_and_grad) {name:<45} {seconds:.2f} s")
    fields = {
        "benchmark": "loss suite: forward and value_and_grad against the bandwidth floor",
        "repeats": args.repeats,
        "compile_seconds_at_2^20": compiled,
        "linear_head": head,
    }
    path = harness.record("suite", args.out, fields, rows)
    plot(rows, path.with_suffix(".png"))
    print(f"plotted in {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
