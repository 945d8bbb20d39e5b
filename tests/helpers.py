"""What the test files share: float64 sigmoid, tolerances, differences, meshes, public names."""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

import bcejax


def sigmoid(x):
    """The logistic function in float64, without overflow."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, np.float64)))


def assert_close(got, want, dtype, *, rtol, atol, err_msg=""):
    """``got`` has ``dtype`` and is close to the float64 ``want``.

    ``rtol`` and ``atol`` are numbers or dicts from dtype to number; a test file
    binds its own tables with ``functools.partial`` and a call may override them.
    """
    got = np.asarray(got)
    assert got.dtype == dtype
    np.testing.assert_allclose(
        got.astype(np.float64),
        want,
        rtol=rtol[dtype] if isinstance(rtol, dict) else rtol,
        atol=atol[dtype] if isinstance(atol, dict) else atol,
        err_msg=err_msg,
    )


def central_difference(f, value, h=1e-6):
    """(f(v + h e_i) - f(v - h e_i)) / 2h for every element i, in one vectorized call."""
    value = np.asarray(value, np.float64)
    steps = h * np.eye(value.size).reshape(value.size, *value.shape)
    values = jax.jit(jax.vmap(f))(np.concatenate([value + steps, value - steps]))
    plus, minus = np.split(np.asarray(values, np.float64), 2)
    return ((plus - minus) / (2 * h)).reshape(value.shape)


def mesh(devices: int = 4, name: str = "d") -> jax.sharding.Mesh:
    """A 1-D mesh over the first ``devices`` simulated CPU devices (tests/conftest.py)."""
    return jax.make_mesh(
        (devices,),
        (name,),
        devices=jax.devices()[:devices],
        axis_types=(jax.sharding.AxisType.Auto,),
    )


def sharded_grad(fn, check_vma=True):
    """The gradient of ``fn`` in its first argument, taken inside a jitted shard_map over
    ``mesh()``: every argument and the gradient split along ``d``."""
    return jax.jit(
        jax.shard_map(
            jax.grad(fn), mesh=mesh(), in_specs=P("d"), out_specs=P("d"), check_vma=check_vma
        )
    )


def quiet(fn):
    """``fn`` with its warnings silenced (scikit-learn warns on undefined metrics)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)

    return wrapper


def run_on_devices(script: str, devices: int) -> None:
    """Runs ``script`` (Python) in a new process with ``devices`` simulated CPU devices.

    The test modules are importable there; the script prints ``ok <device count>``
    at its end, which is checked.
    """
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"ok {devices}"


def public_modules() -> list[str]:
    """``bcejax`` and its modules whose names do not start with an underscore."""
    found = pkgutil.iter_modules(bcejax.__path__)
    return ["bcejax", *sorted(f"bcejax.{m.name}" for m in found if not m.name.startswith("_"))]


def public_names(name: str) -> list[str]:
    """``__all__``, or for a module without one the names ``bcejax`` re-exports from it."""
    module = importlib.import_module(name)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [n for n in bcejax.__all__ if getattr(getattr(bcejax, n), "__module__", None) == name]


# The public functions that are not losses of predictions and labels: the reduction, the
# checked mode and the weighting helpers.
NOT_LOSSES = {"checked", "reduce_loss", "smooth_binary_labels", "pos_weight_from_labels"}
NOT_LOSSES |= {"inverse_frequency_weights", "class_balanced_weights"}


def loss_functions() -> dict[str, Any]:
    """Every public loss function, by name: bcejax's and those of bcejax.scale."""
    return {
        name: getattr(module, name)
        for module in (bcejax, bcejax.scale)
        for name in module.__all__
        if inspect.isfunction(getattr(module, name)) and name not in NOT_LOSSES
    }
