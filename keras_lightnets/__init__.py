"""keras-lightnets: light vision networks for Keras 3, and their PyTorch weights."""

from keras_lightnets.efficientnet_lite import (
    EfficientNetLite,
    EfficientNetLite0,
    EfficientNetLite1,
    EfficientNetLite2,
    EfficientNetLite3,
    EfficientNetLite4,
)
from keras_lightnets.imagenet import decode_predictions, preprocess_input
from keras_lightnets.mobilenet import MobileNet
from keras_lightnets.mobilenet_v2 import MobileNetV2
from keras_lightnets.weights import from_h5, weights_info

__version__ = "0.1.0"

# Model builders by name, for `from_h5`, the demo and the converter.
MODELS = {
    builder.__name__: builder
    for builder in (
        MobileNet,
        MobileNetV2,
        EfficientNetLite0,
        EfficientNetLite1,
        EfficientNetLite2,
        EfficientNetLite3,
        EfficientNetLite4,
    )
}

__all__ = [
    "EfficientNetLite",
    *MODELS,
    "MODELS",
    "decode_predictions",
    "from_h5",
    "preprocess_input",
    "weights_info",
]
