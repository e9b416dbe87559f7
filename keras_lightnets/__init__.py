"""keras-lightnets: light vision networks for Keras 3, and their PyTorch weights.

    from keras_lightnets import MobileNetV2, EfficientNetLite0, decode_predictions

Names are imported on first use, so that importing a submodule (the image
reader, the command-line helpers) does not start TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "MobileNet": "keras_lightnets.mobilenet",
    "MobileNetV2": "keras_lightnets.mobilenet_v2",
    "DeepLabV3Plus": "keras_lightnets.deeplab",
    "EfficientNetLite": "keras_lightnets.efficientnet_lite",
    "EfficientNetLite0": "keras_lightnets.efficientnet_lite",
    "EfficientNetLite1": "keras_lightnets.efficientnet_lite",
    "EfficientNetLite2": "keras_lightnets.efficientnet_lite",
    "EfficientNetLite3": "keras_lightnets.efficientnet_lite",
    "EfficientNetLite4": "keras_lightnets.efficientnet_lite",
    "SqueezeNet": "keras_lightnets.squeezenet",
    "ShuffleNetV1": "keras_lightnets.shufflenet",
    "ShuffleNetV2": "keras_lightnets.shufflenet",
    "decode_predictions": "keras_lightnets.imagenet",
    "preprocess_input": "keras_lightnets.imagenet",
    "from_h5": "keras_lightnets.weights",
    "weights_info": "keras_lightnets.weights",
}

# Model builders by name, for `from_h5` and the converter.
MODEL_NAMES = (
    "MobileNet",
    "MobileNetV2",
    "EfficientNetLite0",
    "EfficientNetLite1",
    "EfficientNetLite2",
    "EfficientNetLite3",
    "EfficientNetLite4",
    "SqueezeNet",
    "ShuffleNetV1",
    "ShuffleNetV2",
    "DeepLabV3Plus",
)

__all__ = sorted([*_EXPORTS, "MODELS"])


def __getattr__(name):
    if name == "MODELS":
        return {model: __getattr__(model) for model in MODEL_NAMES}
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_lightnets' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return __all__
