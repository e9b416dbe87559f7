"""Building blocks shared by the keras-lightnets models.

Every block is a plain function `f(x, ..., name)` that adds layers to a
Functional graph. `style` selects the conventions the weights were trained
with:

- `"tf"`: TensorFlow/keras.applications. Stride-2 convolutions pad
  bottom/right (TF "same"), BatchNormalization epsilon 1e-3.
- `"torch"`: PyTorch. Stride-2 convolutions pad `k // 2` on every side,
  BatchNormalization epsilon 1e-5.

The two styles have the same layer names and weight shapes; only padding
layers and BatchNormalization constants differ.
"""

import keras
from keras import layers, ops

STYLES = ("tf", "torch")

# keras.applications builds its BatchNormalization layers with these constants;
# PyTorch's BatchNorm2d defaults are eps=1e-5, momentum=0.1 (Keras 0.9).
BN_TF = {"epsilon": 1e-3, "momentum": 0.99}
BN_TF_V2 = {"epsilon": 1e-3, "momentum": 0.999}
BN_TORCH = {"epsilon": 1e-5, "momentum": 0.9}


def make_divisible(value, divisor=8, min_value=None):
    """Rounds a channel count to a multiple of `divisor`, at most 10% down.

    This is the rounding of the MobileNetV2 paper code, which both
    keras.applications and torchvision use.
    """
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def check_style(style):
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")


def bn_params(style, tf_params=BN_TF):
    """BatchNormalization constants for `style`."""
    check_style(style)
    return BN_TORCH if style == "torch" else tf_params


