"""The softmax cross-entropy family, hinge and CategoricalCrossEntropy, checked against the math.

* Float64 NumPy references written from the formulas (never by calling bcejax), over random
  inputs: label smoothing, class weights, ignore_index, optax's ``where`` (batch-shaped and
  logits-shaped masks) and class axes given as ints and tuples.
* Parity with optax on the cases of optax's own tests (their arrays and expected numbers) and
  on random inputs.
* PyTorch ``CrossEntropyLoss`` semantics as numbers derived by hand.
* Gradients: the closed form, central differences in every differentiable argument,
  forward mode against reverse mode, finite Hessians.
* Extreme and infinite logits, bad inputs and their messages, and the callable.
"""

from __future__ import annotations

import functools
import math
import pickle

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import bcejax
from bcejax.losses import CategoricalCrossEntropy

CE = bcejax.softmax_cross_entropy
CE_INT = bcejax.softmax_cross_entropy_with_integer_labels
FOCAL = bcejax.softmax_focal_loss
POLY = bcejax.poly_loss_cross_entropy

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
# Absolute slack for float32: rounding of log-sum-exp (~1e-7 of the terms), far below the values.
ATOL = {np.float32: 2e-6, np.float64: 1e-13}
LN2, LN3, LN5 = math.log(2), math.log(3), math.log(5)

# ---------------------------------------------------------------------------
# 1. Float64 NumPy references, from the formulas (classes on the last axis), and the
# values of every function against them on random inputs.
# ---------------------------------------------------------------------------


def _f64(value):
    return None if value is None else np.asarray(value, np.float64)


def np_log_softmax(x, mask=None):
    """``x - log(sum(exp(x)))`` over the last axis; masked classes are left out (-inf)."""
    x = _f64(x)
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    m = np.max(x, -1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)  # a fully masked row: its values are never used
    with np.errstate(invalid="ignore", divide="ignore"):
        shifted = x - m
        return shifted - np.log(np.sum(np.exp(shifted), -1, keepdims=True))


def _weighted_sum(coef, values):
    """``sum_c coef_c values_c``, where a zero coefficient adds 0 (not 0 * inf)."""
    with np.errstate(invalid="ignore"):
        return np.sum(np.where(coef != 0, coef * values, 0.0), -1)


def _smoothed(y, smoothing, mask):
    """``y (1 - a) + a / K`` with ``K`` the number of unmasked classes; 0 on masked classes."""
    num_classes = y.shape[-1] if mask is None else np.maximum(mask.sum(-1, keepdims=True), 1)
    y = y * (1 - smoothing) + smoothing / num_classes
    return y if mask is None else np.where(mask, y, 0.0)


def _batch_masked(loss, batch_mask):
    return loss if batch_mask is None else np.where(batch_mask, loss, 0.0)


def ref_ce(x, y, *, smoothing=0.0, class_weights=None, mask=None, batch_mask=None):
    """``-sum_c w_c y_c log softmax(x)_c``, ``y`` smoothed over the unmasked classes."""
    coef = _smoothed(_f64(y), float(smoothing), mask)
    if class_weights is not None:
        coef = coef * _f64(class_weights)
    return _batch_masked(_weighted_sum(coef, -np_log_softmax(x, mask)), batch_mask)


def ref_ce_int(
    x, t, *, smoothing=0.0, class_weights=None, mask=None, batch_mask=None, ignore_index=None
):
    """PyTorch CrossEntropyLoss(reduction="none"): the one-hot version; ignored rows give 0."""
    t = np.asarray(t)
    one_hot = (t[..., None] == np.arange(np.shape(x)[-1])).astype(np.float64)
    loss = ref_ce(
        x,
        one_hot,
        smoothing=smoothing,
        class_weights=class_weights,
        mask=mask,
        batch_mask=batch_mask,
    )
    return loss if ignore_index is None else np.where(t == ignore_index, 0.0, loss)


def ref_focal(x, t, *, gamma, alpha=None, mask=None, batch_mask=None):
    """``-alpha_t (1 - p_t)^gamma log p_t``, ``1 - p_t`` summed over the other classes."""
    t = np.asarray(t)
    log_p = np_log_softmax(x, mask)
    target = t[..., None] == np.arange(np.shape(x)[-1])
    unmasked = np.ones(target.shape, bool) if mask is None else np.asarray(mask, bool)
    target &= unmasked  # a masked target class adds 0
    with np.errstate(invalid="ignore"):
        others = np.sum(np.where(~target & unmasked, np.exp(log_p), 0.0), -1)  # 1 - p_t
        log_pt = np.sum(np.where(target, log_p, 0.0), -1)
    if alpha is None:
        alpha_t = 1.0
    elif np.ndim(alpha) == 0:
        alpha_t = float(alpha)
    else:
        alpha_t = _f64(alpha).reshape(-1)[np.clip(t, 0, np.size(alpha) - 1)]
    loss = np.where(target.any(-1), alpha_t * others ** float(gamma) * -log_pt, 0.0)
    return _batch_masked(loss, batch_mask)


def ref_poly(x, y, *, epsilon, mask=None, batch_mask=None):
    """``CE + epsilon sum_c y_c (1 - p_c)``."""
    y = _f64(y) if mask is None else np.where(mask, _f64(y), 0.0)
    log_p = np_log_softmax(x, mask)
    poly = _weighted_sum(y, -np.expm1(log_p))
    ce = ref_ce(x, y, mask=mask)
    return _batch_masked(ce + float(epsilon) * poly, batch_mask)


def ref_hinge(scores, targets):
    return np.maximum(0.0, 1.0 - _f64(targets) * _f64(scores))


def sum_grad(fn):
    """The gradient of ``sum(fn(x))`` in ``x``."""
    return jax.grad(lambda x: jnp.sum(fn(x)))


assert_close = functools.partial(helpers.assert_close, rtol=RTOL, atol=ATOL)


def test_references_on_numbers_known_in_closed_form():
    # softmax([0, ln 2, ln 5]) = [1/8, 2/8, 5/8]
    x = np.array([0.0, LN2, LN5])
    np.testing.assert_allclose(np_log_softmax(x), np.log([1 / 8, 2 / 8, 5 / 8]), rtol=1e-15)
    # label 2: -log(5/8) = ln 1.6; focal gamma 2: (3/8)^2 ln 1.6; poly eps 2: ln 1.6 + 2 (3/8)
    assert ref_ce_int(x, 2) == pytest.approx(math.log(1.6), rel=1e-15)
    assert ref_focal(x, 2, gamma=2.0) == pytest.approx((3 / 8) ** 2 * math.log(1.6), rel=1e-14)
    assert ref_poly(x, [0.0, 0.0, 1.0], epsilon=2.0) == pytest.approx(
        math.log(1.6) + 0.75, rel=1e-14
    )
    # masking class 0 leaves softmax([ln 2, ln 5]) = [2/7, 5/7]
    mask = np.array([False, True, True])
    assert ref_ce_int(x, 2, mask=mask) == pytest.approx(math.log(7 / 5), rel=1e-14)


# ---------------------------------------------------------------------------
# Random problems in several layouts: classes along an int axis or a tuple of axes.
# Everything is drawn with the classes last and flat (what the references take), then
# laid out with the classes along ``axis`` (what bcejax takes).
# ---------------------------------------------------------------------------

LAYOUTS = {
    "2d": ((6, 5), -1),
    "3d_axis0": ((4, 3, 5), 0),
    "3d_axis1": ((3, 4, 5), 1),
    "3d_axis2": ((3, 5, 4), 2),
    "4d_axes13": ((2, 3, 4, 5), (1, 3)),
}


def _axes(axis, ndim):
    axes = (axis,) if isinstance(axis, int) else axis
    return tuple(sorted(a % ndim for a in axes))


def layout_grid(configs, keep):
    """Every config in the 2-D layout, in both dtypes; those named in ``keep`` in the other
    layouts too, in float64 (the layout moves the classes; float32 changes nothing there)."""
    return [
        pytest.param(*config, layout, dtype, id=f"{config[0]}-{layout}-{dtype.__name__}")
        for layout in LAYOUTS
        for dtype in DTYPES
        for config in configs
        if layout == "2d" or (config[0] in keep and dtype == np.float64)
    ]


def to_layout(flat, batch_shape, class_shape, axes):
    """``(*batch, K)`` with the classes last -> the logits' layout, classes along ``axes``.

    The flat class index is row-major over the class axes in increasing order."""
    full = np.asarray(flat).reshape(*batch_shape, *class_shape)
    nb = len(batch_shape)
    return np.moveaxis(full, list(range(nb, nb + len(axes))), list(axes))


def random_problem(layout, dtype, seed=0, *, class_mask=False):
    """Logits, soft and integer labels, class weights and masks, flat and laid out."""
    shape, axis = LAYOUTS[layout]
    axes = _axes(axis, len(shape))
    batch_shape = tuple(n for a, n in enumerate(shape) if a not in axes)
    class_shape = tuple(shape[a] for a in axes)
    num_classes = int(np.prod(class_shape))
    rng = np.random.default_rng(seed)
    flat_shape = (*batch_shape, num_classes)
    x = rng.normal(0.0, 2.5, flat_shape).astype(dtype)
    mask = None
    if class_mask:
        mask = rng.uniform(size=flat_shape) < 0.6
        rows = mask.reshape(-1, num_classes)
        rows[0] = False  # a fully masked example
        rows[1] = True  # an example with every class
    # Soft labels: Dirichlet rows, every third one-hot, each a distribution over its
    # unmasked classes (what bcejax checks).
    y = rng.dirichlet(np.full(num_classes, 0.5), batch_shape)
    hard = (np.arange(int(np.prod(batch_shape))) % 3 == 0).reshape(batch_shape)
    y = np.where(hard[..., None], np.eye(num_classes)[np.argmax(y, -1)], y)
    if mask is not None:
        y = np.where(mask, y + 0.05, 0.0)
        sums = y.sum(-1, keepdims=True)
        y = np.where(sums > 0, y / np.where(sums > 0, sums, 1), 1.0 / num_classes)
    t = rng.integers(0, num_classes, batch_shape).astype(np.int32)
    weights = rng.uniform(0.2, 3.0, class_shape).astype(dtype)
    batch_mask = rng.uniform(size=batch_shape) < 0.6
    batch_mask.reshape(-1)[:2] = (False, True)

    def lay(a):
        return to_layout(a, batch_shape, class_shape, axes)

    return dict(
        axis=axis,
        x=x,
        y=y.astype(dtype),
        t=t,
        mask=mask,
        class_weights=weights,
        batch_mask=batch_mask,
        logits=lay(x),
        labels=lay(y.astype(dtype)),
        where_classes=None if mask is None else lay(mask),
        batch_shape=batch_shape,
    )


