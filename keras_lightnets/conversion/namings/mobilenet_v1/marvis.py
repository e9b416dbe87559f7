"""The seeds' MobileNet v1 naming (light-nets survey).

`model.0` = conv_bn (conv, bn, ReLU); `model.1..13` = conv_dw (dw 0, bn 1,
ReLU, pw 3, bn 4, ReLU); `fc` Linear. Plain ReLU, not ReLU6.
"""

from keras_lightnets.models.tables import MOBILENET_BLOCKS

NAME = "marvis"


def detect(keys):
    return "model.0.0.weight" in keys and "model.1.3.weight" in keys and "fc.weight" in keys


def builder_kwargs(spec, tensors):
    stem = tensors["model.0.0.weight"].shape[0]
    return {
        "alpha": stem / 32,
        "depth_multiplier": tensors["model.1.0.weight"].shape[0] // stem,
        "classes": tensors["fc.weight"].shape[0],
        "activation": "relu",
    }


def layer_map(model, keys):
    rows = [("model.0.0", "conv1"), ("model.0.1", "conv1_bn")]
    for block_id in range(1, len(MOBILENET_BLOCKS) + 1):
        rows += [
            (f"model.{block_id}.0", f"conv_dw_{block_id}"),
            (f"model.{block_id}.1", f"conv_dw_{block_id}_bn"),
            (f"model.{block_id}.3", f"conv_pw_{block_id}"),
            (f"model.{block_id}.4", f"conv_pw_{block_id}_bn"),
        ]
    rows.append(("fc", "conv_preds"))
    return rows


def reference(spec, builder_kwargs, tensors):
    """marvis' MobileNet holding the checkpoint."""
    from keras_lightnets.conversion.references.common import holding
    from keras_lightnets.conversion.references.marvis import MobileNet

    kwargs = builder_kwargs
    return holding(MobileNet(kwargs["classes"], kwargs["depth_multiplier"], kwargs["alpha"]), tensors)
