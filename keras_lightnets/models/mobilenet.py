"""MobileNet (v1), with keras.applications' API and layer names."""

from keras import layers

from keras_lightnets.layers import blocks
from keras_lightnets.layers.conventions import KERAS_MOBILENET, conventions_for
from keras_lightnets.models import common as builders
from keras_lightnets.models.tables import MOBILENET_BLOCKS


@builders.documented(
    "Instantiates the MobileNet architecture (Howard et al., 2017).\n\n"
    "Same arguments, layer names and weight order as `keras.applications.MobileNet`,\n"
    "so its weight files load with `weights=PATH`.",
    {
        "alpha": "width multiplier (0.25, 0.5, 0.75, 1.0, or any positive value).",
        "depth_multiplier": "depth multiplier of the depthwise convolutions.",
        "dropout": "dropout rate before the classifier.",
        "style": '`"tf"` for TensorFlow-trained weights, `"torch"` for weights\n'
        "converted from PyTorch (symmetric stride-2 padding, BN eps 1e-5).",
        "activation": '`"relu6"` (the paper, Keras) or `"relu"` (common in\n'
        "PyTorch ports of MobileNet v1).",
        "name": "model name, `mobilenet_{alpha}_{rows}` by default.",
        "head_filters": "channels of a 1x1 conv + BN + activation after the last\n"
        "block (`conv_head`, as timm's `mobilenetv1_100h`: 1024); None for none.",
    },
    imagenet=', `"imagenet"` (Keras\' official files, `style="tf"`)',
)
@builders.model_options("mobilenet")
@builders.loads_without_random_values
def MobileNet(input_shape=None, alpha=1.0, depth_multiplier=1, dropout=1e-3, include_top=True,
              weights=None, input_tensor=None, pooling=None, classes=1000,
              classifier_activation="softmax", style="tf", activation="relu6", name=None,
              head_filters=None):
    conv = conventions_for(style, tf=KERAS_MOBILENET)
    img_input, inputs = builders.image_input(input_shape, input_tensor, include_top)
    x = blocks.conv_block(img_input, int(32 * alpha), strides=2, style=conv, activation=activation)
    for block_id, (filters, stride) in enumerate(MOBILENET_BLOCKS, start=1):
        x = blocks.depthwise_conv_block(
            x, int(filters * alpha), depth_multiplier, stride, conv, activation, block_id
        )
    if head_filters:
        x = blocks.conv_block(x, head_filters, 1, style=conv, activation=activation, name="conv_head")

    def top(x):
        x = layers.GlobalAveragePooling2D(keepdims=True)(x)
        x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Conv2D(classes, 1, padding="same", name="conv_preds")(x)
        x = layers.Reshape((classes,), name="reshape_2")(x)
        return layers.Activation(classifier_activation, name="predictions")(x)

    rows = img_input.shape[1]
    return builders.finish_model(
        inputs, x, name or f"mobilenet_{alpha:0.2f}_{rows}", weights, include_top, pooling, top
    )
