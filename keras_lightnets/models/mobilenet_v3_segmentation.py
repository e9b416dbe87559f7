"""torchvision's segmenters on MobileNetV3-Large: LR-ASPP and DeepLabV3.

Both sit on torchvision's dilated MobileNetV3-Large backbone (the last stage
dilated, output stride 16; `mobilenet_v3_features(..., dilated=True)`) and
tap it where torchvision does (`segmentation_taps`): `features[4]` (stride 8,
40 channels) and `features[16]` (stride 16, 960 channels). Their logits are
resized to the input size (bilinear, align_corners=False), so any input size
works, odd ones included. BatchNorm eps is 1e-3 in the backbone, 1e-5 in
the heads, as torchvision has them.
"""

import keras
from keras import layers

from keras_lightnets.layers import blocks
from keras_lightnets.layers.resize import BilinearResize
from keras_lightnets.models import common as builders
from keras_lightnets.models.mobilenet_v3 import mobilenet_v3_features, segmentation_taps
from keras_lightnets.weights.loading import load_weights

ASPP_RATES = (12, 24, 36)  # torchvision's DeepLabHead
LRASPP_CHANNELS = 128


def _backbone(input_shape, input_tensor):
    """`(image, model inputs, low features, high features)`."""
    img_input, inputs = builders.image_input(input_shape, input_tensor, include_top=False)
    x, _ = mobilenet_v3_features(img_input, "large", style="torch", dilated=True)
    taps = builders.feature_outputs(keras.Model(inputs, x), segmentation_taps())
    return img_input, inputs, taps["P3"], taps["P4"]


def _finish(inputs, x, image, classifier_activation, weights, name):
    x = BilinearResize(align_corners=False, name="logits_resize")([x, image])
    if classifier_activation is not None:
        x = layers.Activation(classifier_activation, name="predictions")(x)
    return load_weights(keras.Model(inputs, x, name=name), weights)


_ARGS = """
    Args:
        input_shape: `(height, width, 3)`; any size, `(None, None, 3)` by
            default; the output has the input's height and width.
        classes: number of classes (21 for torchvision's COCO-with-VOC-labels weights).
        weights: `None` or the path of a weights file (.h5), e.g. one
            converted from torchvision's checkpoint by `python -m convert`.
        input_tensor: optional Keras tensor to use as the model input.
        classifier_activation: `None` for logits, or e.g. `"softmax"`.
        name: model name.
        include_preprocessing: whether the model takes RGB pixels 0-255 and
            normalises them itself: `True` for ImageNet mean/std, or a mode of
            `preprocess_input` or a weights record's `preprocessing`.
        feature_extractor: return the two backbone taps the head reads
            instead (`segmentation_taps`): a dict, `"P3"` (stride 8) and
            `"P4"` (stride 16).
        feature_keys: the taps the feature extractor outputs (default: both).

    Returns:
        A `keras.Model` mapping ImageNet mean/std normalised images to
        `(height, width, classes)` maps.
"""


@builders.model_options(lambda arguments: segmentation_taps())
@builders.loads_without_random_values
def LRASPPMobileNetV3Large(input_shape=None, classes=21, weights=None, input_tensor=None,
                           classifier_activation=None, name="lraspp_mobilenet_v3_large"):
    image, inputs, low, high = _backbone(input_shape, input_tensor)
    x = blocks.conv_block(high, LRASPP_CHANNELS, 1, style="torch", activation="relu", name="lraspp_cbr")
    scale = layers.GlobalAveragePooling2D(keepdims=True, name="lraspp_scale_pool")(high)
    scale = layers.Conv2D(LRASPP_CHANNELS, 1, use_bias=False, name="lraspp_scale_conv")(scale)
    scale = blocks.apply_activation(scale, "sigmoid", "lraspp_scale_sigmoid")
    x = layers.Multiply(name="lraspp_gate")([x, scale])
    x = BilinearResize(align_corners=False, name="lraspp_resize")([x, low])
    low_logits = layers.Conv2D(classes, 1, name="low_classifier")(low)
    high_logits = layers.Conv2D(classes, 1, name="high_classifier")(x)
    x = layers.Add(name="lraspp_logits")([low_logits, high_logits])
    return _finish(inputs, x, image, classifier_activation, weights, name)


LRASPPMobileNetV3Large.__doc__ = f"""Instantiates torchvision's LR-ASPP on MobileNetV3-Large.

    The Lite R-ASPP head (Howard et al., 2019): the stride-16 features
    through a 1x1 conv + BN + ReLU (`lraspp_cbr`), gated by their global
    average through a 1x1 conv and a sigmoid (`lraspp_scale_*`), resized to
    the stride-8 features; logits = `low_classifier(stride 8) +
    high_classifier(gated)`, resized to the input.
{_ARGS}"""


@builders.model_options(lambda arguments: segmentation_taps())
@builders.loads_without_random_values
def DeepLabV3MobileNetV3Large(input_shape=None, classes=21, weights=None, input_tensor=None,
                              classifier_activation=None, name="deeplabv3_mobilenet_v3_large"):
    image, inputs, low, high = _backbone(input_shape, input_tensor)
    x = blocks.aspp(high, 256, ASPP_RATES, style="torch", dropout=0.5, name="aspp")
    x = blocks.conv_block(x, 256, 3, style="torch", activation="relu", name="head_conv")
    x = layers.Conv2D(classes, 1, name="logits")(x)
    return _finish(inputs, x, image, classifier_activation, weights, name)


DeepLabV3MobileNetV3Large.__doc__ = f"""Instantiates torchvision's DeepLabV3 on MobileNetV3-Large.

    torchvision's `DeepLabHead` on the stride-16 features: ASPP (1x1 conv,
    3x3 convs at rates 12, 24, 36, image pooling; projection with dropout
    0.5; `aspp_*`), a 3x3 conv + BN + ReLU (`head_conv`), a 1x1 conv
    (`logits`), resized to the input. torchvision's auxiliary FCN head
    (`aux_classifier`, a training loss) is not part of the model.
{_ARGS}"""
