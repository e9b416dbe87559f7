"""SqueezeNet 1.0 and 1.1 (Iandola et al., 2016), as torchvision builds them."""

from keras import layers

from keras_lightnets.layers import blocks
from keras_lightnets.layers.conventions import check_style
from keras_lightnets.layers.custom import torch_max_pool
from keras_lightnets.models import common as builders
from keras_lightnets.models.tables import FIRE_MODULES, SQUEEZENET_VERSIONS


@builders.documented(
    "Instantiates SqueezeNet 1.0 or 1.1, layer for layer as torchvision's.\n\nconv1 (stride 2, no padding) → ReLU, Fire modules fire2..fire9 (no\nBatchNorm) with 3x3/2 max pools in PyTorch's ceil mode, and a\nconvolutional classifier: dropout 0.5 → 1x1 conv `conv10` (with bias) →\nReLU → global average. Layer names follow the Caffe model\n(`conv1`, `fire2_squeeze1x1`, ..., `conv10`).",
    {
        "version": '`"1_0"` or `"1_1"` (2.4x less computation, same accuracy).',
        "classifier_activation": "activation applied to the pooled class scores (layer `predictions`), `None` for torchvision's output.",
        "style": '`"torch"` or `"tf"`; SqueezeNet has neither BatchNorm nor padded strided convolutions, so both build the same model.',
        "name": 'model name, `squeezenet{version}` by default.',
    },
)
@builders.model_options("squeezenet{version}")
@builders.loads_without_random_values
def SqueezeNet(version="1_0", input_shape=None, include_top=True, weights=None, input_tensor=None,
               pooling=None, classes=1000, classifier_activation="softmax", style="torch",
               name=None):
    if version not in SQUEEZENET_VERSIONS:
        raise ValueError(f"version must be one of {sorted(SQUEEZENET_VERSIONS)}, got {version!r}")
    check_style(style)
    stem_filters, stem_kernel, pool_after = SQUEEZENET_VERSIONS[version]
    img_input, inputs = builders.image_input(input_shape, input_tensor, include_top)

    x = layers.Conv2D(stem_filters, stem_kernel, strides=2, name="conv1")(img_input)
    x = layers.ReLU(name="relu_conv1")(x)
    x = torch_max_pool(x, 3, 2, ceil_mode=True, name="pool1")
    for number, fire in enumerate(FIRE_MODULES, start=2):
        x = blocks.fire_module(x, *fire, name=f"fire{number}")
        if number in pool_after:
            x = torch_max_pool(x, 3, 2, ceil_mode=True, name=f"pool{number}")

    def top(x):
        x = layers.Dropout(0.5, name="drop9")(x)
        x = layers.Conv2D(classes, 1, name="conv10")(x)
        x = layers.ReLU(name="relu_conv10")(x)
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return layers.Activation(classifier_activation, name="predictions")(x)

    return builders.finish_model(inputs, x, name or f"squeezenet{version}", weights, include_top, pooling, top)
