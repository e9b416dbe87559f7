"""Hugging Face-style snapshot folders: `model.safetensors` (or `pytorch_model.bin`) + timm's `config.json`.

The folder is untrusted input. Only the file names below are opened, and only
regular files; in the Hugging Face cache (`models--*/snapshots/<commit>/`) the
files are links into the repository's own `blobs/` folder, and such links
(and no others) are followed. `config.json` is size-capped, parsed without
NaN/Infinity or duplicate keys, and its fields are checked (types, ranges,
nesting) before anything is built from it. What it says must agree with the
weights: `config.json` names the arch (timm's `architecture`, turned into a
registry arch by `keras_lightnets.conversion.namings.timm_models.timm_arch`),
the weights must be that arch with the same class count and width.
"""

import dataclasses
import json
import math
import os
import re
import stat

from keras_lightnets.conversion import detect
from keras_lightnets.conversion.errors import ConversionError
from keras_lightnets.conversion.reader import read_checkpoint
from keras_lightnets.files import NotRegularFileError, open_regular, safe_text

CONFIG_FILE = "config.json"
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's order of preference
CONFIG_LIMIT = 256 * 1024  # bytes; timm writes about 1 KB
MAX_DEPTH = 8  # nesting of JSON containers
_ARCHITECTURE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos", "random")
MAX_CLASSES = 1_000_000
TIMM_DEFAULT_CLASSES = 1000  # timm.create_model's, when config.json gives none


@dataclasses.dataclass
class Snapshot:
    """A snapshot folder's weights file and what its `config.json` says."""

    folder: str
    weights: str
    architecture: str
    num_classes: int
    pretrained_cfg: dict
    arch: str = ""
    builder_kwargs: dict = dataclasses.field(default_factory=dict)
    preprocessing: dict | None = None

    def conflict(self, message):
        return ConversionError(f"{self.folder}: config.json disagrees with the weights: {message}; nothing written")


def read_snapshot(folder):
    """The `Snapshot` of `folder`, its `config.json` checked and its arch resolved."""
    folder = os.fspath(folder)
    label = safe_text(os.path.basename(os.path.normpath(folder)) or folder, 80)
    config_path = _member(folder, label, CONFIG_FILE)
    if config_path is None:
        raise ConversionError(f"{label} is a folder without {CONFIG_FILE}; give the checkpoint file itself")
    weights = next(filter(None, (_member(folder, label, name) for name in WEIGHTS_FILES)), None)
    if weights is None:
        raise ConversionError(f"{label}: the snapshot folder has no {' or '.join(WEIGHTS_FILES)}")
    config = _load_config(config_path, label)
    snapshot = Snapshot(label, weights, *_timm_fields(config, label))
    from keras_lightnets.conversion.namings.timm_models import timm_arch

    try:
        snapshot.arch, kwargs, snapshot.preprocessing = timm_arch(
            snapshot.architecture, snapshot.num_classes, snapshot.pretrained_cfg
        )
    except (KeyError, ValueError) as err:
        raise ConversionError(f"{label}/{CONFIG_FILE}: {safe_text(err, 200)}") from None
    snapshot.builder_kwargs = dict(kwargs)
    return snapshot


@dataclasses.dataclass
class Located:
    """The converter's input, read and recognised: the checkpoint (its tensors
    under their naming's keys), its `detect.Detection`, and the snapshot
    folder it came from (None for a checkpoint file)."""

    checkpoint: object
    detection: detect.Detection
    snapshot: Snapshot | None
    file: str  # the weights file read

    spec = property(lambda self: self.detection.spec)
    naming = property(lambda self: self.detection.naming)
    tensors = property(lambda self: self.detection.tensors)
    inferred = property(lambda self: self.detection.inferred)
    preprocessing = property(lambda self: self.snapshot and self.snapshot.preprocessing)

    @property
    def prefix(self):
        """Every key prefix stripped: the reader's (`module.`) and the wrapper's."""
        return "".join(p for p in (self.checkpoint.prefix, self.detection.prefix) if p) or None

    def agreed(self, kwargs):
        """The builder kwargs read from the weights, checked against and
        completed by the snapshot's `config.json`."""
        return check_builder_kwargs(self.snapshot, kwargs) if self.snapshot else kwargs


