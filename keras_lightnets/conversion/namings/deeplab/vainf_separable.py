"""VainF's naming after `convert_to_separable_conv(model.classifier)` (`--separable_conv`).

The head's 3x3 convs (ASPP branches 1-3, the decoder conv) become
`AtrousSeparableConvolution`s: `<conv>.body.0` depthwise, `<conv>.body.1`
pointwise; everything else is named as in `vainf`.
"""

from keras_lightnets.conversion.namings.deeplab import vainf

NAME = "vainf_separable"
SEPARABLE = ("aspp_conv1", "aspp_conv2", "aspp_conv3", "decoder_conv1")


def detect(keys):
    return "classifier.aspp.convs.1.0.body.0.weight" in keys and "classifier.classifier.0.body.0.weight" in keys


def builder_kwargs(spec, tensors):
    return {**vainf.builder_kwargs(spec, tensors), "separable": True}


def layer_map(model, keys):
    rows = []
    for module, layer in vainf.layer_map(model, keys):
        if layer in SEPARABLE:
            rows += [(f"{module}.body.0", f"{layer}_depthwise"), (f"{module}.body.1", layer)]
        else:
            rows.append((module, layer))
    return rows


reference = vainf.reference  # VainF's model, its head made separable (`builder_kwargs["separable"]`)
