"""bcejax: binary cross-entropy losses and their relatives for JAX.

The public API is flat: every loss, helper and the checked mode live here.
The callables are in :mod:`bcejax.losses`.
"""

from bcejax import losses
from bcejax.binary import (
    binary_cross_entropy,
    binary_focal_loss,
    sigmoid_asymmetric_loss,
    sigmoid_binary_cross_entropy,
    sigmoid_focal_loss,
    sigmoid_poly1_loss,
)
from bcejax.checks import InvalidInputError, checked
from bcejax.reduction import reduce_loss
from bcejax.weighting import (
    class_balanced_weights,
    inverse_frequency_weights,
    pos_weight_from_labels,
    smooth_binary_labels,
)

__version__ = "0.1.0"

__all__ = [
    "InvalidInputError",
    "__version__",
    "binary_cross_entropy",
    "binary_focal_loss",
    "checked",
    "class_balanced_weights",
    "inverse_frequency_weights",
    "losses",
    "pos_weight_from_labels",
    "reduce_loss",
    "sigmoid_asymmetric_loss",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "sigmoid_poly1_loss",
    "smooth_binary_labels",
]
