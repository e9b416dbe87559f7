"""One module per checkpoint naming; each maps PyTorch module names to Keras layers.

A naming module defines:
- `NAME`, `ARCHS`: its name (for --source) and the archs it covers;
- `detect(keys)`: whether a state_dict's keys use this naming;
- `builder_kwargs(arch, tensors)`: width, class count, ... read from the tensors;
- `layer_map(model, keys)`: `[(torch module prefix, keras layer name)]`.
"""

from convert.sources import (
    efficientnet_lite,
    jfzhang95,
    megvii_shufflenet_v1,
    seed_deeplab,
    seed_layers,
    seed_mobilenet_v1,
    seed_mobilenet_v2,
    torchvision,
    torchvision_shufflenet_v2,
    torchvision_squeezenet,
    vainf,
    vainf_separable,
)

NAMINGS = {
    module.NAME: module
    for module in (
        torchvision, seed_mobilenet_v2, seed_layers, seed_mobilenet_v1, efficientnet_lite,
        vainf, vainf_separable, jfzhang95, seed_deeplab,
        torchvision_squeezenet, torchvision_shufflenet_v2, megvii_shufflenet_v1,
    )
}
