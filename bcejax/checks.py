"""Input validation, shared by every loss, and the checked mode.

Two kinds of checks:

* Structure (dtypes, shapes, reduction names, and numeric config such as
  ``gamma`` when it is a concrete number) is checked at trace time, always.
  These cost nothing at run time.
* Values (labels in ``[0, 1]``, probabilities in ``[0, 1]``, logits not NaN,
  weights not negative, class indices in range) are checked by one primitive,
  ``bcejax_check``, that every loss binds on its inputs. It passes its first
  operand through unchanged (the loss goes on with the value it returns, so
  neither a ``jit`` nor a derivative can drop it) and checks its second:

  - eagerly (concrete inputs), the check is reduced to one boolean on the
    device and only that is fetched; the message is worked out on the host
    only when the check fails;
  - in a traced program, it lowers to nothing: XLA drops the operand of the
    check with everything that computed it, so a plain ``jit`` pays nothing;
  - under ``jax.experimental.checkify`` (which :func:`checked` applies), it
    becomes a real check. The plain and the checked program are traced the
    same, so a trace that JAX cached for one serves the other as well.

Labels and weights accept values within :data:`ROUNDING_TOLERANCE` outside
their range (finite differences and float rounding make those); anything
further out is certainly wrong and raises :class:`InvalidInputError`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

# checkify's registry of per-primitive rules is how a primitive becomes a check
# under checkify, and trace_state_clean tells an eager call from a traced one;
# both have had the same form from JAX 0.5 to the current release.
from jax._src import checkify as _checkify_rules
from jax._src import core as _jax_core
from jax.experimental import checkify
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jax.typing import ArrayLike

REDUCTIONS = ("mean", "sum", "none")

#: How far labels may lie outside ``[0, 1]``, and weights below 0, before they
#: are an error: rounding and finite-difference steps (``1e-5``) stay inside,
#: 8-bit masks, ``{-1, 1}`` labels and negative weights do not.
ROUNDING_TOLERANCE = 1e-3

# The decorators below keep the signature of the function they wrap.
_P = ParamSpec("_P")
_R = TypeVar("_R")


class InvalidInputError(ValueError):
    """An input value is outside the domain of the loss (found at run time).

    Examples:
      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> bcejax.sigmoid_binary_cross_entropy(jnp.array([0.0]), jnp.array([255.0]))
      Traceback (most recent call last):
        ...
      bcejax.checks.InvalidInputError: labels must be in [0, 1] ...: ... 8-bit mask; divide by 255
    """


def checked(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Wraps ``fn`` so that bcejax's value checks run under ``jit``.

    ``fn`` is functionalized with ``checkify`` and compiled with ``jax.jit``; a
    failed check raises :class:`InvalidInputError` with a message that says
    what is wrong. Wrap the plain or the jitted function, e.g. a training
    step::

        step = bcejax.checked(train_step)
        state, loss = step(state, batch)  # raises InvalidInputError on bad labels

    Without this wrapper, a jitted function carries no value checks at all and
    pays nothing for them. ``checked(f)`` and ``f`` may be called in any order:
    they share JAX's trace of ``f``, which holds the checks in both cases.

    Examples:
      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss_fn = bcejax.checked(lambda x, y: bcejax.sigmoid_binary_cross_entropy(x, y).mean())
      >>> print(f"{float(loss_fn(jnp.array([0.0]), jnp.array([1.0]))):.4f}")
      0.6931
      >>> loss_fn(jnp.array([0.0]), jnp.array([-1.0]))
      Traceback (most recent call last):
        ...
      bcejax.checks.InvalidInputError: labels must be in [0, 1]: ...
    """
    compiled = jax.jit(checkify.checkify(fn, errors=checkify.user_checks))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        error, out = compiled(*args, **kwargs)
        _raise_failed(error)
        return out

    return wrapper


def _raise_failed(error: checkify.Error) -> None:
    message = error.get()
    if message is not None:
        raise InvalidInputError(message.replace(" (`check` failed)", ""))


