"""The examples' scikit-learn baseline: chosen on the validation split, the test split read once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def examples(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import baselines
    import segmentation
    import sentiment

    return baselines, segmentation, sentiment


class Fixed:
    """A fitted model whose logits are ``scale`` times the first column; it logs what it reads."""

    def __init__(self, scale, log):
        self.scale, self.log = scale, log

    def fit(self, x, y):
        self.log.append(("fit", self.scale, x.shape[0]))
        return self

    def decision_function(self, x):
        self.log.append(("read", self.scale, x.shape[0]))
        return self.scale * x[:, 0]


def test_the_best_validation_score_is_chosen_and_only_it_reads_the_test_split(examples):
    baselines = examples[0]
    x = {
        n: np.arange(size, dtype=float)[:, None]
        for n, size in (("train", 6), ("val", 4), ("test", 3))
    }
    y = {"train": np.zeros(6), "val": np.array([0.0, 0, 1, 1]), "test": np.array([0.0, 1, 1])}
    features = baselines.Features(*((x[n], y[n]) for n in ("train", "val", "test")))
    log: list = []
    # Logits -x rank the validation split backwards (ROC-AUC 0); x ranks it right (1).
    candidates = {"backwards": lambda: Fixed(-1.0, log), "right": lambda: Fixed(2.0, log)}
    chosen = baselines.fit(candidates, features, baselines.roc_auc)
    assert chosen.name == "right" and chosen.val_score == 1.0
    assert chosen.val_scores == {"backwards": 0.0, "right": 1.0}
    assert [entry for entry in log if entry[2] == 3] == [("read", 2.0, 3)]  # the test split
    np.testing.assert_allclose(chosen.logits["test"], [0.0, 2.0, 4.0])
    np.testing.assert_allclose(chosen.logits["val"], [0.0, 2.0, 4.0, 6.0])


def test_the_first_named_candidate_wins_a_tie(examples):
    baselines = examples[0]
    x, y = np.arange(4.0)[:, None], np.array([0.0, 0, 1, 1])
    features = baselines.Features((x, y), (x, y), (x, y))
    candidates = {name: lambda: Fixed(1.0, []) for name in ("first", "second")}
    assert baselines.fit(candidates, features, baselines.roc_auc).name == "first"


def test_the_real_candidates_separate_an_easy_problem(examples):
    baselines = examples[0]
    rng = np.random.default_rng(0)
    splits = []
    for n in (400, 200, 200):
        x = rng.normal(size=(n, 3))
        splits.append((x, (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(float)))
    candidates = baselines.logistic_regression() | baselines.gradient_boosting(max_iter=20)
    assert len(candidates) == 3 + 4
    chosen = baselines.fit(candidates, baselines.Features(*splits), baselines.roc_auc)
    assert chosen.val_score > 0.9
    assert chosen.logits["test"].shape == (200,) and chosen.logits["test"].dtype == np.float32


def test_the_sentiment_baseline_reads_the_model_s_tf_idf_vectors(examples):
    sentiment = examples[2]
    vocabulary = sentiment.Vocabulary(["good food", "bad food", "good good tea", "bad tea"])
    x = vocabulary.encode(["good tea", "unseen words"])
    matrix = sentiment.tfidf_matrix(x, len(vocabulary)).toarray()
    assert matrix.shape == (2, len(vocabulary))
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, rtol=1e-6)
    good, tea = vocabulary.ids["good"], vocabulary.ids["tea"]
    # "good tea" is in one training review only: the unknown n-gram.
    assert set(np.flatnonzero(matrix[0])) == {good, tea, sentiment.UNKNOWN}
    assert np.flatnonzero(matrix[1]).tolist() == [sentiment.UNKNOWN]


def test_the_segmentation_baseline_features_are_per_pixel_and_see_the_neighbourhood(examples):
    segmentation = examples[1]
    x = np.zeros((2, 32, 32, 1), np.float32)
    x[0, 10:20, 10:20] = 1.0  # a bright square
    x[1] = np.random.default_rng(0).normal(size=(32, 32, 1))
    features = segmentation.pixel_features(x)
    assert features.shape == (2 * 32 * 32, 2 + 2 * len(segmentation.WINDOWS))
    assert np.isfinite(features).all()
    image = features[: 32 * 32].reshape(32, 32, -1)
    # The 3x3 mean (column 2): 1 inside the square, lower at its edge, lowest outside.
    assert image[15, 15, 2] > image[10, 15, 2] > image[5, 5, 2]
    np.testing.assert_allclose(
        segmentation.box_mean(np.ones((1, 8, 8)), 5), np.ones((1, 8, 8)), rtol=1e-12
    )


def test_the_segmentation_baseline_draws_its_training_pixels_from_some_images(examples):
    baselines, segmentation = examples[0], examples[1]
    splits = segmentation.load(0, {"train": 8, "val": 2, "test": 3})
    features = segmentation.baseline_features(splits, seed=0)
    x_train, y_train = features.train
    assert (
        x_train.shape[0]
        == y_train.size
        == min(segmentation.BASELINE_PIXELS, 8 * segmentation.SIZE**2)
    )
    assert features.test[0].shape[0] == 3 * segmentation.SIZE**2
    assert features.shapes["test"] == (3, segmentation.SIZE, segmentation.SIZE)
    assert isinstance(features, baselines.Features)


@pytest.mark.parametrize(
    ("choice", "quick", "trained"),
    [("auto", False, True), ("auto", True, False), ("on", True, True), ("off", False, False)],
)
def test_baseline_flag(examples, choice, quick, trained):
    import argparse

    baselines = examples[0]
    assert baselines.wanted(argparse.Namespace(baseline=choice, quick=quick)) is trained
