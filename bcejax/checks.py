"""Input validation, shared by every loss, and the checked mode.

Two kinds of checks:

* Structure (dtypes, shapes, reduction names, and numeric config such as
  ``gamma`` when it is a concrete number) is checked at trace time, always.
  These cost nothing at run time.
* Values (labels in ``[0, 1]``, probabilities in ``[0, 1]``, logits not NaN,
  weights not negative, class indices in range) are checked by one primitive,
  ``bcejax_check``, that every loss binds on its inputs, with one check per
  cause, so that the first check that fails names the likely cause (an 8-bit
  mask, ``{-1, 1}`` labels, 1-based classes) with the range of the values:

  - in a traced program, the primitive lowers to nothing, and XLA drops what
    computed its checks: a plain ``jit`` pays nothing;
  - under ``jax.experimental.checkify`` (which :func:`checked` applies), it
    becomes a real check. The plain and the checked program are traced the
    same, so a trace that JAX cached for one serves the other as well;
  - an eager call of a public loss is one compiled, checkified program
    (:func:`compiled_when_eager`); an op-by-op call checks each input as it
    comes. Either way the message is the one ``checked`` gives.

Labels and weights accept values within :data:`ROUNDING_TOLERANCE` outside
their range (finite differences and float rounding make those); anything
further out is certainly wrong and raises :class:`InvalidInputError`.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jax.typing import ArrayLike

from bcejax import _common, _jax_private

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
    ``checked`` goes outside every transformation: ``checked(jax.jit(f))``, not
    ``jax.jit(checked(f))`` (which raises a ``TypeError`` saying so).

    Examples:
      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss_fn = bcejax.checked(lambda x, y: bcejax.sigmoid_binary_cross_entropy(x, y).mean())
      >>> print(f"{float(loss_fn(jnp.array([0.0]), jnp.array([1.0]))):.4f}")
      0.6931
      >>> loss_fn(jnp.array([0.0]), jnp.array([-1.0]))
      Traceback (most recent call last):
        ...
      bcejax.checks.InvalidInputError: labels must be in [0, 1] ...: labels in {-1, 1}; ...
    """
    compiled = jax.jit(checkify.checkify(fn, errors=checkify.user_checks))

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not _jax_private.trace_state_clean():
            raise TypeError(
                "bcejax.checked(f) was called inside a transformation (jit, grad, vmap, ...): "
                "its check results can only be read outside. Wrap the jitted function "
                "instead: checked(jax.jit(f))"
            )
        error, out = compiled(*args, **kwargs)
        _raise_failed(error)
        return out

    return wrapper


def _raise_failed(error: checkify.Error) -> None:
    message = error.get()
    if message is not None:
        # checkify appends where the check was made; the message says what to do.
        raise InvalidInputError(message.split(" (`check` failed)")[0])


