"""What the timm namings share: the rows of timm's blocks, and the builder
arguments, eval transform and parity reference of the timm model a
checkpoint is (`timm_models`)."""

from keras_lightnets.conversion.namings import timm_models

# (timm module, Keras role of `keras_lightnets.layers.blocks.block_layer_names`) of each block kind
BLOCK_ROLES = {
    "ds": (("conv_dw", "depthwise"), ("bn1", "depthwise_bn"), ("conv_pw", "project"), ("bn2", "project_bn")),
    "ir": (("conv_pw", "expand"), ("bn1", "expand_bn"), ("conv_dw", "depthwise"), ("bn2", "depthwise_bn"),
           ("conv_pwl", "project"), ("bn3", "project_bn")),
}


def block_modules(keys):
    """`[(module prefix, kind)]` of the checkpoint's `blocks.{stage}.{index}`, in order."""
    found = {tuple(int(part) for part in key.split(".")[1:3]) for key in keys if key.startswith("blocks.")}
    kinds = {"conv_pwl": "ir", "conv": "cn"}
    return [
        (prefix, next((kind for module, kind in kinds.items() if f"{prefix}.{module}.weight" in keys), "ds"))
        for prefix in (f"blocks.{stage}.{index}" for stage, index in sorted(found))
    ]


def block_rows(keys, keras_names):
    """Layer-map rows of the `ds`, `dsa` and `ir` blocks (with their
    squeeze-excite); `keras_names`: `{role: Keras layer}` of each Keras
    block (`keras_lightnets.layers.blocks.block_layer_names`), in order."""
    modules = [(prefix, kind) for prefix, kind in block_modules(keys) if kind != "cn"]
    if len(modules) != len(keras_names):
        raise ValueError(f"the checkpoint has {len(modules)} blocks, the Keras model {len(keras_names)}")
    rows = []
    for (prefix, kind), names in zip(modules, keras_names):
        rows += [(f"{prefix}.{module}", names[role]) for module, role in BLOCK_ROLES[kind]]
        if f"{prefix}.se.conv_reduce.weight" in keys:
            squeeze = names["squeeze_excite"]
            rows += [(f"{prefix}.se.conv_reduce", f"{squeeze}_conv"), (f"{prefix}.se.conv_expand", f"{squeeze}_conv_1")]
    return rows


def naming_functions(family, tf=False):
    """`(detect, builder_kwargs, preprocessing, reference)` of the timm naming
    of `family` (of its `tf_` ports if `tf`)."""

    def detect(keys):
        return timm_models.has_keys_of(keys, family, tf)

    def builder_kwargs(spec, tensors):
        return timm_builder_kwargs(spec, tensors, family, tf)

    return detect, builder_kwargs, preprocessing, reference


def keras_blocks(model, scheme):
    """`block_layer_names` of each block of a Keras `model` whose every
    DepthwiseConv2D is a block's (`scheme`: their naming), in order."""
    from keras import (
        layers,  # here, so that `python -m convert --help` needs no TensorFlow
    )

    from keras_lightnets.layers.blocks import BLOCK_LAYER_SUFFIXES, block_layer_names

    suffix = BLOCK_LAYER_SUFFIXES[scheme]["depthwise"]
    return [
        block_layer_names(layer.name[: -len(suffix)], scheme)
        for layer in model.layers
        if isinstance(layer, layers.DepthwiseConv2D)
    ]


def layer_rows(keys, stem, keras_names, head, classifier):
    """A timm naming's `layer_map`: `conv_stem`, `bn1` to the Keras layers
    `stem`; the blocks (`block_rows`); the `head` rows; `classifier` (when
    the checkpoint has one) to the Keras layer `classifier`."""
    rows = [("conv_stem", stem[0]), ("bn1", stem[1]), *block_rows(keys, keras_names), *head]
    if "classifier.weight" in keys:
        rows.append(("classifier", classifier))
    return rows


def timm_builder_kwargs(spec, tensors, family, tf=False):
    """A timm naming's `builder_kwargs`: those of the timm model the checkpoint is."""
    models = timm_models.TIMM_MODELS
    names = [name for name in timm_models.identify(tensors, family) if models[name].tf == tf]
    if not names:
        known = [name for name in timm_models.supported_models() if (models[name].family, models[name].tf) == (family, tf)]
        raise ValueError(f"its shapes are those of no timm {family} model ({', '.join(known)})")
    arch, kwargs, _ = timm_models.timm_arch(names[0], timm_models.checkpoint_classes(tensors))
    if arch != spec.name:
        raise ValueError(f"the checkpoint is timm's {names[0]}: convert it with --arch {arch}")
    return kwargs


def preprocessing(spec, kwargs):
    """A timm naming's `preprocessing`: the default pretrained_cfg's eval transform."""
    name = timm_models.timm_name(spec.name, kwargs)
    return timm_models.preprocessing_from_timm_cfg(timm_models.default_pretrained_cfg(name))


def reference(spec, kwargs, tensors):
    """A timm naming's `reference`: timm's model (or its plain-torch copy) with the checkpoint's weights."""
    from keras_lightnets.conversion.references import timm

    return timm.load(timm_models.timm_name(spec.name, kwargs), tensors)
