"""ROC-AUC on 10^6 and 10^7 scores: bcejax (exact, and the streaming update) vs scikit-learn.

The scores come from a plausible classifier (labels drawn from the sigmoid of
a latent score, scores that latent plus noise), ties included (float32). Every
contender is timed round-robin in one process; medians and ratios to
scikit-learn's ``roc_auc_score``. The bcejax timings include the transfer of
the result to the host. Run:

    python benchmarks/bench_metrics.py [--sizes 1000000 10000000] [--repeats 7]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import harness
import jax
import jax.numpy as jnp
import numpy as np
import sklearn
from sklearn.metrics import roc_auc_score

from bcejax import metrics


def _data(size: int):
    rng = np.random.default_rng(0)
    latent = rng.normal(size=size).astype(np.float32) * 2
    labels = (rng.uniform(size=size) < 1 / (1 + np.exp(-latent))).astype(np.float32)
    scores = 1 / (1 + np.exp(-(latent + rng.normal(size=size).astype(np.float32))))
    return scores.astype(np.float32), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**6, 10**7])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    auc = jax.jit(metrics.roc_auc)

    @jax.jit
    def streaming(scores, labels):
        state = metrics.StreamingBinaryMetrics.empty().update(scores, labels)
        return state.compute()["roc_auc"]

    results = []
    for size in args.sizes:
        scores, labels = _data(size)
        on_device = jnp.asarray(scores), jnp.asarray(labels)
        exact = float(auc(*on_device))
        binned = float(streaming(*on_device))
        reference = roc_auc_score(labels, scores)
        print(
            f"n = {size:,}: AUC exact {exact:.8f}, streaming {binned:.8f}, "
            f"scikit-learn {reference:.8f}"
        )
        base = f"scikit-learn roc_auc_score, n={size:.0e}"
        calls = {
            base: lambda s=scores, y=labels: roc_auc_score(y, s),
            f"bcejax roc_auc (jit), n={size:.0e}": lambda d=on_device: float(auc(*d)),
            f"bcejax streaming update + compute (jit), n={size:.0e}": lambda d=on_device: float(
                streaming(*d)
            ),
        }
        medians = harness.round_robin(calls, args.repeats)
        rows = harness.table(medians, {name: (None if name == base else base) for name in calls})
        for row in rows:
            row.update(size=size, exact_auc=exact, streaming_auc=binned, sklearn_auc=reference)
        results.extend(rows)
    fields = {"benchmark": "ROC-AUC of float32 scores vs scikit-learn", "repeats": args.repeats}
    harness.record("metrics", args.out, fields, results, sklearn=sklearn.__version__)


if __name__ == "__main__":
    main()