def compiled_when_eager(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn``, run as one compiled program with its value checks fused in when called eagerly.

    Called inside a trace (``jit``, ``grad``, ``vmap``, ...), ``fn`` is traced as
    it is. Called eagerly, array arguments are passed to a program compiled
    once per function, static arguments and shapes, which computes the result
    and the value checks together and fetches only the checks' few scalars;
    a failed check raises :class:`InvalidInputError` naming the cause.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not _jax_private.trace_state_clean():
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
        except TypeError:  # an unhashable static argument: op by op, each input checked
            return fn(*args, **kwargs)
        error, out = program(*(leaf for leaf, t in zip(leaves, traced, strict=True) if t))
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


# -- The value checks ---------------------------------------------------------


def _cause(bad: jax.Array, message: str, **values: jax.Array) -> _jax_private.Cause:
    """One check: ``bad`` is its failure, ``message`` its text with ``values`` formatted in."""
    return bad, message, values


@dataclasses.dataclass(frozen=True)
class _Check(abc.ABC):
    """The value checks of one input, one per named cause.

    ``causes(v)`` lists them in order: the first that fails is the one
    reported, so the checks of a specific cause come before the catch-all.
    """

    name: str

    @abc.abstractmethod
    def causes(self, v: jax.Array) -> list[_jax_private.Cause]:
        """The checks of ``v``, each ``(failed, message, values the message formats)``."""


_RANGE = " (min {lo}, max {hi})"


_Extent = tuple[jax.Array, jax.Array, jax.Array]


def _extent(v: jax.Array) -> _Extent:
    """``(lo, hi, has_nan)``, two passes over ``v``: most checks are decided from these."""
    lo, hi = jnp.min(v), jnp.max(v)  # NaN if any entry is NaN
    return lo, hi, jnp.isnan(lo) if jnp.issubdtype(v.dtype, jnp.floating) else jnp.zeros((), bool)


def _integral(v: jax.Array, bad: jax.Array) -> jax.Array:
    """Whether every entry is a whole number, looked at only when the check has failed."""
    if not jnp.issubdtype(v.dtype, jnp.floating):
        return jnp.ones((), bool)
    # Both branches reduce ``u`` (the second over none of it, so True), which keeps the
    # result typed as ``u`` is inside shard_map (varying over the devices or not).
    whole = lambda u: jnp.all(u == jnp.round(u))  # noqa: E731
    return jax.lax.cond(bad, whole, lambda u: jnp.all(jnp.ravel(u)[:0] == 0), v)


def _label_causes(
    text: str, v: jax.Array, bad: jax.Array, extent: _Extent
) -> list[_jax_private.Cause]:
    """Why labels are out of their domain (``bad``), most specific first; the catch-all last."""
    lo, hi, has_nan = extent
    integral = _integral(v, bad)
    ranged = text + _RANGE
    nan = text + " (contains NaN): NaN labels; drop those entries or mask them with `where`"
    eight_bit = ranged + ": labels up to 255 look like an 8-bit mask; divide by 255"
    signed = ranged + ": labels in {{-1, 1}}; map them to {{0, 1}} with (labels + 1) / 2"
    soft = ranged + ": soft labels; threshold them, e.g. labels >= 0.5"
    return [
        _cause(has_nan, nan),
        _cause(bad & integral & (hi > 1) & (hi <= 255), eight_bit, lo=lo, hi=hi),
        _cause(bad & integral & (lo == -1) & (hi <= 1), signed, lo=lo, hi=hi),
        _cause(bad & (lo >= 0) & (hi <= 1), soft, lo=lo, hi=hi),  # only 0-or-1 labels get here
        _cause(bad, ranged + "; clip or rescale them", lo=lo, hi=hi),
    ]


@dataclasses.dataclass(frozen=True)
class _Labels(_Check):
    def causes(self, v):
        extent = lo, hi, _ = _extent(v)
        bad = ~((lo >= -ROUNDING_TOLERANCE) & (hi <= 1 + ROUNDING_TOLERANCE))  # NaN: bad
        return _label_causes(f"{self.name} must be in [0, 1]", v, bad, extent)


@dataclasses.dataclass(frozen=True)
class _BinaryLabels(_Check):
    def causes(self, v):
        bad = ~jnp.all((v == 0) | (v == 1))
        return _label_causes(f"{self.name} must be 0 or 1", v, bad, _extent(v))


def _range_causes(
    text: str, bad: jax.Array, extent: _Extent, hint: str
) -> list[_jax_private.Cause]:
    lo, hi, has_nan = extent
    return [
        _cause(has_nan, text + " (contains NaN)" + hint),
        _cause(bad, text + _RANGE + hint, lo=lo, hi=hi),
    ]


@dataclasses.dataclass(frozen=True)
class _Probabilities(_Check):
    def causes(self, v):
        extent = lo, hi, _ = _extent(v)
        text = f"{self.name} must be probabilities in [0, 1]"
        hint = ": for logits, use the sigmoid_* loss or from_logits=True"
        return _range_causes(text, ~((lo >= 0) & (hi <= 1)), extent, hint)


@dataclasses.dataclass(frozen=True)
class _Weights(_Check):
    def causes(self, v):
        extent = lo, _, _ = _extent(v)
        hint = ": take the absolute value or clip at 0"
        return _range_causes(
            f"{self.name} must be >= 0", ~(lo >= -ROUNDING_TOLERANCE), extent, hint
        )


@dataclasses.dataclass(frozen=True)
class _NotNaN(_Check):
    def causes(self, v):
        message = (
            f"NaN in {self.name}: the model has diverged upstream of the loss "
            "(lower the learning rate, or check the inputs for NaN)"
        )
        return [_cause(jnp.any(jnp.isnan(v)), message)]


@dataclasses.dataclass(frozen=True)
class _ClassIndices(_Check):
    num_classes: int
    ignore_index: int | None

    def causes(self, v):
        lo, hi, _ = _extent(v)
        bad = (lo < 0) | (hi >= self.num_classes)
        if self.ignore_index is not None:  # in range, or the ignored index
            bad = ~jnp.all((v >= 0) & (v < self.num_classes) | (v == self.ignore_index))
        text = f"{self.name} must be class indices in [0, {self.num_classes})"
        if self.ignore_index is not None:
            text += f" or ignore_index={self.ignore_index}"
        text += _RANGE
        one_based = bad & (lo >= 1) & (hi == self.num_classes)
        causes = [_cause(one_based, text + ": labels look 1-based; subtract 1", lo=lo, hi=hi)]
        if self.ignore_index is None:
            padding = text + ": to skip examples labelled {lo}, pass ignore_index={lo}"
            causes.append(_cause(bad & (lo < 0), padding, lo=lo, hi=hi))
        classes = f"; the logits have {self.num_classes} classes along the class axis"
        return [*causes, _cause(bad, text + classes, lo=lo, hi=hi)]


@dataclasses.dataclass(frozen=True)
class _SignedTargets(_Check):
    def causes(self, v):
        lo, hi, _ = _extent(v)
        bad = ~jnp.all((v == -1) | (v == 1))
        integral = _integral(v, bad)
        text = f"{self.name} must be -1 or 1" + _RANGE
        zero_one = text + ": targets in {{0, 1}}; map them to {{-1, 1}} with 2 * labels - 1"
        other = text + ": map labels in {{0, 1}} to {{-1, 1}} with 2 * labels - 1"
        return [
            _cause(bad & integral & (lo >= 0) & (hi <= 1), zero_one, lo=lo, hi=hi),
            _cause(bad, other, lo=lo, hi=hi),
        ]


# -- The check primitive ------------------------------------------------------
# Every loss binds it on its inputs. It passes its first operand through (the
# loss goes on with the value it returns, so neither a jit nor a derivative can
# drop it) and checks its second: it lowers to nothing, so XLA drops what fed
# the check, and under checkify it becomes the checks of its causes.

_check_p = Primitive("bcejax_check")


def _guard(carrier: ArrayLike, value: ArrayLike, check: _Check) -> jax.Array:
    """``carrier``, with ``check`` of ``value`` tied to it (or run now, on an op-by-op call)."""
    value = jnp.asarray(value)
    if not value.size:
        return jnp.asarray(carrier)
    if _jax_private.trace_state_clean():
        _raise_failed(_eager_check(value, check))
        return jnp.asarray(carrier)
    return _check_p.bind(jnp.asarray(carrier), value, check=check)


@functools.partial(jax.jit, static_argnames="check")
def _eager_check(value: jax.Array, check: _Check) -> checkify.Error:
    # An op-by-op call: the input's checks as one program, through the primitive's own
    # checkify rule; only their scalars come back.
    bind = functools.partial(_check_p.bind, check=check)
    error, _ = checkify.checkify(lambda v: bind(v, v), errors=checkify.user_checks)(value)
    return error


def _jvp(primals, tangents, *, check):
    return _check_p.bind(*primals, check=check), tangents[0]


def _batch(args, dims, *, check):
    # Every check holds for all elements, so the batch axis needs no handling.
    return _check_p.bind(*args, check=check), dims[0]


_check_p.def_impl(lambda carrier, value, *, check: carrier)
_check_p.def_abstract_eval(lambda carrier, value, *, check: carrier)
mlir.register_lowering(_check_p, lambda ctx, carrier, value, *, check: [carrier])
ad.primitive_jvps[_check_p] = _jvp
batching.primitive_batchers[_check_p] = _batch
_jax_private.register_checkify_rule(_check_p, lambda value, *, check: check.causes(value))


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
    check_choice(reduction, "reduction", REDUCTIONS)


def check_choice(value: Any, name: str, choices: tuple[Any, ...], hint: str = "") -> None:
    """``value`` must be one of ``choices`` (a static option, checked at trace time)."""
    if not any(value == c and type(value) is type(c) for c in choices):
        raise ValueError(f"{name} must be one of {choices}, got {value!r}{hint}")


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
    lo_open: bool = False,
    hi_open: bool = False,
    hint: str = "",
) -> None:
    """``lo <= value <= hi`` (``<`` for an open bound) for concrete config; traced values pass.

    ``hint`` follows the message: what to do instead.
    """
    array = _concrete_scalars(value)
    if array is None:
        return
    bad = np.isnan(array) | ((array <= lo) if lo_open else (array < lo))
    if hi is not None:
        bad |= (array >= hi) if hi_open else (array > hi)
    if bad.any():
        lower = f"> {lo}" if lo_open else f">= {lo}"
        upper = "" if hi is None else (f" and < {hi}" if hi_open else f" and <= {hi}")
        raise ValueError(f"{name} must be {lower}{upper}, got {array.tolist()}{hint}")


