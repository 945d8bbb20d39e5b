"""Property-based fuzzing of every registered loss, callable and batch loss (Hypothesis).

The registries are those of the property suite (``test_properties.py``); each
test draws shapes, broadcasts, dtypes (float16, bfloat16, float32, float64),
masks, weights, soft and hard labels, and extreme and infinite logits, and
checks what the docs promise for the draw:

- finite values and gradients for finite inputs, ``+inf`` only where the
  float64 reference is ``+inf``, never NaN;
- agreement with the float64 reference (``references.py``) within the
  dtype's tolerance;
- ``where`` equal to slicing, and integer weights equal to repeats;
- bad labels, NaN logits and negative weights raising ``InvalidInputError``,
  eagerly and under ``bcejax.checked``.

Two profiles are registered in ``tests/conftest.py``: ``ci`` (the default, a
fixed set of draws, four a test, under 3 minutes on 2 cores) and ``long`` (random draws,
many more)::

    .venv/bin/python -m pytest tests/test_fuzz.py --hypothesis-profile=long

A case a draw finds is kept as a plain test in the family's test file.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references as ref
from hypothesis import assume, given
from hypothesis import strategies as st
from test_properties import (
    BATCH_LEVEL,
    CALLABLES,
    LOSSES,
    PER_EXAMPLE,
    PER_EXAMPLE_CALLABLES,
    REVERSE_ONLY,
    _batch_mask,
    batch_level_ids,
    callable_ids,
    ids,
    per_example_callable_ids,
    per_example_ids,
)

import bcejax

DTYPES = [np.float16, jnp.bfloat16, np.float32, np.float64]
# Relative and absolute tolerances against the float64 reference, on inputs
# already rounded to the dtype: a few of the dtype's epsilons.
RTOL = {np.float16: 4e-3, jnp.bfloat16: 3e-2, np.float32: 2e-5, np.float64: 1e-9}
# Each elementwise loss's float64 reference: the same keywords, and ``dtype``
# for the probability losses, whose clipping bounds round in the input dtype.
REFERENCES = {
    bcejax.sigmoid_binary_cross_entropy: ref.ref_sigmoid_bce,
    bcejax.sigmoid_focal_loss: ref.ref_sigmoid_focal,
    bcejax.sigmoid_asymmetric_loss: ref.ref_sigmoid_asymmetric,
    bcejax.sigmoid_poly1_loss: ref.ref_sigmoid_poly1,
    bcejax.binary_cross_entropy: ref.ref_bce_probs,
    bcejax.binary_focal_loss: ref.ref_binary_focal,
}
PROBABILITY_LOSSES = {bcejax.binary_cross_entropy, bcejax.binary_focal_loss}


def _tolerance(dtype):
    return dict(rtol=RTOL[np.dtype(dtype).type], atol=float(jnp.finfo(dtype).tiny) * 16)


@st.composite
def broadcast_shape(draw, shape):
    """A shape that broadcasts to ``shape``: leading axes dropped, others set to 1."""
    drop = draw(st.integers(0, len(shape) - 1))
    return tuple(n if draw(st.booleans()) else 1 for n in shape[drop:])


@st.composite
def elementwise_inputs(draw, kind, config=None, infinite=True):
    """``(preds, labels, dtype, finite)`` for a loss of logits or of probabilities.

    The last axis has the length of a per-class array in ``config`` (``pos_weight``);
    ``infinite`` allows infinite logits.
    """
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    classes = [np.size(v) for v in (config or {}).values() if np.ndim(v)]
    shape = (*shape[:-1], classes[0]) if classes else shape
    # Extreme logits, as far out as the dtype's loss stays below its largest float.
    extreme = 1e4 if dtype in (np.float16,) else 1e6
    values = st.one_of(
        st.floats(-40, 40),
        st.sampled_from([-extreme, extreme, 0.0]),
        *([st.sampled_from([-np.inf, np.inf])] if kind == "logits" and infinite else []),
    )
    x = draw(hnp.arrays(np.float64, shape, elements=values))
    hard = draw(st.booleans()) or not np.all(np.isfinite(x))
    label_shape = draw(broadcast_shape(shape)) if not classes else shape
    label_values = st.sampled_from([0.0, 1.0]) if hard else st.floats(0, 1)
    y = draw(hnp.arrays(np.float32, label_shape, elements=label_values))
    preds = x if kind == "logits" else np.asarray(jax.nn.sigmoid(x))
    return np.asarray(preds, dtype), y, dtype, bool(np.all(np.isfinite(x)))


def _reference(fn, config, preds, labels, dtype):
    # Their probabilities are clipped in the compute dtype: float32 for half precision.
    compute = np.float32 if dtype in (np.float16, jnp.bfloat16) else dtype
    extra = {"dtype": compute} if fn in PROBABILITY_LOSSES else {}
    # An infinite logit as a finite one past any dtype: the limit, 0 or a loss past
    # the dtype's largest float (where the loss must be +inf), without inf - inf.
    preds = np.nan_to_num(preds.astype(np.float64), posinf=1e300, neginf=-1e300)
    with np.errstate(over="ignore"):
        return REFERENCES[fn](preds, labels, **config, **extra)


def _assert_matches_reference(got, want, dtype):
    got = np.asarray(got, np.float64)
    want = np.broadcast_to(want, got.shape)
    assert not np.any(np.isnan(got)), got
    # Past half the dtype's largest float, or past 2**64 (the docs: such values may be
    # returned as +inf), the loss is the reference's or +inf.
    big = want > min(float(jnp.finfo(dtype).max) / 2, 2.0**64)
    np.testing.assert_allclose(got[~big], want[~big], **_tolerance(dtype))
    close = np.isclose(got[big], want[big], **_tolerance(dtype))
    assert np.all(close | (got[big] == np.inf)), (got[big], want[big])


@pytest.mark.parametrize("name, fn, kind, config", LOSSES, ids=ids)
@given(data=st.data())
def test_fuzz_elementwise_matches_the_float64_reference(name, fn, kind, config, data):
    preds, labels, dtype, finite = data.draw(elementwise_inputs(kind, config))
    got = fn(preds, labels, **config)
    assert got.dtype == dtype
    assert got.shape == np.broadcast_shapes(preds.shape, labels.shape)
    _assert_matches_reference(got, _reference(fn, config, preds, labels, dtype), dtype)
    if finite and dtype in (np.float32, np.float64):
        grad = jax.grad(lambda p: jnp.sum(fn(p, labels, **config)))(preds)
        assert np.all(np.isfinite(grad)), grad


@pytest.mark.parametrize("name, fn, kind, config", LOSSES, ids=ids)
@given(data=st.data())
def test_fuzz_elementwise_integer_weights_scale_the_loss(name, fn, kind, config, data):
    preds, labels, dtype, _ = data.draw(elementwise_inputs(kind, config))
    assume(dtype in (np.float32, np.float64))
    shape = np.broadcast_shapes(preds.shape, labels.shape)
    counts = data.draw(
        hnp.arrays(np.int32, data.draw(broadcast_shape(shape)), elements=st.integers(0, 4))
    )
    weighted = fn(preds, labels, weights=counts, **config)
    plain = np.broadcast_to(np.asarray(fn(preds, labels, **config), np.float64), shape)
    with np.errstate(invalid="ignore"):  # 0 * inf: an entry of weight 0 gives 0
        want = np.where(np.broadcast_to(counts, shape) == 0, 0, counts * plain)
    np.testing.assert_allclose(np.asarray(weighted, np.float64), want, **_tolerance(dtype))


@st.composite
def bad_value(draw, kind):
    """``(where, value, message)``: a bad entry for the labels, logits or weights."""
    return draw(
        st.sampled_from(
            [
                ("labels", 255.0, "labels"),
                ("labels", -1.0, "labels"),
                ("labels", 1.5, "labels"),
                ("labels", np.nan, "labels"),
                ("weights", -0.5, "weights must be >= 0"),
                ("preds", np.nan, "NaN" if kind == "logits" else "probabilities"),
                *([("preds", 1.5, "probabilities")] if kind == "probs" else []),
            ]
        )
    )


@pytest.mark.parametrize("name, fn, kind, config", LOSSES, ids=ids)
@given(data=st.data())
def test_fuzz_elementwise_bad_inputs_raise(name, fn, kind, config, data):
    preds, labels, _, _ = data.draw(elementwise_inputs(kind, config))
    where, value, message = data.draw(bad_value(kind))
    shape = np.broadcast_shapes(preds.shape, labels.shape)
    inputs = {"preds": preds, "labels": labels, "weights": np.ones(shape, np.float32)}
    bad = np.array(inputs[where], copy=True)
    bad.flat[data.draw(st.integers(0, bad.size - 1))] = value
    inputs[where] = bad

    def call(p, y, w):
        return fn(p, y, weights=w, **config)

    args = inputs["preds"], inputs["labels"], inputs["weights"]
    with pytest.raises(bcejax.InvalidInputError, match=message):
        call(*args)
    with pytest.raises(bcejax.InvalidInputError, match=message):
        bcejax.checked(jax.jit(call))(*args)


@st.composite
def callable_inputs(draw, kind):
    """``(preds, labels, mask, counts)`` in float32 or float64 for a callable."""
    if kind in ("logits", "probs"):
        preds, labels, dtype, _ = draw(elementwise_inputs(kind, infinite=False))
        assume(dtype in (np.float32, np.float64) and preds.ndim >= 1)
        labels = np.broadcast_to(labels, preds.shape).copy()
        preds = np.broadcast_to(preds, labels.shape).copy()
        batch_shape = preds.shape[:1]
    else:
        preds, labels = _examples(draw, kind)
        batch_shape = preds.shape[:1]
    keep = draw(hnp.arrays(bool, batch_shape))
    counts = draw(hnp.arrays(np.int32, batch_shape, elements=st.integers(0, 3)))
    return preds, labels, keep, counts


def _examples(draw, kind, dtype=None):
    """A batch of examples of ``kind`` (as ``test_properties.make_examples``), drawn."""
    dtype = dtype or draw(st.sampled_from([np.float32, np.float64]))
    batch = draw(st.integers(1, 6))
    logits = st.floats(-40, 40) | st.sampled_from([-1e4, 1e4, 0.0])
    if kind in ("image", "image_probs"):
        shape = (batch, draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        x = draw(hnp.arrays(np.float64, shape, elements=logits))
        labels = draw(hnp.arrays(np.float32, shape, elements=st.sampled_from([0.0, 1.0])))
        preds = x if kind == "image" else np.asarray(jax.nn.sigmoid(x))
        return preds.astype(dtype), labels.astype(dtype)
    classes = 5  # the class weights of the registry's configs are 5 long
    if kind == "signed":
        x = draw(hnp.arrays(np.float64, (batch, classes), elements=logits))
        signs = draw(
            hnp.arrays(np.float64, (batch, classes), elements=st.sampled_from([-1.0, 1.0]))
        )
        return x.astype(dtype), signs
    x = draw(hnp.arrays(np.float64, (batch, classes), elements=logits)).astype(dtype)
    if kind == "integer":
        return x, draw(hnp.arrays(np.int32, (batch,), elements=st.integers(0, classes - 1)))
    raw = draw(hnp.arrays(np.float64, (batch, classes), elements=st.floats(0.01, 1)))
    return x, (raw / raw.sum(-1, keepdims=True)).astype(dtype)


def _mask_shape(kind, keep):
    return keep[:, None, None] if kind.startswith("image") else keep


@pytest.mark.parametrize(
    "name, loss_fn, kind",
    CALLABLES + PER_EXAMPLE_CALLABLES,
    ids=callable_ids + per_example_callable_ids,
)
@given(data=st.data())
def test_fuzz_callable_where_equals_slicing_and_weights_repeats(name, loss_fn, kind, data):
    preds, labels, keep, counts = data.draw(callable_inputs(kind))
    per_example = name in per_example_callable_ids
    mask = _mask_shape(kind, keep) if per_example else keep.reshape(-1, *[1] * (preds.ndim - 1))
    dtype = preds.dtype
    got = loss_fn(preds, labels, where=np.broadcast_to(mask, preds.shape[: mask.ndim]))
    assert np.isfinite(got) or not keep.any()
    if keep.any():
        want = loss_fn(preds[keep], labels[keep])
        np.testing.assert_allclose(got, want, **_tolerance(dtype))
    terms = loss_fn.terms if isinstance(loss_fn, bcejax.losses.SumOfLosses) else ((1, loss_fn),)
    for _, term in terms:
        summed = dataclasses.replace(term, reduction="sum")
        weights = counts.astype(dtype).reshape(mask.shape)
        np.testing.assert_allclose(
            summed(preds, labels, weights=weights),
            summed(np.repeat(preds, counts, 0), np.repeat(labels, counts, 0)),
            **_tolerance(dtype),
        )


@pytest.mark.parametrize("name, fn, kind, config", PER_EXAMPLE, ids=per_example_ids)
@given(data=st.data())
def test_fuzz_per_example_finite_and_where_equals_slicing(name, fn, kind, config, data):
    dtype = data.draw(st.sampled_from(DTYPES))
    preds, labels = _examples(data.draw, kind, np.float64)
    preds = preds.astype(dtype)
    got = fn(preds, labels, **config)
    assert got.dtype == dtype and got.shape in (preds.shape[:1], preds.shape)  # hinge: each
    assert np.all(np.isfinite(np.asarray(got, np.float64))), got
    np.testing.assert_allclose(
        np.asarray(jax.jit(functools.partial(fn, **config))(preds, labels), np.float64),
        np.asarray(got, np.float64),
        **_tolerance(dtype),
    )
    if dtype in (np.float32, np.float64):
        grad = jax.grad(lambda p: jnp.sum(fn(p, labels, **config)))(preds)
        assert np.all(np.isfinite(grad)), grad
    keep = data.draw(hnp.arrays(bool, preds.shape[:1]))
    if "where" in inspect.signature(fn).parameters and keep.any():
        mask = np.broadcast_to(_batch_mask(kind, keep), preds.shape[: _batch_mask(kind, keep).ndim])
        masked = np.asarray(fn(preds, labels, where=mask, **config), np.float64)
        sliced = np.asarray(fn(preds[keep], labels[keep], **config), np.float64)
        np.testing.assert_allclose(masked[keep], sliced, **_tolerance(dtype))


@pytest.mark.parametrize("name, fn", BATCH_LEVEL, ids=batch_level_ids)
@given(data=st.data())
def test_fuzz_batch_level_finite_with_finite_gradients(name, fn, data):
    dtype = data.draw(st.sampled_from(DTYPES))
    rows, cols = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 5))
    scale = data.draw(st.sampled_from([0.5, 5.0, 50.0]))
    values = st.floats(-scale, scale)
    x = data.draw(hnp.arrays(np.float64, (rows, cols), elements=values)).astype(dtype)
    y = data.draw(hnp.arrays(np.float64, (rows, cols), elements=values)).astype(dtype)
    value = fn(x, y)
    assert value.dtype == dtype and value.shape == ()
    assert np.isfinite(float(value))
    if dtype in (np.float32, np.float64):
        if name in REVERSE_ONLY:
            grad = jax.grad(fn)(x, y)
        else:
            grad = jax.jacfwd(fn)(x, y)
        assert np.all(np.isfinite(grad)), grad
