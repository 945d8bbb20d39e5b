"""Input validation, shared by every loss, and the checked mode.

Two kinds of checks:

* Structure (dtypes, shapes, reduction names, and numeric config such as
  ``gamma`` when it is a concrete number) is checked at trace time, always.
  These cost nothing at run time.
* Values (labels in ``[0, 1]``, probabilities in ``[0, 1]``, logits not NaN)
  are checked when the inputs are concrete, i.e. on eager calls. Under ``jit``
  the values are unknown at trace time, so they are checked only inside
  :func:`checked`, which functionalizes the checks with
  ``jax.experimental.checkify``; a plain ``jit`` pays nothing for them.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

REDUCTIONS = ("mean", "sum", "none")


class InvalidInputError(ValueError):
    """An input value is outside the domain of the loss (found at run time)."""


_state = threading.local()


def _checking() -> bool:
    return getattr(_state, "checking", False)


@contextlib.contextmanager
def _checking_mode():
    previous = _checking()
    _state.checking = True
    try:
        yield
    finally:
        _state.checking = previous


def checked(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps ``fn`` so that bcejax's value checks run under ``jit``.

    ``fn`` is traced with the value checks switched on, functionalized with
    ``checkify`` and compiled with ``jax.jit``; a failed check raises
    :class:`InvalidInputError` with a message that says what is wrong. Wrap the
    plain (not yet jitted) function, e.g. a training step::

        step = bcejax.checked(train_step)
        state, loss = step(state, batch)  # raises InvalidInputError on bad labels

    Without this wrapper, a jitted function carries no value checks at all.
    """
    compiled = jax.jit(checkify.checkify(fn, errors=checkify.user_checks))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _checking_mode():
            error, out = compiled(*args, **kwargs)
        message = error.get()
        if message is not None:
            raise InvalidInputError(message.replace(" (`check` failed)", ""))
        return out

    return wrapper


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _value_check(ok_fn, values, message_fn) -> None:
    """Runs one value check: eagerly when ``values`` is concrete, else via checkify."""
    if _is_concrete(values):
        array = np.asarray(values)
        if array.size and not bool(ok_fn(np, array)):
            raise InvalidInputError(message_fn(array))
    elif _checking():
        text = message_fn(None).replace("{", "{{").replace("}", "}}")
        checkify.check(
            ok_fn(jnp, values),
            text + " (min {lo}, max {hi})",
            lo=jnp.min(values),
            hi=jnp.max(values),
        )


def _range_text(array) -> str:
    if array is None:
        return ""
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    if array.dtype.kind == "f" and np.isnan(array).any():
        return " (contains NaN)"
    lo, hi = (finite.min(), finite.max()) if finite.size else (array.min(), array.max())
    return f" (min {lo}, max {hi})"


def check_labels(labels, name: str = "labels") -> None:
    """Labels must be in ``[0, 1]``; names the likely cause when they are not."""
    if jnp.issubdtype(jnp.result_type(labels), jnp.bool_):
        return

    def ok(xp, v):
        return xp.all((v >= 0) & (v <= 1))

    def message(array):
        return _label_message(f"{name} must be in [0, 1]", array)

    _value_check(ok, labels, message)


def _label_message(text: str, array) -> str:
    """``text`` with the range of ``array`` and the likely cause of labels out of range."""
    text += _range_text(array)
    if array is None:
        return text + ": 8-bit masks need dividing by 255, {-1, 1} labels mapping to {0, 1}"
    finite = array[np.isfinite(array)]
    if np.isnan(array).any():
        return text + ": NaN labels; drop those entries or mask them with `where`"
    if finite.size and 1 < finite.max() <= 255 and np.all(finite == np.round(finite)):
        return text + ": labels up to 255 look like an 8-bit mask; divide by 255"
    if finite.size and finite.min() == -1 and np.all(np.isin(finite, (-1, 0, 1))):
        return text + ": labels in {-1, 1}; map them to {0, 1} with (labels + 1) / 2"
    if finite.size and finite.min() >= 0 and finite.max() <= 1:
        return text + ": soft labels; threshold them, e.g. labels >= 0.5"
    return text + "; clip or rescale them"


def check_binary_labels(labels, name: str = "labels") -> None:
    """Labels of a classification metric must be exactly 0 or 1."""
    if jnp.issubdtype(jnp.result_type(labels), jnp.bool_):
        return

    def ok(xp, v):
        return xp.all((v == 0) | (v == 1))

    def message(array):
        return _label_message(f"{name} must be 0 or 1", array)

    _value_check(ok, labels, message)


def check_probabilities(probs, name: str = "probs") -> None:
    """Probabilities must be in ``[0, 1]``; logits passed by mistake are named."""

    def ok(xp, v):
        return xp.all((v >= 0) & (v <= 1))

    def message(array):
        text = f"{name} must be probabilities in [0, 1]{_range_text(array)}"
        return text + ": for logits, use the sigmoid_* loss or from_logits=True"

    _value_check(ok, probs, message)


def check_weights(weights, name: str = "weights") -> None:
    """Weights must be non-negative (a negative weight would reward a wrong prediction)."""

    def ok(xp, v):
        return xp.all(v >= 0)

    def message(array):
        return f"{name} must be >= 0{_range_text(array)}: take the absolute value or clip at 0"

    _value_check(ok, weights, message)