def compiled_when_eager(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn``, run as one compiled program with its value checks fused in when called eagerly.

    Called inside a trace (``jit``, ``grad``, ``vmap``, ...), ``fn`` is traced as
    it is. Called eagerly, array arguments are passed to a program compiled
    once per function, static arguments and shapes, which computes the result
    and the value checks together and fetches only the checks' few scalars.
    When a check fails, ``fn`` runs again op by op, so that the error names
    the likely cause from the values themselves.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not _trace_state_clean():
            return fn(*args, **kwargs)
        leaves, treedef = jax.tree.flatten((args, kwargs))
        # Arrays are the program's arguments. Scalars, NumPy's 0-d arrays among them, and
        # the rest are static, as config closed over by a caller's jit is concrete.
        leaves = [
            leaf[()] if isinstance(leaf, np.ndarray) and leaf.ndim == 0 else leaf for leaf in leaves
        ]
        traced = tuple(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves)
        statics = tuple(None if t else leaf for leaf, t in zip(leaves, traced, strict=True))
        try:
            program = _eager_program(fn, treedef, traced, statics)
        except TypeError:  # an unhashable static argument: run op by op
            return fn(*args, **kwargs)
        error, out = program(*(leaf for leaf, t in zip(leaves, traced, strict=True) if t))
        if error.get() is not None:
            fn(*args, **kwargs)  # raises, with the cause named from the values
            _raise_failed(error)
        return out

    return wrapper


@functools.lru_cache(maxsize=512)
def _eager_program(fn, treedef, traced, statics):
    def run(*arrays):
        given = iter(arrays)
        leaves = [next(given) if t else s for t, s in zip(traced, statics, strict=True)]
        args, kwargs = jax.tree.unflatten(treedef, leaves)
        return fn(*args, **kwargs)

    return jax.jit(checkify.checkify(run, errors=checkify.user_checks))


def _trace_state_clean() -> bool:
    # True outside every trace: the arguments and every closed-over value are concrete.
    return _jax_core.trace_state_clean()


# -- The check primitive ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Check:
    """One value check: ``ok`` on the device, ``message`` for the user."""

    name: str

    show_range = True

    def ok(self, v: jax.Array) -> jax.Array:
        raise NotImplementedError

    def message(self, array: np.ndarray | None) -> str:
        """What is wrong and what to do; ``array`` is None inside a traced program."""
        raise NotImplementedError


_check_p = Primitive("bcejax_check")


def _guard(carrier: ArrayLike, value: ArrayLike, check: _Check) -> jax.Array:
    """``carrier``, with ``check`` on ``value`` tied to it."""
    return _check_p.bind(jnp.asarray(carrier), jnp.asarray(value), check=check)


@functools.partial(jax.jit, static_argnames="check")
def _all_ok(value, check):
    return check.ok(value)


def _eager(carrier, value, *, check):
    # One boolean comes back to the host; the values only when the check fails.
    if value.size and not bool(_all_ok(value, check)):
        raise InvalidInputError(check.message(np.asarray(value)))
    return carrier


def _checkify_rule(error, enabled_errors, carrier, value, *, check):
    if _checkify_rules.FailedCheckError not in enabled_errors or np.size(value) == 0:
        return error, carrier
    text = check.message(None).replace("{", "{{").replace("}", "}}")
    kwargs = {}
    if check.show_range:
        text += " (min {lo}, max {hi})"
        kwargs = dict(lo=jnp.min(value), hi=jnp.max(value))
    failure = _checkify_rules.FailedCheckError(_checkify_rules.get_traceback(), text, **kwargs)
    return _checkify_rules.assert_func(error, ~check.ok(value), failure), carrier


def _jvp(primals, tangents, *, check):
    return _check_p.bind(*primals, check=check), tangents[0]


def _batch(args, dims, *, check):
    # Every check holds for all elements, so the batch axis needs no handling.
    return _check_p.bind(*args, check=check), dims[0]


_check_p.def_impl(_eager)
_check_p.def_abstract_eval(lambda carrier, value, *, check: carrier)
mlir.register_lowering(_check_p, lambda ctx, carrier, value, *, check: [carrier])
ad.primitive_jvps[_check_p] = _jvp
batching.primitive_batchers[_check_p] = _batch
_checkify_rules.error_checks[_check_p] = _checkify_rule


# -- The value checks ---------------------------------------------------------


def _range_text(array: np.ndarray | None) -> str:
    if array is None:
        return ""
    if array.dtype.kind == "f" and np.isnan(array).any():
        return " (contains NaN)"
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    lo, hi = (finite.min(), finite.max()) if finite.size else (array.min(), array.max())
    return f" (min {lo}, max {hi})"


def _label_message(text: str, array: np.ndarray | None) -> str:
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


@dataclasses.dataclass(frozen=True)
class _Labels(_Check):
    def ok(self, v):
        return jnp.all((v >= -ROUNDING_TOLERANCE) & (v <= 1 + ROUNDING_TOLERANCE))

    def message(self, array):
        return _label_message(f"{self.name} must be in [0, 1]", array)


@dataclasses.dataclass(frozen=True)
class _BinaryLabels(_Check):
    def ok(self, v):
        return jnp.all((v == 0) | (v == 1))

    def message(self, array):
        return _label_message(f"{self.name} must be 0 or 1", array)


@dataclasses.dataclass(frozen=True)
class _Probabilities(_Check):
    def ok(self, v):
        return jnp.all((v >= 0) & (v <= 1))

    def message(self, array):
        text = f"{self.name} must be probabilities in [0, 1]{_range_text(array)}"
        return text + ": for logits, use the sigmoid_* loss or from_logits=True"


@dataclasses.dataclass(frozen=True)
class _Weights(_Check):
    def ok(self, v):
        return jnp.all(v >= -ROUNDING_TOLERANCE)

    def message(self, array):
        text = f"{self.name} must be >= 0{_range_text(array)}"
        return text + ": take the absolute value or clip at 0"


@dataclasses.dataclass(frozen=True)
class _NotNaN(_Check):
    show_range = False

    def ok(self, v):
        return ~jnp.any(jnp.isnan(v))

    def message(self, array):
        return (
            f"{self.name} contain NaN: the model has diverged upstream of the loss "
            "(lower the learning rate, or check the inputs for NaN)"
        )


@dataclasses.dataclass(frozen=True)
class _ClassIndices(_Check):
    num_classes: int
    ignore_index: int | None

    def ok(self, v):
        valid = (v >= 0) & (v < self.num_classes)
        if self.ignore_index is not None:
            valid |= v == self.ignore_index
        return jnp.all(valid)

    def message(self, array):
        text = f"{self.name} must be class indices in [0, {self.num_classes})"
        if self.ignore_index is not None:
            text += f" or ignore_index={self.ignore_index}"
        text += _range_text(array)
        if array is None:
            return text + ": 1-based labels need 1 subtracting; padding needs ignore_index"
        if array.min() >= 1 and array.max() == self.num_classes:
            return text + ": labels look 1-based; subtract 1"
        if self.ignore_index is None and array.min() < 0:
            value = array.min()
            return text + f": to skip examples labelled {value}, pass ignore_index={value}"
        return text + f"; the logits have {self.num_classes} classes along the class axis"


@dataclasses.dataclass(frozen=True)
class _SignedTargets(_Check):
    def ok(self, v):
        return jnp.all((v == -1) | (v == 1))

    def message(self, array):
        text = f"{self.name} must be -1 or 1{_range_text(array)}"
        if array is not None and np.all(np.isin(array, (0, 1))):
            return text + ": targets in {0, 1}; map them to {-1, 1} with 2 * labels - 1"
        return text + ": map labels in {0, 1} to {-1, 1} with 2 * labels - 1"


def _is_bool(x: ArrayLike) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.bool_)


