"""The building blocks of the networks, as plain functions `f(x, ..., name)`.

Each adds layers to a Functional graph. `style` is a `Conventions` (or its
name, see `keras_lightnets.layers.conventions`): it decides the padding of
strided convolutions and the BatchNormalization constants.
"""

from keras import layers

from keras_lightnets.layers.conventions import (
    KERAS_MOBILENET,
    KERAS_MOBILENET_V2,
    conventions_for,
    stride_padding,
)
from keras_lightnets.layers.custom import (  # noqa: F401
    ChannelShuffle,
    ChannelSplit,
    HardSigmoid,
    HardSwish,
    NegInfPadding2D,
    torch_max_pool,
)


def conv_block(
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
        activation: see `apply_activation`.
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
    conv = conventions_for(style)
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
    return apply_activation(x, activation, names["act"], conv)


ACTIVATIONS = ("relu6", "relu", "hard_swish", "hard_sigmoid", "sigmoid", None)


def apply_activation(x, activation, name, style="tf"):
    """`activation` (one of `ACTIVATIONS`) as a named layer.

    The hard ones are rounded as the weights' framework rounds them: with
    `style="torch"`, PyTorch's `nn.Hardswish` and `nn.Hardsigmoid`; with
    `"tf"`, keras.applications' MobileNetV3 (Keras' `hard_swish` activation,
    a hard sigmoid that multiplies by 1 / 6).
    """
    if activation is None:
        return x
    if activation == "relu6":
        return layers.ReLU(6.0, name=name)(x)
    if activation == "relu":
        return layers.ReLU(name=name)(x)
    if activation == "sigmoid":
        return layers.Activation("sigmoid", name=name)(x)
    torch = conventions_for(style).torch
    if activation == "hard_swish":
        return HardSwish(name=name)(x) if torch else layers.Activation("hard_swish", name=name)(x)
    if activation == "hard_sigmoid":
        return HardSigmoid("torch" if torch else "keras", name=name)(x)
    raise ValueError(f"unknown activation {activation!r}; choose from {ACTIVATIONS}")


def squeeze_excite(x, filters, style="tf", name="squeeze_excite"):
    """Squeeze-and-excitation as MobileNetV3 has it: `x * hard_sigmoid(...)`.

    Global average → 1x1 conv to `filters` (with bias) → ReLU → 1x1 conv
    back to the input's channels (with bias) → hard sigmoid → times `x`.
    Layers (keras.applications' names): `{name}_avg_pool`, `{name}_conv`,
    `{name}_relu`, `{name}_conv_1`, `{name}_hard_sigmoid`, `{name}_mul`.
    """
    gate = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_avg_pool")(x)
    gate = layers.Conv2D(filters, 1, padding="same", name=f"{name}_conv")(gate)
    gate = layers.ReLU(name=f"{name}_relu")(gate)
    gate = layers.Conv2D(x.shape[-1], 1, padding="same", name=f"{name}_conv_1")(gate)
    gate = apply_activation(gate, "hard_sigmoid", f"{name}_hard_sigmoid", style)
    return layers.Multiply(name=f"{name}_mul")([x, gate])


def depthwise_bn(x, kernel_size=3, strides=1, style="tf", dilation=1, depth_multiplier=1, name="dwconv"):
    """DepthwiseConv2D (no bias) → BatchNormalization (`{name}_bn`), no activation."""
    conv = conventions_for(style)
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


def depthwise_conv_block(
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
    conv = conventions_for(style, tf=KERAS_MOBILENET)
    prefix_dw = f"conv_dw_{block_id}"
    x, padding = conv.pad_for_stride(x, 3, strides, name=f"conv_pad_{block_id}")
    x = layers.DepthwiseConv2D(
        3, strides=strides, padding=padding, depth_multiplier=depth_multiplier, use_bias=False, name=prefix_dw
    )(x)
    x = conv.batch_norm(f"{prefix_dw}_bn")(x)
    x = apply_activation(x, activation, f"{prefix_dw}_relu", conv)
    return conv_block(x, pointwise_filters, 1, style=conv, activation=activation, name=f"conv_pw_{block_id}")


# The layers of an inverted residual block and their name suffixes, in
# keras.applications' MobileNetV2, EfficientNet and MobileNetV3 namings.
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
    "mobilenet_v3": {
        "expand": "expand", "expand_bn": "expand_bn", "expand_act": "expand_activation", "pad": "depthwise_pad",
        "depthwise": "depthwise", "depthwise_bn": "depthwise_bn", "depthwise_act": "depthwise_activation",
        "squeeze_excite": "squeeze_excite", "project": "project", "project_bn": "project_bn", "drop": "drop",
        "add": "add",
    },
}


def block_layer_names(prefix, scheme="mobilenet_v2"):
    """`{role: layer name}` of an inverted residual block named `prefix...`."""
    return {role: prefix + suffix for role, suffix in BLOCK_LAYER_SUFFIXES[scheme].items()}


def inverted_res_block(
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
    hidden=None,
    activation="relu6",
    squeeze=None,
):
    """MobileNetV2's inverted residual block, keras.applications naming;
    with `activation` and `squeeze`, MobileNetV3's.

    Expand 1x1 → depthwise kxk → [squeeze-excite] → project 1x1 (linear),
    with a residual `Add` when the stride is 1 and the channel count is
    unchanged. Layers are named `block_{id}_expand`, `block_{id}_depthwise_BN`,
    ... and, for block 0 (which has no expansion), `expanded_conv_depthwise`, ...

    Args:
        expansion: expansion factor t; hidden channels = t * input channels.
        filters: output channels (already rounded).
        style: a `Conventions` or its name (`"tf"`: keras.applications'
            MobileNetV2 constants).
        expand: whether to add the expansion conv; default `expansion != 1`
            (with `hidden`: whether it differs from the input channels).
        dilation: dilation rate of the depthwise conv (DeepLab backbones).
        drop_rate: stochastic depth rate on the residual branch (training only).
        names: the layer names (`block_layer_names`), by default MobileNetV2's.
        pad_input: pad the block input (k // 2 * dilation on every side)
            before the expansion conv, as the DeepLab MobileNetV2 backbones of
            VainF and jfzhang95 do (`fixed_padding`): the border then goes
            through expand conv + BN + ReLU6 and reaches the depthwise conv
            non-zero. The residual adds the unpadded input.
        hidden: the hidden channels, instead of `expansion` times the input's.
        activation: after the expansion and depthwise convs (`apply_activation`).
        squeeze: squeeze-excite channels (`squeeze_excite`, named
            `names["squeeze_excite"]`) after the depthwise conv; None for none.
    """
    conv = conventions_for(style, tf=KERAS_MOBILENET_V2)
    in_channels = x.shape[-1]
    if hidden is None:
        hidden = expansion * in_channels
    if expand is None:
        expand = hidden != in_channels
    names = names or block_layer_names(f"block_{block_id}_" if block_id else "expanded_conv_")
    inputs = x
    if pad_input:
        x = stride_padding(x, kernel_size, "torch", dilation, name=names["pad"])
    if expand:
        x = layers.Conv2D(hidden, 1, padding="same", use_bias=False, name=names["expand"])(x)
        x = conv.batch_norm(names["expand_bn"])(x)
        x = apply_activation(x, activation, names["expand_act"], conv)
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
    x = apply_activation(x, activation, names["depthwise_act"], conv)
    if squeeze:
        x = squeeze_excite(x, squeeze, conv, names["squeeze_excite"])
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=names["project"])(x)
    x = conv.batch_norm(names["project_bn"])(x)
    if stride == 1 and in_channels == filters:
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=names["drop"])(x)
        x = layers.Add(name=names["add"])([inputs, x])
    return x


