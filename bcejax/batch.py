"""Batch-level losses: the value of an entry depends on the rest of the batch.

GHM-C weighs each entry by the inverse density of its gradient norm over the
batch, the soft F-beta loss is one ratio of sums over the batch, and OHEM
averages the batch's hardest entries. Every function takes ``where``: a masked
entry never counts. It changes no other entry's value, its logit and label are
cut out before they are checked, and a NaN there reaches neither the value nor
the gradient. Inside ``shard_map`` or ``pmap``, ``axis_name`` makes the batch
statistics (histogram, sums, counts, ranking) those of the global batch across
the devices. Half-precision inputs are computed in float32, float64 inputs in
float64; results come back in the dtype of the first argument.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TypeVar

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from bcejax import _common, _primitives, checks
from bcejax.reduction import AxisName

AVERAGES = ("micro", "macro")

# top_k is read as the nearest fraction with a denominator up to 2**15, so that
# ceil(top_k * n) is exact in int32 arithmetic: 0.1 of 30 entries is 3, not 4.
_MAX_DENOMINATOR = 1 << 15

# A count: a Python int, or an int32 array of them.
_Count = TypeVar("_Count", int, jax.Array)


def _prepare(logits, labels, where, weights):
    """Checked ``(x, y, c, dtype)``: broadcast, in the compute dtype, ``c`` the entry weights.

    Masked entries are set to 0 in ``x``, ``y`` and ``c`` before the value
    checks, so they are never checked and a NaN there reaches nothing.
    """
    x = checks.check_float(logits, "logits")
    y = jnp.asarray(labels)
    shape = checks.check_broadcast(logits=x, labels=y, where=where, weights=weights)
    x, y = jnp.broadcast_to(x, shape), jnp.broadcast_to(y, shape)
    w = None if weights is None else jnp.broadcast_to(jnp.asarray(weights), shape)
    mask = None
    if where is not None:
        mask = jnp.broadcast_to(jnp.asarray(where, bool), shape)
        x, y = jnp.where(mask, x, jnp.zeros_like(x)), jnp.where(mask, y, jnp.zeros_like(y))
        if w is not None:
            w = jnp.where(mask, w, jnp.zeros_like(w))
    x = checks.check_logits(x)
    y = checks.check_labels(y)
    dtype = x.dtype
    compute = _common.compute_dtype(dtype)
    x, y = x.astype(compute), y.astype(compute)
    if w is not None:
        c = checks.check_weights(w).astype(compute)
    elif mask is not None:
        c = mask.astype(compute)
    else:
        c = jnp.ones(shape, compute)
    return x, y, c, dtype


def _check_state(state: ArrayLike, bins: int, dtype: DTypeLike) -> jax.Array:
    state = jnp.asarray(state, dtype)
    if state.shape != (bins,):
        raise ValueError(
            f"state must have shape ({bins},), one running count per bin, got {state.shape}: "
            "pass the state returned by the previous step, or None to start"
        )
    return state


@checks.compiled_when_eager
def sigmoid_ghm_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    bins: int = 10,
    momentum: ArrayLike = 0.0,
    state: ArrayLike | None = None,
    update: str = "all",
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    axis_name: AxisName | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""Gradient harmonizing loss for classification (GHM-C), elementwise.

    .. math::
        g_i = |\sigma(x_i) - y_i|, \qquad
        b(g) = \min(\lfloor g M \rfloor, M - 1), \qquad
        c_b = \sum_{j:\, b(g_j) = b} w_j

    .. math::
        R_b = \mu\, s_b + (1 - \mu)\, c_b, \qquad
        \beta_i = \frac{N}{R_{b(g_i)}\, n}, \qquad
        \ell_i = w_i\, \beta_i\, \mathrm{BCE}(x_i, y_i)

    The gradient norm ``g`` of each valid entry falls into one of ``M = bins``
    equal bins on ``[0, 1]`` (``g = 1`` in the last). The histogram ``c``
    counts the valid entries in each bin, each counted ``w`` times (once
    without ``weights``); ``N = sum_b c_b`` is the number of valid entries and
    ``n`` the number of bins with ``c_b > 0``. The gradient density ``R`` of a
    bin is its count, or with a ``state`` ``s`` (the running count returned by
    the previous step) the moving average above with ``mu = momentum``;
    ``state=None`` starts from the current counts, ``R = c``. As in the
    authors' implementation, ``n`` (the non-empty bins of the current batch)
    stands for the paper's number of unit regions; with ``R = c`` (no state,
    or ``momentum=0``) the ``beta`` then average to 1 over the valid entries
    (weighted by ``w``).

    ``update="all"`` moves every bin's running count, as the paper's moving
    average does: a bin the batch leaves empty decays towards 0.
    ``update="filled"`` moves only the bins the batch fills and keeps the
    others' counts, as mmdetection's ``GHMC`` does; with ``state`` starting
    at zeros (mmdetection's first state) it gives mmdetection's numbers.

    ``beta`` is a constant for the derivative (``stop_gradient``), as in the
    paper: the derivative in the logits is ``w beta (sigmoid(x) - y)``.
    Masked entries (``where`` False) and entries of weight 0 are not in the
    histogram, not in ``N`` and not in ``n``, and their loss is 0. Integer
    weights equal repeated entries. With ``axis_name``, ``c`` (hence ``N``, ``n``
    and the state) is summed over the devices: the histogram of the global
    batch. The mean of the result over the valid entries (``reduce_loss`` with
    the same ``where``) is the paper's ``L_GHM-C``.

    Args:
      logits: unnormalized log-odds, any float dtype.
      labels: targets in ``[0, 1]`` (bool, int or float), broadcastable with ``logits``.
      bins: the number of bins ``M >= 1`` of the histogram (static).
      momentum: ``mu`` in ``[0, 1)`` of the running counts; 0 uses the current batch alone.
      state: the running counts, shape ``(bins,)``, returned by the previous
        step; None starts from the current counts.
      update: ``"all"`` (the paper) or ``"filled"`` (mmdetection): which bins
        the moving average moves (static).
      where: optional mask, broadcastable; False entries are ignored.
      weights: optional weights ``w >= 0``, broadcastable: they scale the loss
        and count in the histogram.
      axis_name: mapped axis name(s) of the batch inside ``shard_map`` or ``pmap``.

    Returns:
      ``(loss, new_state)``: the elementwise loss, with the broadcast shape and
      the dtype of ``logits`` (0 at masked entries), and the running counts
      ``R``, shape ``(bins,)``, float32 (float64 for float64 logits), to pass
      as ``state`` to the next step.

    Examples:
      Two entries with ``g = 1/2`` share bin 5, one with ``g = sigmoid(-4)`` has bin 0:
      ``beta = 3 / (2 * 2)`` and ``3 / (1 * 2)`` times the BCE:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> logits, labels = jnp.array([0.0, 0.0, 4.0]), jnp.array([1.0, 0.0, 1.0])
      >>> loss, state = bcejax.sigmoid_ghm_loss(logits, labels, bins=10)
      >>> [round(v, 4) for v in loss.tolist()]
      [0.5199, 0.5199, 0.0272]
      >>> state.tolist()
      [1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]

    References:
      Li, Liu, Wang, Gradient Harmonized Single-stage Detector, AAAI 2019,
      https://arxiv.org/abs/1811.05181
    """
    checks.check_count(bins, "bins", what=" (it sets the histogram's size)")
    checks.check_range(momentum, "momentum", 0.0, 1.0, hi_open=True)
    checks.check_choice(update, "update", ("all", "filled"), ": 'filled' is mmdetection's rule")
    x, y, c, dtype = _prepare(logits, labels, where, weights)
    if state is not None:
        state = _check_state(state, bins, x.dtype)
    counted = jax.lax.stop_gradient(c)
    norm = jnp.abs(jax.nn.sigmoid(jax.lax.stop_gradient(x)) - jax.lax.stop_gradient(y))
    # floor(g M) for g >= 0; labels within the rounding tolerance of 1 may give g > 1.
    index = jnp.minimum((norm * bins).astype(jnp.int32), bins - 1)
    counts = jnp.zeros((bins,), x.dtype).at[index].add(counted)
    total = jnp.sum(counted)
    if axis_name is not None:
        counts, total = jax.lax.psum((counts, total), axis_name)
    if state is None:
        running = counts
    else:
        mu = jnp.asarray(momentum, x.dtype)
        running = mu * state + (1 - mu) * counts
        if update == "filled":
            running = jnp.where(counts > 0, running, state)
        running = jax.lax.stop_gradient(running)
    # n is 0 only when nothing is counted: every coefficient is 0 then, so 1 serves.
    nonempty = jnp.maximum(jnp.sum(counts > 0), 1).astype(x.dtype)
    density = running[index]
    # Density 0 only in a bin with no counted entry, where beta multiplies a weight of 0.
    occupied = density > 0
    beta = jnp.where(occupied, total / (jnp.where(occupied, density, 1) * nonempty), 0)
    coef = c * beta
    loss = _primitives.bce_terms(x, coef * y, coef * (1 - y))
    return loss.astype(dtype), running