def check_labels(
    labels: jax.Array, name: str = "labels", *, carrier: jax.Array | None = None
) -> jax.Array:
    """Labels in ``[0, 1]`` (up to the rounding tolerance); names the likely cause when not.

    Returns ``carrier`` (``labels`` when None) with the check tied to it: the
    caller goes on with the returned array. The same holds for every check below.
    """
    carrier = labels if carrier is None else carrier
    return carrier if _is_bool(labels) else _guard(carrier, labels, _Labels(name))


def check_binary_labels(
    labels: jax.Array, name: str = "labels", *, carrier: jax.Array | None = None
) -> jax.Array:
    """Labels of a classification metric must be exactly 0 or 1."""
    carrier = labels if carrier is None else carrier
    return carrier if _is_bool(labels) else _guard(carrier, labels, _BinaryLabels(name))


def check_probabilities(
    probs: ArrayLike, name: str = "probs", *, carrier: ArrayLike | None = None
) -> jax.Array:
    """Probabilities must be in ``[0, 1]``; logits passed by mistake are named."""
    return _guard(probs if carrier is None else carrier, probs, _Probabilities(name))


def check_weights(
    weights: ArrayLike, name: str = "weights", *, carrier: ArrayLike | None = None
) -> jax.Array:
    """Weights must be non-negative (a negative weight would reward a wrong prediction)."""
    return _guard(weights if carrier is None else carrier, weights, _Weights(name))


