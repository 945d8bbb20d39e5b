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

A callable is declared, not written: it names its functional form
(``function``), its config fields, and the level that function works at. The
one :meth:`Loss.loss` passes each config field to the function as the keyword
of the same name, and the one ``__call__`` of :class:`Loss` takes care of
``where``, ``weights``, ``axis_name`` and the reduction by level:

* ``"entry"`` (elementwise): masked entries are cut out (logits, labels and
  weights set to 0) before the loss, which gets the weights; the mean is over
  the unmasked entries.
* ``"example"`` (one value per example, the class axis reduced): ``where`` is
  per example and passed to the loss; ``weights`` weigh examples; the mean
  divides by :meth:`Loss.normalizer` summed over the unmasked examples.
* ``"image"`` (one value per image): ``where`` masks pixels and goes to the
  loss; ``weights`` weigh whole images; the mean is over images with a pixel left.
* ``"batch"`` (one value per batch): the loss gets everything, ``axis_name``
  included, and returns the batch's value; a function that takes no
  ``axis_name`` gives one value per device's batch, and the reduction averages
  them over the devices.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from bcejax import batch, binary, checks, multiclass, segmentation
from bcejax.reduction import AxisName, reduce_loss

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform  # typing's from Python 3.11
else:

    def dataclass_transform(**_: Any) -> Any:
        """Tells type checkers that a decorator makes dataclasses; nothing at run time."""
        return lambda decorator: decorator


_L = TypeVar("_L", bound="Loss")


@dataclass_transform(frozen_default=True, eq_default=False)
def _loss_dataclass(cls: type[_L]) -> type[_L]:
    """Freezes ``cls`` and registers it as a pytree: str/bool/None-only fields are static."""
    cls = dataclasses.dataclass(frozen=True, eq=False)(cls)  # Loss.__eq__ compares arrays
    static = getattr(cls, "_static_fields", ())
    fields = [f.name for f in dataclasses.fields(cls)]
    data = [f for f in fields if f not in static]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=list(static))


LEVELS = ("entry", "example", "image", "batch")


