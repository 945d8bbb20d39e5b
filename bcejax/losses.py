"""Optax-compatible loss callables: a loss function with its config, and a reduction.

Each callable is a frozen dataclass and a pytree: array-valued config
(``pos_weight``, ``alpha``, ``gamma``, ...) is a leaf, so a callable passes
through ``jit`` as an argument and its config can be scheduled or learned;
strings and flags (``reduction``, ``from_logits``) are static. Call one as::

    loss_fn = bcejax.losses.FocalLoss(alpha=0.25, gamma=2.0)
    loss = loss_fn(logits, labels, weights=None, where=mask, axis_name=None)

``reduction="mean"`` divides by the number of unmasked elements (PyTorch);
``"none"`` returns what the functional form returns, with masked entries set
to 0. Callables compose: ``BinaryCrossEntropy() + 0.5 * FocalLoss()``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from jax.typing import ArrayLike

from bcejax import binary, checks
from bcejax.reduction import AxisName, reduce_loss


def _loss_dataclass(cls):
    """Freezes ``cls`` and registers it as a pytree: str/bool/None-only fields are static."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    static = getattr(cls, "_static_fields", ())
    fields = [f.name for f in dataclasses.fields(cls)]
    data = [f for f in fields if f not in static]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=list(static))


class Loss:
    """Base of the callables: reduction, composition with ``+`` and scalar ``*``."""

    _static_fields: tuple[str, ...] = ("reduction",)

    def __post_init__(self):
        if "reduction" in self.__dataclass_fields__:
            checks.check_reduction(self.reduction)

    def elementwise(self, logits, labels, weights):
        raise NotImplementedError

    def __call__(
        self,
        logits: ArrayLike,
        labels: ArrayLike,
        *,
        weights: ArrayLike | None = None,
        where: ArrayLike | None = None,
        axis_name: AxisName | None = None,
    ) -> jax.Array:
        loss = self.elementwise(logits, labels, weights)
        return reduce_loss(loss, self.reduction, where=where, axis_name=axis_name)

    def __add__(self, other: Any) -> SumOfLosses:
        if not isinstance(other, Loss):
            return NotImplemented
        return SumOfLosses(terms=(*_terms(self), *_terms(other)))

    def __mul__(self, scale: Any) -> SumOfLosses:
        if isinstance(scale, Loss):
            return NotImplemented
        return SumOfLosses(terms=tuple((scale * c, loss) for c, loss in _terms(self)))

    __rmul__ = __mul__


def _terms(loss: Loss) -> tuple[tuple[Any, Loss], ...]:
    return loss.terms if isinstance(loss, SumOfLosses) else ((1.0, loss),)


@_loss_dataclass
class SumOfLosses(Loss):
    """``sum_k c_k loss_k(...)``: what ``+`` and ``*`` build from loss callables."""

    terms: tuple[tuple[Any, Loss], ...]
    _static_fields = ()

    def __call__(self, logits, labels, *, weights=None, where=None, axis_name=None):
        total = None
        for scale, loss in self.terms:
            value = scale * loss(logits, labels, weights=weights, where=where, axis_name=axis_name)
            total = value if total is None else total + value
        return total

    def __repr__(self) -> str:
        return " + ".join(f"{scale!r} * {loss!r}" for scale, loss in self.terms)


@_loss_dataclass
class BinaryCrossEntropy(Loss):
    """Binary cross-entropy, from logits (default) or probabilities.

    ``from_logits=True``: :func:`bcejax.sigmoid_binary_cross_entropy`
    (PyTorch ``BCEWithLogitsLoss``); ``False``: :func:`bcejax.binary_cross_entropy`
    with ``eps`` (None: PyTorch ``BCELoss``; a float: Keras).
    """

    from_logits: bool = True
    pos_weight: Any = None
    label_smoothing: Any = 0.0
    eps: float | None = None
    reduction: str = "mean"
    _static_fields = ("from_logits", "eps", "reduction")

    def elementwise(self, logits, labels, weights):
        common = dict(
            weights=weights, pos_weight=self.pos_weight, label_smoothing=self.label_smoothing
        )
        if self.from_logits:
            return binary.sigmoid_binary_cross_entropy(logits, labels, **common)
        return binary.binary_cross_entropy(logits, labels, eps=self.eps, **common)


@_loss_dataclass
class FocalLoss(Loss):
    """Focal loss, from logits (default) or probabilities (Keras, ``eps=1e-7``).

    Defaults ``alpha=0.25, gamma=2.0`` as in Lin et al. and torchvision; pass
    ``alpha=None`` for no class balancing (Keras' default).
    """

    alpha: Any = 0.25
    gamma: Any = 2.0
    from_logits: bool = True
    label_smoothing: Any = 0.0
    reduction: str = "mean"
    _static_fields = ("from_logits", "reduction")

    def elementwise(self, logits, labels, weights):
        fn = binary.sigmoid_focal_loss if self.from_logits else binary.binary_focal_loss
        return fn(
            logits,
            labels,
            alpha=self.alpha,
            gamma=self.gamma,
            weights=weights,
            label_smoothing=self.label_smoothing,
        )


@_loss_dataclass
class AsymmetricLoss(Loss):
    """Asymmetric loss for multi-label classification: :func:`bcejax.sigmoid_asymmetric_loss`."""

    gamma_pos: Any = 0.0
    gamma_neg: Any = 4.0
    clip: Any = 0.05
    reduction: str = "mean"

    def elementwise(self, logits, labels, weights):
        return binary.sigmoid_asymmetric_loss(
            logits,
            labels,
            gamma_pos=self.gamma_pos,
            gamma_neg=self.gamma_neg,
            clip=self.clip,
            weights=weights,
        )


@_loss_dataclass
class Poly1Loss(Loss):
    """Poly-1 loss from logits: :func:`bcejax.sigmoid_poly1_loss`."""

    epsilon: Any = 1.0
    pos_weight: Any = None
    label_smoothing: Any = 0.0
    reduction: str = "mean"

    def elementwise(self, logits, labels, weights):
        return binary.sigmoid_poly1_loss(
            logits,
            labels,
            epsilon=self.epsilon,
            weights=weights,
            pos_weight=self.pos_weight,
            label_smoothing=self.label_smoothing,
        )


__all__ = [
    "AsymmetricLoss",
    "BinaryCrossEntropy",
    "FocalLoss",
    "Loss",
    "Poly1Loss",
    "SumOfLosses",
]
