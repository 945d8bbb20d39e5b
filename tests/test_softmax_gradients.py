"""Gradients of the softmax losses: closed forms, central differences, forward and reverse mode."""

from __future__ import annotations

import functools

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import f64, smoothed, softmax
from softmax_inputs import (
    ATOL,
    CE,
    CE_INT,
    DTYPES,
    EXTREME_FINITE,
    FOCAL,
    POLY,
    assert_close,
    random_problem,
    ref_masks,
    sum_grad,
    where_of,
)

from bcejax.losses import CategoricalCrossEntropy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", [None, "batch", "classes"])
def test_cross_entropy_gradient_closed_form(where, dtype):
    """d/dx = sum(c) softmax(x) - c with c = w y (y smoothed over the unmasked classes)."""
    p = random_problem("2d", dtype, seed=13, class_mask=where == "classes")
    a, w, m = 0.2, p["class_weights"], where_of(p, where)
    masks = ref_masks(p, where)
    t = p["t"].copy()
    t[::4] = -100

    def closed_form(y, ignored=None):
        c = smoothed(f64(y), a, masks["mask"]) * f64(w)
        if masks["batch_mask"] is not None:
            c = c * masks["batch_mask"][:, None]
        if ignored is not None:
            c = np.where(ignored[:, None], 0.0, c)
        return c.sum(-1, keepdims=True) * softmax(p["x"], masks["mask"]) - c

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
    for i, p in enumerate(softmax(x)):
        np.testing.assert_allclose(
            hessian[i, :, i], np.diag(p) - np.outer(p, p), rtol=1e-12, atol=1e-15
        )