def locate(path, arch=detect.AUTO, source=None):
    """Reads a checkpoint file or a snapshot folder and recognises its arch and naming."""
    folder = read_snapshot(path) if os.path.isdir(path) else None
    file = folder.weights if folder else os.fspath(path)
    checkpoint = read_checkpoint(file)
    if folder:
        found = find_arch(folder, checkpoint.tensors, arch, source)
    else:
        found = detect.find_arch(checkpoint.tensors, arch, source)
    # one copy of the weights, under the naming's keys
    checkpoint.tensors, checkpoint.alias_groups = found.tensors, found.renamed(checkpoint.alias_groups)
    return Located(checkpoint, found, folder, file)


def find_arch(snapshot, tensors, arch=detect.AUTO, source=None):
    """The weights' `Detection` as the arch `config.json` names, in the naming
    whose reading agrees with it (timm's `tf_` ports have the very keys and
    shapes of the others); a conflict error naming both sides when `--arch`
    or the weights say otherwise."""
    if arch not in (None, detect.AUTO) and arch != snapshot.arch:
        raise ConversionError(
            f"--arch {arch}, but {snapshot.folder}/config.json's architecture "
            f"{snapshot.architecture!r} is {snapshot.arch}; nothing written"
        )
    spec = detect.requested_spec(snapshot.arch)
    said = f"its architecture {snapshot.architecture!r} is {snapshot.arch}"
    for prefix in ["", *detect.common_prefixes(tensors)]:
        view = detect.strip(tensors, prefix)
        readings, rejected = detect.candidates(view, [spec], source)
        for reading in readings:
            if not _disagreement(snapshot, reading.kwargs):
                inferred = f"{spec.name} from {CONFIG_FILE}'s architecture {snapshot.architecture!r}"
                return detect.Detection(spec, reading.naming, view, prefix or None, inferred)
        if readings:
            raise snapshot.conflict(_disagreement(snapshot, readings[0].kwargs))
        if rejected:
            raise snapshot.conflict(f"{said}, but {rejected[0][2]}")
    try:
        other = detect.find_arch(tensors, detect.AUTO, source).spec.name
    except ConversionError:
        other = "no arch the converter knows"
    raise snapshot.conflict(f"{said}, the weights are {other}")


def check_builder_kwargs(snapshot, kwargs):
    """`kwargs` (read from the weights) completed by `config.json`'s; a conflict
    error when the two disagree (class count, width, ...)."""
    disagreement = _disagreement(snapshot, kwargs)
    if disagreement:
        raise snapshot.conflict(disagreement)
    return {**snapshot.builder_kwargs, **kwargs}


def _disagreement(snapshot, kwargs):
    """What config.json's builder kwargs and those read from the weights disagree on, or ""."""
    for name, value in snapshot.builder_kwargs.items():
        if name in kwargs and kwargs[name] != value:
            if name == "classes":
                return f"num_classes {value}, the weights' classifier has {kwargs[name]}"
            return f"architecture {snapshot.architecture!r} means {name}={value!r}, the weights {name}={kwargs[name]!r}"
    return ""


# ---------------------------------------------------------------- reading


def _member(folder, label, name):
    """The path of the regular file `name` in `folder` (a Hugging Face cache link
    resolved into its blobs), None if absent; an error for anything else."""
    path = os.path.join(folder, name)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConversionError(f"{label}/{name}: cannot read ({safe_text(err.strerror or err, 100)})") from None
    if stat.S_ISLNK(info.st_mode):
        path = _cache_blob(folder, path)
        if path is None:
            raise ConversionError(
                f"{label}/{name} is a link that leaves the snapshot (only Hugging Face cache links "
                "into the repository's blobs/ are followed)"
            )
        info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ConversionError(f"{label}/{name} is not a regular file")
    return path


def _cache_blob(folder, link):
    """The blob a Hugging Face cache link (`snapshots/<commit>/<file>` →
    `../../blobs/<hash>`) points to, if it is one and exists."""
    real_folder = os.path.realpath(folder)
    if os.path.basename(os.path.dirname(real_folder)) != "snapshots":
        return None
    blobs = os.path.join(os.path.dirname(os.path.dirname(real_folder)), "blobs")
    target = os.path.realpath(link)
    if os.path.dirname(target) != blobs or not os.path.exists(target):
        return None
    return target


