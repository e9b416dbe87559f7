"""Building blocks shared by the keras-lightnets models.

Every block is a plain function `f(x, ..., name)` that adds layers to a
Functional graph. `style` is a `Conventions` object (or its name, `"tf"` or
`"torch"`) that says how the weights were trained:

- `"tf"`: TensorFlow/keras.applications. Stride-2 convolutions pad
  bottom/right (TF "same"), BatchNormalization epsilon 1e-3, max pools "same".
- `"torch"`: PyTorch. Stride-2 convolutions pad `k // 2` on every side,
  BatchNormalization epsilon 1e-5, max pools padded with -inf.

The two have the same layer names and weight shapes; only padding layers and
BatchNormalization constants differ.
"""

import dataclasses

import keras
from keras import layers, ops

from keras_lightnets.architectures import make_divisible  # noqa: F401  (blocks' public API)


@dataclasses.dataclass(frozen=True)
class Conventions:
    """The conventions a network's weights were trained with.

    Attributes:
        name: `"tf"` or `"torch"`, as the builders' `style` argument.
        stride_padding: where strided convolutions pad: `"tf"` (TF "same":
            one less row/column at the top/left for even sizes), `"tf_bottom_right"`
            (always one less at the top/left, keras.applications' MobileNet) or
            `"torch"` (`k // 2` on every side).
        bn_epsilon, bn_momentum: BatchNormalization constants (Keras momentum;
            PyTorch's momentum 0.1 is Keras' 0.9).
    """

    name: str
    stride_padding: str
    bn_epsilon: float
    bn_momentum: float

    @property
    def torch(self):
        return self.name == "torch"

    def batch_norm(self, name):
        """A BatchNormalization layer with these constants."""
        return layers.BatchNormalization(epsilon=self.bn_epsilon, momentum=self.bn_momentum, name=name)

    def pad_for_stride(self, x, kernel_size, strides, dilation=1, name=None, explicit=True):
        """`(x, padding)` for a convolution of `strides`.

        Stride 1 is "same". A strided convolution gets a `ZeroPadding2D`
        (named `name`) and "valid", except with TF conventions and
        `explicit=False`, where Keras' own "same" pads as TF does
        (keras.applications uses both forms, and its layer names show which).
        """
        if strides == 1 or not (self.torch or explicit):
            return x, "same"
        return stride_padding(x, kernel_size, self.stride_padding, dilation, name=name), "valid"

    def avg_pool(self, x, pool_size, strides, padding, name):
        """PyTorch's `AvgPool2d(pool_size, strides, padding)` (the zero padding
        counts in the average) or Keras' "same" pool."""
        if self.torch:
            x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
            return layers.AveragePooling2D(pool_size, strides, name=name)(x)
        return layers.AveragePooling2D(pool_size, strides, padding="same", name=name)(x)

    def max_pool(self, x, pool_size, strides, padding, name):
        """PyTorch's `MaxPool2d(pool_size, strides, padding)` or Keras' "same" pool."""
        if self.torch:
            return torch_max_pool(x, pool_size, strides, padding=padding, name=name)
        return layers.MaxPooling2D(pool_size, strides, padding="same", name=name)(x)


# keras.applications builds its BatchNormalization layers with these constants.
TF = Conventions("tf", "tf", bn_epsilon=1e-3, bn_momentum=0.99)
KERAS_MOBILENET = Conventions("tf", "tf_bottom_right", bn_epsilon=1e-3, bn_momentum=0.99)
KERAS_MOBILENET_V2 = Conventions("tf", "tf", bn_epsilon=1e-3, bn_momentum=0.999)
# PyTorch's BatchNorm2d defaults are eps=1e-5, momentum=0.1 (Keras 0.9).
TORCH = Conventions("torch", "torch", bn_epsilon=1e-5, bn_momentum=0.9)
STYLES = ("tf", "torch")


