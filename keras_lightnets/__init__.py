"""keras-lightnets: light vision networks for Keras 3, and their PyTorch weights.

    from keras_lightnets import MobileNetV2, EfficientNetLite0, decode_predictions

The model builders are those of `keras_lightnets.registry`. Names are
imported on first use, so that importing a submodule (the image reader, the
command-line helpers) does not start TensorFlow.
"""

import importlib

from keras_lightnets import registry

__version__ = "0.3.0"

_EXPORTS = {
    **registry.builder_modules(),
    "decode_predictions": "keras_lightnets.labels",
    "preprocess_input": "keras_lightnets.preprocessing",
    "from_h5": "keras_lightnets.catalog",
    "weights_info": "keras_lightnets.catalog",
    "get_builder": "keras_lightnets.catalog",
    "convert_checkpoint": "keras_lightnets.catalog",
    "list_models": "keras_lightnets.catalog",
    "list_weights": "keras_lightnets.catalog",
    "get_model": "keras_lightnets.catalog",
}

# Model builders by name.
MODEL_NAMES = tuple(name for name in registry.builder_modules() if name not in registry.FAMILY_BUILDERS)

__all__ = sorted([*_EXPORTS, "MODELS", "SPECS"])


def __getattr__(name):
    if name == "MODELS":
        return {model: __getattr__(model) for model in MODEL_NAMES}
    if name == "SPECS":
        return registry.SPECS
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_lightnets' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return __all__