def _where(p, kind):
    return {None: None, "batch": p["batch_mask"], "classes": p["where_classes"]}[kind]


def _ref_masks(p, kind):
    return dict(
        mask=p["mask"] if kind == "classes" else None,
        batch_mask=p["batch_mask"] if kind == "batch" else None,
    )


# (name, label_smoothing, class_weights?, where)
CE_CONFIGS = [
    ("plain", 0.0, False, None),
    ("smoothing", 0.1, False, None),
    ("class_weights", 0.0, True, None),
    ("smoothing_weights", 0.2, True, None),
    ("where_batch", 0.1, True, "batch"),
    ("where_classes", 0.15, True, "classes"),
]


@pytest.mark.parametrize(
    "name, smoothing, weighted, where, layout, dtype",
    layout_grid(CE_CONFIGS, {"smoothing_weights", "where_batch", "where_classes"}),
)
def test_softmax_cross_entropy_matches_reference(name, smoothing, weighted, where, layout, dtype):
    p = random_problem(layout, dtype, seed=1, class_mask=where == "classes")
    weights = p["class_weights"] if weighted else None
    got = CE(
        p["logits"],
        p["labels"],
        p["axis"],
        _where(p, where),
        label_smoothing=smoothing,
        class_weights=weights,
    )
    want = ref_ce(
        p["x"],
        p["y"],
        smoothing=smoothing,
        class_weights=None if weights is None else weights.reshape(-1),
        **_ref_masks(p, where),
    )
    assert got.shape == p["batch_shape"]
    assert_close(got, want, dtype)
    if where == "classes":
        assert got.reshape(-1)[0] == 0  # the fully masked example


# (name, label_smoothing, class_weights?, where, ignore_index)
CE_INT_CONFIGS = [
    *[(*c, None) for c in CE_CONFIGS],
    ("ignore_-100", 0.0, False, None, -100),
    ("ignore_-100_smoothing_weights", 0.1, True, None, -100),
    ("ignore_class_1", 0.1, True, None, 1),
    ("ignore_where_classes", 0.1, True, "classes", -100),
]


@pytest.mark.parametrize(
    "name, smoothing, weighted, where, ignore_index, layout, dtype",
    layout_grid(
        CE_INT_CONFIGS,
        {"smoothing_weights", "where_batch", "where_classes", "ignore_-100_smoothing_weights"},
    ),
)
def test_integer_labels_match_reference(
    name, smoothing, weighted, where, ignore_index, layout, dtype
):
    p = random_problem(layout, dtype, seed=2, class_mask=where == "classes")
    t = p["t"].copy()
    if ignore_index is not None and ignore_index < 0:
        t.reshape(-1)[::3] = ignore_index
    weights = p["class_weights"] if weighted else None
    got = CE_INT(
        p["logits"],
        t,
        p["axis"],
        _where(p, where),
        label_smoothing=smoothing,
        class_weights=weights,
        ignore_index=ignore_index,
    )
    want = ref_ce_int(
        p["x"],
        t,
        smoothing=smoothing,
        ignore_index=ignore_index,
        class_weights=None if weights is None else weights.reshape(-1),
        **_ref_masks(p, where),
    )
    assert got.shape == p["batch_shape"]
    assert_close(got, want, dtype)
    if ignore_index is not None:
        assert np.all(np.asarray(got)[t == ignore_index] == 0)


@pytest.mark.parametrize("dtype", [np.float64])
def test_integer_labels_equal_their_one_hot(dtype):
    """Same smoothing, weights and class mask: the integer version is the one-hot version."""
    p = random_problem("4d_axes13", dtype, seed=3, class_mask=True)
    one_hot = to_layout(
        np.eye(p["x"].shape[-1], dtype=dtype)[p["t"]],
        p["batch_shape"],
        p["class_weights"].shape,
        _axes(p["axis"], 4),
    )
    config = dict(label_smoothing=0.1, class_weights=p["class_weights"])
    got = CE_INT(p["logits"], p["t"], p["axis"], p["where_classes"], **config)
    # The one-hot labels of an example whose target class is masked do not sum to 1 over
    # its unmasked classes: jit skips bcejax's value checks.
    want = jax.jit(CE, static_argnums=2)(
        p["logits"], one_hot, p["axis"], p["where_classes"], **config
    )
    assert_close(got, np.asarray(want, np.float64), dtype)


FOCAL_ALPHAS = {"none": None, "scalar": 0.25, "vector": "V"}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", list(FOCAL_ALPHAS))
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.5])
def test_focal_matches_reference(gamma, alpha, dtype):
    p = random_problem("2d", dtype, seed=4)
    alpha = FOCAL_ALPHAS[alpha]
    alpha = p["class_weights"] / 3 if alpha == "V" else alpha
    got = FOCAL(p["logits"], p["t"], gamma=gamma, alpha=alpha)
    assert_close(got, ref_focal(p["x"], p["t"], gamma=gamma, alpha=alpha), dtype)


@pytest.mark.parametrize(
    "where, layout, dtype", layout_grid([(None,), ("batch",), ("classes",)], {"classes"})
)
def test_focal_matches_reference_with_axes_and_where(where, layout, dtype):
    p = random_problem(layout, dtype, seed=5, class_mask=where == "classes")
    alpha = p["class_weights"] / 3  # per class, in the layout of the class axes
    got = FOCAL(p["logits"], p["t"], gamma=1.5, alpha=alpha, axis=p["axis"], where=_where(p, where))
    want = ref_focal(p["x"], p["t"], gamma=1.5, alpha=alpha.reshape(-1), **_ref_masks(p, where))
    assert got.shape == p["batch_shape"]
    assert_close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_focal_gamma_zero_is_cross_entropy(dtype):
    p = random_problem("2d", dtype, seed=6, class_mask=True)
    focal = FOCAL(p["logits"], p["t"], gamma=0.0, where=p["where_classes"])
    ce = CE_INT(p["logits"], p["t"], -1, p["where_classes"])
    assert_close(focal, np.asarray(ce, np.float64), dtype, rtol=4 * RTOL[dtype])
    # alpha scales it: per class, alpha_t times the cross-entropy
    alpha = p["class_weights"]
    focal = FOCAL(p["logits"], p["t"], gamma=0.0, alpha=alpha)
    ce = CE_INT(p["logits"], p["t"]) * alpha[p["t"]]
    assert_close(focal, np.asarray(ce, np.float64), dtype, rtol=4 * RTOL[dtype])


@pytest.mark.parametrize(
    "epsilon, layout, dtype", layout_grid([(2.0,), (-1.0,), (0.5,), (0.0,)], {2.0})
)
def test_poly_matches_reference(epsilon, layout, dtype):
    p = random_problem(layout, dtype, seed=7)
    got = POLY(p["logits"], p["labels"], epsilon=epsilon, axis=p["axis"])
    assert got.shape == p["batch_shape"]
    assert_close(got, ref_poly(p["x"], p["y"], epsilon=epsilon), dtype)


