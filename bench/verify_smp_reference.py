"""Checks the shipped smp reference against segmentation_models_pytorch itself.

    /path/to/python-with-smp bench/verify_smp_reference.py

Needs torch and segmentation_models_pytorch (0.6.0 checked) in the running
Python; the package and the tests never import smp. For each encoder and
output stride: smp's `DeepLabV3Plus` with random weights and BatchNorm
statistics, the same state_dict loaded (strict) into
`keras_lightnets.conversion.references.smp.DeepLabV3Plus`, both run in eval
mode on one random input. Last run (torch 2.14.1, smp 0.6.0): max |Δ| = 0.0
for every case.
"""

import importlib.util
import math
import os
import sys

import segmentation_models_pytorch as smp
import torch

REFERENCE = os.path.join(os.path.dirname(__file__), "..", "keras_lightnets", "conversion", "references", "smp.py")
CASES = [  # encoder, output stride, classes, input height and width
    ("mobilenet_v2", 16, 21, (224, 160)),
    ("mobilenet_v2", 8, 7, (104, 136)),
    ("resnet50", 16, 7, (96, 128)),
    ("resnet50", 8, 7, (104, 136)),
    ("resnet101", 16, 5, (64, 80)),
    ("resnet101", 8, 5, (64, 80)),
]


def load_reference():
    """The reference module by path: this script runs outside the package's environment."""
    spec = importlib.util.spec_from_file_location("smp_reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def randomise(model, generator):
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "running_var":
            tensor.copy_(torch.rand(tensor.shape, generator=generator) * 1.5 + 0.5)
        elif leaf == "running_mean":
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
        elif tensor.ndim == 1:  # BN gamma/beta, conv biases
            tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.75)
        else:
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * math.sqrt(2.0 / tensor[0].numel()))


def main():
    reference = load_reference()
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for encoder, output_stride, classes, size in CASES:
        real = smp.DeepLabV3Plus(
            encoder_name=encoder, encoder_weights=None, encoder_output_stride=output_stride, classes=classes
        ).eval()
        randomise(real, generator)
        mine = reference.DeepLabV3Plus(encoder, output_stride, classes).eval()
        state = real.state_dict()
        if set(state) != set(mine.state_dict()):
            sys.exit(f"{encoder} os{output_stride}: keys differ: {sorted(set(state) ^ set(mine.state_dict()))[:5]}")
        mine.load_state_dict(state, strict=True)
        x = torch.randn(2, 3, *size, generator=generator)
        with torch.no_grad():
            diff = (real(x) - mine(x)).abs().max().item()
        worst = max(worst, diff)
        print(f"{encoder:12s} os{output_stride:<2d} {classes:2d} classes {size}: {len(state)} keys, max |Δ| {diff:.3g}")
    print(f"worst max |Δ| {worst:.3g}")
    return 0 if worst <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