@checks.compiled_when_eager
def soft_fbeta_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    beta: ArrayLike = 1.0,
    average: str = "micro",
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    epsilon: ArrayLike = 1e-7,
    axis_name: AxisName | None = None,
) -> jax.Array:
    r"""One minus the soft F-beta score of the batch, a scalar.

    .. math::
        TP = \sum w p y, \quad FP = \sum w p (1 - y), \quad FN = \sum w (1 - p) y

    .. math::
        \ell = 1 - F_\beta = 1 - \frac{(1 + \beta^2)\, TP}
        {(1 + \beta^2)\, TP + \beta^2 FN + FP + \epsilon}

    with ``p = sigmoid(x)`` and ``1 - p = sigmoid(-x)``: the counts of the F
    score with the predictions replaced by probabilities, so the loss is
    differentiable. ``beta > 1`` weighs recall more, ``beta < 1`` precision.
    ``average="micro"`` takes the sums over every entry; ``average="macro"``
    takes them per class (the last axis, summing over the others) and
    returns the mean over the classes of ``1 - F``. The loss is computed as
    ``(beta^2 FN + FP + epsilon) / den``, not as ``1 - F``, so it keeps its
    relative accuracy near ``F = 1``. A class (or batch) with ``TP = 0``, e.g.
    no positive label, gives 1 with zero gradient, also when ``epsilon = 0``
    and nothing is counted.

    Masked entries are left out of the sums; integer weights equal repeated
    entries. With ``axis_name`` the sums are taken over the global batch
    (``psum``), so every device gets the same loss.

    Args:
      logits: unnormalized log-odds, any float dtype.
      labels: targets in ``[0, 1]`` (bool, int or float), broadcastable with ``logits``.
      beta: ``beta > 0``; 1 gives the soft F1 (Dice) loss.
      average: ``"micro"`` or ``"macro"`` (per class along the last axis, static).
      where: optional mask, broadcastable; False entries are ignored.
      weights: optional weights ``w >= 0``, broadcastable.
      epsilon: ``>= 0``, added to the denominator.
      axis_name: mapped axis name(s) of the batch inside ``shard_map`` or ``pmap``.

    Returns:
      The loss, a scalar in the dtype of ``logits``.

    Examples:
      Logits 0: ``TP = FP = FN = 1/2``, so ``F_1 = 1/2``:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss = bcejax.soft_fbeta_loss(jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0]))
      >>> print(f"{float(loss):.4f}")
      0.5000

    References:
      van Rijsbergen, Information Retrieval, 2nd ed., 1979, chapter 7 (the F measure).
      Bénédict et al., sigmoidF1: A Smooth F1 Score Surrogate Loss for
      Multilabel Classification, 2021, https://arxiv.org/abs/2108.10566
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    checks.check_positive(beta, "beta")
    checks.check_nonnegative(epsilon, "epsilon")
    x, y, c, dtype = _prepare(logits, labels, where, weights)
    if average == "macro" and x.ndim == 0:
        raise ValueError(
            "average='macro' takes the classes along the last axis, but logits and labels "
            "broadcast to a scalar: use average='micro'"
        )
    axes = None if average == "micro" else tuple(range(x.ndim - 1))
    p, p_neg = jax.nn.sigmoid(x), jax.nn.sigmoid(-x)
    tp = jnp.sum(c * p * y, axes)
    fp = jnp.sum(c * p * (1 - y), axes)
    fn = jnp.sum(c * p_neg * y, axes)
    if axis_name is not None:
        tp, fp, fn = jax.lax.psum((tp, fp, fn), axis_name)
    b2 = jnp.asarray(beta, x.dtype) ** 2
    mismatch = b2 * fn + fp + jnp.asarray(epsilon, x.dtype)
    den = (1 + b2) * tp + mismatch
    # den = 0 only with nothing counted and epsilon = 0: TP = 0, so F = 0.
    positive = den > 0
    loss = jnp.where(positive, mismatch / jnp.where(positive, den, 1), 1)
    return jnp.mean(loss).astype(dtype)


def _fraction(top_k: float) -> tuple[int, int]:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, float)):
        raise TypeError(
            f"top_k must be a Python float (it sets the number of entries kept), got {top_k!r}"
        )
    if not 0 < top_k <= 1:
        raise ValueError(f"top_k must be > 0 and <= 1 (a fraction of the entries), got {top_k}")
    fraction = Fraction(top_k).limit_denominator(_MAX_DENOMINATOR)
    return fraction.numerator, fraction.denominator


def _ceil_times(num: int, den: int, n: _Count) -> _Count:
    """``ceil(num * n / den)``, exact for Python ints and int32 arrays with ``den <= 2**15``."""
    return num * (n // den) + (num * (n % den) + den - 1) // den


def _stack_devices(values: jax.Array, axis_name: AxisName, devices: int) -> jax.Array:
    """The ``values`` of every device, one after another, the same array on every device.

    Each device puts its values in its own slot of a zero buffer and the
    buffers are summed (``psum``): the result is known to be the same on every
    device, and its derivative goes back to each device's own slot.
    """
    slot = jnp.arange(devices)[:, None] == jax.lax.axis_index(axis_name)
    return jax.lax.psum(jnp.where(slot, values, 0), axis_name).ravel()


@checks.compiled_when_eager
def ohem_reduce(
    loss: ArrayLike,
    *,
    top_k: float = 0.25,
    where: ArrayLike | None = None,
    axis_name: AxisName | None = None,
) -> jax.Array:
    r"""Online hard example mining as a reduction: the mean of the largest losses.

    .. math::
        k = \max(\lceil t\, n \rceil, 1), \qquad
        \text{ohem} = \frac{1}{k} \sum_{j=1}^{k} \ell_{(j)}

    where ``n`` is the number of valid entries, ``t = top_k`` and
    ``l_(1) >= l_(2) >= ...`` the valid losses sorted in decreasing order. With
    no valid entry the result is 0 with zero gradient. The gradient goes to the
    selected entries only, ``1 / k`` each; among tied losses any choice gives
    the same mean. ``top_k`` is read as the nearest fraction with a
    denominator up to ``2**15`` (0.1 is 1/10), so ``k`` has no rounding error.

    The selection is a ``top_k`` of static size ``ceil(t * size)`` (``size``
    counting masked entries); the entries past the dynamic ``k`` are dropped.
    With ``axis_name``, the selection is over the global batch: each device
    takes its largest ``ceil(t * global size)`` losses (all of the global
    selection may lie on one device), these candidates are exchanged with a
    ``psum`` into one slot per device, and every device selects the same
    global top ``k`` from them. The exchange moves ``devices * min(size,
    ceil(t * global size))`` values to each device.

    Args:
      loss: the unreduced loss, float; its entries are ranked as they are.
      top_k: the fraction ``t`` in ``(0, 1]`` of the valid entries kept, a
        Python float (static); 1 is the plain mean.
      where: optional mask, broadcastable to ``loss`` without adding axes;
        False entries are never selected and never counted in ``n``.
      axis_name: mapped axis name(s) of the batch inside ``shard_map`` or ``pmap``.

    Returns:
      The mean of the selected losses, a scalar in the dtype of ``loss``
      (accumulated in float32, float64 for float64 input).

    Examples:
      The mean of the largest half, 4 and 3:

      >>> import jax.numpy as jnp
      >>> import bcejax
      >>> loss = bcejax.ohem_reduce(jnp.array([1.0, 4.0, 2.0, 3.0]), top_k=0.5)
      >>> print(f"{float(loss):.4f}")
      3.5000

    References:
      Shrivastava, Gupta, Girshick, Training Region-based Object Detectors
      with Online Hard Example Mining, CVPR 2016, https://arxiv.org/abs/1604.03540
    """
    num, den = _fraction(top_k)
    loss = checks.check_float(loss, "loss")
    shape = checks.check_broadcast(loss=loss, where=where)
    if shape != loss.shape:
        # where is not None here (only a mask can change the shape); mypy cannot tell.
        raise ValueError(
            f"where with shape {jnp.shape(where)} would broadcast loss of shape {loss.shape} "  # type: ignore[arg-type]
            f"to {shape}: the mask must not add axes to the loss"
        )
    dtype = loss.dtype
    values = loss.astype(_common.compute_dtype(dtype)).ravel()
    if where is None:
        count = jnp.asarray(values.size, jnp.int32)
    else:
        mask = jnp.broadcast_to(jnp.asarray(where, bool), shape).ravel()
        # Masked entries rank last and are never selected; a NaN there is cut out.
        values = jnp.where(mask, values, -jnp.inf)
        count = jnp.sum(mask, dtype=jnp.int32)
    devices = 1 if axis_name is None else jax.lax.axis_size(axis_name)
    bound = max(_ceil_times(num, den, values.size * devices), min(values.size, 1))
    candidates, _ = jax.lax.top_k(values, min(bound, values.size))
    if axis_name is not None:
        count = jax.lax.psum(count, axis_name)
        candidates, _ = jax.lax.top_k(_stack_devices(candidates, axis_name, devices), bound)
    k = jnp.maximum(_ceil_times(num, den, count), jnp.minimum(count, 1))
    total = jnp.sum(jnp.where(jnp.arange(bound) < k, candidates, 0))
    return (total / jnp.maximum(k, 1)).astype(dtype)
