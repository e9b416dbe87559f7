"""What the MobileNetV2 namings share: width inference and Keras block prefixes."""

from keras import layers

from keras_lightnets.blocks import make_divisible

ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


def infer_alpha(stem_channels, last_block_channels):
    """The width multiplier whose channel plan has these stem/last-block widths."""
    for alpha in ALPHAS:
        if (
            make_divisible(32 * alpha, 8) == stem_channels
            and make_divisible(int(320 * alpha), 8) == last_block_channels
        ):
            return alpha
    raise ValueError(
        f"no MobileNetV2 width has a {stem_channels}-channel stem and a "
        f"{last_block_channels}-channel last block (widths tried: {ALPHAS})"
    )


def block_prefixes(model):
    """Keras name prefixes of the inverted residual blocks, in order."""
    return [
        layer.name[: -len("depthwise")]
        for layer in model.layers
        if isinstance(layer, layers.DepthwiseConv2D)
    ]
