"""Models by name: the registry's builders, and models rebuilt from weights files."""

import importlib
import os

from keras_lightnets import registry
from keras_lightnets.weights.h5 import WeightsMismatchError, read_record


def get_builder(name):
    """The Keras builder function of an arch (`"mobilenet_v2"`) or a builder
    name (`"MobileNetV2"`)."""
    if name in registry.SPECS:
        spec = registry.SPECS[name]
        module, function = spec.builder_module, spec.builder_name
    else:
        module, function = registry.builder_modules().get(name), name
        if module is None:
            raise ValueError(f"unknown model {name!r}; choose from {', '.join(registry.SPECS)}")
    return getattr(importlib.import_module(module), function)


def weights_info(path):
    """The record a keras-lightnets weights file carries: arch, builder and its
    arguments, preprocessing, and the source checkpoint."""
    return read_record(path)


def from_h5(path, **overrides):
    """Builds the model a keras-lightnets weights file was made for, and loads it.

    Args:
        path: a file written by `python -m convert` (or by fine-tuning).
        **overrides: builder arguments to change, e.g.
            `classifier_activation=None` for logits.
    """
    info = read_record(path)
    try:
        builder = get_builder(info.get("builder"))
    except (ValueError, TypeError):
        raise WeightsMismatchError(f"{path} is for an unknown model {info.get('builder')!r}") from None
    return builder(weights=os.fspath(path), **{**info["builder_kwargs"], **overrides})


def pretrained_file(name):
    """The Keras weights file of a pretrained source (`keras_lightnets.weights.pretrained.SOURCES`)
    or of an arch's first one, converted on first use."""
    from keras_lightnets.weights import pretrained

    if name in registry.SPECS and registry.SPECS[name].pretrained:
        name = registry.SPECS[name].pretrained[0]
    if name not in pretrained.SOURCES:
        available = [arch for arch, spec in registry.SPECS.items() if spec.pretrained]
        raise ValueError(f"no pretrained weights for {name!r}; available: {', '.join(available)}")
    return pretrained.pretrained_weights(name, get_builder(pretrained.SOURCES[name].arch))