class Loss:
    """Base of the callables: the call by level, the reduction, ``+`` and scalar ``*``.

    Examples:
      Every callable takes ``where``: a masked entry leaves the mean.

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss_fn = bcejax.losses.BinaryCrossEntropy()
      >>> logits, labels = jnp.array([0.0, 2.0]), jnp.array([1.0, 0.0])
      >>> print(f"{float(loss_fn(logits, labels, where=jnp.array([True, False]))):.4f}")
      0.6931
    """

    _static_fields: tuple[str, ...] = ("reduction",)
    #: The functional form: each config field is passed to it as the keyword of the same name.
    function: ClassVar[Callable[..., jax.Array]]
    #: The functional form from probabilities, for ``from_logits=False`` (when ``function``
    #: takes no ``from_logits`` of its own).
    from_probabilities: ClassVar[Callable[..., jax.Array] | None] = None
    _level: ClassVar[str] = "entry"
    if TYPE_CHECKING:  # each callable is a dataclass (@_loss_dataclass)
        __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @property
    def level(self) -> str:
        """What one value of the functional form covers: one of :data:`LEVELS`."""
        return self._level

    def __post_init__(self) -> None:
        if "reduction" in self.__dataclass_fields__:
            # The callables with a reduction have it as a field; the others skip this.
            checks.check_reduction(self.reduction)  # type: ignore[attr-defined]

    def __eq__(self, other: Any) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(
            _same(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self)
        )

    def __hash__(self) -> int:
        return hash((type(self), *(_key(getattr(self, f.name)) for f in dataclasses.fields(self))))

    def functional_form(self, labels: ArrayLike) -> Callable[..., jax.Array]:
        """The function this callable calls for ``labels``."""
        # Read from the class: a function read from an instance would be bound to it.
        cls = type(self)
        if not getattr(self, "from_logits", True) and cls.from_probabilities is not None:
            return cls.from_probabilities
        return cls.function

    def loss(self, logits: ArrayLike, labels: ArrayLike, **inputs: Any) -> jax.Array:
        """The functional form with this config, at this callable's level.

        ``inputs`` (``weights``, ``where``, ``axis_name``) are what the level
        passes on; one that is not None must be a keyword of the function.
        """
        fn = self.functional_form(labels)
        keywords = _keywords(fn)
        for name, value in inputs.items():
            if value is not None and name not in keywords:
                raise ValueError(
                    f"{self!r} calls {fn.__name__}, which takes no {name}: drop {name}"
                )
        config = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in keywords:
                config[field.name] = value
            elif field.name not in ("reduction", "from_logits") and not _same(value, field.default):
                raise ValueError(
                    f"{type(self).__name__}({field.name}={value!r}) does not apply to "
                    f"{fn.__name__}, which this call goes to: leave {field.name} out"
                )
        inputs = {name: value for name, value in inputs.items() if name in keywords}
        return fn(logits, labels, **config, **inputs)

    def normalizer(self, logits: ArrayLike, labels: ArrayLike) -> jax.Array | None:
        """What ``"mean"`` divides by, per example (level ``"example"``); None: 1 each."""
        return None

    def __call__(
        self,
        logits: ArrayLike,
        labels: ArrayLike,
        *,
        weights: ArrayLike | None = None,
        where: ArrayLike | None = None,
        axis_name: AxisName | None = None,
    ) -> jax.Array:
        return _BY_LEVEL[self.level](self, logits, labels, weights, where, axis_name)

    def __add__(self, other: Any) -> SumOfLosses:
        if not isinstance(other, Loss):
            return NotImplemented
        return SumOfLosses(terms=(*_terms(self), *_terms(other)))

    def __mul__(self, scale: Any) -> SumOfLosses:
        if isinstance(scale, Loss):
            return NotImplemented
        return SumOfLosses(terms=tuple((scale * c, loss) for c, loss in _terms(self)))

    __rmul__ = __mul__


def _entry(loss, logits, labels, weights, where, axis_name):
    # Masked entries are cut out first, so a NaN or an out-of-range label there is
    # never checked and never reaches the loss or its gradient.
    if where is not None:
        logits, labels, weights, where = _cut_out(logits, labels, weights, where)
    values = loss.loss(logits, labels, weights=weights)
    return reduce_loss(values, loss.reduction, where=where, axis_name=axis_name)


def _example(loss, logits, labels, weights, where, axis_name):
    if where is not None and jnp.ndim(where) >= jnp.ndim(logits):
        raise ValueError(
            f"{type(loss).__name__} masks whole examples: where must have the batch "
            f"shape {jnp.shape(logits)[:-1]}, got {jnp.shape(where)}; to drop classes, "
            "call the functional form with where of the logits' shape"
        )
    values = loss.loss(logits, labels, where=where)
    if weights is not None:
        weights = jnp.asarray(weights, values.dtype)
        if where is not None:  # a NaN weight of a masked example stays out of the gradient
            weights = jnp.where(jnp.asarray(where, bool), weights, 0)
        values = values * checks.check_weights(weights)
    normalizer = loss.normalizer(logits, labels)
    if loss.reduction != "mean" or normalizer is None:
        return reduce_loss(values, loss.reduction, where=where, axis_name=axis_name)
    total = reduce_loss(values, "sum", where=where, axis_name=axis_name)
    count = reduce_loss(normalizer, "sum", where=where, axis_name=axis_name)
    return jnp.where(count > 0, total / jnp.where(count > 0, count, 1), 0).astype(values.dtype)