def fire_module(x, squeeze, expand1x1, expand3x3, name):
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


def channel_shuffle(x, groups, name):
    """ShuffleNet's channel shuffle with `groups` groups (torchvision's order)."""
    return ChannelShuffle(groups, name=name)(x)


def channel_split(x, name):
    """ShuffleNet v2's channel split: returns the two channel halves."""
    first, second = ChannelSplit(name=name)(x)
    return first, second


def separable_conv_block(x, filters, kernel_size=3, style="torch", activation="relu", dilation=1, name="conv"):
    """Depthwise kxk (no bias) → pointwise 1x1 conv → BN → activation.

    VainF's `AtrousSeparableConvolution`, which its `--separable_conv` option
    puts in place of every kxk conv of the DeepLab head. Layers:
    `{name}_depthwise`, `{name}`, `{name}_bn`, `{name}_relu`.
    """
    x = layers.DepthwiseConv2D(
        kernel_size, padding="same", dilation_rate=dilation, use_bias=False, name=f"{name}_depthwise"
    )(x)
    return conv_block(x, filters, 1, style=style, activation=activation, name=name)


def aspp(
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
    from keras_lightnets.layers.resize import BilinearResize

    def conv(inputs, kernel_size, conv_name, dilation=1):
        if separable and kernel_size > 1:
            return separable_conv_block(inputs, filters, kernel_size, style, "relu", dilation, conv_name)
        return conv_block(
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
