"""Pretrained weights by name: `weights="imagenet"` or a tag, converted on first use.

`pretrained_weights(name)` gives the Keras weights file of a source of
`keras_lightnets.weights.sources.SOURCES`: a keras.applications file fetched
as Keras does, or a PyTorch checkpoint found (`keras_lightnets.weights.fetch`)
and converted once into the cache (`keras_lightnets.weights.cache`).
"""

import os

from keras_lightnets import registry
from keras_lightnets.weights.cache import (
    CACHE_VERSION,
    cache_dir,
    cached_weights,
    update_manifest,
)
from keras_lightnets.weights.fetch import (
    keras_file,
    locate_torchvision_checkpoint,
    pretrained_checkpoint,
    private_dir,
)
from keras_lightnets.weights.h5 import sha256_of
from keras_lightnets.weights.sources import SOURCES, KerasFile, TorchvisionCheckpoint


def pretrained_weights(name, build=None, before_build=None):
    """Path of the Keras weights for `SOURCES[name]`, made on first use.

    Args:
        name: a key of `SOURCES`.
        build: the Keras builder of the source's arch (a callable taking the
            builder arguments), e.g. `keras_lightnets.catalog.get_builder(arch)`;
            needed to convert a PyTorch checkpoint.
        before_build: passed to `convert_checkpoint`: called once the
            checkpoint is read and checked, before Keras builds the model
            (the demo imports TensorFlow there, quietly).

    A converted file is reused while its sha256 matches the manifest;
    otherwise (missing, truncated, edited) it is converted again. For a
    `KerasFile` source this is the file for alpha 1.0, 224, with top.
    """
    if name not in SOURCES:
        raise ValueError(f"no pretrained weights {name!r}; available: {', '.join(SOURCES)}")
    source = SOURCES[name]
    if isinstance(source, KerasFile):
        return keras_file(name, source.file_name())
    cached = cached_weights(name)
    if cached is not None:
        return cached
    folder = cache_dir()
    target = os.path.join(folder, f"{name}.h5")
    if build is None:
        raise ValueError(f"converting {name} needs the builder of {source.arch}")
    from keras_lightnets.conversion.pipeline import convert_checkpoint

    with private_dir(folder) as work:
        if isinstance(source, TorchvisionCheckpoint):
            checkpoint, where = locate_torchvision_checkpoint(source, work)
        else:
            checkpoint, where = pretrained_checkpoint(name), source.pip_name
        converted = os.path.join(work, f"{name}.h5")
        convert_checkpoint(
            checkpoint, converted, source.arch, build=build, force=True, check=False, before_build=before_build,
            preprocessing=getattr(source, "eval_transform", None),
        )
        digest = sha256_of(converted)
        source_digest = sha256_of(checkpoint)
        os.replace(converted, target)
    update_manifest(
        folder,
        name,
        {
            "file": os.path.basename(target),
            "cache_version": CACHE_VERSION,
            "sha256": digest,
            "source": where,
            "source_sha256": source_digest,
            "license": source.license,
        },
    )
    return target


def is_tag(weights):
    """Whether a builder's `weights` names pretrained weights (`"imagenet"` or a tag of `SOURCES`)."""
    return isinstance(weights, str) and (weights == "imagenet" or weights in SOURCES)


def _fits(required, options):
    return all(options.get(key, value) == value for key, value in required.items())


def resolve_tag(builder_name, weights, options, build):
    """`(path, by_name)` of the weights `weights` names for a model built by `builder_name` with `options`.

    Args:
        builder_name: the builder's name (`"MobileNetV2"`, `"EfficientNetLite"`).
        weights: `"imagenet"` (the first of the arch's sources that fits
            `options`) or a tag of `SOURCES`.
        options: the builder's arguments, with `rows` (the model's input height).
        build: the builder, to convert a PyTorch checkpoint on first use.

    Raises:
        ValueError: no such weights for this builder, or none fits `options` (one line).
    """
    specs = registry.specs_for_builder(builder_name, options)
    names = [name for spec in specs for name in spec.pretrained]
    label = "ImageNet" if weights == "imagenet" else repr(weights)
    models = ", ".join(spec.name for spec in specs) or builder_name
    if weights != "imagenet":
        if weights not in names:
            raise ValueError(f"{weights!r} are not weights of {builder_name}; its tags: {', '.join(names) or 'none'}")
        names = [weights]
    if not names:
        raise ValueError(f"no ImageNet weights for {models}; pass weights=PATH to a weights file")
    for name in names:
        source = SOURCES[name]
        if _fits(source.requires, options):
            if isinstance(source, KerasFile):
                return keras_file(name, source.select(**options)), source.by_name
            return pretrained_weights(name, build), True
    needs = "; ".join(f"{name} ({SOURCES[name].requires})" for name in names)
    raise ValueError(f"no {label} weights for {models} with these options; available: {needs}")
