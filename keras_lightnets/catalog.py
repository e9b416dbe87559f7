"""Models by name: the registry's builders, and models rebuilt from weights files."""

import importlib
import inspect
import os

from keras_lightnets import registry
from keras_lightnets.errors import UsageError
from keras_lightnets.files import safe_text
from keras_lightnets.weights.h5 import WeightsMismatchError, read_record
from keras_lightnets.weights.record import RecordError, check_signature

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
    arguments, preprocessing, and the source checkpoint (checked by
    `keras_lightnets.weights.record.check_record`)."""
    return read_record(path)


def record_builder(path, record):
    """The builder of a checked record, after checking that it takes every
    argument the record gives it (its own signature)."""
    builder = get_builder(record["builder"])
    try:
        check_signature(record["builder_kwargs"], inspect.signature(builder).parameters, record["builder"])
    except RecordError as err:
        raise WeightsMismatchError(f"{safe_text(path, 200)}: invalid keras-lightnets record: {err}") from None
    return builder


def from_h5(path, include_preprocessing=False, **overrides):
    """Builds the model a keras-lightnets weights file was made for, and loads it.

    Args:
        path: a file written by `python -m convert` (or by fine-tuning).
        include_preprocessing: `True` for a model that takes RGB pixels
            0-255 and applies the file's own preprocessing (its record's
            `preprocessing`) in a first layer.
        **overrides: builder arguments to change, e.g.
            `classifier_activation=None` for logits, `feature_extractor=True`.

    Raises:
        WeightsMismatchError: a file that is no keras-lightnets weights file,
            whose record is invalid or does not fit the model (one line).
    """
    info = read_record(path)
    builder = record_builder(path, info)
    if include_preprocessing is True:
        include_preprocessing = info["preprocessing"]
    if include_preprocessing:
        overrides["include_preprocessing"] = include_preprocessing
    try:
        return builder(weights=os.fspath(path), **{**info["builder_kwargs"], **overrides})
    except WeightsMismatchError:
        raise
    except (ValueError, TypeError) as err:  # arguments the schema allows but the builder refuses
        raise WeightsMismatchError(
            f"{safe_text(path, 200)}: {info['builder']} refuses its arguments ({safe_text(err, 150)})"
        ) from None


def pretrained_source(name):
    """The pretrained source (`keras_lightnets.weights.sources.SOURCES`) that
    a model name stands for: an arch (its first source), an alias or a source."""
    from keras_lightnets.weights import sources
    source_name = MODEL_ALIASES.get(name, name)
    if source_name in registry.SPECS and registry.SPECS[source_name].pretrained:
        source_name = registry.SPECS[source_name].pretrained[0]
    if source_name not in sources.SOURCES:
        available = [arch for arch, spec in registry.SPECS.items() if spec.pretrained] + list(MODEL_ALIASES)
        raise UsageError(
            f"no pretrained weights for {name!r} (available: {', '.join(available)}); "
            "convert a checkpoint with `lightnets convert` and pass --weights"
        )
    return source_name


def pretrained_file(name):
    """The Keras weights file of a pretrained model name (see `pretrained_source`),
    converted or fetched on first use."""
    from keras_lightnets.weights import pretrained, sources

    source_name = pretrained_source(name)
    return pretrained.pretrained_weights(source_name, get_builder(sources.SOURCES[source_name].arch))


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