def check_positive(value: ArrayLike | None, name: str, hint: str = "") -> None:
    """``value > 0`` for concrete config; traced values pass."""
    check_range(value, name, 0.0, lo_open=True, hint=hint)


def check_count(value: Any, name: str, lo: int = 1, what: str = "") -> int:
    """A Python (or NumPy) integer ``>= lo``: config that sets a shape, so never traced.

    ``what`` says what it sets, for the message.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be a Python int{what}, got {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}{what}, got {value}")
    return int(value)


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


def prepare_elementwise(
    preds: ArrayLike, labels: ArrayLike, *, name: str, from_logits: bool, **config: Any
) -> tuple[jax.Array, jax.Array, Any]:
    """The door of an elementwise loss: its inputs checked, in the dtype it computes in.

    Checks that ``preds`` (logits, or probabilities with ``from_logits=False``)
    have a float dtype and that they, the labels and the array-valued
    ``config`` (``weights``, ``pos_weight``, ...) broadcast together; ties the
    value checks of the predictions, the labels and ``weights`` to them; and
    returns ``(preds, labels, dtype)`` with both cast to the compute dtype
    (float32 for half precision) and ``dtype`` the one to return the loss in.
    Range checks of scalar config are the caller's (``check_range`` and kin).
    """
    x = check_float(preds, name)
    y = jnp.asarray(labels)
    check_broadcast(**{name: x, "labels": y}, **config)
    x = check_logits(x, name) if from_logits else check_probabilities(x, name)
    y = check_labels(y)
    if config.get("weights") is not None:
        x = check_weights(config["weights"], carrier=x)
    compute = _common.compute_dtype(x.dtype)
    return x.astype(compute), y.astype(compute), x.dtype