def _load_config(path, label):
    where = f"{label}/{CONFIG_FILE}"
    try:
        with open_regular(path) as file:  # a FIFO swapped in since `_member` looked cannot hang it
            data = file.read(CONFIG_LIMIT + 1)
    except NotRegularFileError:
        raise ConversionError(f"{where} is not a regular file") from None
    except OSError as err:
        raise ConversionError(f"{where}: cannot read ({safe_text(err.strerror or err, 100)})") from None
    if len(data) > CONFIG_LIMIT:
        raise ConversionError(f"{where} is larger than {CONFIG_LIMIT // 1024} KB; not a timm config")
    try:
        config = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError) as err:
        raise ConversionError(f"{where} is not valid JSON ({safe_text(err, 100)})") from None
    except RecursionError:
        raise ConversionError(f"{where} is nested too deeply") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{where} is not a JSON object")
    if _depth(config) > MAX_DEPTH:
        raise ConversionError(f"{where} is nested deeper than {MAX_DEPTH} levels")
    return config


def _refuse_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a key appears twice in one object")
    return dict(pairs)


def _depth(value):
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


# ---------------------------------------------------------------- timm's fields


def _timm_fields(config, label):
    """`(architecture, num_classes, pretrained_cfg)` as timm's
    `load_model_config_from_hf` reads them, type- and range-checked."""
    where = f"{label}/{CONFIG_FILE}"
    # Older exports are one flat pretrained_cfg holding `architecture` too.
    cfg = config.get("pretrained_cfg", config)
    if not isinstance(cfg, dict):
        raise ConversionError(f"{where}: pretrained_cfg is not an object")
    architecture = config.get("architecture", cfg.get("architecture"))
    if not isinstance(architecture, str) or not _ARCHITECTURE.fullmatch(architecture):
        raise ConversionError(f"{where}: 'architecture' must be a timm model name, got {_brief(architecture)}")
    model_args = config.get("model_args", {})
    if not isinstance(model_args, dict):
        raise ConversionError(f"{where}: model_args is not an object")
    in_chans = model_args.get("in_chans", 3)
    if in_chans != 3 or isinstance(in_chans, bool):
        raise ConversionError(f"{where}: in_chans {_brief(in_chans)}; only 3-channel models are converted")
    counts = {
        source: _classes(value, where, source)
        for source, value in (
            ("model_args.num_classes", model_args.get("num_classes")),
            ("num_classes", config.get("num_classes")),
            ("pretrained_cfg.num_classes", cfg.get("num_classes")),
        )
        if value is not None
    }
    model_count, top_count = counts.get("model_args.num_classes"), counts.get("num_classes")
    if None not in (model_count, top_count) and model_count != top_count:
        raise ConversionError(f"{where}: num_classes {top_count} but model_args.num_classes {model_count}")
    num_classes = next(iter(counts.values()), TIMM_DEFAULT_CLASSES)
    return architecture, num_classes, _pretrained_cfg(cfg, where)


def _classes(value, where, name):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CLASSES:
        raise ConversionError(f"{where}: {name} must be a class count, got {_brief(value)}")
    return value


def _pretrained_cfg(cfg, where):
    """The eval-transform fields of a pretrained_cfg, checked; the others are dropped."""
    checks = {
        "input_size": lambda v: _ints(v, 3) and v[0] == 3,
        "test_input_size": lambda v: _ints(v, 3) and v[0] == 3,
        "mean": lambda v: _numbers(v, 3),
        "std": lambda v: _numbers(v, 3) and min(v) > 0,
        "crop_pct": lambda v: _number(v) and 0 < v <= 2,
        "test_crop_pct": lambda v: _number(v) and 0 < v <= 2,
        "interpolation": lambda v: v in _INTERPOLATIONS,
        "crop_mode": lambda v: v in ("center", "squash", "border"),
        "tag": lambda v: isinstance(v, str) and len(v) <= 128,
        "num_classes": lambda v: True,  # checked with the others
    }
    checked = {}
    for name, check in checks.items():
        if name not in cfg:
            continue
        value = cfg[name]
        if not check(value):
            raise ConversionError(f"{where}: pretrained_cfg.{name} is invalid: {_brief(value)}")
        checked[name] = value
    return checked


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value, count):
    return isinstance(value, list) and len(value) == count and all(map(_number, value))


def _ints(value, count):
    return (
        isinstance(value, list) and len(value) == count
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 16384 for v in value)
    )


def _brief(value):
    return safe_text(json.dumps(value)[:60], 60)
