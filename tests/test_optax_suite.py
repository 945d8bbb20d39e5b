"""optax's own tests for the functions bcejax supersedes, with bcejax's functions in place.

The test classes are imported from the installed optax package (their code is
not copied here). Each subclass patches ``optax.losses._classification`` so
that every call the optax tests make to a superseded function, including the
reference calls they compare against, reaches bcejax's function instead.
"""

from __future__ import annotations

from unittest import mock

import pytest

import bcejax

optax_tests = pytest.importorskip("optax.losses._classification_test")
_classification = pytest.importorskip("optax.losses._classification")

SUPERSEDED = {
    "softmax_cross_entropy": bcejax.softmax_cross_entropy,
    "softmax_cross_entropy_with_integer_labels": bcejax.softmax_cross_entropy_with_integer_labels,
    "sigmoid_binary_cross_entropy": bcejax.sigmoid_binary_cross_entropy,
    "poly_loss_cross_entropy": bcejax.poly_loss_cross_entropy,
    "hinge_loss": bcejax.hinge_loss,
    "sigmoid_focal_loss": bcejax.sigmoid_focal_loss,
}


class _WithBcejax:
    """Mixin: every superseded optax function is bcejax's for the length of each test."""

    def setUp(self):
        super().setUp()
        for name, fn in SUPERSEDED.items():
            patcher = mock.patch.object(_classification, name, fn)
            patcher.start()
            self.addCleanup(patcher.stop)


class SoftmaxCrossEntropyTest(_WithBcejax, optax_tests.SoftmaxCrossEntropyTest):
    pass


class SoftmaxCrossEntropyWithIntegerLabelsTest(
    _WithBcejax, optax_tests.SoftmaxCrossEntropyWithIntegerLabelsTest
):
    pass


class SigmoidCrossEntropyTest(_WithBcejax, optax_tests.SigmoidCrossEntropyTest):
    pass


class PolyLossTest(_WithBcejax, optax_tests.PolyLossTest):
    pass


class HingeTest(_WithBcejax, optax_tests.HingeTest):
    pass


class SigmoidFocalLossTest(_WithBcejax, optax_tests.SigmoidFocalLossTest):
    pass


def test_every_superseded_function_is_patched():
    """The swap is real: the optax name resolves to bcejax's function inside a test."""
    test = SigmoidCrossEntropyTest("test_sigmoid_cross_entropy0")
    test.setUp()
    try:
        for name, fn in SUPERSEDED.items():
            assert getattr(_classification, name) is fn
    finally:
        test.doCleanups()
    assert _classification.sigmoid_binary_cross_entropy is not bcejax.sigmoid_binary_cross_entropy
