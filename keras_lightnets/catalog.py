"""Models by name: the registry's builders, and models rebuilt from weights files."""

import importlib
import os

from keras_lightnets import registry
from keras_lightnets.errors import UsageError
from keras_lightnets.weights.h5 import WeightsMismatchError, read_record

DEFAULT_MODEL = "mobilenet_v2"
# Pretrained names that are a weights source rather than an arch.
MODEL_ALIASES = {
    "mobilenet": "keras_mobilenet",
    "mobilenet_v2_keras": "keras_mobilenet_v2",
    "mobilenet_v3_large_keras": "keras_mobilenet_v3_large",
    "mobilenet_v3_small_keras": "keras_mobilenet_v3_small",
}


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


def pretrained_source(name):
    """The pretrained source (`keras_lightnets.weights.pretrained.SOURCES`) that
    a model name stands for: an arch (its first source), an alias or a source."""
    from keras_lightnets.weights import pretrained

    source_name = MODEL_ALIASES.get(name, name)
    if source_name in registry.SPECS and registry.SPECS[source_name].pretrained:
        source_name = registry.SPECS[source_name].pretrained[0]
    if source_name not in pretrained.SOURCES:
        available = [arch for arch, spec in registry.SPECS.items() if spec.pretrained] + list(MODEL_ALIASES)
        raise UsageError(
            f"no pretrained weights for {name!r} (available: {', '.join(available)}); "
            "convert a checkpoint with `lightnets convert` and pass --weights"
        )
    return source_name


def pretrained_file(name):
    """The Keras weights file of a pretrained model name (see `pretrained_source`),
    converted or fetched on first use."""
    from keras_lightnets.weights import pretrained

    source_name = pretrained_source(name)
    return pretrained.pretrained_weights(source_name, get_builder(pretrained.SOURCES[source_name].arch))


def convert_checkpoint(path, out, arch="auto", **options):
    """Converts a PyTorch checkpoint (or a snapshot folder) into a Keras weights
    file with `arch`'s builder (`"auto"`: the arch the checkpoint is).

        from keras_lightnets import convert_checkpoint
        print(convert_checkpoint("mobilenet_v2.pth", "mobilenet_v2.h5"))

    See `keras_lightnets.conversion.pipeline.convert_checkpoint` for the options.
    """
    from keras_lightnets.conversion.pipeline import convert_checkpoint as convert

    options.setdefault("builder_for", get_builder)
    return convert(path, out, arch, **options)
