"""MobileNet (v1), with keras.applications' API and layer names."""

import keras
from keras import layers

from keras_lightnets import blocks
from keras_lightnets.weights import load_weights

# (pointwise filters, stride) of the 13 depthwise separable blocks.
MOBILENET_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


def MobileNet(
    input_shape=None,
    alpha=1.0,
    depth_multiplier=1,
    dropout=1e-3,
    include_top=True,
    weights=None,
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    style="tf",
    activation="relu6",
    name=None,
):
    """Instantiates the MobileNet architecture (Howard et al., 2017).

    Same arguments, layer names and weight order as
    `keras.applications.MobileNet`, so its weight files load with
    `weights=PATH`.

    Args:
        input_shape: optional shape tuple, `(224, 224, 3)` by default with the
            classifier, any size >= 32 without it.
        alpha: width multiplier (0.25, 0.5, 0.75, 1.0, or any positive value).
        depth_multiplier: depth multiplier of the depthwise convolutions.
        dropout: dropout rate before the classifier.
        include_top: whether to include the classifier.
        weights: `None` or the path of a weights file (.h5).
        input_tensor: optional Keras tensor to use as the model input.
        pooling: `None`, `"avg"` or `"max"` when `include_top=False`.
        classes: number of classes of the classifier.
        classifier_activation: activation of the classifier, `None` for logits.
        style: `"tf"` for TensorFlow-trained weights, `"torch"` for weights
            converted from PyTorch (symmetric stride-2 padding, BN eps 1e-5).
        activation: `"relu6"` (the paper, Keras) or `"relu"` (common in
            PyTorch ports of MobileNet v1).
        name: model name, `mobilenet_{alpha}_{rows}` by default.

    Returns:
        A `keras.Model`.
    """
    blocks.check_style(style)
    img_input, inputs = blocks.image_input(input_shape, input_tensor, include_top)
    x = blocks._conv_block(
        img_input, int(32 * alpha), strides=2, style=style, activation=activation
    )
    for block_id, (filters, stride) in enumerate(MOBILENET_BLOCKS, start=1):
        x = blocks._depthwise_conv_block(
            x,
            int(filters * alpha),
            depth_multiplier,
            strides=stride,
            style=style,
            activation=activation,
            block_id=block_id,
        )
    if include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True)(x)
        x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Conv2D(classes, 1, padding="same", name="conv_preds")(x)
        x = layers.Reshape((classes,), name="reshape_2")(x)
        x = layers.Activation(classifier_activation, name="predictions")(x)
    else:
        x = blocks.pooling_head(x, pooling)
    rows = img_input.shape[1]
    model = keras.Model(inputs, x, name=name or f"mobilenet_{alpha:0.2f}_{rows}")
    load_weights(model, weights)
    return model