def conventions(style, tf=TF):
    """The `Conventions` of `style` (`"tf"`, `"torch"` or a `Conventions`);
    `tf` is the family's TensorFlow variant."""
    if isinstance(style, Conventions):
        return style
    if style == "torch":
        return TORCH
    if style == "tf":
        return tf
    raise ValueError(f"style must be one of {STYLES}, got {style!r}")


def check_style(style):
    conventions(style)


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
    name="conv1",
    names=None,
    dilation=1,
    padding=None,
    groups=1,
    use_bias=False,
):
    """Conv2D → BatchNormalization → activation.

    Args:
        style: a `Conventions` or its name; it decides the padding of a
            strided convolution (TF "same" or an explicit symmetric
            `ZeroPadding2D`) and the BatchNormalization constants.
        activation: "relu6", "relu" or None.
        name: the convolution's name; the others default to `{name}_bn`,
            `{name}_relu`, `{name}_pad`.
        names: overrides of those, keys `"bn"`, `"act"`, `"pad"`
            (keras.applications' `bn_Conv1`, `Conv1_relu`, ...).
        dilation: the convolution's dilation rate.
        padding: `"valid"` for a convolution without any padding (PyTorch
            `padding=0`); by default the conventions' padding.
        groups: groups of the convolution (ShuffleNet's grouped 1x1 convs).
        use_bias: a bias on the convolution (PyTorch heads that have one).
    """
    conv = conventions(style)
    names = {"bn": f"{name}_bn", "act": f"{name}_relu", "pad": f"{name}_pad", **(names or {})}
    if padding != "valid":
        x, padding = conv.pad_for_stride(x, kernel_size, strides, dilation, names["pad"], explicit=False)
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
        groups=groups,
        use_bias=use_bias,
        name=name,
    )(x)
    x = conv.batch_norm(names["bn"])(x)
    return _activation(x, activation, names["act"])


def _activation(x, activation, name):
    if activation is None:
        return x
    if activation == "relu6":
        return layers.ReLU(6.0, name=name)(x)
    if activation == "relu":
        return layers.ReLU(name=name)(x)
    raise ValueError(f"unknown activation {activation!r}")


