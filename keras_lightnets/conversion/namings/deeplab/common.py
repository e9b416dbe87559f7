"""What the DeepLabV3+ namings share: backbone tables and configuration reading."""

import re

_RESNET_LAYER = re.compile(r"conv(\d)_block(\d+)_(\d)_(conv|bn)$")
RESNET_DEPTHS = {6: 50, 23: 101}  # blocks in layer3 → depth


def resnet_rows(model, prefix):
    """torchvision ResNet rows (`conv1`, `bn1`, `layerN.B.convI/bnI/downsample.0/1`)."""
    rows = [(f"{prefix}.conv1", "conv1_conv"), (f"{prefix}.bn1", "conv1_bn")]
    for layer in model.layers:
        match = _RESNET_LAYER.match(layer.name)
        if match:
            stage, block, index, kind = match.groups()
            module = f"{prefix}.layer{int(stage) - 1}.{int(block) - 1}"
            if index == "0":
                module += ".downsample." + ("0" if kind == "conv" else "1")
            else:
                module += f".{kind}{index}"
            rows.append((module, layer.name))
    return rows


def aspp_rows(modules):
    """`modules`: torch (conv, bn) prefixes of branches 0-3, pooling, projection."""
    names = ["aspp_conv0", "aspp_conv1", "aspp_conv2", "aspp_conv3", "aspp_pool_conv", "aspp_project"]
    rows = []
    for (conv, bn), name in zip(modules, names):
        rows += [(conv, name), (bn, f"{name}_bn")]
    return rows


def backbone_kwargs(spec, tensors, resnet_prefix):
    """`backbone` for the arch, checked against the checkpoint's ResNet depth
    (and against a ResNet in the checkpoint when the arch's backbone is not one)."""
    backbone = spec.builder_kwargs["backbone"]
    if not backbone.startswith("resnet"):
        if f"{resnet_prefix}.layer1.0.conv1.weight" in tensors:
            raise ValueError(f"the checkpoint's backbone is a ResNet, not {backbone}")
    else:
        blocks = {int(k.split(".")[2]) for k in tensors if k.startswith(f"{resnet_prefix}.layer3.")}
        depth = RESNET_DEPTHS.get(len(blocks))
        if f"resnet{depth}" != backbone:
            raise ValueError(
                f"the checkpoint's layer3 has {len(blocks)} blocks (ResNet-{depth or '?'}), not {backbone}"
            )
    return {"backbone": backbone}