def _image(loss, logits, labels, weights, where, axis_name):
    values = loss.loss(logits, labels, where=where)
    if weights is not None:
        values = values * _image_weights(weights, jnp.shape(logits)).astype(values.dtype)
    kept = None
    if where is not None:
        shape = jnp.shape(logits)
        mask = jnp.broadcast_to(jnp.asarray(where, bool), shape)
        kept = jnp.any(mask, tuple(range(1, mask.ndim)))  # images with a pixel left
    return reduce_loss(values, loss.reduction, where=kept, axis_name=axis_name)


def _batch(loss, logits, labels, weights, where, axis_name):
    if "axis_name" in _keywords(loss.functional_form(labels)):
        return loss.loss(logits, labels, weights=weights, where=where, axis_name=axis_name)
    # One value per device's batch, averaged over the devices.
    value = loss.loss(logits, labels, weights=weights, where=where)
    return reduce_loss(value, loss.reduction, axis_name=axis_name)


def _sum(loss, logits, labels, weights, where, axis_name):
    total = None
    for scale, term in loss.terms:
        value = scale * term(logits, labels, weights=weights, where=where, axis_name=axis_name)
        total = value if total is None else total + value
    return total


_BY_LEVEL = {"entry": _entry, "example": _example, "image": _image, "batch": _batch, "sum": _sum}


@functools.cache
def _keywords(fn: Callable[..., jax.Array]) -> frozenset[str]:
    return frozenset(inspect.signature(fn).parameters)


def _cut_out(logits, labels, weights, where):
    """Inputs of an elementwise loss with the entries ``where`` masks set to 0.

    ``where`` must broadcast to the loss's shape without adding axes; the
    returned inputs and mask have the loss's shape.
    """
    operands = dict(logits=logits, labels=labels, weights=weights)
    shape = checks.check_broadcast(**operands)
    if checks.check_broadcast(loss=jax.ShapeDtypeStruct(shape, bool), where=where) != shape:
        raise ValueError(
            f"where with shape {jnp.shape(where)} would broadcast the loss of shape {shape} "
            "to a larger one: masks must not add axes to the loss"
        )
    mask = jnp.broadcast_to(jnp.asarray(where, bool), shape)
    cut = [None if a is None else jnp.where(mask, a, 0) for a in operands.values()]
    return (*cut, mask)


