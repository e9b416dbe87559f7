"""timm's TF ports `tf_mobilenetv3_*` (TF "same" padding, BN eps 1e-3).

`tf_mobilenetv3_large/small_075/100` and `_minimal_100`: the keys of timm's
PyTorch-trained MobileNetV3s (`timm`), with which they share their shapes
except for the minimal models (3x3 kernels, ReLU, no squeeze-excite). The Keras model takes their [-1, 1] input as it is
(`include_preprocessing=False`).
"""

from keras_lightnets.conversion.namings import timm_common
from keras_lightnets.conversion.namings.mobilenet_v3.timm import FAMILY, layer_map  # noqa: F401

NAME = "timm_tf"
detect, builder_kwargs, preprocessing, reference = timm_common.naming_functions(FAMILY, tf=True)
