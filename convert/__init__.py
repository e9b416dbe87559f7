"""`python -m convert`: the command line of the converter, and its Python entry point.

    from convert import convert_checkpoint
    report = convert_checkpoint("mobilenet_v2.pth", "mobilenet_v2.h5", "mobilenet_v2")
    print(report)

The conversion itself lives in `keras_lightnets.conversion` (reader, layouts,
namings, pipeline); this package sits on top of it and of the model builders.
The module names of 0.1 (`convert.reader`, `convert.converter`,
`convert.archs`, `convert.h5`, `convert.layouts`, `convert.sources`) are kept
as aliases. Names are imported on first use, so `python -m convert --help`
stays fast.
"""

import importlib
import sys

_ALIASES = {
    "convert.reader": "keras_lightnets.conversion.reader",
    "convert.layouts": "keras_lightnets.conversion.layouts",
    "convert.sources": "keras_lightnets.conversion.namings",
    "convert.converter": "keras_lightnets.conversion.pipeline",
    "convert.h5": "keras_lightnets.weights.h5",
    "convert.archs": "keras_lightnets.registry",
}

_EXPORTS = {
    "ARCHS": "keras_lightnets.registry",
    "SPECS": "keras_lightnets.registry",
    "ConversionError": "keras_lightnets.conversion.pipeline",
    "Report": "keras_lightnets.conversion.pipeline",
    "Checkpoint": "keras_lightnets.conversion.reader",
    "CheckpointError": "keras_lightnets.conversion.reader",
    "read_checkpoint": "keras_lightnets.conversion.reader",
}

__all__ = sorted([*_EXPORTS, "convert_checkpoint"])


class _AliasFinder:
    """Imports `convert.reader` & co. as the `keras_lightnets` modules they became."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in _ALIASES:
            return None
        import importlib.util

        return importlib.util.spec_from_loader(name, cls)

    @staticmethod
    def create_module(spec):
        module = importlib.import_module(_ALIASES[spec.name])
        sys.modules[spec.name] = module
        return module

    @staticmethod
    def exec_module(module):
        pass


if not any(finder is _AliasFinder for finder in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder)


def convert_checkpoint(path, out, arch, **options):
    """Converts a PyTorch checkpoint into a Keras weights file with `arch`'s
    builder; see `keras_lightnets.conversion.pipeline.convert_checkpoint`."""
    from keras_lightnets.catalog import get_builder
    from keras_lightnets.conversion.pipeline import convert_checkpoint as run

    options.setdefault("build", get_builder(arch) if arch in _specs() else None)
    return run(path, out, arch, **options)


def _specs():
    from keras_lightnets.registry import SPECS

    return SPECS


def __getattr__(name):
    if name == "ARCHS":
        return _specs()
    if name not in _EXPORTS:
        raise AttributeError(f"module 'convert' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
