"""The examples' plots show what they claim: the kept epoch, and a legend clear of the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bcejax import metrics

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def plots(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import plots

    yield plots
    plots._pyplot().close("all")


def test_the_loss_curves_mark_the_kept_epoch(plots):
    # The validation loss is lowest, first, at epoch 2: training.fit keeps those parameters.
    history = {"train_loss": [0.5, 0.4, 0.3, 0.2], "val_loss": [0.45, 0.3, 0.3, 0.35]}
    ax = plots.loss_figure(history).axes[0]
    kept = [line for line in ax.get_lines() if line.get_label().startswith("kept")]
    assert [line.get_label() for line in kept] == ["kept: epoch 2"]
    assert kept[0].get_xydata().tolist() == [[2.0, 0.3]]
    assert "kept: epoch 2" in [t.get_text() for t in ax.get_legend().get_texts()]


def _spam_like(seed=0, n=800):
    """Logits of a good but over-confident classifier with 9% positives."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.09).astype(np.float32)
    logits = np.where(labels > 0, rng.normal(2.5, 2.5, n), rng.normal(-4.5, 2.5, n))
    return logits.astype(np.float32), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_reliability_legend_covers_no_point_and_the_bins_show_their_counts(plots, seed):
    logits, labels = _spam_like(seed)
    fig = plots.reliability_figure(logits, labels, temperature=1.6)
    fig.canvas.draw()
    ax, counts = fig.axes
    legend = ax.get_legend().get_window_extent()
    series = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(series) == 2
    for line in series:
        for x, y in ax.transData.transform(line.get_xydata()):
            assert not legend.contains(x, y), (line.get_label(), x, y)
    # Below: each bin's count, before and after scaling.
    heights = [patch.get_height() for patch in counts.patches]
    want = [
        np.asarray(
            metrics.reliability_diagram(logits / t, labels, n_bins=10, from_logits=True).weight
        )
        for t in (1.0, 1.6)
    ]
    np.testing.assert_allclose(heights, np.concatenate(want))
    assert counts.get_ylabel() == "examples"
