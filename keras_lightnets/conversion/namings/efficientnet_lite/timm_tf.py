"""timm's TF ports `tf_efficientnet_lite0..4` (TF "same" padding, BN eps 1e-3).

The keys and shapes of timm's `efficientnet_lite*` (`timm`), which they
share: only the padding and BN epsilon differ.
"""

from keras_lightnets.conversion.namings import timm_common
from keras_lightnets.conversion.namings.efficientnet_lite.timm import FAMILY, layer_map  # noqa: F401

NAME = "timm_tf"
detect, builder_kwargs, preprocessing, reference = timm_common.naming_functions(FAMILY, tf=True)
