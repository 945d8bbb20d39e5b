"""bcejax: binary cross-entropy losses and their relatives for JAX.

The public API is flat: every loss, helper and the checked mode live here.
The callables are in :mod:`bcejax.losses`, the metrics in :mod:`bcejax.metrics`
and the calibration tools in :mod:`bcejax.calibration`.
"""

from bcejax import calibration, losses, metrics
from bcejax.batch import ohem_reduce, sigmoid_ghm_loss, soft_fbeta_loss
from bcejax.binary import (
    binary_cross_entropy,
    binary_focal_loss,
    sigmoid_asymmetric_loss,
    sigmoid_binary_cross_entropy,
    sigmoid_focal_loss,
    sigmoid_poly1_loss,
)
from bcejax.checks import InvalidInputError, checked
from bcejax.multiclass import (
    hinge_loss,
    poly_loss_cross_entropy,
    softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels,
    softmax_focal_loss,
)
from bcejax.reduction import reduce_loss
from bcejax.scale import (
    sigmoid_binary_cross_entropy_with_linear,
    sigmoid_contrastive_loss,
    softmax_cross_entropy_with_linear,
)
from bcejax.segmentation import (
    dice_loss,
    jaccard_loss,
    lovasz_hinge,
    sigmoid_bce_dice_loss,
    tversky_loss,
)
from bcejax.weighting import (
    class_balanced_weights,
    inverse_frequency_weights,
    pos_weight_from_labels,
    smooth_binary_labels,
)

#: The version of this package (PEP 440).
__version__ = "0.1.0"

__all__ = [
    "InvalidInputError",
    "__version__",
    "binary_cross_entropy",
    "binary_focal_loss",
    "calibration",
    "checked",
    "class_balanced_weights",
    "dice_loss",
    "hinge_loss",
    "inverse_frequency_weights",
    "jaccard_loss",
    "losses",
    "lovasz_hinge",
    "metrics",
    "ohem_reduce",
    "poly_loss_cross_entropy",
    "pos_weight_from_labels",
    "reduce_loss",
    "sigmoid_asymmetric_loss",
    "sigmoid_bce_dice_loss",
    "sigmoid_binary_cross_entropy",
    "sigmoid_binary_cross_entropy_with_linear",
    "sigmoid_contrastive_loss",
    "sigmoid_focal_loss",
    "sigmoid_ghm_loss",
    "sigmoid_poly1_loss",
    "smooth_binary_labels",
    "soft_fbeta_loss",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "softmax_cross_entropy_with_linear",
    "softmax_focal_loss",
    "tversky_loss",
]