def check_logits(
    logits: ArrayLike, name: str = "logits", *, carrier: ArrayLike | None = None
) -> jax.Array:
    """Logits must not be NaN (``+-inf`` are allowed and give 0 or ``+inf``)."""
    return _guard(logits if carrier is None else carrier, logits, _NotNaN(name))


def check_class_indices(
    labels: ArrayLike,
    num_classes: int,
    ignore_index: int | None = None,
    name: str = "labels",
    *,
    carrier: ArrayLike | None = None,
) -> jax.Array:
    """Integer labels must be class indices in ``[0, num_classes)`` or ``ignore_index``."""
    check = _ClassIndices(
        name, int(num_classes), None if ignore_index is None else int(ignore_index)
    )
    return _guard(labels if carrier is None else carrier, labels, check)


def check_signed_targets(
    targets: ArrayLike, name: str = "targets", *, carrier: ArrayLike | None = None
) -> jax.Array:
    """Signed targets must be -1 or 1; names {0, 1} labels, the usual mistake."""
    return _guard(targets if carrier is None else carrier, targets, _SignedTargets(name))


def check_float(x: ArrayLike, name: str) -> jax.Array:
    """Returns ``x`` as an array, raising ``TypeError`` unless it has a float dtype."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a floating dtype, got {x.dtype}: "
            f"cast with {name}.astype(jnp.float32)"
        )
    return x


def check_broadcast(**arrays: Any) -> tuple[int, ...]:
    """Returns the broadcast shape of the named arrays, or names the two that clash."""
    named = [(n, jnp.shape(a)) for n, a in arrays.items() if a is not None]
    shape: tuple[int, ...] = ()
    seen: list[tuple[str, tuple[int, ...]]] = []
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


def _broadcastable(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
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
    if value is None or isinstance(value, jax.core.Tracer):
        return None
    return np.asarray(value, dtype=np.float64)


def check_range(
    value: ArrayLike | None,
    name: str,
    lo: float,
    hi: float | None = None,
    *,
    hi_open: bool = False,
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


def check_gamma(gamma: ArrayLike, name: str = "gamma") -> None:
    check_range(gamma, name, 0.0)


def check_alpha(alpha: ArrayLike | None, name: str = "alpha") -> None:
    check_range(alpha, name, 0.0, 1.0)


def check_label_smoothing(label_smoothing: ArrayLike) -> None:
    check_range(label_smoothing, "label_smoothing", 0.0, 1.0, hi_open=True)


def check_nonnegative(value: ArrayLike | None, name: str) -> None:
    check_range(value, name, 0.0)


def check_integer(x: ArrayLike, name: str, hint: str) -> jax.Array:
    """Returns ``x`` as an array, raising ``TypeError`` unless it has an integer dtype."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype, got {x.dtype}: {hint}")
    return x
