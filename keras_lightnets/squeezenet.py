"""SqueezeNet 1.0 and 1.1 (Iandola et al., 2016), as torchvision builds them."""

import keras
from keras import layers

from keras_lightnets import blocks
from keras_lightnets.weights import load_weights

# (squeeze, expand 1x1, expand 3x3) of fire2 .. fire9; both versions share them.
FIRE_MODULES = (
    (16, 64, 64),
    (16, 64, 64),
    (32, 128, 128),
    (32, 128, 128),
    (48, 192, 192),
    (48, 192, 192),
    (64, 256, 256),
    (64, 256, 256),
)

# version: (conv1 filters, conv1 kernel, the Fire modules followed by a max
# pool); conv1 is followed by one in both versions.
SQUEEZENET_VERSIONS = {
    "1_0": (96, 7, (4, 8)),
    "1_1": (64, 3, (3, 5)),
}


def SqueezeNet(
    version="1_0",
    input_shape=None,
    include_top=True,
    weights=None,
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    style="torch",
    name=None,
):
    """Instantiates SqueezeNet 1.0 or 1.1, layer for layer as torchvision's.

    conv1 (stride 2, no padding) → ReLU, Fire modules fire2..fire9 (no
    BatchNorm) with 3x3/2 max pools in PyTorch's ceil mode, and a
    convolutional classifier: dropout 0.5 → 1x1 conv `conv10` (with bias) →
    ReLU → global average. Layer names follow the Caffe model
    (`conv1`, `fire2_squeeze1x1`, ..., `conv10`).

    Args:
        version: `"1_0"` or `"1_1"` (2.4x less computation, same accuracy).
        input_shape: optional shape tuple, `(224, 224, 3)` by default with the
            classifier, any size >= 32 without it.
        include_top: whether to include the classifier.
        weights: `None` or the path of a weights file (.h5).
        input_tensor: optional Keras tensor to use as the model input.
        pooling: `None`, `"avg"` or `"max"` when `include_top=False`.
        classes: number of classes of the classifier.
        classifier_activation: activation applied to the pooled class scores
            (layer `predictions`), `None` for torchvision's output.
        style: `"torch"` or `"tf"`; SqueezeNet has neither BatchNorm nor
            padded strided convolutions, so both build the same model.
        name: model name, `squeezenet{version}` by default.

    Returns:
        A `keras.Model`.
    """
    if version not in SQUEEZENET_VERSIONS:
        raise ValueError(f"version must be one of {sorted(SQUEEZENET_VERSIONS)}, got {version!r}")
    blocks.check_style(style)
    stem_filters, stem_kernel, pool_after = SQUEEZENET_VERSIONS[version]
    img_input, inputs = blocks.image_input(input_shape, input_tensor, include_top)

    x = layers.Conv2D(stem_filters, stem_kernel, strides=2, name="conv1")(img_input)
    x = layers.ReLU(name="relu_conv1")(x)
    x = blocks.torch_max_pool(x, 3, 2, ceil_mode=True, name="pool1")
    for number, fire in enumerate(FIRE_MODULES, start=2):
        x = blocks._fire_module(x, *fire, name=f"fire{number}")
        if number in pool_after:
            x = blocks.torch_max_pool(x, 3, 2, ceil_mode=True, name=f"pool{number}")

    if include_top:
        x = layers.Dropout(0.5, name="drop9")(x)
        x = layers.Conv2D(classes, 1, name="conv10")(x)
        x = layers.ReLU(name="relu_conv10")(x)
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Activation(classifier_activation, name="predictions")(x)
    else:
        x = blocks.pooling_head(x, pooling)
    model = keras.Model(inputs, x, name=name or f"squeezenet{version}")
    load_weights(model, weights)
    return model
