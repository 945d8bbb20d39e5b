"""The PNG plots an example writes to its output folder (process 0 alone writes them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bcejax import metrics


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def losses(out: Path, history: dict[str, list[float]]) -> None:
    """``loss_curves.png``: the training and validation losses, the kept epoch marked."""
    plt = _pyplot()
    fig = loss_figure(history)
    fig.savefig(out / "loss_curves.png", dpi=100)
    plt.close(fig)


def loss_figure(history: dict[str, list[float]]):
    """The loss curves; the epoch whose parameters were kept (lowest validation loss) marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    ax.plot(epochs, history["train_loss"], "o-", label="train")
    ax.plot(epochs, history["val_loss"], "o-", label="validation")
    kept = int(np.argmin(history["val_loss"]))  # the first lowest, as training.fit keeps
    ax.axvline(epochs[kept], color="gray", linestyle=":", zorder=0)
    ax.plot(
        epochs[kept],
        history["val_loss"][kept],
        "*",
        color="black",
        markersize=12,
        label=f"kept: epoch {epochs[kept]}",
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    return fig


def classifier(out: Path, logits, labels, temperature: float) -> None:
    plt = _pyplot()
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(9, 4))
    fpr, tpr, _ = metrics.roc_curve(logits, labels)
    roc.plot(fpr, tpr)
    roc.plot([0, 1], [0, 1], ":", color="gray")
    roc.set(xlabel="false positive rate", ylabel="true positive rate")
    roc.set_title(f"ROC, AUC {float(metrics.roc_auc(logits, labels)):.3f}")
    precision, recall, _ = metrics.precision_recall_curve(logits, labels)
    pr.step(recall, precision, where="post")
    pr.set(xlabel="recall", ylabel="precision")
    pr.set_title(f"precision-recall, AP {float(metrics.average_precision(logits, labels)):.3f}")
    fig.tight_layout()
    fig.savefig(out / "roc_pr.png", dpi=100)
    plt.close(fig)

    fig = reliability_figure(logits, labels, temperature)
    fig.savefig(out / "reliability.png", dpi=100)
    plt.close(fig)


def reliability_figure(logits, labels, temperature: float, n_bins: int = 10):
    """Reliability before and after temperature scaling, and the examples in each bin.

    Above: the fraction of positives against the mean predicted probability of
    each non-empty bin, the legend in the top left corner, where a model that
    is not badly under-confident puts no point. Below: the count of each bin
    (log scale), which says how much each point weighs in the ECE.
    """
    plt = _pyplot()
    fig, (ax, counts) = plt.subplots(
        2, 1, figsize=(4.5, 5.5), sharex=True, gridspec_kw={"height_ratios": (3, 1)}
    )
    ax.plot([0, 1], [0, 1], ":", color="gray")
    edges = np.linspace(0, 1, n_bins + 1)
    for scale, name in ((1.0, "before"), (temperature, f"after, T = {temperature:.2f}")):
        bins = metrics.reliability_diagram(logits / scale, labels, n_bins=n_bins, from_logits=True)
        full = np.asarray(bins.weight) > 0
        ece = float(metrics.expected_calibration_error(logits / scale, labels, from_logits=True))
        (line,) = ax.plot(
            np.asarray(bins.prob_pred)[full],
            np.asarray(bins.prob_true)[full],
            "o-",
            label=f"{name} (ECE {ece:.3f})",
        )
        offset = (0.25 if scale == 1.0 else 0.55) / n_bins
        counts.bar(
            edges[:-1] + offset,
            np.asarray(bins.weight),
            width=0.3 / n_bins,
            align="edge",
            color=line.get_color(),
            label=name,
        )
    ax.set(ylabel="fraction of positives", xlim=(0, 1), ylim=(0, 1))
    ax.set_title("reliability, temperature scaling")
    ax.legend(loc="upper left", fontsize=9)
    counts.set(xlabel="mean predicted probability", ylabel="examples", yscale="log")
    fig.tight_layout()
    return fig


def segmentation(out: Path, images, masks, logits, count: int = 6) -> None:
    plt = _pyplot()
    count = min(count, len(images))
    fig, axes = plt.subplots(3, count, figsize=(2 * count, 6.2), squeeze=False)
    for i in range(count):
        image = images[i, ..., 0] if images.ndim == 4 else images[i]
        for row, (title, overlay) in enumerate(
            (("image", None), ("mask", masks[i]), ("prediction", logits[i] > 0))
        ):
            axes[row, i].imshow(image, cmap="gray")
            if overlay is not None:
                shown = np.ma.masked_where(~np.asarray(overlay, bool), overlay)
                axes[row, i].imshow(shown, cmap="autumn", alpha=0.6, vmin=0, vmax=1)
            axes[row, i].set_axis_off()
            if i == 0:
                axes[row, i].set_title(title, loc="left", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "overlays.png", dpi=80)
    plt.close(fig)