@pytest.mark.parametrize("dtype", [np.float64])
@pytest.mark.parametrize("where", ["batch", "classes"])
def test_poly_matches_reference_with_where(where, dtype):
    p = random_problem("3d_axis2", dtype, seed=8, class_mask=where == "classes")
    got = POLY(p["logits"], p["labels"], epsilon=1.5, axis=2, where=_where(p, where))
    assert_close(got, ref_poly(p["x"], p["y"], epsilon=1.5, **_ref_masks(p, where)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hinge_matches_reference(dtype):
    rng = np.random.default_rng(9)
    scores = rng.normal(0, 2, (6, 5)).astype(dtype)
    scores[0, :3] = [1.0, -1.0, 0.0]  # on the kink for target 1, -1; and at 0
    targets = np.where(rng.uniform(size=(6, 5)) < 0.5, -1, 1).astype(dtype)
    targets[0, :3] = [1, -1, 1]
    got = bcejax.hinge_loss(scores, targets)
    assert_close(got, ref_hinge(scores, targets), dtype)
    # integer targets, broadcast over the rows
    got = bcejax.hinge_loss(scores, targets[0].astype(np.int32))
    assert_close(got, ref_hinge(scores, targets[0]), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_traced_config_under_jit(dtype):
    """Numeric config traced by jit gives the eager values."""
    p = random_problem("2d", dtype, seed=10)
    config = dict(
        smoothing=dtype(0.1), weights=p["class_weights"], gamma=dtype(2.5), eps=dtype(-0.5)
    )

    @jax.jit
    def f(x, y, t, c):
        assert all(isinstance(v, jax.core.Tracer) for v in c.values())
        return (
            CE(x, y, label_smoothing=c["smoothing"], class_weights=c["weights"]),
            CE_INT(x, t, label_smoothing=c["smoothing"], class_weights=c["weights"]),
            FOCAL(x, t, gamma=c["gamma"], alpha=c["weights"]),
            POLY(x, y, epsilon=c["eps"]),
        )

    ce, ce_int, focal, poly = f(p["logits"], p["labels"], p["t"], config)
    w = p["class_weights"]
    assert_close(ce, ref_ce(p["x"], p["y"], smoothing=0.1, class_weights=w), dtype)
    assert_close(ce_int, ref_ce_int(p["x"], p["t"], smoothing=0.1, class_weights=w), dtype)
    assert_close(focal, ref_focal(p["x"], p["t"], gamma=2.5, alpha=w), dtype)
    assert_close(poly, ref_poly(p["x"], p["y"], epsilon=-0.5), dtype)


# ---------------------------------------------------------------------------
# 2. Parity with optax: the cases of optax's own tests, and random inputs.
# ---------------------------------------------------------------------------

# optax's SoftmaxCrossEntropyTest / SoftmaxCrossEntropyWithIntegerLabelsTest
OPTAX_YS = np.array([[10.0, 1.0, -2.0], [1.0, 4.0, 0.2]], np.float32)
OPTAX_TS = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
OPTAX_TS_INT = np.array([1, 0], np.int32)
OPTAX_EXP = np.array([9.00013, 3.0696733], np.float32)
OPTAX_MASK = np.array([True, False])
OPTAX_PER_LOGIT_MASK = np.array([[1, 0, 0], [0, 0, 0]], bool)


@jax.jit
def _optax_cases(ys, ts, ts_int):
    """bcejax and optax on optax's arrays, with and without masks: values and gradients."""
    mask, per_logit = OPTAX_MASK, OPTAX_PER_LOGIT_MASK

    def grad(fn):
        return sum_grad(fn)(ys)

    return dict(
        ce=CE(ys, ts),
        ce_scalar=CE(ys[0], ts[0]),
        ce_int=CE_INT(ys, ts_int),
        ce_int_scalar=CE_INT(ys[0], ts_int[0]),
        optax=optax.softmax_cross_entropy(ys, ts),
        # a batch mask
        ce_mask=CE(ys, ts, where=mask),
        ce_int_mask=CE_INT(ys, ts_int, where=mask),
        poly_mask=POLY(ys, ts, epsilon=0.0, where=mask),
        optax_mask=optax.softmax_cross_entropy(ys, ts, where=mask),
        grad_ce_mask=grad(lambda x: CE(x, ts, where=mask)),
        grad_ce_int_mask=grad(lambda x: CE_INT(x, ts_int, where=mask)),
        grad_optax_mask=grad(lambda x: optax.softmax_cross_entropy(x, ts, where=mask)),
        # a mask of the logits' shape
        ce_logit=CE(ys, ts, where=per_logit),
        ce_int_logit=CE_INT(ys, ts_int, where=per_logit),
        optax_logit=optax.softmax_cross_entropy(ys, ts, where=per_logit),
        optax_int_logit=optax.softmax_cross_entropy_with_integer_labels(
            ys, ts_int, where=per_logit
        ),
        grad_ce_logit=grad(lambda x: CE(x, ts, where=per_logit)),
        grad_ce_int_logit=grad(lambda x: CE_INT(x, ts_int, where=per_logit)),
    )


def test_optax_fixed_cases():
    out = _optax_cases(OPTAX_YS, OPTAX_TS, OPTAX_TS_INT)
    for name in ("ce", "ce_int", "optax"):
        np.testing.assert_allclose(out[name], OPTAX_EXP, atol=1e-4, err_msg=name)
        assert out[name].dtype == np.float32
    for name in ("ce_scalar", "ce_int_scalar"):
        np.testing.assert_allclose(out[name], OPTAX_EXP[0], atol=1e-4, err_msg=name)
    np.testing.assert_allclose(out["ce"], out["optax"], rtol=1e-6)
    np.testing.assert_allclose(out["ce_int"], out["optax"], rtol=1e-6)
    # eagerly (value checks on), and by hand, in float64:
    # row 0 is -log softmax(10, 1, -2)_1 = 9 + log(1 + e^-9 + e^-12).
    assert float(CE_INT(OPTAX_YS.astype(np.float64), OPTAX_TS_INT)[0]) == pytest.approx(
        9 + math.log1p(math.exp(-9) + math.exp(-12)), rel=1e-14
    )
    # optax's docstring: [[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]], labels [0, 1] -> [0.2761 2.9518]
    logits = np.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]], np.float32)
    np.testing.assert_allclose(CE_INT(logits, OPTAX_TS_INT[::-1]), [0.2761, 2.9518], atol=1e-4)


def test_optax_batch_mask():
    out = _optax_cases(OPTAX_YS, OPTAX_TS, OPTAX_TS_INT)
    for name in ("ce_mask", "ce_int_mask", "poly_mask"):
        np.testing.assert_allclose(out[name], OPTAX_EXP * OPTAX_MASK, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(out[name], out["optax_mask"], rtol=1e-6, err_msg=name)
    # the gradients are those of optax: finite, and 0 on the masked example
    for name in ("grad_ce_mask", "grad_ce_int_mask"):
        np.testing.assert_allclose(out[name], out["grad_optax_mask"], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(out[name][1], 0)


def test_optax_per_logit_mask():
    out = _optax_cases(OPTAX_YS, OPTAX_TS, OPTAX_TS_INT)
    # Row 1 is fully masked: 0 (optax's test). Row 0 keeps class 0 only and its label is
    # class 1: it adds 0 in bcejax (a masked target); optax gives logsumexp([10]) - 1 = 9.
    np.testing.assert_array_equal(out["ce_int_logit"], [0.0, 0.0])
    np.testing.assert_allclose(out["optax_int_logit"], [9.0, 0.0])
    # One-hot: both give 0 for both rows (under jit; eagerly, see below).
    np.testing.assert_array_equal(out["ce_logit"], out["optax_logit"])
    np.testing.assert_array_equal(out["ce_logit"], [0.0, 0.0])
    for name in ("grad_ce_logit", "grad_ce_int_logit"):
        np.testing.assert_array_equal(out[name], np.zeros_like(OPTAX_YS))
    # Row 0's one-hot labels sum to 0 over its unmasked class: applied as written, eagerly too.
    eager = CE(OPTAX_YS, OPTAX_TS, where=OPTAX_PER_LOGIT_MASK)
    np.testing.assert_array_equal(eager, out["ce_logit"])


@pytest.mark.parametrize("size", [5, 10])
def test_optax_mask_drops_classes(size):
    """optax's test_mask: where=mask equals the loss on preds[mask], labels renormalized."""
    rng = np.random.default_rng(size)
    preds = rng.normal(size=size)
    mask = rng.integers(2, size=size).astype(bool)
    mask[:2] = (True, False)
    targets = np.where(mask, rng.dirichlet(np.ones(size)), 0.0)
    targets /= targets.sum()  # a distribution over the unmasked classes

    @jax.jit
    def losses(preds, targets, where):
        return (
            CE(preds, targets, where=where),
            POLY(preds, targets, where=where),
            optax.softmax_cross_entropy(preds, targets, where=where),
            optax.losses.poly_loss_cross_entropy(preds, targets, where=where),
        )

    ce, poly, optax_ce, optax_poly = losses(preds, targets, mask)
    ce_kept, poly_kept, _, _ = losses(preds[mask], targets[mask], None)
    np.testing.assert_allclose([ce, poly], [ce_kept, poly_kept], rtol=1e-12)
    np.testing.assert_allclose([ce, poly], [optax_ce, optax_poly], rtol=1e-12)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_optax_axis(axis):
    shape = [4, 5, 6]
    rng = np.random.default_rng(axis)
    preds = rng.normal(size=shape)
    # valid distributions along the class axis (optax's test draws them along the last axis)
    batch = shape[:axis] + shape[axis + 1 :]
    targets = np.moveaxis(rng.dirichlet(np.ones(shape[axis]), size=batch), -1, axis)
    t = rng.integers(shape[axis], size=batch).astype(np.int32)

    @jax.jit
    def losses(preds, targets, t):
        moved, moved_targets = jnp.moveaxis(preds, axis, -1), jnp.moveaxis(targets, axis, -1)
        return dict(
            ce=(
                CE(preds, targets, axis=axis),
                CE(moved, moved_targets),
                optax.softmax_cross_entropy(preds, targets, axis=axis),
            ),
            poly=(
                POLY(preds, targets, axis=axis),
                POLY(moved, moved_targets),
                optax.losses.poly_loss_cross_entropy(preds, targets, axis=axis),
            ),
            ce_int=(
                CE_INT(preds, t, axis=axis),
                CE_INT(moved, t),
                optax.softmax_cross_entropy_with_integer_labels(preds, t, axis=axis),
            ),
        )

    out = losses(preds, targets, t)
    for name, (got, moved, want) in out.items():
        np.testing.assert_allclose(got, moved, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=name)


OPTAX_AXES = [(1, 3), (3, 2), (2, 3), (-3, -1), (-1, -2), (-2, -1), (0, 1, 3), (-4, -3, -1)]


@pytest.mark.parametrize("axis", OPTAX_AXES, ids=str)
def test_optax_tuple_axes(axis):
    """optax's test_axes: the label is a flat index over ``logits[axis]``, in the given order."""
    shape = (2, 3, 4, 5)
    ndim = len(shape)
    logits_axis = tuple(a % ndim for a in axis)
    labels_axis = tuple(a for a in range(ndim) if a not in logits_axis)
    logits_shape = tuple(shape[a] for a in logits_axis)
    labels_shape = tuple(shape[a] for a in labels_axis)
    num_classes = int(np.prod(logits_shape))
    rng = np.random.default_rng(42)
    flat = rng.uniform(size=(*labels_shape, num_classes)).astype(np.float32)
    labels = rng.integers(0, num_classes - 1, labels_shape).astype(np.int32)
    perm = labels_axis + logits_axis
    logits = flat.reshape(labels_shape + logits_shape).transpose(np.argsort(perm))
    assert logits.shape == shape

    @jax.jit
    def losses(logits, flat, labels):
        return (
            CE_INT(flat, labels),
            optax.softmax_cross_entropy_with_integer_labels(logits, labels, axis),
            CE_INT(logits, labels, axis),
        )

    desired, optax_value, got = losses(logits, flat, labels)
    np.testing.assert_allclose(optax_value, desired, rtol=1e-6)
    np.testing.assert_allclose(got, desired, rtol=1e-6)


def test_optax_docstring_tuple_axis_example():
    # logits arange(24).reshape(1, 2, 3, 4), labels ravel_multi_index(([1, 2], [1, 3]), (3, 4))
    # = [1*4+1, 2*4+3] = [5, 11]; -log softmax(arange(12))_k = log(sum e^(j-k)):
    # k = 11: log(sum_{i=0}^{11} e^-i) = 0.4587, k = 5: 6 + 0.4587 = 6.4587.
    logits = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    labels = np.array([[5, 11]], np.int32)
    got = jax.jit(CE_INT, static_argnums=2)(logits, labels, (2, 3))
    np.testing.assert_allclose(got, [[6.4587, 0.4587]], atol=1e-4)
    tail = math.log(sum(math.exp(-i) for i in range(12)))
    np.testing.assert_allclose(got, [[6 + tail, tail]], rtol=1e-6)


SAFE_YS = np.array(
    [
        [10.0, 1.0, -2.0],
        [1.0, 4.0, 0.2],
        [-np.inf, 0.0, 0.0],
        [-np.inf, 0.0, 0.0],
        [-np.inf, 0.0, -np.inf],
    ],
    np.float32,
)
SAFE_TS = np.array(
    [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.4, 0.3, 0.3], [0.0, 1.0, 0.0]],
    np.float32,
)
SAFE_EXP = np.array([9.00013, 3.0696733, 0.693147, np.inf, 0.0], np.float32)


def test_optax_safe_softmax_cross_entropy_cases():
    """optax's SafeSoftmaxCrossEntropyTest: 0 log 0 = 0 at -inf logits, as bcejax always does."""

    @jax.jit
    def outputs(ys, ts):
        return (
            CE(ys, ts),
            optax.safe_softmax_cross_entropy(ys, ts),
            sum_grad(lambda x: CE(x, ts[:2]))(ys[:2]),
            sum_grad(lambda x: optax.safe_softmax_cross_entropy(x, ts[:2]))(ys[:2]),
        )

    got, want, grad, want_grad = outputs(SAFE_YS, SAFE_TS)
    np.testing.assert_allclose(got, SAFE_EXP, atol=1e-4)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)


