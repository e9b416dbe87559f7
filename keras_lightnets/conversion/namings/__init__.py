"""Checkpoint namings: one module per family and source, mapping PyTorch module names to Keras layers.

`namings/<family>/<source>.py` defines:
- `NAME`: the source's name (`--source`), unique within its family;
- `detect(keys)`: whether a state_dict's keys use this naming;
- `builder_kwargs(spec, tensors)`: width, class count, ... read from the tensors;
- `layer_map(model, keys)`: `[(torch module prefix, keras layer name)]`;
- optionally `reference(spec, builder_kwargs, tensors)`: a PyTorch module
  holding the checkpoint's weights for the parity check
  (`keras_lightnets.conversion.references`);
- optionally `PREPROCESSING`: the eval transform of its weights, recorded
  instead of the arch's when the source's own prediction code differs, or
  `preprocessing(spec, builder_kwargs)` when it depends on the checkpoint
  (timm: each model's own `pretrained_cfg`);
- optionally `UNUSED_BY_DESIGN`: `{key prefix: why}` of checkpoint tensors
  the Keras model leaves out on purpose (reported, not an error).

The first line of a naming's docstring says whose checkpoints it reads (the
converter lists it when several namings fit the same keys).

A registry spec lists its namings as `"family/source"`.
"""

from keras_lightnets.conversion.namings.deeplab import (
    bubbliiiing,
    jfzhang95,
    jfzhang95_legacy,
    smp,
    vainf,
    vainf_separable,
)
from keras_lightnets.conversion.namings.efficientnet_lite import (
    efficientnet_lite_pytorch,
)
from keras_lightnets.conversion.namings.efficientnet_lite import (
    timm as timm_efficientnet_lite,
)
from keras_lightnets.conversion.namings.efficientnet_lite import (
    timm_tf as timm_tf_efficientnet_lite,
)
from keras_lightnets.conversion.namings.mobilenet_v1 import marvis
from keras_lightnets.conversion.namings.mobilenet_v1 import timm as timm_mobilenet_v1
from keras_lightnets.conversion.namings.mobilenet_v2 import (
    c1_bottleneck,
    tonylins,
    torchvision,
)
from keras_lightnets.conversion.namings.mobilenet_v2 import timm as timm_mobilenet_v2
from keras_lightnets.conversion.namings.mobilenet_v3 import timm as timm_mobilenet_v3
from keras_lightnets.conversion.namings.mobilenet_v3 import (
    timm_tf as timm_tf_mobilenet_v3,
)
from keras_lightnets.conversion.namings.mobilenet_v3 import (
    torchvision as torchvision_mobilenet_v3,
)
from keras_lightnets.conversion.namings.mobilenet_v3 import (
    torchvision_deeplabv3,
    torchvision_lraspp,
)
from keras_lightnets.conversion.namings.shufflenet import megvii
from keras_lightnets.conversion.namings.shufflenet import (
    torchvision as torchvision_shufflenet,
)
from keras_lightnets.conversion.namings.squeezenet import (
    torchvision as torchvision_squeezenet,
)

NAMINGS = {
    f"{module.__name__.split('.')[-2]}/{module.NAME}": module
    for module in (
        marvis, torchvision, tonylins, c1_bottleneck, efficientnet_lite_pytorch,
        torchvision_squeezenet, torchvision_shufflenet, megvii,
        vainf, vainf_separable, jfzhang95, jfzhang95_legacy, bubbliiiing, smp,
        torchvision_mobilenet_v3, torchvision_lraspp, torchvision_deeplabv3,
        timm_mobilenet_v1, timm_mobilenet_v2, timm_efficientnet_lite, timm_tf_efficientnet_lite,
        timm_mobilenet_v3, timm_tf_mobilenet_v3,
    )
}


def source_name(naming):
    """`"torchvision"` of `"mobilenet_v2/torchvision"`."""
    return naming.rpartition("/")[2]