def _depthwise_bn(x, kernel_size=3, strides=1, style="tf", dilation=1, depth_multiplier=1, name="dwconv"):
    """DepthwiseConv2D (no bias) → BatchNormalization (`{name}_bn`), no activation."""
    conv = conventions(style)
    x, padding = conv.pad_for_stride(x, kernel_size, strides, dilation, name=f"{name}_pad")
    x = layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
        depth_multiplier=depth_multiplier,
        use_bias=False,
        name=name,
    )(x)
    return conv.batch_norm(f"{name}_bn")(x)


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
    and `conv_pad_{id}` before a strided depthwise conv.
    """
    conv = conventions(style, tf=KERAS_MOBILENET)
    prefix_dw = f"conv_dw_{block_id}"
    x, padding = conv.pad_for_stride(x, 3, strides, name=f"conv_pad_{block_id}")
    x = layers.DepthwiseConv2D(
        3, strides=strides, padding=padding, depth_multiplier=depth_multiplier, use_bias=False, name=prefix_dw
    )(x)
    x = conv.batch_norm(f"{prefix_dw}_bn")(x)
    x = _activation(x, activation, f"{prefix_dw}_relu")
    return _conv_block(x, pointwise_filters, 1, style=conv, activation=activation, name=f"conv_pw_{block_id}")


# The layers of an inverted residual block and their name suffixes, in
# keras.applications' MobileNetV2 and EfficientNet namings.
BLOCK_LAYER_SUFFIXES = {
    "mobilenet_v2": {
        "expand": "expand", "expand_bn": "expand_BN", "expand_act": "expand_relu", "pad": "pad",
        "depthwise": "depthwise", "depthwise_bn": "depthwise_BN", "depthwise_act": "depthwise_relu",
        "project": "project", "project_bn": "project_BN", "drop": "drop", "add": "add",
    },
    "efficientnet": {
        "expand": "expand_conv", "expand_bn": "expand_bn", "expand_act": "expand_activation",
        "pad": "dwconv_pad", "depthwise": "dwconv", "depthwise_bn": "bn", "depthwise_act": "activation",
        "project": "project_conv", "project_bn": "project_bn", "drop": "drop", "add": "add",
    },
}


def block_layer_names(prefix, scheme="mobilenet_v2"):
    """`{role: layer name}` of an inverted residual block named `prefix...`."""
    return {role: prefix + suffix for role, suffix in BLOCK_LAYER_SUFFIXES[scheme].items()}


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
        style: a `Conventions` or its name (`"tf"`: keras.applications'
            MobileNetV2 constants).
        expand: whether to add the expansion conv; default `expansion != 1`.
        dilation: dilation rate of the depthwise conv (DeepLab backbones).
        drop_rate: stochastic depth rate on the residual branch (training only).
        names: the layer names (`block_layer_names`), by default MobileNetV2's.
        pad_input: pad the block input (k // 2 * dilation on every side)
            before the expansion conv, as the DeepLab MobileNetV2 backbones of
            VainF and jfzhang95 do (`fixed_padding`): the border then goes
            through expand conv + BN + ReLU6 and reaches the depthwise conv
            non-zero. The residual adds the unpadded input.
    """
    conv = conventions(style, tf=KERAS_MOBILENET_V2)
    in_channels = x.shape[-1]
    if expand is None:
        expand = expansion != 1
    names = names or block_layer_names(f"block_{block_id}_" if block_id else "expanded_conv_")
    inputs = x
    if pad_input:
        x = stride_padding(x, kernel_size, "torch", dilation, name=names["pad"])
    if expand:
        x = layers.Conv2D(expansion * in_channels, 1, padding="same", use_bias=False, name=names["expand"])(x)
        x = conv.batch_norm(names["expand_bn"])(x)
        x = _activation(x, "relu6", names["expand_act"])
    if pad_input:
        padding = "valid"
    else:
        x, padding = conv.pad_for_stride(x, kernel_size, stride, dilation, name=names["pad"])
    x = layers.DepthwiseConv2D(
        kernel_size,
        strides=stride,
        padding=padding,
        dilation_rate=dilation,
        use_bias=False,
        name=names["depthwise"],
    )(x)
    x = conv.batch_norm(names["depthwise_bn"])(x)
    x = _activation(x, "relu6", names["depthwise_act"])
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=names["project"])(x)
    x = conv.batch_norm(names["project_bn"])(x)
    if stride == 1 and in_channels == filters:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=names["drop"])(x)
        x = layers.Add(name=names["add"])([inputs, x])
    return x


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


def _aspp(
    x, filters=256, rates=(6, 12, 18), style="torch", dropout=0.1, name="aspp", separable=False, use_bias=False
):
    """Atrous spatial pyramid pooling (DeepLabV3), PyTorch conventions.

    Branches: 1x1 conv, one 3x3 conv per atrous rate, image pooling (global
    average → 1x1 conv → BN → ReLU → resized back); each conv is followed by
    BN + ReLU. The branches are concatenated in that order and projected by
    a 1x1 conv + BN + ReLU, then dropout. Layers: `{name}_conv0..3`,
    `{name}_pool_conv`, `{name}_project` (each with `_bn`, `_relu`).
    `separable=True` makes the atrous 3x3 convs depthwise separable;
    `use_bias=True` gives every conv a bias (bubbliiiing's ASPP).
    """
    from keras_lightnets.resize import BilinearResize

    def conv(inputs, kernel_size, conv_name, dilation=1):
        if separable and kernel_size > 1:
            return _separable_conv_block(inputs, filters, kernel_size, style, "relu", dilation, conv_name)
        return _conv_block(
            inputs, filters, kernel_size, style=style, activation="relu", name=conv_name,
            dilation=dilation, use_bias=use_bias,
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