# optax's PolyLossTest, "computed using tf version of poly1_cross_entropy"
POLY_LOGITS = np.array([0.14, 1.456, 2.356, -0.124, -2.47])
POLY_LABELS = np.array([0.1, 0.15, 0.2, 0.25, 0.3])
POLY_SCALAR = {2: 4.5317, 1: 3.7153, -1: 2.0827, 0: 2.8990, -0.5: 2.4908, 1.15: 3.8378}
POLY_SCALAR.update({1.214: 3.8900, 5.45: 7.3480})
POLY_BATCHED_LOGITS = np.array([[4.0, 2.0, 1.0], [0.0, 5.0, 1.0]])
POLY_BATCHED_LABELS = np.array([[1.0, 0.0, 0.0], [0.0, 0.8, 0.2]])
POLY_BATCHED = {
    2: [0.4823, 1.2567],
    1: [0.3261, 1.0407],
    0: [0.1698, 0.8247],
    -0.5: [0.0917, 0.7168],
    1.15: [0.3495, 1.0731],
    1.214: [0.3595, 1.0870],
    5.45: [1.0211, 2.0018],
}


@jax.jit
def _poly_and_optax(logits, labels, eps):
    return (
        POLY(logits, labels, epsilon=eps),
        optax.losses.poly_loss_cross_entropy(logits, labels, epsilon=eps),
    )


@pytest.mark.parametrize("eps", list(POLY_SCALAR))
def test_optax_poly_scalar(eps):
    got, want = _poly_and_optax(POLY_LOGITS, POLY_LABELS, eps)
    np.testing.assert_allclose(got, POLY_SCALAR[eps], atol=1e-4)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("eps", list(POLY_BATCHED))
def test_optax_poly_batched(eps):
    got, want = _poly_and_optax(POLY_BATCHED_LOGITS, POLY_BATCHED_LABELS, eps)
    np.testing.assert_allclose(got, POLY_BATCHED[eps], atol=1e-4)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # By hand, row 0: p_0 = e^4 / (e^4 + e^2 + e), CE = -log p_0, poly term eps (1 - p_0).
    p0 = math.exp(4) / (math.exp(4) + math.exp(2) + math.exp(1))
    assert float(got[0]) == pytest.approx(-math.log(p0) + eps * (1 - p0), rel=1e-12)


POLY_EPS0_CASES = [
    (
        [[4.0, 2.0, 1.0], [0.0, 5.0, 1.0], [0.134, 1.234, 3.235]],
        [[1.0, 0.0, 0.0], [0.0, 0.8, 0.2], [0.34, 0.33, 0.33]],
    ),
    ([[4.0, 2.0, 1.0], [0.0, 5.0, 1.0]], [[1.0, 0.0, 0.0], [0.0, 0.8, 0.2]]),
    (
        [[4.0, 2.0, 1.0, 0.134, 1.3515], [0.0, 5.0, 1.0, 0.5215, 5.616]],
        [[0.5, 0.0, 0.0, 0.0, 0.5], [0.0, 0.12, 0.2, 0.56, 0.12]],
    ),
    ([1.89, 2.39], [0.34, 0.66]),
    ([0.314], [1.0]),
]


@pytest.mark.parametrize("case", range(len(POLY_EPS0_CASES)))
def test_optax_poly_epsilon_zero_is_cross_entropy(case):
    logits, labels = (np.asarray(a) for a in POLY_EPS0_CASES[case])

    @jax.jit
    def losses(x, y, eps):
        return (
            POLY(x, y, epsilon=0.0),
            POLY(x, y, epsilon=eps),  # a traced epsilon of 0: no static shortcut
            CE(x, y),
            optax.softmax_cross_entropy(x, y),
        )

    got, traced, ce, optax_ce = losses(logits, labels, 0.0)
    np.testing.assert_allclose(got, ce, rtol=1e-14)
    np.testing.assert_allclose(traced, ce, rtol=1e-14)
    np.testing.assert_allclose(got, optax_ce, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", [None, "batch", "classes"])
def test_optax_parity_on_random_inputs(where, dtype):
    p = random_problem("2d", dtype, seed=11, class_mask=where == "classes")
    w = _where(p, where)
    rtol, atol = (1e-5, 1e-6) if dtype == np.float32 else (1e-12, 1e-13)

    x, y, t = p["logits"], p["labels"], p["t"]
    # optax's poly takes a mask of the logits' shape only
    w_logits = None if w is None else np.broadcast_to(w[:, None] if w.ndim == 1 else w, x.shape)
    w_int = w
    if where == "classes":  # where optax keeps a masked target's logit; bcejax adds 0
        keep = np.take_along_axis(p["mask"], t[:, None], -1)[:, 0]
        w_int = np.where(keep[:, None], w, False)

    @jax.jit
    def pairs(x, y, t):
        want_int = optax.softmax_cross_entropy_with_integer_labels(x, t, where=w_int)
        return dict(
            ce=(CE(x, y, where=w), optax.softmax_cross_entropy(x, y, where=w)),
            poly=(
                POLY(x, y, epsilon=1.5, where=w),
                optax.losses.poly_loss_cross_entropy(x, y, epsilon=1.5, where=w_logits),
            ),
            ce_int=(CE_INT(x, t, where=w_int), want_int),
            focal_g0=(FOCAL(x, t, gamma=0.0, where=w_int), want_int),
        )

    for name, (got, want) in pairs(x, y, t).items():
        assert got.dtype == want.dtype == dtype, name
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)


def test_optax_hinge_cases():
    # optax's HingeTest: relu(1 - score * (2 label - 1))
    assert float(bcejax.hinge_loss(jnp.array(10.0), jnp.array(1.0))) == 0.0
    scores = jnp.array([10.0, 20.0])
    signed = 2.0 * jnp.array([1, 0]) - 1.0
    np.testing.assert_array_equal(bcejax.hinge_loss(scores, signed), [0.0, 21.0])
    rng = np.random.default_rng(12)

    @jax.jit
    def grads(s, t):
        return (
            sum_grad(functools.partial(bcejax.hinge_loss, targets=t))(s),
            sum_grad(functools.partial(optax.hinge_loss, targets=t))(s),
        )

    for dtype in DTYPES:
        s = rng.normal(0, 2, (6, 5)).astype(dtype)
        t = np.where(rng.uniform(size=(6, 5)) < 0.5, -1.0, 1.0).astype(dtype)
        got, want = bcejax.hinge_loss(s, t), optax.hinge_loss(s, t)
        assert got.dtype == want.dtype == dtype
        np.testing.assert_array_equal(got, want)
        # the derivative, the kink included: optax's (jnp.maximum halves it there)
        s[0] = t[0]
        grad, want = grads(s, t)
        np.testing.assert_array_equal(grad, want)
        np.testing.assert_array_equal(np.asarray(grad)[0], -t[0] / 2)


# ---------------------------------------------------------------------------
# 3. PyTorch CrossEntropyLoss semantics, by hand.
# ---------------------------------------------------------------------------

# Row 0: softmax([0, ln 2, ln 5]) = [1/8, 2/8, 5/8], -log p = [ln 8, ln 4, ln 1.6]; label 2.
# Row 1: softmax([0, 0, 0]) = 1/3 each, -log p = ln 3; label 0.
# Row 2: ignored (label -100).
TORCH_LOGITS = np.array([[0.0, LN2, LN5], [0.0, 0.0, 0.0], [3.0, 1.0, 2.0]])
TORCH_LABELS = np.array([2, 0, -100], np.int32)
TORCH_WEIGHTS = np.array([1.0, 2.0, 0.5])  # w, and label_smoothing a = 0.3: a / K = 0.1
# l = w_t (1 - a)(-log p_t) + (a / K) sum_c w_c (-log p_c)
# Row 0: 0.5 * 0.7 * ln 1.6 + 0.1 (ln 8 + 2 ln 4 + 0.5 ln 1.6)
#      = 0.4 ln 1.6 + 0.7 ln 2 = 0.4 (3 ln 2 - ln 5) + 0.7 ln 2 = 1.9 ln 2 - 0.4 ln 5
# Row 1: 1 * 0.7 * ln 3 + 0.1 (1 + 2 + 0.5) ln 3 = 1.05 ln 3
TORCH_NONE = np.array([1.9 * LN2 - 0.4 * LN5, 1.05 * LN3, 0.0])  # [0.673204, 1.153543, 0]
# mean: divided by the weights of the non-ignored targets, w_2 + w_0 = 0.5 + 1 = 1.5
TORCH_MEAN = (1.9 * LN2 - 0.4 * LN5 + 1.05 * LN3) / 1.5  # 1.217832


