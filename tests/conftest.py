"""Test setup: 4 simulated CPU devices and float64 enabled, before JAX is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)

# The fuzzing profiles of tests/test_fuzz.py. "ci", the default: the same draws
# each run, few enough for the suite's time. "smoke": two draws a test, for the
# JAX version legs of .ci/matrix. "long": random draws, many more
# (--hypothesis-profile=long). No deadline: a draw of a new shape compiles.
_FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=4, derandomize=True, database=None, **_FUZZ)
settings.register_profile("smoke", max_examples=2, derandomize=True, database=None, **_FUZZ)
settings.register_profile("long", max_examples=400, **_FUZZ)
settings.load_profile("ci")


@pytest.fixture(scope="module")
def examples_compile_cache(tmp_path_factory):
    """A persistent XLA compilation cache shared by the example runs of the test session."""
    cache = tmp_path_factory.getbasetemp() / "xla-cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAX_COMPILATION_CACHE_DIR", str(cache))
        patch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        patch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
        yield
