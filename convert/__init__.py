"""Safe, torch-free conversion of PyTorch checkpoints into Keras weights files.

    from convert import convert_checkpoint
    report = convert_checkpoint("mobilenet_v2.pth", "mobilenet_v2.h5", "mobilenet_v2")
    print(report)

Names are imported on first use, so `python -m convert --help` and the
reader stay fast and quiet.
"""

import importlib

_EXPORTS = {
    "ARCHS": "convert.archs",
    "ConversionError": "convert.converter",
    "Report": "convert.converter",
    "convert_checkpoint": "convert.converter",
    "Checkpoint": "convert.reader",
    "CheckpointError": "convert.reader",
    "read_checkpoint": "convert.reader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'convert' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