@pytest.mark.parametrize("dtype", DTYPES)
def test_pytorch_semantics_by_hand(dtype):
    np.testing.assert_allclose(TORCH_NONE, [0.6732044780902559, 1.1535429031015154, 0.0], 1e-15)
    logits = TORCH_LOGITS.astype(dtype)

    @jax.jit
    def outputs(logits, weights):
        config = dict(label_smoothing=0.3, class_weights=weights, ignore_index=-100)
        return dict(
            none=CE_INT(logits, TORCH_LABELS, **config),
            mean=CategoricalCrossEntropy(**config)(logits, TORCH_LABELS),
            sum=CategoricalCrossEntropy(**config, reduction="sum")(logits, TORCH_LABELS),
            callable_none=CategoricalCrossEntropy(**config, reduction="none")(logits, TORCH_LABELS),
            # Probability targets: -sum_c w_c y_c log p_c, with y = [0, .5, .5] on row 0:
            soft=CE(logits[:1], jnp.array([[0.0, 0.5, 0.5]], logits.dtype), class_weights=weights),
            # Row 0 with class 1 masked: softmax([0, ln 5]) = [1/6, 5/6]; K = 2, a = 0.3:
            # a/K = 0.15; label 2: 0.85 ln 1.2 + 0.15 ln 6 (the masked class adds nothing).
            masked=CE_INT(
                logits[:1],
                TORCH_LABELS[:1],
                where=np.array([[True, False, True]]),
                label_smoothing=0.3,
            ),
        )

    out = outputs(logits, TORCH_WEIGHTS.astype(dtype))
    rtol = 4 * RTOL[dtype]
    assert_close(out["none"], TORCH_NONE, dtype, rtol=rtol)
    assert_close(out["callable_none"], TORCH_NONE, dtype, rtol=rtol)
    assert_close(out["mean"], TORCH_MEAN, dtype, rtol=rtol)
    assert_close(out["sum"], TORCH_NONE.sum(), dtype, rtol=rtol)
    # 0.5 * 2 ln 4 + 0.5 * 0.5 ln 1.6 = 2 ln 2 + 0.25 ln 1.6
    assert_close(out["soft"], [2 * LN2 + 0.25 * math.log(1.6)], dtype, rtol=rtol)
    assert_close(out["masked"], [0.85 * math.log(1.2) + 0.15 * math.log(6)], dtype, rtol=rtol)
    if dtype == np.float64:  # eagerly, with the value checks on
        got = CE_INT(
            logits,
            TORCH_LABELS,
            label_smoothing=0.3,
            class_weights=TORCH_WEIGHTS,
            ignore_index=-100,
        )
        assert_close(got, TORCH_NONE, dtype, rtol=rtol)


# ---------------------------------------------------------------------------
# 4. Gradients.
# ---------------------------------------------------------------------------


def _softmax(x, mask=None):
    with np.errstate(invalid="ignore"):
        p = np.exp(np_log_softmax(x, mask))
    return np.nan_to_num(p) if mask is None else np.where(mask, np.nan_to_num(p), 0.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", [None, "batch", "classes"])
def test_cross_entropy_gradient_closed_form(where, dtype):
    """d/dx = sum(c) softmax(x) - c with c = w y (y smoothed over the unmasked classes)."""
    p = random_problem("2d", dtype, seed=13, class_mask=where == "classes")
    a, w, m = 0.2, p["class_weights"], _where(p, where)
    masks = _ref_masks(p, where)
    t = p["t"].copy()
    t[::4] = -100

    def closed_form(y, ignored=None):
        c = _smoothed(_f64(y), a, masks["mask"]) * _f64(w)
        if masks["batch_mask"] is not None:
            c = c * masks["batch_mask"][:, None]
        if ignored is not None:
            c = np.where(ignored[:, None], 0.0, c)
        return c.sum(-1, keepdims=True) * _softmax(p["x"], masks["mask"]) - c

    config = dict(label_smoothing=a, class_weights=w)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(CE(x, p["labels"], -1, m, **config))))(p["logits"])
    assert_close(grad, closed_form(p["y"]), dtype, atol=ATOL[dtype] * 10)
    f = jax.grad(lambda x: jnp.sum(CE_INT(x, t, -1, m, **config, ignore_index=-100)))
    one_hot = (t[:, None] == np.arange(5)).astype(np.float64)
    assert_close(
        jax.jit(f)(p["logits"]), closed_form(one_hot, t == -100), dtype, atol=ATOL[dtype] * 10
    )


_FD_RNG = np.random.default_rng(14)
FD_ARGS = dict(
    logits=np.linspace(-3.1, 2.9, 12).reshape(4, 3) + _FD_RNG.normal(0, 0.3, (4, 3)),
    labels=_FD_RNG.dirichlet(np.ones(3), 4),
    class_weights=_FD_RNG.uniform(0.5, 2.0, 3),
    label_smoothing=np.float64(0.15),
    alpha=np.float64(0.3),
    alpha_vector=_FD_RNG.uniform(0.2, 0.9, 3),
    gamma=np.float64(1.5),
    epsilon=np.float64(1.7),
)
FD_T = np.array([0, 2, 1, 2], np.int32)
FD_WHERE = np.array([[True, True, True], [True, False, True], [True] * 3, [False, True, True]])

# name -> (loss of the argument dict, the arguments differentiated)
FD_CASES = {
    "ce": (
        lambda a: CE(
            a["logits"],
            a["labels"],
            label_smoothing=a["label_smoothing"],
            class_weights=a["class_weights"],
        ),
        ["logits", "labels", "class_weights", "label_smoothing"],
    ),
    "ce_int": (
        lambda a: CE_INT(
            a["logits"],
            FD_T,
            -1,
            FD_WHERE,
            label_smoothing=a["label_smoothing"],
            class_weights=a["class_weights"],
        ),
        ["logits", "class_weights", "label_smoothing"],
    ),
    "focal": (
        lambda a: FOCAL(a["logits"], FD_T, gamma=a["gamma"], alpha=a["alpha"]),
        ["logits", "alpha", "gamma"],
    ),
    "focal_vector_alpha_g0.5": (
        lambda a: FOCAL(a["logits"], FD_T, gamma=0.5, alpha=a["alpha_vector"]),
        ["logits", "alpha_vector"],
    ),
    "focal_g2": (
        lambda a: FOCAL(a["logits"], FD_T, gamma=2.0, alpha=a["alpha_vector"]),
        ["logits"],
    ),
    "poly": (
        lambda a: POLY(a["logits"], a["labels"], epsilon=a["epsilon"]),
        ["logits", "labels", "epsilon"],
    ),
}


@pytest.mark.parametrize("name", list(FD_CASES))
def test_gradient_matches_central_differences(name):
    """Every differentiable argument at once: they are packed in one flat vector."""
    loss, args = FD_CASES[name]
    shapes = [np.shape(FD_ARGS[arg]) for arg in args]
    splits = np.cumsum([int(np.prod(shape)) for shape in shapes])[:-1]
    packed = np.concatenate([np.ravel(FD_ARGS[arg]) for arg in args])
    cotangent = np.random.default_rng(15).uniform(0.5, 1.5, 4)

    def f(vector):
        parts = jnp.split(vector, splits)
        values = {arg: v.reshape(s) for arg, v, s in zip(args, parts, shapes, strict=True)}
        return jnp.sum(cotangent * loss({**FD_ARGS, **values}))

    grad = jax.jit(jax.grad(f))(packed)
    assert grad.dtype == np.float64
    differences = helpers.central_difference(f, packed)
    for arg, got, want in zip(
        args, np.split(grad, splits), np.split(differences, splits), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8, err_msg=arg)


def test_focal_gamma_two_static_and_traced_agree():
    """gamma = 2 as a Python number (an integer power) and traced give the same gradient."""
    x, alpha = FD_ARGS["logits"], FD_ARGS["alpha_vector"]

    @jax.jit
    def both(x, g):
        static = sum_grad(lambda x: FOCAL(x, FD_T, gamma=2.0, alpha=alpha))(x)
        traced = sum_grad(lambda x: FOCAL(x, FD_T, gamma=g, alpha=alpha))(x)
        return static, traced

    static, traced = both(x, 2.0)
    np.testing.assert_allclose(static, traced, rtol=1e-12, atol=1e-15)


# the labels, a distribution over the classes FD_WHERE keeps
FD_LABELS_MASKED = (
    FD_ARGS["labels"] * FD_WHERE / np.sum(FD_ARGS["labels"] * FD_WHERE, -1, keepdims=True)
)
JAC_CASES = {
    "ce": lambda x: CE(
        x,
        FD_LABELS_MASKED,
        -1,
        FD_WHERE,
        label_smoothing=0.1,
        class_weights=FD_ARGS["class_weights"],
    ),
    "ce_int_ignore": lambda x: CE_INT(
        x,
        np.array([0, -1, 1, 2], np.int32),
        label_smoothing=0.1,
        class_weights=FD_ARGS["class_weights"],
        ignore_index=-1,
    ),
    "focal_g0.5": lambda x: FOCAL(x, FD_T, gamma=0.5, alpha=FD_ARGS["alpha_vector"]),
    "poly": lambda x: POLY(x, FD_ARGS["labels"], epsilon=2.0),
    "callable": lambda x: CategoricalCrossEntropy(label_smoothing=0.1)(x, FD_T),
}
# the finite extremes
EXTREME_FINITE = np.array(
    [[1e4, 0.0, -1e4], [-1e4, 0.0, 1e4], [0.0, -1e4, 1e4], [30.0, -30.0, 0.0]]
)


@functools.partial(jax.jit, static_argnums=0)
def _jacobians_and_hessian(f, x):
    return jax.jacfwd(f)(x), jax.jacrev(f)(x), jax.hessian(lambda x: jnp.sum(f(x)))(x)


@pytest.mark.parametrize("name", list(JAC_CASES))
def test_jacfwd_equals_jacrev_and_hessian_is_finite(name):
    f = JAC_CASES[name]
    for x in (FD_ARGS["logits"], EXTREME_FINITE):
        forward, reverse, hessian = _jacobians_and_hessian(f, x)
        assert np.all(np.isfinite(forward)), (x, forward)
        np.testing.assert_allclose(forward, reverse, rtol=1e-12, atol=1e-15)
        assert hessian.shape == (4, 3, 4, 3)
        assert np.all(np.isfinite(hessian)), (x, hessian)


