"""MobileNetV2, with keras.applications' API and layer names."""

import keras
from keras import layers

from keras_lightnets import blocks
from keras_lightnets.weights import load_weights

# (expansion t, output channels c, repeats n, first stride s), as in the paper.
MOBILENET_V2_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


# How the DeepLab MobileNetV2 backbones turn strides into dilation once the
# output stride is reached: "vainf" dilates a stage's blocks after its first
# (which keeps the previous rate), "jfzhang95" gives the whole stage the
# previous rate and raises it for the next stage.
DILATION_SCHEDULES = ("vainf", "jfzhang95")


def mobilenet_v2_strides(output_stride=None, schedule="vainf"):
    """`[(stride, dilation)]` of the 17 inverted residual blocks.

    `output_stride=None` is the classification network (dilation 1);
    8 or 16 replaces the strides past that stride with dilation as the
    DeepLab code of `schedule` (see `DILATION_SCHEDULES`) does.
    """
    if schedule not in DILATION_SCHEDULES:
        raise ValueError(f"schedule must be one of {DILATION_SCHEDULES}, got {schedule!r}")
    plan, current_stride, dilation = [], 2, 1
    for _, _, repeats, stride in MOBILENET_V2_BLOCKS:
        first = rest = dilation
        if current_stride == output_stride:
            dilation *= stride
            stride = 1
            rest = dilation if schedule == "vainf" else first
        else:
            current_stride *= stride
        plan += [(stride, first)] + [(1, rest)] * (repeats - 1)
    return plan


def mobilenet_v2_pyramid(block_outputs):
    """The last block output at each nominal stride 4, 8, 16, 32 (keras-hub's P2..P5)."""
    levels, stride, block_id = {}, 2, 0
    for _, _, repeats, first_stride in MOBILENET_V2_BLOCKS:
        stride *= first_stride
        block_id += repeats
        levels[f"P{stride.bit_length() - 1}"] = block_outputs[block_id - 1]
    return {level: levels[level] for level in ("P2", "P3", "P4", "P5")}


def mobilenet_v2_features(
    x,
    alpha=1.0,
    style="tf",
    expand_first_block=False,
    strides=None,
    pad_block_inputs=False,
    stem_padding=True,
):
    """The MobileNetV2 body from the stem to the last inverted residual block.

    Returns the last block's output and the list of every block's output
    (index = keras.applications block id), for heads that tap features.
    `expand_first_block=True` gives block 0 a 1x1 expansion conv even though
    t = 1, as some PyTorch re-implementations do.

    DeepLab backbones: `strides` is `mobilenet_v2_strides(...)` (per-block
    stride and dilation); `pad_block_inputs` pads each block's input before
    its expansion conv (VainF, jfzhang95); `stem_padding=False` gives the
    3x3/2 stem no padding at all (VainF: 512 → 255).
    """
    strides = strides or mobilenet_v2_strides()
    x = blocks._conv_block(
        x,
        blocks.make_divisible(32 * alpha, 8),
        strides=2,
        style=style,
        bn=blocks.BN_TF_V2,
        name="Conv1",
        bn_name="bn_Conv1",
        act_name="Conv1_relu",
        padding=None if stem_padding else "valid",
    )
    block_outputs = []
    for expansion, channels, repeats, _ in MOBILENET_V2_BLOCKS:
        filters = blocks.make_divisible(int(channels * alpha), 8)
        for _ in range(repeats):
            block_id = len(block_outputs)
            stride, dilation = strides[block_id]
            x = blocks._inverted_res_block(
                x,
                expansion,
                filters,
                stride=stride,
                block_id=block_id,
                style=style,
                dilation=dilation,
                expand=expansion != 1 or expand_first_block,
                pad_input=pad_block_inputs,
            )
            block_outputs.append(x)
    return x, block_outputs


def MobileNetV2(
    input_shape=None,
    alpha=1.0,
    include_top=True,
    weights=None,
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    style="tf",
    name=None,
    expand_first_block=False,
):
    """Instantiates the MobileNetV2 architecture (Sandler et al., 2018).

    Same arguments, layer names and weight order as
    `keras.applications.MobileNetV2`, so its weight files load with
    `weights=PATH`.

    Args:
        input_shape: optional shape tuple, `(224, 224, 3)` by default with the
            classifier, any size >= 32 without it.
        alpha: width multiplier (0.35, 0.5, 0.75, 1.0, 1.3, 1.4, or any
            positive value).
        include_top: whether to include the classifier.
        weights: `None` or the path of a weights file (.h5).
        input_tensor: optional Keras tensor to use as the model input.
        pooling: `None`, `"avg"` or `"max"` when `include_top=False`.
        classes: number of classes of the classifier.
        classifier_activation: activation of the classifier, `None` for logits.
        style: `"tf"` for TensorFlow-trained weights, `"torch"` for weights
            converted from PyTorch (symmetric stride-2 padding, BN eps 1e-5,
            dropout 0.2 before the classifier as in torchvision).
        name: model name, `mobilenetv2_{alpha}_{rows}` by default.
        expand_first_block: give block 0 an expansion conv (t = 1), as the
            `c1`/`bottleneck1..7` PyTorch re-implementation does.

    Returns:
        A `keras.Model`.
    """
    blocks.check_style(style)
    img_input, inputs = blocks.image_input(input_shape, input_tensor, include_top)
    x, _ = mobilenet_v2_features(img_input, alpha, style, expand_first_block)
    last_filters = blocks.make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = blocks._conv_block(
        x,
        last_filters,
        kernel_size=1,
        style=style,
        bn=blocks.BN_TF_V2,
        name="Conv_1",
        bn_name="Conv_1_bn",
        act_name="out_relu",
    )
    if include_top:
        x = layers.GlobalAveragePooling2D()(x)
        if style == "torch":
            x = layers.Dropout(0.2, name="dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = blocks.pooling_head(x, pooling)
    rows = img_input.shape[1]
    model = keras.Model(inputs, x, name=name or f"mobilenetv2_{alpha:0.2f}_{rows}")
    load_weights(model, weights)
    return model
