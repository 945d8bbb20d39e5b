"""Prints the Python and the versions of the packages a CI leg tested, on one line."""

import platform
from importlib.metadata import version

NAMES = ["jax", "jaxlib", "optax", "flax", "orbax-checkpoint", "chex", "numpy"]
found = ", ".join(f"{name} {version(name)}" for name in NAMES)
print(f"== versions: Python {platform.python_version()}, {found}")