def test_hessian_of_cross_entropy_closed_form():
    """d^2/dx^2 of -log softmax(x)_t is diag(p) - p p^T for every row, whatever t."""
    x = FD_ARGS["logits"]
    hessian = jax.jit(jax.hessian(lambda x: jnp.sum(CE_INT(x, FD_T))))(x)
    for i, p in enumerate(_softmax(x)):
        np.testing.assert_allclose(
            hessian[i, :, i], np.diag(p) - np.outer(p, p), rtol=1e-12, atol=1e-15
        )


# ---------------------------------------------------------------------------
# 5. Extreme and infinite logits.
# ---------------------------------------------------------------------------

INF = np.inf
# (logits row, expected value) for the target class 0; two more classes at -inf with
# zero labels pad each row to the (6, 5) shape of the random problems: they add 0.
INFINITE_ROWS = [
    ([INF, 0.0, -INF], 0.0),  # the target at +inf takes all the probability
    ([-INF, 0.0, 1.0], INF),  # the target at -inf gets none
    ([0.0, INF, 1.0], INF),  # another class at +inf
    ([INF, INF, 0.0], LN2),  # two classes at +inf share it: p_t = 1/2
    ([1e4, 0.0, -1e4], 0.0),
    ([-1e4, 0.0, 1e4], 2e4),  # -log p_t = 1e4 - (-1e4)
]
INF_X = np.array([r[0] + [-INF, -INF] for r in INFINITE_ROWS])
INF_WANT = np.array([r[1] for r in INFINITE_ROWS])
INF_T = np.zeros(len(INF_X), np.int32)
INF_Y = np.eye(5)[INF_T]
# softmax, the limit: 1 (or 1/2 each) at +inf, 0 at -inf
_E = math.e
INF_SOFTMAX = np.array(
    [
        [1, 0, 0, 0, 0],
        [0, 1 / (1 + _E), _E / (1 + _E), 0, 0],
        [0, 1, 0, 0, 0],
        [0.5, 0.5, 0, 0, 0],
        [1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0],
    ]
)


def _infinite_cases(y, t):
    return {
        "ce": (lambda x: CE(x, y), INF_WANT),
        "ce_int": (lambda x: CE_INT(x, t), INF_WANT),
        "focal_g0": (lambda x: FOCAL(x, t, gamma=0.0), INF_WANT),
        # gamma 2: (1 - p_t)^2 scales the finite values: (1/2)^2 ln 2 on the tie, 1 at 2e4
        "focal_g2": (
            lambda x: FOCAL(x, t, gamma=2.0),
            np.where(INF_WANT == LN2, LN2 / 4, INF_WANT),
        ),
        # gamma 0.5 and alpha: 0.25 (1/2)^0.5 ln 2 on the tie
        "focal_g0.5": (
            lambda x: FOCAL(x, t, gamma=0.5, alpha=0.25),
            0.25 * np.where(INF_WANT == LN2, LN2 * 0.5**0.5, INF_WANT),
        ),
        # poly: + eps (1 - p_t): 0 where p_t = 1, eps where p_t = 0, eps / 2 on the tie
        "poly": (
            lambda x: POLY(x, y, epsilon=2.0),
            INF_WANT + 2.0 * (INF_WANT != 0) - (INF_WANT == LN2),
        ),
    }


@jax.jit
def _infinite_values_and_grads(x):
    y, t = INF_Y.astype(x.dtype), INF_T
    return {name: (fn(x), sum_grad(fn)(x)) for name, (fn, _) in _infinite_cases(y, t).items()}