def stride_padding(x, kernel_size, style, dilation=1, name=None):
    """Explicit zero padding in front of a strided `"valid"` convolution.

    Args:
        x: input tensor (channels last).
        kernel_size: int, the convolution's kernel size.
        style: `"torch"` pads `dilation * (kernel_size - 1) // 2` on all four
            sides (PyTorch `padding=k // 2`). `"tf"` reproduces TensorFlow's
            "same" padding, as keras.applications' `correct_pad`: one less
            row/column at the top/left when the input size is even.
            `"tf_bottom_right"` always pads one less at the top/left, as
            keras.applications' MobileNet (v1) does whatever the input size.
        dilation: int, the convolution's dilation rate.
        name: layer name.
    """
    total = dilation * (kernel_size - 1)
    if style == "torch":
        padding = ((total // 2, total // 2), (total // 2, total // 2))
    elif style == "tf_bottom_right":
        padding = ((total // 2 - 1, total // 2), (total // 2 - 1, total // 2))
    elif style == "tf":
        padding = tuple(
            (total // 2 - (1 if size is None or size % 2 == 0 else 0), total // 2)
            for size in x.shape[1:3]
        )
    else:
        raise ValueError(f"unknown padding style {style!r}")
    return layers.ZeroPadding2D(padding, name=name)(x)


def _conv_block(
    x,
    filters,
    kernel_size=3,
    strides=1,
    style="tf",
    activation="relu6",
    bn=BN_TF,
    name="conv1",
    bn_name=None,
    act_name=None,
    pad_name=None,
    dilation=1,
    padding=None,
    groups=1,
):
    """Conv2D (no bias) → BatchNormalization → activation.

    With style="tf" a strided convolution uses `padding="same"` exactly as
    keras.applications does; with style="torch" it gets a symmetric
    ZeroPadding2D named `pad_name` (default `{name}_pad`).

    Args:
        activation: "relu6", "relu" or None.
        bn: BatchNormalization constants for style="tf" (style="torch" always
            uses PyTorch's).
        dilation: the convolution's dilation rate.
        padding: `"valid"` for a convolution without any padding (PyTorch
            `padding=0`); by default the style's padding.
        groups: groups of the convolution (ShuffleNet's grouped 1x1 convs).
    """
    if padding != "valid":
        if style == "torch" and strides != 1:
            x = stride_padding(x, kernel_size, "torch", dilation, name=pad_name or f"{name}_pad")
            padding = "valid"
        else:
            padding = "same"
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
        groups=groups,
        use_bias=False,
        name=name,
    )(x)
    x = layers.BatchNormalization(**bn_params(style, bn), name=bn_name or f"{name}_bn")(x)
    return _activation(x, activation, act_name or f"{name}_relu")


def _activation(x, activation, name):
    if activation is None:
        return x
    if activation == "relu6":
        return layers.ReLU(6.0, name=name)(x)
    if activation == "relu":
        return layers.ReLU(name=name)(x)
    raise ValueError(f"unknown activation {activation!r}")


def _depthwise_conv_block(
    x,
    pointwise_filters,
    depth_multiplier=1,
    strides=1,
    style="tf",
    activation="relu6",
    block_id=1,
):
    """MobileNet's depthwise separable block, keras.applications naming.

    DepthwiseConv2D 3x3 → BN → act → Conv2D 1x1 → BN → act, with layers
    `conv_dw_{id}`, `conv_dw_{id}_bn`, `conv_dw_{id}_relu`, `conv_pw_{id}`, ...
    """
    prefix_dw, prefix_pw = f"conv_dw_{block_id}", f"conv_pw_{block_id}"
    bn = bn_params(style)
    if strides == 1:
        padding = "same"
    else:
        pad_style = "torch" if style == "torch" else "tf_bottom_right"
        x = stride_padding(x, 3, pad_style, name=f"conv_pad_{block_id}")
        padding = "valid"
    x = layers.DepthwiseConv2D(
        3,
        strides=strides,
        padding=padding,
        depth_multiplier=depth_multiplier,
        use_bias=False,
        name=prefix_dw,
    )(x)
    x = layers.BatchNormalization(**bn, name=f"{prefix_dw}_bn")(x)
    x = _activation(x, activation, f"{prefix_dw}_relu")
    x = layers.Conv2D(
        pointwise_filters, 1, padding="same", use_bias=False, name=prefix_pw
    )(x)
    x = layers.BatchNormalization(**bn, name=f"{prefix_pw}_bn")(x)
    return _activation(x, activation, f"{prefix_pw}_relu")


def _inverted_res_block(
    x,
    expansion,
    filters,
    stride,
    block_id,
    style="tf",
    kernel_size=3,
    dilation=1,
    expand=None,
    activation="relu6",
    bn=BN_TF_V2,
    drop_rate=0.0,
    names=None,
    pad_input=False,
):
    """MobileNetV2's inverted residual block, keras.applications naming.

    Expand 1x1 → depthwise kxk → project 1x1 (linear), with a residual `Add`
    when the stride is 1 and the channel count is unchanged. Layers are
    named `block_{id}_expand`, `block_{id}_depthwise_BN`, ... and, for block 0
    (which has no expansion), `expanded_conv_depthwise`, ...

    Args:
        expansion: expansion factor t; hidden channels = t * input channels.
        filters: output channels (already rounded).
        expand: whether to add the expansion conv; default `expansion != 1`.
        dilation: dilation rate of the depthwise conv (DeepLab backbones).
        drop_rate: stochastic depth rate on the residual branch (training only).
        names: overrides of the layer names (keys as in `_mobilenet_v2_names`).
        pad_input: pad the block input (k // 2 * dilation on every side)
            before the expansion conv, as the DeepLab MobileNetV2 backbones of
            VainF and jfzhang95 do (`fixed_padding`): the border then goes
            through expand conv + BN + ReLU6 and reaches the depthwise conv
            non-zero. The residual adds the unpadded input.
    """
    in_channels = x.shape[-1]
    if expand is None:
        expand = expansion != 1
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    names = {**_mobilenet_v2_names(prefix), **(names or {})}
    bn = bn_params(style, bn)
    inputs = x
    if pad_input:
        x = stride_padding(x, kernel_size, "torch", dilation, name=names["pad"])
    if expand:
        x = layers.Conv2D(
            expansion * in_channels, 1, padding="same", use_bias=False, name=names["expand"]
        )(x)
        x = layers.BatchNormalization(**bn, name=names["expand_bn"])(x)
        x = _activation(x, activation, names["expand_act"])
    if pad_input:
        padding = "valid"
    elif stride == 1:
        padding = "same"
    else:
        x = stride_padding(x, kernel_size, style, dilation, name=names["pad"])
        padding = "valid"
    x = layers.DepthwiseConv2D(
        kernel_size,
        strides=stride,
        padding=padding,
        dilation_rate=dilation,
        use_bias=False,
        name=names["depthwise"],
    )(x)
    x = layers.BatchNormalization(**bn, name=names["depthwise_bn"])(x)
    x = _activation(x, activation, names["depthwise_act"])
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=names["project"])(x)
    x = layers.BatchNormalization(**bn, name=names["project_bn"])(x)
    if stride == 1 and in_channels == filters:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=names["drop"])(x)
        x = layers.Add(name=names["add"])([inputs, x])
    return x


def _mobilenet_v2_names(prefix):
    return {
        "expand": f"{prefix}expand",
        "expand_bn": f"{prefix}expand_BN",
        "expand_act": f"{prefix}expand_relu",
        "pad": f"{prefix}pad",
        "depthwise": f"{prefix}depthwise",
        "depthwise_bn": f"{prefix}depthwise_BN",
        "depthwise_act": f"{prefix}depthwise_relu",
        "project": f"{prefix}project",
        "project_bn": f"{prefix}project_BN",
        "drop": f"{prefix}drop",
        "add": f"{prefix}add",
    }


def _fire_module(x, squeeze, expand1x1, expand3x3, name):
    """SqueezeNet's Fire module, as torchvision builds it (no BatchNorm).

    Squeeze 1x1 conv → ReLU, then in parallel expand 1x1 conv → ReLU and
    expand 3x3 conv (padding 1) → ReLU, concatenated in that order. Every
    conv has a bias. Layers: `{name}_squeeze1x1`, `{name}_squeeze1x1_relu`,
    `{name}_expand1x1`, ..., `{name}_concat`.
    """
    x = layers.Conv2D(squeeze, 1, name=f"{name}_squeeze1x1")(x)
    x = layers.ReLU(name=f"{name}_squeeze1x1_relu")(x)
    branches = []
    for filters, kernel_size, branch in ((expand1x1, 1, "expand1x1"), (expand3x3, 3, "expand3x3")):
        y = layers.Conv2D(filters, kernel_size, padding="same", name=f"{name}_{branch}")(x)
        branches.append(layers.ReLU(name=f"{name}_{branch}_relu")(y))
    return layers.Concatenate(name=f"{name}_concat")(branches)


@keras.saving.register_keras_serializable(package="keras_lightnets")
class ChannelShuffle(layers.Layer):
    """ShuffleNet's channel shuffle, in torchvision's channel order.

    PyTorch's `x.view(b, g, c // g, h, w).transpose(1, 2).flatten(1, 2)`:
    channel `i * (c // g) + j` moves to `j * g + i`. Spatial sizes may be
    unknown (`None`).
    """

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def build(self, input_shape):
        if input_shape[-1] % self.groups:
            raise ValueError(
                f"{self.name}: {input_shape[-1]} channels do not split into {self.groups} groups"
            )

    def call(self, x):
        shape = ops.shape(x)
        grouped = ops.reshape(x, (*shape[:-1], self.groups, x.shape[-1] // self.groups))
        return ops.reshape(ops.swapaxes(grouped, -1, -2), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="keras_lightnets")
class ChannelSplit(layers.Layer):
    """Splits the channels into two halves, first half first (`x.chunk(2, dim=1)`)."""

    def build(self, input_shape):
        if input_shape[-1] % 2:
            raise ValueError(f"{self.name}: cannot halve {input_shape[-1]} channels")

    def call(self, x):
        return ops.split(x, 2, axis=-1)

    def compute_output_shape(self, input_shape):
        half = (*input_shape[:-1], input_shape[-1] // 2)
        return [half, half]


@keras.saving.register_keras_serializable(package="keras_lightnets")
class NegInfPadding2D(layers.Layer):
    """Pads height and width with -inf, so that a following max pooling
    ignores the padding as PyTorch's MaxPool2d does.

    Args:
        padding: `((top, bottom), (left, right))`.
    """

    def __init__(self, padding, **kwargs):
        super().__init__(**kwargs)
        self.padding = tuple(tuple(int(p) for p in side) for side in padding)

    def call(self, x):
        pad = [(0, 0), *self.padding, (0, 0)]
        return ops.pad(x, pad, constant_values=float("-inf"))

    def compute_output_shape(self, input_shape):
        (top, bottom), (left, right) = self.padding
        rows, cols = input_shape[1], input_shape[2]
        return (
            input_shape[0],
            None if rows is None else rows + top + bottom,
            None if cols is None else cols + left + right,
            input_shape[3],
        )

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


def channel_shuffle(x, groups, name):
    """ShuffleNet's channel shuffle with `groups` groups (torchvision's order)."""
    return ChannelShuffle(groups, name=name)(x)


def channel_split(x, name):
    """ShuffleNet v2's channel split: returns the two channel halves."""
    first, second = ChannelSplit(name=name)(x)
    return first, second


def torch_max_pool(x, pool_size=3, strides=2, padding=0, ceil_mode=False, name=None):
    """PyTorch's `MaxPool2d(pool_size, strides, padding, ceil_mode)`.

    The padding is -inf (`NegInfPadding2D`, named `{name}_pad`). PyTorch's
    ceil mode adds a last window that may run past the bottom/right edge,
    but only one that starts inside the input or its left padding; `strides
    - 1` extra rows/columns of -inf at the bottom/right give exactly those
    windows whatever the input size, as long as `padding + strides <=
    pool_size` (always true for SqueezeNet's and ShuffleNet's pools).
    """
    extra = strides - 1 if ceil_mode else 0
    if ceil_mode and padding + strides > pool_size:
        raise ValueError(
            f"ceil_mode with padding {padding}, stride {strides} and pool size {pool_size} is "
            "not supported (windows could start in the padding)"
        )
    if padding or extra:
        sides = ((padding, padding + extra), (padding, padding + extra))
        x = NegInfPadding2D(sides, name=f"{name}_pad")(x)
    return layers.MaxPooling2D(pool_size, strides, padding="valid", name=name)(x)


def image_input(input_shape, input_tensor, include_top, default_size=224, min_size=32):
    """Returns `(img_input, model_inputs)` like keras.applications' models.

    `input_shape=None` means `(default_size, default_size, 3)` with the
    classifier and `(None, None, 3)` without.
    """
    if input_shape is None:
        if input_tensor is not None and input_tensor.shape[1:] is not None:
            input_shape = tuple(input_tensor.shape[1:])
        elif include_top:
            input_shape = (default_size, default_size, 3)
        else:
            input_shape = (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    for size in input_shape[:2]:
        if size is not None and size < min_size:
            raise ValueError(
                f"input_shape {input_shape}: height and width must be at least {min_size}"
            )
    if input_tensor is None:
        img_input = layers.Input(shape=input_shape)
        return img_input, img_input
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor, keras.utils.get_source_inputs(input_tensor)
    img_input = layers.Input(tensor=input_tensor, shape=input_shape)
    return img_input, img_input


def pooling_head(x, pooling):
    """The `include_top=False` pooling option of keras.applications."""
    if pooling is None:
        return x
    if pooling == "avg":
        return layers.GlobalAveragePooling2D()(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D()(x)
    raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")


def _separable_conv_block(x, filters, kernel_size=3, style="torch", activation="relu", dilation=1, name="conv"):
    """Depthwise kxk (no bias) → pointwise 1x1 conv → BN → activation.

    VainF's `AtrousSeparableConvolution`, which its `--separable_conv` option
    puts in place of every kxk conv of the DeepLab head. Layers:
    `{name}_depthwise`, `{name}`, `{name}_bn`, `{name}_relu`.
    """
    x = layers.DepthwiseConv2D(
        kernel_size, padding="same", dilation_rate=dilation, use_bias=False, name=f"{name}_depthwise"
    )(x)
    return _conv_block(x, filters, 1, style=style, activation=activation, name=name)


def _aspp(x, filters=256, rates=(6, 12, 18), style="torch", dropout=0.1, name="aspp", separable=False):
    """Atrous spatial pyramid pooling (DeepLabV3), PyTorch conventions.

    Branches: 1x1 conv, one 3x3 conv per atrous rate, image pooling (global
    average → 1x1 conv → BN → ReLU → resized back); each conv is followed by
    BN + ReLU. The branches are concatenated in that order and projected by
    a 1x1 conv + BN + ReLU, then dropout. Layers: `{name}_conv0..3`,
    `{name}_pool_conv`, `{name}_project` (each with `_bn`, `_relu`).
    `separable=True` makes the atrous 3x3 convs depthwise separable.
    """
    from keras_lightnets.resize import BilinearResize

    def conv(inputs, kernel_size, conv_name, dilation=1):
        if separable and kernel_size > 1:
            return _separable_conv_block(inputs, filters, kernel_size, style, "relu", dilation, conv_name)
        return _conv_block(
            inputs, filters, kernel_size, style=style, activation="relu", name=conv_name,
            dilation=dilation,
        )

    branches = [conv(x, 1, f"{name}_conv0")]
    branches += [conv(x, 3, f"{name}_conv{i}", rate) for i, rate in enumerate(rates, start=1)]
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    pooled = conv(pooled, 1, f"{name}_pool_conv")
    branches.append(BilinearResize(name=f"{name}_pool_resize")([pooled, x]))
    x = layers.Concatenate(name=f"{name}_concat")(branches)
    x = conv(x, 1, f"{name}_project")
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x