def _same(a: Any, b: Any) -> bool:
    """Config equality: arrays by value and shape, tuples elementwise, the rest by ``==``."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Loss) or isinstance(b, Loss) or a is None or b is None:
        return a == b
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return np.shape(a) == np.shape(b) and bool(np.all(np.asarray(a) == np.asarray(b)))


def _key(value: Any) -> Any:
    """A hashable stand-in for a config value: arrays by shape, dtype and bytes."""
    if isinstance(value, tuple):
        return tuple(_key(v) for v in value)
    if value is None or isinstance(value, str | bool | int | float | Loss):
        return value
    array = np.asarray(value)
    return (array.shape, str(array.dtype), array.tobytes())


def _terms(loss: Loss) -> tuple[tuple[Any, Loss], ...]:
    return loss.terms if isinstance(loss, SumOfLosses) else ((1.0, loss),)


@_loss_dataclass
class SumOfLosses(Loss):
    """``sum_k c_k loss_k(...)``: what ``+`` and ``*`` build from loss callables.

    Examples:
      BCE plus half the poly-1 loss at logit 0, label 1: ``log 2 + (log 2 + 1/2) / 2``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss_fn = bcejax.losses.BinaryCrossEntropy() + 0.5 * bcejax.losses.Poly1Loss()
      >>> type(loss_fn).__name__
      'SumOfLosses'
      >>> print(f"{float(loss_fn(jnp.array([0.0]), jnp.array([1.0]))):.4f}")
      1.2897
    """

    terms: tuple[tuple[Any, Loss], ...]
    _static_fields = ()
    _level = "sum"

    def __repr__(self) -> str:
        return " + ".join(f"{scale!r} * {loss!r}" for scale, loss in self.terms)


@_loss_dataclass
class BinaryCrossEntropy(Loss):
    """Binary cross-entropy, from logits (default) or probabilities.

    ``from_logits=True``: :func:`bcejax.sigmoid_binary_cross_entropy`
    (PyTorch ``BCEWithLogitsLoss``); ``False``: :func:`bcejax.binary_cross_entropy`
    with ``eps`` (None: PyTorch ``BCELoss``; a float: Keras).

    Examples:
      The mean of ``log 2`` and ``log(1 + e^2)``, as
      ``optax.sigmoid_binary_cross_entropy(logits, labels).mean()``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss_fn = bcejax.losses.BinaryCrossEntropy()
      >>> print(f"{float(loss_fn(jnp.array([0.0, 2.0]), jnp.array([1.0, 0.0]))):.4f}")
      1.4100
    """

    function = binary.sigmoid_binary_cross_entropy
    from_probabilities = binary.binary_cross_entropy

    from_logits: bool = True
    pos_weight: Any = None
    label_smoothing: Any = 0.0
    eps: float | None = None
    reduction: str = "mean"
    _static_fields = ("from_logits", "eps", "reduction")


@_loss_dataclass
class FocalLoss(Loss):
    """Focal loss, from logits (default) or probabilities (Keras, ``eps=1e-7``).

    Defaults ``alpha=0.25, gamma=2.0`` as in Lin et al. and torchvision; pass
    ``alpha=None`` for no class balancing (Keras' default).

    Examples:
      ``alpha (1 - p_t)**2 log 2`` at logit 0, label 1: ``0.25 * 0.25 * log 2``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss_fn = bcejax.losses.FocalLoss(alpha=0.25, gamma=2.0)
      >>> print(f"{float(loss_fn(jnp.array([0.0]), jnp.array([1.0]))):.4f}")
      0.0433
    """

    function = binary.sigmoid_focal_loss
    from_probabilities = binary.binary_focal_loss

    alpha: Any = 0.25
    gamma: Any = 2.0
    from_logits: bool = True
    label_smoothing: Any = 0.0
    reduction: str = "mean"
    _static_fields = ("from_logits", "reduction")


@_loss_dataclass
class AsymmetricLoss(Loss):
    """Asymmetric loss for multi-label classification: :func:`bcejax.sigmoid_asymmetric_loss`.

    Examples:
      The mean of :func:`bcejax.sigmoid_asymmetric_loss`'s example, ``(0.6931 + 0.0245) / 2``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss_fn = bcejax.losses.AsymmetricLoss()
      >>> print(f"{float(loss_fn(jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0]))):.4f}")
      0.3588
    """

    function = binary.sigmoid_asymmetric_loss

    gamma_pos: Any = 0.0
    gamma_neg: Any = 4.0
    clip: Any = 0.05
    reduction: str = "mean"


@_loss_dataclass
class Poly1Loss(Loss):
    """Poly-1 loss from logits: :func:`bcejax.sigmoid_poly1_loss`.

    Examples:
      ``log 2 + 1/2`` at logit 0, label 1:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss_fn = bcejax.losses.Poly1Loss(epsilon=1.0)
      >>> print(f"{float(loss_fn(jnp.array([0.0]), jnp.array([1.0]))):.4f}")
      1.1931
    """

    function = binary.sigmoid_poly1_loss

    epsilon: Any = 1.0
    pos_weight: Any = None
    label_smoothing: Any = 0.0
    reduction: str = "mean"


@_loss_dataclass
class CategoricalCrossEntropy(Loss):
    """Softmax cross-entropy over the last axis, with integer or one-hot labels.

    Integer labels: :func:`bcejax.softmax_cross_entropy_with_integer_labels`;
    float labels (one-hot or soft): :func:`bcejax.softmax_cross_entropy`.
    ``weights`` and ``where`` are per example. As PyTorch's
    ``CrossEntropyLoss``, ``reduction="mean"`` divides the summed loss by the
    summed class weights of the targets of the unmasked, non-ignored examples
    (their count without ``class_weights``; ``sum_c w_c y_c`` for soft labels),
    and gives 0 when there are none.

    Examples:
      Uniform logits over 3 classes: ``log 3``; the ignored example is left out of the mean:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss_fn = bcejax.losses.CategoricalCrossEntropy(ignore_index=-100)
      >>> print(f"{float(loss_fn(jnp.zeros((2, 3)), jnp.array([0, -100]))):.4f}")
      1.0986
    """

    function = multiclass.softmax_cross_entropy_with_integer_labels

    label_smoothing: Any = 0.0
    class_weights: Any = None
    ignore_index: int | None = None
    reduction: str = "mean"
    _static_fields = ("ignore_index", "reduction")
    _level = "example"

    def functional_form(self, labels: ArrayLike) -> Callable[..., jax.Array]:
        """Integer labels: with integer labels; float labels: one-hot or soft."""
        if jnp.issubdtype(jnp.result_type(labels), jnp.integer):
            return type(self).function
        if self.ignore_index is not None:
            raise ValueError(
                "ignore_index needs integer labels; mask one-hot examples with `where`"
            )
        return multiclass.softmax_cross_entropy

    def normalizer(self, logits: ArrayLike, labels: ArrayLike) -> jax.Array:
        """The weight of each example's target: what ``mean`` divides by."""
        shape = jnp.shape(logits)[:-1]
        dtype = jnp.promote_types(jnp.result_type(logits), jnp.float32)
        if jnp.issubdtype(jnp.result_type(labels), jnp.integer):
            labels = jnp.broadcast_to(jnp.asarray(labels), shape)
            valid = jnp.ones(shape, bool)
            if self.ignore_index is not None:
                valid = labels != self.ignore_index
            if self.class_weights is None:
                return valid.astype(dtype)
            weights = jnp.asarray(self.class_weights, dtype)
            return jnp.where(valid, weights[jnp.clip(labels, 0, weights.size - 1)], 0)
        if self.class_weights is None:
            return jnp.ones(shape, dtype)
        labels = jnp.broadcast_to(jnp.asarray(labels, dtype), jnp.shape(logits))
        return labels @ jnp.asarray(self.class_weights, dtype)


class _OverlapLoss(Loss):
    """A per-image loss: ``where`` masks pixels, ``weights`` weigh whole images."""

    _static_fields: tuple[str, ...] = ("from_logits", "reduction")
    _level = "image"


@_loss_dataclass
class _SmoothedOverlapLoss(_OverlapLoss):
    """The config of a per-image overlap ratio with ``smooth`` added to both its terms."""

    smooth: Any = 1.0
    from_logits: bool = True
    reduction: str = "mean"


def _image_weights(weights, shape):
    """Per-image weights of shape ``(batch,)`` from ``(batch,)`` or ``(batch, 1, ...)``."""
    weights = jnp.asarray(weights)
    if weights.ndim > 1 and all(n == 1 for n in weights.shape[1:]):
        weights = weights.reshape(weights.shape[0])
    if weights.ndim > 1 or (weights.ndim == 1 and weights.shape[0] not in (1, shape[0])):
        raise ValueError(
            f"overlap losses weigh whole images: weights must have shape ({shape[0]},) or "
            f"({shape[0]}, 1, ...), got {weights.shape}"
        )
    return jnp.broadcast_to(checks.check_weights(weights), shape[:1])


@_loss_dataclass
class DiceLoss(_SmoothedOverlapLoss):
    """Soft Dice loss per image (:func:`bcejax.dice_loss`), averaged over the images.

    Examples:
      The mean over the images of ``1/3`` (one false positive) and 0 (a perfect image):

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> probs = jnp.array([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # two images
      >>> masks = jnp.array([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
      >>> loss_fn = bcejax.losses.DiceLoss(smooth=0.0, from_logits=False)
      >>> print(f"{float(loss_fn(probs, masks)):.4f}")
      0.1667
    """

    function = segmentation.dice_loss


@_loss_dataclass
class JaccardLoss(_SmoothedOverlapLoss):
    """Soft Jaccard (IoU) loss per image (:func:`bcejax.jaccard_loss`), averaged.

    Examples:
      One image with ``TP = FP = FN = 1`` once its masked last pixel is left out:
      ``(FP + FN) / (TP + FP + FN) = 2/3``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss_fn = bcejax.losses.JaccardLoss(smooth=0.0, from_logits=False)
      >>> probs, masks = jnp.array([[1.0, 1.0, 0.0, 1.0]]), jnp.array([[1.0, 0.0, 1.0, 0.0]])
      >>> keep = jnp.array([[True, True, True, False]])
      >>> print(f"{float(loss_fn(probs, masks, where=keep)):.4f}")
      0.6667
    """

    function = segmentation.jaccard_loss


@_loss_dataclass
class TverskyLoss(_OverlapLoss):
    """Tversky loss per image (:func:`bcejax.tversky_loss`), averaged over the images.

    Examples:
      ``alpha = beta = 1/2`` is Dice: the mean of ``1/3`` and 0:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> probs = jnp.array([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # two images
      >>> masks = jnp.array([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
      >>> loss_fn = bcejax.losses.TverskyLoss(alpha=0.5, beta=0.5, smooth=0.0, from_logits=False)
      >>> print(f"{float(loss_fn(probs, masks)):.4f}")
      0.1667
    """

    function = segmentation.tversky_loss

    alpha: Any = 0.3
    beta: Any = 0.7
    smooth: Any = 1.0
    from_logits: bool = True
    reduction: str = "mean"


@_loss_dataclass
class LovaszHinge(_OverlapLoss):
    """Lovász hinge per image (:func:`bcejax.lovasz_hinge`), averaged over the images.

    ``per_image=False`` computes one loss over the whole batch, which takes no
    per-image ``weights``.

    Examples:
      One image with the hinge errors 0.5 (the foreground pixel) and 0:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss_fn = bcejax.losses.LovaszHinge()
      >>> print(f"{float(loss_fn(jnp.array([[0.5, -1.0]]), jnp.array([[1.0, 0.0]]))):.4f}")
      0.5000
    """

    function = segmentation.lovasz_hinge

    per_image: bool = True
    from_logits: bool = True
    reduction: str = "mean"
    _static_fields = ("per_image", "from_logits", "reduction")

    @property
    def level(self) -> str:
        """``"image"`` with ``per_image`` (one loss per image), else ``"batch"`` (one in all)."""
        return "image" if self.per_image else "batch"


@_loss_dataclass
class SoftFBetaLoss(Loss):
    """One minus the soft F-beta score of the batch (:func:`bcejax.soft_fbeta_loss`).

    A batch-level loss: ``where`` leaves entries out of the sums, ``weights``
    weigh entries, and ``axis_name`` (inside ``shard_map``) makes the sums
    those of the global batch. It returns the batch's value; there is no
    reduction to choose.

    Examples:
      Logits 0: ``TP = FP = FN = 1/2``, so the soft F1 is 1/2:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss_fn = bcejax.losses.SoftFBetaLoss(beta=1.0)
      >>> print(f"{float(loss_fn(jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0]))):.4f}")
      0.5000
    """

    function = batch.soft_fbeta_loss

    beta: Any = 1.0
    average: str = "micro"
    epsilon: Any = 1e-7
    _static_fields = ("average",)
    _level = "batch"


__all__ = [
    "AsymmetricLoss",
    "BinaryCrossEntropy",
    "CategoricalCrossEntropy",
    "DiceLoss",
    "FocalLoss",
    "JaccardLoss",
    "Loss",
    "LovaszHinge",
    "Poly1Loss",
    "SoftFBetaLoss",
    "SumOfLosses",
    "TverskyLoss",
]