@pytest.mark.parametrize("dtype", DTYPES)
def test_infinite_and_extreme_logits(dtype):
    """Values: 0 for a target at +inf, +inf for one at -inf, never NaN; gradients finite."""
    x = INF_X.astype(dtype)
    cases = _infinite_cases(INF_Y.astype(dtype), INF_T)
    jitted = _infinite_values_and_grads(x)
    for name, (fn, want) in cases.items():
        for got in (fn(x), jitted[name][0]):  # eager (value checks on) and jit
            got = np.asarray(got)
            assert got.dtype == dtype
            assert not np.any(np.isnan(got)), (name, got)
            np.testing.assert_allclose(got, want, rtol=RTOL[dtype], err_msg=name)
        grad = np.asarray(jitted[name][1])
        assert np.all(np.isfinite(grad)), (name, grad)
        np.testing.assert_array_equal(grad[:, 3:], 0, err_msg=name)  # the padding classes
    # cross-entropy: sum(c) softmax - c, with the limits of softmax
    for name in ("ce", "ce_int"):
        assert_close(jitted[name][1], INF_SOFTMAX - INF_Y, dtype, rtol=4 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_focal_gamma_zero_gradient_equals_cross_entropy_at_infinite_logits(dtype):
    """gamma = 0 is cross-entropy, in value and in derivative, at infinite logits too
    (the row with two classes at +inf: softmax - onehot = [-1/2, 1/2, 0, 0, 0])."""
    jitted = _infinite_values_and_grads(INF_X.astype(dtype))
    np.testing.assert_allclose(jitted["focal_g0"][0], jitted["ce_int"][0], rtol=RTOL[dtype])
    np.testing.assert_allclose(
        jitted["focal_g0"][1], jitted["ce_int"][1], rtol=RTOL[dtype], atol=ATOL[dtype]
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_label_on_minus_inf_logit_adds_zero(dtype):
    x = np.array([[-INF, 1.0, 2.0], [-INF, 1.0, 2.0]], dtype)
    y = np.array([[0.0, 0.5, 0.5], [0.0, 1.0, 0.0]], dtype)
    got = CE(x, y)
    assert_close(got, ref_ce(x[:, 1:], y[:, 1:]), dtype)
    # the same with a class weight on the -inf class, and through poly
    weighted = CE(x, y, class_weights=np.array([5.0, 1.0, 1.0], dtype))
    assert_close(weighted, np.asarray(got, np.float64), dtype)
    assert_close(POLY(x, y, epsilon=1.0), ref_poly(x[:, 1:], y[:, 1:], epsilon=1.0), dtype)
    grad = jax.jit(sum_grad(lambda x: CE(x, y)))(x)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[:, 0] == 0)
    # with label smoothing the -inf class gets a / K > 0: the loss is +inf, not NaN
    smoothed = CE(x, y, label_smoothing=0.1)
    np.testing.assert_array_equal(smoothed, [INF, INF])


@functools.partial(jax.jit, static_argnums=1)
def _focal_grad_and_hessian(x, hessian, gamma, t, alpha):
    """The value, the gradient of the sum and (if asked) its Hessian; gamma traced."""

    def f(x):
        return jnp.sum(FOCAL(x, t, gamma=gamma, alpha=alpha))

    value = FOCAL(x, t, gamma=gamma, alpha=alpha)
    return value, jax.grad(f)(x), jax.hessian(f)(x) if hessian else None


@pytest.mark.parametrize("dtype", DTYPES)
def test_focal_fractional_gamma_gradients_finite_at_extremes(dtype):
    """(1 - p_t)^gamma with gamma < 1 has an infinite slope at p_t = 1, never reached in
    the gradient. Right and confident (p_t = 1): 0; confidently wrong (p_t = 0): the
    factor is 1 and flat, so the gradient is alpha (p - onehot), as cross-entropy's."""
    x = EXTREME_FINITE.astype(dtype)
    x[3] = [-1e4, 0.0, 0.0]
    t = np.array([0, 0, 1, 0], np.int32)
    for gamma in (0.5, 0.25, 1.5):
        _, grad, hessian = _focal_grad_and_hessian(x, dtype == np.float64, gamma, t, 0.25)
        grad = np.asarray(grad)
        assert np.all(np.isfinite(grad)), (gamma, grad)
        np.testing.assert_array_equal(grad[0], [0, 0, 0])
        assert_close(grad[1], [-0.25, 0, 0.25], dtype)
        assert_close(grad[2], [0, -0.25, 0.25], dtype)
        assert_close(grad[3], [-0.25, 0.125, 0.125], dtype)
        if hessian is not None:
            assert np.all(np.isfinite(hessian)), gamma


# Rows whose target (class 0) ties the log-sum-exp of the others: p_t = 1/2 exactly.
# The first two are two-class rows (a third class at -inf adds nothing), e.g. the
# zero-initialized two-class head.
TIE_ROWS = np.array([[0.0, 0.0, -INF], [1.5, 1.5, -INF], [LN2, 0.0, 0.0], [1e4, 1e4, 0.0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_focal_gradient_where_the_target_ties_the_others(dtype):
    """With m = x_t - logsumexp(others) and s = sigmoid(m) = p_t, the loss is
    -(1 - s)^g log s, so dl/dm = g (1 - s)^g s log s - (1 - s)^(g + 1); at s = 1/2:
    dl/dm = -(1/2)^(g + 1) (g ln 2 + 1). dm/dx_t = 1, dm/dx_c = -softmax(others)_c."""
    x = TIE_ROWS.astype(dtype)
    t = np.zeros(len(x), np.int32)
    others = np.concatenate([np.zeros((len(x), 1)), _softmax(_f64(TIE_ROWS)[:, 1:])], -1)
    for gamma in (0.0, 0.5, 2.0):
        value, grad, _ = _focal_grad_and_hessian(x, False, gamma, t, None)
        assert_close(value, np.full(len(x), 0.5**gamma * LN2), dtype, rtol=4 * RTOL[dtype])
        dl_dm = -(0.5 ** (gamma + 1)) * (gamma * LN2 + 1)
        want = dl_dm * (np.eye(3)[t] - others)
        assert_close(grad, want, dtype, rtol=4 * RTOL[dtype], atol=1e-6, err_msg=f"gamma={gamma}")
    # gamma = 0 is cross-entropy: softmax - onehot = [-1/2, 1/2, 0] on the two-class rows
    ce = jax.jit(sum_grad(lambda x: CE_INT(x, t)))(x)
    assert_close(ce[:2], [[-0.5, 0.5, 0], [-0.5, 0.5, 0]], dtype)


# ---------------------------------------------------------------------------
# Masks: fully masked rows are 0, with NaN logits in the masked entries too.
# ---------------------------------------------------------------------------

NAN_LOGITS = np.array([[1.0, np.nan, 2.0], [np.nan, np.nan, np.nan], [0.5, 1.5, -1.0]])
NAN_WHERE = np.array([[True, False, True], [False, False, False], [True, True, True]])
NAN_WHERE_BATCH = np.array([True, False, True])


def _masked_losses(x, where):
    soft = np.array([[0.3, 0.0, 0.7], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    t = np.array([2, 1, 0], np.int32)
    w = np.array([1.0, 2.0, 0.5])
    return [
        CE(x, soft, where=where, label_smoothing=0.1, class_weights=w),
        CE_INT(x, t, where=where, label_smoothing=0.1, class_weights=w),
        FOCAL(x, t, gamma=0.5, alpha=0.25, where=where),
        POLY(x, soft, epsilon=2.0, where=where),
    ]


@jax.jit
def _masked_losses_and_grad(x, where):
    def total(x):
        return sum(jnp.sum(v) for v in _masked_losses(x, where))

    return _masked_losses(x, where), jax.grad(total)(x)


@pytest.mark.parametrize(
    "mode, mask",
    [
        ("jit", "classes"),
        ("jit", "batch"),
        ("eager", "classes"),
        ("checked", "classes"),
    ],
)
def test_fully_masked_rows_with_nan_logits_give_zero(mode, mask):
    where = NAN_WHERE if mask == "classes" else NAN_WHERE_BATCH
    x = NAN_LOGITS.copy()
    if mask == "batch":
        x[0, 1] = 0.25  # only the masked example holds NaN
    clean = np.where(np.isnan(x), 0.0, x)  # what the masked entries hold must not matter
    reference, _ = _masked_losses_and_grad(clean, where)
    if mode == "jit":
        out, grad = _masked_losses_and_grad(x, where)
        grad = np.asarray(grad)
        assert np.all(np.isfinite(grad)), grad
        np.testing.assert_array_equal(grad[1], 0)
        np.testing.assert_array_equal(grad[np.isnan(x)], 0)
    elif mode == "eager":
        out = _masked_losses(x, where)
    else:
        out = bcejax.checked(_masked_losses)(x, where)
    for got, want in zip(out, reference, strict=True):
        got = np.asarray(got)
        assert not np.any(np.isnan(got)), got
        assert got[1] == 0
        np.testing.assert_allclose(got, want, rtol=1e-12)


# ---------------------------------------------------------------------------
# 6. Bad inputs, with messages that say what is wrong.
# ---------------------------------------------------------------------------

X2 = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])


@pytest.mark.parametrize("fn", [CE_INT, FOCAL], ids=["ce_int", "focal"])
def test_integer_label_out_of_range(fn):
    with pytest.raises(bcejax.InvalidInputError, match=r"class indices in \[0, 3\)"):
        fn(X2, np.array([0, 4], np.int32))
    with pytest.raises(bcejax.InvalidInputError, match=r"class indices in \[0, 3\)"):
        bcejax.checked(fn)(X2, np.array([0, 4], np.int32))
    # a plain jit carries no checks: the loss of the bad example is NaN, the others are right
    got = np.asarray(jax.jit(fn)(X2, np.array([0, 4], np.int32)))
    assert np.isnan(got[1]) and np.isfinite(got[0])
    got = np.asarray(jax.jit(fn)(X2, np.array([-1, 1], np.int32)))
    assert np.isnan(got[0]) and np.isfinite(got[1])
    # an example that a batch-shaped where drops is exempt: its loss is 0, no error
    got = np.asarray(fn(X2, np.array([0, 4], np.int32), where=np.array([True, False])))
    assert got[1] == 0 and np.isfinite(got[0])


def test_integer_label_messages():
    # 1-based labels: 1..K
    with pytest.raises(bcejax.InvalidInputError, match="1-based; subtract 1"):
        CE_INT(X2, np.array([3, 1], np.int32))
    with pytest.raises(bcejax.InvalidInputError, match="1-based labels need 1 subtracting"):
        bcejax.checked(CE_INT)(X2, np.array([3, 1], np.int32))
    # negative padding labels without ignore_index
    with pytest.raises(bcejax.InvalidInputError, match="pass ignore_index=-100"):
        CE_INT(X2, np.array([-100, 1], np.int32))
    with pytest.raises(bcejax.InvalidInputError, match="padding needs ignore_index"):
        bcejax.checked(CE_INT)(X2, np.array([-100, 1], np.int32))
    # with ignore_index, another out-of-range value is still an error, naming both
    with pytest.raises(bcejax.InvalidInputError, match=r"\[0, 3\) or ignore_index=-100"):
        CE_INT(X2, np.array([5, -100], np.int32), ignore_index=-100)
    with pytest.raises(bcejax.InvalidInputError, match=r"or ignore_index=-100"):
        bcejax.checked(lambda x, t: CE_INT(x, t, ignore_index=-100))(X2, np.array([5, 1]))
    # ignored labels pass the checks, eagerly and in checked mode
    ok = np.array([-100, 1], np.int32)
    np.testing.assert_allclose(
        bcejax.checked(lambda x, t: CE_INT(x, t, ignore_index=-100))(X2, ok),
        CE_INT(X2, ok, ignore_index=-100),
    )


@pytest.mark.parametrize("fn", [CE_INT, FOCAL], ids=["ce_int", "focal"])
def test_float_labels_to_the_integer_version(fn):
    with pytest.raises(TypeError, match="labels must have an integer dtype, got float"):
        fn(X2, np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="use softmax_cross_entropy for one-hot labels"):
        fn(X2, np.eye(3)[[0, 1]])


@pytest.mark.parametrize("fn", [CE_INT, FOCAL], ids=["ce_int", "focal"])
def test_label_shape_must_be_the_batch_shape(fn):
    with pytest.raises(
        ValueError, match=r"labels with shape \(3,\) do not match the batch shape \(2,\)"
    ):
        fn(X2, np.array([0, 1, 2], np.int32))
    with pytest.raises(ValueError, match=r"\(2, 3\).*class axes"):
        fn(X2, np.zeros((2, 1), np.int32))


@pytest.mark.parametrize("fn", [CE, POLY], ids=["ce", "poly"])
def test_soft_label_shape_and_range(fn):
    with pytest.raises(ValueError, match=r"labels with shape \(2, 4\).*logits with shape \(2, 3\)"):
        fn(X2, np.full((2, 4), 0.25))
    # Labels that do not sum to 1 are applied as written (optax and PyTorch accept them).
    multi_hot = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    expected = CE(X2, np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])) + CE(
        X2, np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    )
    if fn is CE:
        np.testing.assert_allclose(fn(X2, multi_hot), expected, rtol=1e-12)
    np.testing.assert_array_equal(bcejax.checked(fn)(X2, multi_hot), fn(X2, multi_hot))
    bad = np.array([[1.5, -0.5, 0.0], [0.0, 1.0, 0.0]])
    with pytest.raises(bcejax.InvalidInputError, match=r"must be in \[0, 1\]"):
        fn(X2, bad)
    with pytest.raises(bcejax.InvalidInputError, match=r"must be in \[0, 1\]"):
        bcejax.checked(fn)(X2, bad)
    # masked examples are exempt, by a batch mask or a logits-shaped one
    for where in (np.array([True, False]), np.array([[True] * 3, [False] * 3])):
        padded = np.array([[0.5, 0.5, 0.0], [255.0, 1.0, 0.0]])
        assert np.asarray(fn(X2, padded, where=where))[1] == 0
        got = bcejax.checked(lambda x, y, w: fn(x, y, where=w))(X2, padded, where)
        assert np.asarray(got)[1] == 0


def test_class_weights_bad_shape_and_sign():
    t = np.array([0, 1], np.int32)
    y = np.eye(3)[t]
    for call in (
        lambda w: CE_INT(X2, t, class_weights=w),
        lambda w: CE(X2, y, class_weights=w),
    ):
        with pytest.raises(
            ValueError, match=r"one weight per class, shape \(3,\), got shape \(4,\)"
        ):
            call(np.ones(4))
        with pytest.raises(ValueError, match=r"got shape \(2, 3\)"):
            call(np.ones((2, 3)))
        with pytest.raises(bcejax.InvalidInputError, match="class_weights must be >= 0"):
            call(np.array([1.0, -1.0, 1.0]))
        with pytest.raises(bcejax.InvalidInputError, match="class_weights must be >= 0"):
            bcejax.checked(call)(np.array([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(3,\), got shape \(4,\)"):
        FOCAL(X2, t, alpha=np.ones(4))
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        FOCAL(X2, t, alpha=-0.5)
    with pytest.raises(bcejax.InvalidInputError, match="class_weights must be >= 0"):
        CategoricalCrossEntropy(class_weights=np.array([1.0, -1.0, 1.0]))(X2, t)


def test_hinge_targets_must_be_signed():
    scores = np.array([0.5, -2.0, 1.0])
    with pytest.raises(bcejax.InvalidInputError, match=r"targets in \{0, 1\}.*2 \* labels - 1"):
        bcejax.hinge_loss(scores, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(bcejax.InvalidInputError, match=r"2 \* labels - 1"):
        bcejax.checked(bcejax.hinge_loss)(scores, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(bcejax.InvalidInputError, match="must be -1 or 1"):
        bcejax.hinge_loss(scores, np.array([2.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match=r"targets with shape \(2,\).*shape \(3,\)"):
        bcejax.hinge_loss(scores, np.array([1.0, -1.0]))
    with pytest.raises(TypeError, match="predictor_outputs must have a floating dtype"):
        bcejax.hinge_loss(np.array([1, 2]), np.array([1, -1]))


def test_structural_errors():
    t = np.array([0, 1], np.int32)
    with pytest.raises(TypeError, match="logits must have a floating dtype"):
        CE_INT(X2.astype(np.int32), t)
    with pytest.raises(ValueError, match=r"label_smoothing must be >= 0\.0 and < 1\.0"):
        CE_INT(X2, t, label_smoothing=1.0)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        FOCAL(X2, t, gamma=-1.0)
    with pytest.raises(ValueError, match="out of range for logits with 2 dimensions"):
        CE_INT(X2, t, axis=2)
    with pytest.raises(ValueError, match="names an axis twice"):
        CE(X2, np.eye(3)[t], axis=(1, -1))
    with pytest.raises(ValueError, match="fits neither the logits' shape"):
        CE(X2, np.eye(3)[t], where=np.ones(4, bool))
    with pytest.raises(bcejax.InvalidInputError, match="logits contain NaN"):
        CE_INT(np.array([[np.nan, 0.0, 1.0]]), t[:1])


# ---------------------------------------------------------------------------
# 7. The callable CategoricalCrossEntropy.
# ---------------------------------------------------------------------------


def _callable_problem(dtype=np.float64):
    p = random_problem("2d", dtype, seed=16)
    t = p["t"].copy()
    t[[1, 4]] = -100
    return p, t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_callable_integer_and_one_hot_agree(reduction, dtype):
    p = random_problem("2d", dtype, seed=17)
    loss_fn = CategoricalCrossEntropy(
        label_smoothing=0.1, class_weights=p["class_weights"], reduction=reduction
    )
    one_hot = np.eye(5, dtype=dtype)[p["t"]]
    for where in (None, p["batch_mask"]):
        by_index = loss_fn(p["logits"], p["t"], where=where)
        by_one_hot = loss_fn(p["logits"], one_hot, where=where)
        assert by_index.dtype == by_one_hot.dtype == dtype
        np.testing.assert_allclose(by_index, by_one_hot, rtol=4 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_callable_reductions_weights_and_where(dtype):
    p, t = _callable_problem(dtype)
    w = p["class_weights"]
    v = np.random.default_rng(18).uniform(0.5, 2.0, t.shape).astype(dtype)  # per example
    m = p["batch_mask"]
    per_example = ref_ce_int(p["x"], t, smoothing=0.1, class_weights=w, ignore_index=-100)
    target_w = np.where(t == -100, 0.0, _f64(w)[np.clip(t, 0, 4)])
    config = dict(label_smoothing=0.1, class_weights=w, ignore_index=-100)
    for weights in (None, v):
        vv = 1.0 if weights is None else _f64(v)
        for where in (None, m):
            mm = 1.0 if where is None else m
            call = dict(weights=weights, where=where)
            none = CategoricalCrossEntropy(**config, reduction="none")(p["logits"], t, **call)
            assert_close(none, mm * vv * per_example, dtype)
            total = CategoricalCrossEntropy(**config, reduction="sum")(p["logits"], t, **call)
            assert_close(total, np.sum(mm * vv * per_example), dtype)
            # PyTorch's mean: over the summed class weights of the counted targets
            # (per-example weights scale the numerator only)
            mean = CategoricalCrossEntropy(**config)(p["logits"], t, **call)
            want = np.sum(mm * vv * per_example) / np.sum(mm * target_w)
            assert_close(mean, want, dtype)
    # without class weights, the mean is over the non-ignored, unmasked examples
    mean = CategoricalCrossEntropy(ignore_index=-100)(p["logits"], t, where=m)
    kept = (t != -100) & m
    assert_close(mean, ref_ce_int(p["x"], t)[kept].mean(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_callable_mean_with_soft_labels(dtype):
    """The mean divides by sum_i sum_c w_c y_ic (bcejax's contract; PyTorch divides a
    weighted probability-target loss by the number of examples instead)."""
    p = random_problem("2d", dtype, seed=19)
    w = p["class_weights"]
    got = CategoricalCrossEntropy(class_weights=w)(p["logits"], p["labels"])
    want = ref_ce(p["x"], p["y"], class_weights=w).sum() / np.sum(_f64(p["y"]) @ _f64(w))
    assert_close(got, want, dtype)
    got = CategoricalCrossEntropy()(p["logits"], p["labels"], where=p["batch_mask"])
    assert_close(got, ref_ce(p["x"], p["y"])[p["batch_mask"]].mean(), dtype)


def test_callable_ignore_index_with_one_hot_labels_is_an_error():
    with pytest.raises(ValueError, match="ignore_index needs integer labels"):
        CategoricalCrossEntropy(ignore_index=-100)(X2, np.eye(3)[[0, 1]])
    with pytest.raises(ValueError, match="reduction must be one of"):
        CategoricalCrossEntropy(reduction="avg")


@pytest.mark.parametrize("weighted", [False, True])
def test_callable_all_ignored_gives_zero_with_zero_gradient(weighted):
    p, _ = _callable_problem()
    t = np.full(p["t"].shape, -100, np.int32)
    loss_fn = CategoricalCrossEntropy(
        label_smoothing=0.1,
        class_weights=p["class_weights"] if weighted else None,
        ignore_index=-100,
    )

    @jax.jit
    def value_and_grads(x, t):
        return (
            jax.value_and_grad(lambda x: loss_fn(x, t))(x),
            jax.value_and_grad(lambda x: loss_fn(x, p["t"], where=False))(x),
        )

    assert float(loss_fn(p["logits"], t)) == 0.0  # eager
    for value, grad in value_and_grads(p["logits"], t):  # every example ignored; masked
        assert float(value) == 0.0
        np.testing.assert_array_equal(grad, np.zeros_like(p["logits"]))


def test_callable_ignored_examples_have_zero_gradient():
    p, t = _callable_problem()
    loss_fn = CategoricalCrossEntropy(label_smoothing=0.2, ignore_index=-100)
    grad = np.asarray(jax.jit(jax.grad(lambda x: loss_fn(x, t)))(p["logits"]))
    assert np.all(grad[t == -100] == 0)
    assert np.all(np.abs(grad[t != -100]).sum(-1) > 0)


@pytest.mark.parametrize("labels", ["integer", "one-hot"])
def test_callable_ignores_junk_in_masked_examples(labels):
    """NaN logits, out-of-range labels and NaN weights of masked examples are cut out."""
    p, _ = _callable_problem()
    m = p["batch_mask"]
    t = p["t"] if labels == "integer" else np.eye(5)[p["t"]]
    junk_t = np.where(m, p["t"], 255) if labels == "integer" else np.where(m[:, None], t, 0.7)
    junk_x = np.where(m[:, None], p["logits"], np.nan)
    v = np.random.default_rng(20).uniform(0.5, 2.0, m.shape)
    junk_v = np.where(m, v, np.nan)
    loss_fn = CategoricalCrossEntropy(label_smoothing=0.1, class_weights=p["class_weights"])
    for call in (loss_fn, jax.jit(loss_fn.__call__)):
        got = call(junk_x, junk_t, weights=junk_v, where=m)
        np.testing.assert_allclose(got, loss_fn(p["logits"], t, weights=v, where=m), rtol=1e-13)
    grad = jax.grad(lambda x: loss_fn(x, junk_t, weights=junk_v, where=m))(junk_x)
    assert np.all(np.isfinite(grad))
    assert np.all(grad[~m] == 0)


def test_callable_where_is_per_example():
    with pytest.raises(ValueError, match=r"masks whole examples: where must have the batch shape"):
        CategoricalCrossEntropy()(X2, np.array([0, 1]), where=np.ones((2, 3), bool))


def test_mask_and_alpha_messages_name_what_was_given():
    t = np.array([0, 1], np.int32)
    with pytest.raises(ValueError, match=r"where with shape \(4,\) fits neither"):
        CE_INT(X2, t, where=np.ones(4, bool))
    with pytest.raises(ValueError, match=r"alpha must have one weight per class, shape \(3,\)"):
        FOCAL(X2, t, alpha=np.ones(4))


_call = jax.jit(lambda fn, x, y: fn(x, y))
_call_grad = jax.jit(jax.grad(lambda fn, x, y: fn(x, y)))


@pytest.mark.parametrize("class_weights", ["array", "tuple", "none"])
def test_callable_passes_through_jit_as_an_argument(class_weights):
    p, t = _callable_problem()
    w = {"array": p["class_weights"], "tuple": tuple(p["class_weights"].tolist()), "none": None}
    loss_fn = CategoricalCrossEntropy(
        label_smoothing=0.1, class_weights=w[class_weights], ignore_index=-100
    )
    eager = loss_fn(p["logits"], t)
    traced = _call(loss_fn, p["logits"], t)
    np.testing.assert_allclose(traced, eager, rtol=1e-12)
    # the config is a pytree leaf: its gradient exists (d/da of the mean)
    grads = _call_grad(loss_fn, p["logits"], t)
    assert isinstance(grads, CategoricalCrossEntropy)
    assert np.isfinite(grads.label_smoothing)
    h = 1e-6
    plus = _call(CategoricalCrossEntropy(0.1 + h, w[class_weights], -100), p["logits"], t)
    minus = _call(CategoricalCrossEntropy(0.1 - h, w[class_weights], -100), p["logits"], t)
    assert float(grads.label_smoothing) == pytest.approx(float(plus - minus) / (2 * h), rel=1e-6)


def test_callable_equality_and_pickle_round_trip():
    loss_fn = CategoricalCrossEntropy(
        label_smoothing=0.1, class_weights=(1.0, 2.0, 0.5, 1.0, 3.0), ignore_index=-100
    )
    restored = pickle.loads(pickle.dumps(loss_fn))
    assert restored == loss_fn and hash(restored) == hash(loss_fn)
    assert loss_fn != CategoricalCrossEntropy(label_smoothing=0.1, ignore_index=-100)
    assert loss_fn != CategoricalCrossEntropy(
        label_smoothing=0.1, class_weights=(1.0, 2.0, 0.5, 1.0, 3.0), ignore_index=-1
    )
    assert "CategoricalCrossEntropy(label_smoothing=0.1" in repr(loss_fn)
    p, t = _callable_problem()
    np.testing.assert_array_equal(restored(p["logits"], t), loss_fn(p["logits"], t))
    with pytest.raises(AttributeError):
        loss_fn.label_smoothing = 0.2
    leaves, treedef = jax.tree_util.tree_flatten(loss_fn)
    assert leaves == [0.1, 1.0, 2.0, 0.5, 1.0, 3.0]  # ignore_index and reduction are static
    assert jax.tree_util.tree_unflatten(treedef, leaves) == loss_fn


def test_callable_equality_with_array_class_weights():
    """The usual config, class_weights as an array: a pickled copy compares equal."""
    loss_fn = CategoricalCrossEntropy(class_weights=np.array([1.0, 2.0, 0.5]))
    restored = pickle.loads(pickle.dumps(loss_fn))
    np.testing.assert_array_equal(restored(X2, np.array([0, 2])), loss_fn(X2, np.array([0, 2])))
    assert restored == loss_fn
