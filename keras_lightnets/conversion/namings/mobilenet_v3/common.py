"""What the torchvision MobileNetV3 namings share: the width read from the
tensors, the backbone's rows, and the parity reference's loading."""

import re

import numpy as np

from keras_lightnets.models.tables import MOBILENET_V3_BLOCKS, mobilenet_v3_plan

# torchvision's `width_mult` is any float: the common ones first, then a
# grid; any width giving the checkpoint's channels builds the same model.
WIDTHS = (1.0, 0.75, 0.5, 0.35, 0.25, 1.25, 1.5, 2.0) + tuple(k / 100 for k in range(5, 401))

# A block's modules in order, each present when the Keras block has its
# first layer: (that layer's suffix, [(torch sub-module, Keras layer suffix)]).
BLOCK_MODULES = (
    ("expand", (("0", "expand"), ("1", "expand_bn"))),
    ("depthwise", (("0", "depthwise"), ("1", "depthwise_bn"))),
    ("squeeze_excite_conv", (("fc1", "squeeze_excite_conv"), ("fc2", "squeeze_excite_conv_1"))),
    ("project", (("0", "project"), ("1", "project_bn"))),
)
_BLOCK_DEPTHWISE = re.compile(r"^(expanded_conv_(\d+_)?)depthwise$")


def _block_channels(tensors, module):
    """`(kernel, hidden, out, squeeze or None)` of torchvision block `module` (`features.3`)."""
    parts = sorted({int(k.split(".")[3]) for k in tensors if k.startswith(f"{module}.block.")})
    convs = [tensors[f"{module}.block.{j}.0.weight"] for j in parts if f"{module}.block.{j}.0.weight" in tensors]
    project, depthwise = convs[-1], next(weight for weight in convs if weight.shape[1] == 1)
    squeeze = next((tensors[f"{module}.block.{j}.fc1.weight"].shape[0] for j in parts
                    if f"{module}.block.{j}.fc1.weight" in tensors), None)
    return depthwise.shape[-1], project.shape[1], project.shape[0], squeeze


def infer_width(size, tensors, prefix, head=None):
    """The `width_mult` of a torchvision MobileNetV3 `size` whose `features`
    are `{prefix}.N` (and classifier hidden layer `head`, a tensor name)."""
    count = len(MOBILENET_V3_BLOCKS[size])
    blocks = sorted({int(k.split(".")[1]) for k in tensors if k.startswith(f"{prefix}.") and ".block." in k})
    if blocks != list(range(1, count + 1)):
        raise ValueError(f"its {prefix} hold {len(blocks)} blocks, MobileNetV3-{size.title()} has {count}")
    observed = (
        tensors[f"{prefix}.0.0.weight"].shape[0],
        [_block_channels(tensors, f"{prefix}.{i}") for i in blocks],
        tensors[f"{prefix}.{count + 1}.0.weight"].shape[0],
        tensors[head].shape[0] if head else None,
    )
    for alpha in WIDTHS:
        stem, plan, last_conv, last_point = mobilenet_v3_plan(size, alpha, torchvision=True)
        predicted = (stem, [(k, hidden, out, squeeze) for k, hidden, out, _, _, squeeze, _ in plan], last_conv,
                     last_point if head else None)
        if predicted == observed:
            return alpha
    raise ValueError(f"its channels fit no MobileNetV3-{size.title()} width_mult (0.05 to 4)")


def check_segmentation_backbone(tensors):
    """Raises ValueError unless `backbone.N` is torchvision's MobileNetV3-Large of width 1."""
    width = infer_width("large", tensors, "backbone")
    if width != 1.0:
        raise ValueError(f"its backbone has width_mult {width}; torchvision's segmenters have 1.0")


def backbone_rows(model, prefix):
    """Rows of the stem, blocks and last conv (torchvision's `features`, as `{prefix}.N`)."""
    names = {layer.name for layer in model.layers}
    blocks = [match.group(1) for layer in model.layers if (match := _BLOCK_DEPTHWISE.match(layer.name))]
    rows = [(f"{prefix}.0.0", "conv"), (f"{prefix}.0.1", "conv_bn")]
    for index, block in enumerate(blocks, start=1):
        present = [parts for first, parts in BLOCK_MODULES if block + first in names]
        rows += [
            (f"{prefix}.{index}.block.{j}.{torch_part}", block + keras_part)
            for j, parts in enumerate(present)
            for torch_part, keras_part in parts
        ]
    last = len(blocks) + 1
    return rows + [(f"{prefix}.{last}.0", "conv_1"), (f"{prefix}.{last}.1", "conv_1_bn")]


def load_reference(module, tensors):
    """`module` (a torch reference) holding `tensors`, in eval mode; a
    ValueError when their keys differ (BatchNorm's `num_batches_tracked` aside)."""
    import torch

    state = {key: torch.from_numpy(np.array(value)) for key, value in tensors.items()}
    result = module.load_state_dict(state, strict=False)
    wrong = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")] + list(result.unexpected_keys)
    if wrong:
        raise ValueError(f"the reference {type(module).__name__} does not take this checkpoint ('{wrong[0]}')")
    return module.eval()
