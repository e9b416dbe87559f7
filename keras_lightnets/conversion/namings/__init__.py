"""One module per checkpoint naming; each maps PyTorch module names to Keras layers.

A naming module defines:
- `NAME`: its name (for --source); the registry's specs list which namings
  each arch accepts;
- `detect(keys)`: whether a state_dict's keys use this naming;
- `builder_kwargs(spec, tensors)`: width, class count, ... read from the tensors;
- `layer_map(model, keys)`: `[(torch module prefix, keras layer name)]`;
- optionally `reference(spec, builder_kwargs, tensors)`: an importable
  PyTorch implementation holding the checkpoint's weights, for the parity
  check (raises ImportError when it is not installed).
- optionally `PREPROCESSING`: the eval transform of its weights, recorded
  instead of the arch's when the source's own prediction code differs.
"""

from keras_lightnets.conversion.namings import (
    bubbliiiing,
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
        vainf, vainf_separable, jfzhang95, seed_deeplab, bubbliiiing,
        torchvision_squeezenet, torchvision_shufflenet_v2, megvii_shufflenet_v1,
    )
}
