"""torchvision.models.squeezenet naming (squeezenet1_0, squeezenet1_1).

`features` is a Sequential: `features.0` conv1, then ReLU, max pools and
Fire modules (`squeeze`, `expand1x1`, `expand3x3`, each a conv with bias)
at indices that differ between the versions; `classifier.1` is the 1x1
conv classifier (`conv10`).
"""

NAME = "torchvision"
VERSION_BY_STEM_KERNEL = {7: "1_0", 3: "1_1"}
# Fire module: torchvision conv → Keras layer suffix
FIRE_CONVS = (("squeeze", "squeeze1x1"), ("expand1x1", "expand1x1"), ("expand3x3", "expand3x3"))


def detect(keys):
    return "features.0.weight" in keys and "classifier.1.weight" in keys and any(
        k.endswith(".squeeze.weight") for k in keys
    )


def builder_kwargs(spec, tensors):
    kernel = tensors["features.0.weight"].shape[-1]
    version = VERSION_BY_STEM_KERNEL.get(kernel)
    if version != spec.builder_kwargs["version"]:
        raise ValueError(
            f"its conv1 is {kernel}x{kernel}: "
            + (f"a squeezenet{version} checkpoint, not {spec.name}" if version else "not a SqueezeNet")
        )
    return {"classes": tensors["classifier.1.weight"].shape[0]}


def _torch_fires(keys):
    """Indices in `features` of the Fire modules, in order."""
    return sorted({int(k.split(".")[1]) for k in keys if k.startswith("features.") and ".squeeze." in k})


def layer_map(model, keys):
    rows = [("features.0", "conv1")]
    keras_fires = [l.name[: -len("_squeeze1x1")] for l in model.layers if l.name.endswith("_squeeze1x1")]
    for index, prefix in zip(_torch_fires(keys), keras_fires):
        rows += [(f"features.{index}.{conv}", f"{prefix}_{suffix}") for conv, suffix in FIRE_CONVS]
    rows.append(("classifier.1", "conv10"))
    return rows


def reference(spec, builder_kwargs, tensors):
    """torchvision's `squeezenet1_0|1` holding the checkpoint (torchvision's own where installed)."""
    from keras_lightnets.conversion.references.common import holding, library_or_shipped

    version, classes = builder_kwargs["version"], builder_kwargs["classes"]

    def library():
        from torchvision.models import squeezenet

        return squeezenet.SqueezeNet(version, num_classes=classes)

    def shipped():
        from keras_lightnets.conversion.references.torchvision.squeezenet import (
            SqueezeNet,
        )

        return SqueezeNet(version, classes)

    return holding(library_or_shipped(library, shipped), tensors)