def check_logits(logits, name: str = "logits") -> None:
    """Logits must not be NaN (``+-inf`` are allowed and give 0 or ``+inf``)."""

    def ok(xp, v):
        return ~xp.any(xp.isnan(v))

    def message(array):
        return (
            f"{name} contain NaN: the model has diverged upstream of the loss "
            "(lower the learning rate, or check the inputs for NaN)"
        )

    _value_check(ok, logits, message)


def check_float(x, name: str) -> jax.Array:
    """Returns ``x`` as an array, raising ``TypeError`` unless it has a float dtype."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a floating dtype, got {x.dtype}: "
            f"cast with {name}.astype(jnp.float32)"
        )
    return x


def check_broadcast(**arrays) -> tuple[int, ...]:
    """Returns the broadcast shape of the named arrays, or names the two that clash."""
    named = [(n, jnp.shape(a)) for n, a in arrays.items() if a is not None]
    shape: tuple[int, ...] = ()
    seen = []
    for name, s in named:
        try:
            shape = jnp.broadcast_shapes(shape, s)
        except ValueError:
            other = next(n for n, t in seen if not _broadcastable(t, s))
            raise ValueError(
                f"{name} with shape {s} does not broadcast with {other} with shape "
                f"{dict(seen)[other]}: give them equal shapes, or size-1 axes where one "
                "is shared"
            ) from None
        seen.append((name, s))
    return shape


def _broadcastable(a, b) -> bool:
    try:
        jnp.broadcast_shapes(a, b)
    except ValueError:
        return False
    return True


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _concrete_scalars(value):
    """The value as a NumPy array when it is known at trace time, else None."""
    if value is None or not _is_concrete(value):
        return None
    return np.asarray(value, dtype=np.float64)


def check_range(
    value, name: str, lo: float, hi: float | None = None, *, hi_open: bool = False
) -> None:
    """``lo <= value <= hi`` (or ``< hi``) for concrete config values; traced ones pass."""
    array = _concrete_scalars(value)
    if array is None:
        return
    bad = np.isnan(array) | (array < lo)
    if hi is not None:
        bad |= (array >= hi) if hi_open else (array > hi)
    if bad.any():
        upper = "" if hi is None else (f" and < {hi}" if hi_open else f" and <= {hi}")
        raise ValueError(f"{name} must be >= {lo}{upper}, got {array.tolist()}")


def check_gamma(gamma, name: str = "gamma") -> None:
    check_range(gamma, name, 0.0)


def check_alpha(alpha, name: str = "alpha") -> None:
    check_range(alpha, name, 0.0, 1.0)


def check_label_smoothing(label_smoothing) -> None:
    check_range(label_smoothing, "label_smoothing", 0.0, 1.0, hi_open=True)


def check_nonnegative(value, name: str) -> None:
    check_range(value, name, 0.0)


def values_checked(x) -> bool:
    """True when value checks on ``x`` run: eagerly for concrete ``x``, or in checked mode."""
    return _is_concrete(x) or _checking()


def check_label_rows(row_sums, dtype, name: str = "labels") -> None:
    """One-hot or soft labels must sum to 1 over the classes of each (unmasked) example."""
    tol = max(1e-3, 8 * float(jnp.finfo(dtype).eps)) if jnp.issubdtype(dtype, jnp.floating) else 0

    def ok(xp, v):
        return xp.all(xp.abs(v - 1) <= tol)

    def message(array):
        return (
            f"{name} must sum to 1 over the classes of each example (one-hot or a "
            f"probability distribution){_range_text(array)}: normalize them, mask "
            "padded examples with `where`, or pass class indices to "
            "softmax_cross_entropy_with_integer_labels"
        )

    _value_check(ok, row_sums, message)


def check_class_indices(labels, num_classes: int, ignore_index=None, name: str = "labels") -> None:
    """Integer labels must be class indices in ``[0, num_classes)`` or ``ignore_index``."""

    def ok(xp, v):
        valid = (v >= 0) & (v < num_classes)
        if ignore_index is not None:
            valid |= v == ignore_index
        return xp.all(valid)

    def message(array):
        text = f"{name} must be class indices in [0, {num_classes})"
        if ignore_index is not None:
            text += f" or ignore_index={ignore_index}"
        text += _range_text(array)
        if array is None:
            return text + ": 1-based labels need 1 subtracting; padding needs ignore_index"
        if array.min() >= 1 and array.max() == num_classes:
            return text + ": labels look 1-based; subtract 1"
        if ignore_index is None and array.min() < 0:
            value = array.min()
            return text + f": to skip examples labelled {value}, pass ignore_index={value}"
        return text + f"; the logits have {num_classes} classes along the class axis"

    _value_check(ok, labels, message)


def check_integer(x, name: str, hint: str) -> jax.Array:
    """Returns ``x`` as an array, raising ``TypeError`` unless it has an integer dtype."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype, got {x.dtype}: {hint}")
    return x


def check_signed_targets(targets, name: str = "targets") -> None:
    """Signed targets must be -1 or 1; names {0, 1} labels, the usual mistake."""

    def ok(xp, v):
        return xp.all((v == -1) | (v == 1))

    def message(array):
        text = f"{name} must be -1 or 1{_range_text(array)}"
        if array is not None and np.all(np.isin(array, (0, 1))):
            return text + ": targets in {0, 1}; map them to {-1, 1} with 2 * labels - 1"
        return text + ": map labels in {0, 1} to {-1, 1} with 2 * labels - 1"

    _value_check(ok, targets, message)
