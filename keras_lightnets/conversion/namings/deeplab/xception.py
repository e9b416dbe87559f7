"""What the Xception-65 namings share: the rows of `keras_lightnets.models.xception`'s layers.

Both sources name the stem `conv1/bn1`, `conv2/bn2`, the blocks `block1..20`
with `skip`/`skipbn` residual convs, and the exit convs `conv3..conv5`; they
name the separable convs inside differently (`sepconv_modules`).
"""

from keras_lightnets.models.tables import XCEPTION_65_BLOCKS, XCEPTION_65_EXIT_CONVS

SEPARABLE_ROLES = ("depthwise", "depthwise_bn", "pointwise", "pointwise_bn")


def xception_rows(model, prefix, sepconv_modules, exit_conv_modules):
    """Rows of the Xception-65 layers.

    `sepconv_modules(block, k)` and `exit_conv_modules(i)` return the torch
    modules of (depthwise conv, its BN, pointwise conv, its BN) of the k-th
    separable conv of `block{block}` and of `conv{i}`.
    """
    names = {layer.name for layer in model.layers}
    rows = [(f"{prefix}.conv1", "conv1"), (f"{prefix}.bn1", "conv1_bn"),
            (f"{prefix}.conv2", "conv2"), (f"{prefix}.bn2", "conv2_bn")]
    for block in range(1, len(XCEPTION_65_BLOCKS) + 1):
        name = f"block{block}"
        for k in (1, 2, 3):
            modules = sepconv_modules(block, k)
            rows += [(module, f"{name}_sepconv{k}_{role}") for module, role in zip(modules, SEPARABLE_ROLES)]
        if f"{name}_skip" in names:
            rows += [(f"{prefix}.{name}.skip", f"{name}_skip"), (f"{prefix}.{name}.skipbn", f"{name}_skip_bn")]
    for index in range(3, 3 + len(XCEPTION_65_EXIT_CONVS)):
        rows += [(module, f"conv{index}_{role}") for module, role in zip(exit_conv_modules(index), SEPARABLE_ROLES)]
    return rows
