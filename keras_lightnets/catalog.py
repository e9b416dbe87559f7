"""Models by name: the registry's builders, and models rebuilt from weights files."""

import fnmatch
import importlib
import inspect
import os

from keras_lightnets import registry
from keras_lightnets.errors import UsageError
from keras_lightnets.files import safe_text
from keras_lightnets.weights.h5 import WeightsMismatchError, open_weights, read_record
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


# ------------------------------------------------------------- weights as named values


def list_models(pattern="*", pretrained=False):
    """The registry's model names (archs), e.g. `"mobilenet_v2"`, for `get_model`.

    Args:
        pattern: a shell-style pattern the names must match (`"mobilenet*"`).
        pretrained: only the models with pretrained weights (`list_weights`).
    """
    return [name for name, spec in registry.SPECS.items()
            if fnmatch.fnmatchcase(name, pattern) and (spec.pretrained or not pretrained)]


class WeightsInfo(dict):
    """One pretrained weights tag (`list_weights`): a dict whose keys are also attributes (`info.sha256`)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _source_info(tag, default, class_names):
    from keras_lightnets.weights.sources import (
        HASHES,
        KERAS_URL,
        SOURCES,
        KerasFile,
        TorchvisionCheckpoint,
    )

    source = SOURCES[tag]
    if isinstance(source, KerasFile):
        files = source.file_names()
        where = f"keras.applications ({KERAS_URL}{source.folder}/, {len(files)} files by alpha, size and top)"
        sha256 = None
        pinned = any(name in HASHES for name in files)
        hashes = "md5 as keras.applications pins them" if pinned else "none published; pinned at first download"
    else:
        if isinstance(source, TorchvisionCheckpoint):
            where = f"torchvision {source.url_file}" + (f", also in pip {source.pip_name}" if source.pip_name else "")
        else:
            where = f"pip {source.pip_name} ({source.file})"
        sha256 = source.sha256
        hashes = "sha256" if len(sha256) == 64 else "sha256 prefix, as torchvision pins it"
    return WeightsInfo({
        "tag": tag,
        "arch": source.arch,
        "default": default,
        "source": where,
        "sha256": sha256,
        "hashes": hashes,
        "builder_kwargs": dict(source.requires),
        "preprocessing": dict(source.preprocessing),
        "class_names": list(class_names),
        "top1": source.top1 or None,
        "license": source.license,
    })


def list_weights(name):
    """The pretrained weights of a model, each a dict: `tag` (what `weights=`
    takes), `arch`, `default` (what `get_model(name, weights="imagenet")`
    loads), `source`, `sha256` and `hashes` (how the files are pinned),
    `builder_kwargs` (the options the weights need), `preprocessing`, `class_names`, `top1` (as the source
    publishes it) and `license`.

    Args:
        name: a model name of `list_models()` or a builder name (`"MobileNetV2"`).
    """
    from keras_lightnets.labels import class_index

    spec = _spec(name)
    class_names = [label for _, label in class_index()]  # every pretrained source is ImageNet's 1000 classes
    return [_source_info(tag, i == 0, class_names) for i, tag in enumerate(spec.pretrained)]


def _spec(name):
    if name in registry.SPECS:
        return registry.SPECS[name]
    specs = registry.specs_for_builder(name)
    if len(specs) == 1:
        return specs[0]
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(registry.SPECS)}")


def get_model(name, weights=None, **kwargs):
    """A model by name, with pretrained weights by tag or a weights file.

        model = get_model("mobilenet_v2", weights="torchvision_mobilenet_v2")
        model = get_model("mobilenet_v2", weights="imagenet", style="torch")
        model = get_model("mobilenet_v2", weights="converted.h5")

    Args:
        name: a model name of `list_models()` (or a builder name).
        weights: `None`, `"imagenet"` (the first tag that fits the options),
            a tag of `list_weights(name)` (its name or the entry; its options
            are the defaults), or
            the path of a weights file (a keras-lightnets file is built with
            its record's options, as `from_h5`).
        **kwargs: builder arguments.
    """
    from keras_lightnets.weights.sources import SOURCES

    if isinstance(weights, WeightsInfo):
        weights = weights.tag
    spec = _spec(name)
    arguments = {**spec.builder_kwargs}
    tag = spec.pretrained[0] if weights == "imagenet" and spec.pretrained else weights
    if isinstance(tag, str) and tag in SOURCES:
        if tag not in spec.pretrained:
            raise ValueError(f"{tag!r} are not weights of {spec.name}; its tags: {', '.join(spec.pretrained) or 'none'}")
        source = SOURCES[tag]
        arguments.update(source.requires)
    elif isinstance(weights, (str, os.PathLike)) and weights != "imagenet":
        with open_weights(weights) as file:
            record = file.record()
        if record is not None:
            if record["arch"] != spec.name:
                raise WeightsMismatchError(f"{safe_text(weights, 200)} holds {record['arch']} weights, not {spec.name}'s")
            return from_h5(weights, **kwargs)
    return get_builder(spec.name)(weights=weights, **{**arguments, **kwargs})


def models_table():
    """The README's table of models and weights, in Markdown, from the registry (`tests/test_docs.py`)."""
    from keras_lightnets.weights.sources import SOURCES

    rows = ["| model | builder | task | input | pretrained tags (top-1 as published) | converts checkpoints of |",
            "|---|---|---|---|---|---|"]
    for spec in registry.SPECS.values():
        arguments = ", ".join(f"{k}={v!r}" for k, v in spec.builder_kwargs.items() if k not in ("style", "input_shape"))
        tags = "<br>".join(
            f"`{tag}`" + (f" ({SOURCES[tag].top1.split(' (')[0]})" if SOURCES[tag].top1 else "")
            for tag in spec.pretrained
        ) or "—"
        sources = ", ".join(dict.fromkeys(naming.split("/")[1] for naming in spec.namings))
        rows.append(f"| `{spec.name}` | `{spec.builder_name}({arguments})` | {spec.task} | "
                    f"{spec.input_size or 'any'} | {tags} | {sources} |")
    return "\n".join(rows) + "\n"
