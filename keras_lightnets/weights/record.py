"""The one schema of what keras-lightnets reads back from JSON it once wrote.

- `parse_json`: JSON text of bounded size and nesting (checked before parsing,
  so a 100,000-deep document costs microseconds, not a RecursionError).
- `check_record`: the record a weights file carries (attribute `keras_lightnets`):
  its keys, their types and ranges, the arch, builder and preprocessing from
  the known sets, builder arguments from the builders' own parameters (never
  `weights`), before anything is built.
- `check_manifest`: the weights cache's MANIFEST.json.
- `check_compiled_record`: the side record of a compiled TFLite cache entry.

Every check raises `RecordError` with a one-line reason; the caller names the file.
Nothing here imports Keras.
"""

import json
import math
import re

import numpy as np

from keras_lightnets import registry
from keras_lightnets.errors import LightnetsError
from keras_lightnets.files import safe_text
from keras_lightnets.models.tables import (
    EFFICIENTNET_LITE_VARIANTS,
    SHUFFLENET_V1_STAGE2_CHANNELS,
    SHUFFLENET_V2_CHANNELS,
)
from keras_lightnets.preprocessing import PREPROCESSING_MODES
from keras_lightnets.preprocessing.image import RESAMPLING

RECORD_FORMAT = 1
COMPILED_FORMAT = 1
MAX_SIDE = 4096  # input sizes
MAX_CLASSES = 100_000
MAX_RECORD_BYTES = 8 << 20  # 100,000 class names fit
MAX_MANIFEST_BYTES = 1 << 20
MAX_DEPTH = 16

_HEX64 = re.compile(r"\A[0-9a-f]{64}\Z")
_IDENTIFIER = re.compile(r"\A[A-Za-z0-9_.\-]{1,64}\Z")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


class RecordError(LightnetsError, ValueError):
    """A record, manifest or cache record that does not fit its schema; one-line message."""


# ----------------------------------------------------------------------- parsing


def nesting_depth(text):
    """The deepest nesting of `[` and `{` in JSON text (strings ignored), in one pass."""
    brackets = re.sub(r"[^\[\]{}]", "", _STRING.sub("", text))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), np.uint8)
    return int(np.cumsum(np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)).max())


def parse_json(raw, max_bytes=MAX_RECORD_BYTES, max_depth=MAX_DEPTH):
    """JSON `raw` (str or bytes), refused unless at most `max_bytes` long and
    `max_depth` deep. Raises RecordError."""
    if isinstance(raw, (bytes, bytearray, np.bytes_)):
        if len(raw) > max_bytes:
            raise RecordError(f"{len(raw)} bytes of JSON, more than {max_bytes}")
        try:
            raw = bytes(raw).decode("utf8")
        except UnicodeDecodeError:
            raise RecordError("not UTF-8 text") from None
    if not isinstance(raw, str):
        raise RecordError(f"a {type(raw).__name__}, not JSON text")
    if len(raw) > max_bytes:
        raise RecordError(f"{len(raw)} characters of JSON, more than {max_bytes}")
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise RecordError(f"JSON nested {depth} deep, more than {max_depth}")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:  # bad JSON, integers of more than 4,300 digits
        raise RecordError(f"not valid JSON ({safe_text(err, 80)})") from None


# ------------------------------------------------------------------ value rules


def _describe(value):
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return safe_text(text, 40)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def integer(low, high):
    def check(value):
        return _is_int(value) and low <= value <= high

    check.text = f"an integer in [{low}, {high}]"
    return check


def number(low, high, low_open=False):
    def check(value):
        return _is_number(value) and (low < value if low_open else low <= value) and value <= high

    check.text = f"a number in {'(' if low_open else '['}{low}, {high}]"
    return check


def _kind(value):
    if isinstance(value, bool) or value is None:
        return value
    return "number" if isinstance(value, (int, float)) else type(value)


def one_of(*choices):
    def check(value):
        return any(_kind(value) == _kind(c) and value == c for c in choices)

    listed = ", ".join(json.dumps(c) for c in choices)
    check.text = f"one of {listed}" if len(listed) <= 100 else "a known name (see keras_lightnets.registry)"
    return check


def optional(rule):
    def check(value):
        return value is None or rule(value)

    check.text = f"null or {rule.text}"
    return check


def text(max_length=256, pattern=None):
    def check(value):
        return isinstance(value, str) and len(value) <= max_length and (pattern is None or pattern.match(value))

    check.text = f"a string of at most {max_length} characters" + (" (letters, digits, _ . -)" if pattern else "")
    return check


def list_of(rule, max_length):
    def check(value):
        return isinstance(value, list) and len(value) <= max_length and all(rule(item) for item in value)

    check.text = f"a list of at most {max_length} items, each {rule.text}"
    return check


def _input_shape(value):
    side = optional(integer(1, MAX_SIDE))
    return isinstance(value, list) and len(value) == 3 and all(side(v) for v in value)


_input_shape.text = f"[height, width, channels], each null or an integer in [1, {MAX_SIDE}]"
BOOLEAN = one_of(True, False)
HEX64 = text(64, _HEX64)
IDENTIFIER = text(64, _IDENTIFIER)
CLASSES = integer(1, MAX_CLASSES)
SIDE = integer(1, MAX_SIDE)

# Every argument a builder may get from a record, with its rule: the union of
# the builders' parameters (tests/test_untrusted_inputs.py compares it with their
# signatures) less `weights` and `input_tensor`, which a record never sets.
BUILDER_ARGUMENTS = {
    "input_shape": optional(_input_shape),
    "alpha": number(0, 4, low_open=True),
    "depth_multiplier": integer(1, 16),
    "dropout": optional(number(0, 1)),
    "include_top": BOOLEAN,
    "pooling": optional(one_of("avg", "max")),
    "classes": CLASSES,
    "classifier_activation": optional(one_of("softmax", "sigmoid", "linear")),
    "style": one_of("tf", "torch"),
    "activation": one_of("relu6", "relu"),
    "name": optional(IDENTIFIER),
    "expand_first_block": BOOLEAN,
    "version": one_of("1_0", "1_1"),
    "width": one_of(*SHUFFLENET_V2_CHANNELS),
    "groups": one_of(*SHUFFLENET_V1_STAGE2_CHANNELS),
    "scale": number(0, 4, low_open=True),
    "backbone": one_of(*sorted({s.builder_kwargs["backbone"] for s in registry.SPECS.values()
                                if "backbone" in s.builder_kwargs})),
    "output_stride": one_of(8, 16),
    "head": IDENTIFIER,  # the builder checks the name against its table
    "dilation_schedule": optional(IDENTIFIER),
    "separable": BOOLEAN,
    "variant": one_of(*EFFICIENTNET_LITE_VARIANTS),
    "depth_coefficient": number(0, 4, low_open=True),
    "stem_filters": optional(integer(1, 8192)),
    "last_filters": optional(integer(1, 8192)),
    "head_filters": optional(integer(1, 8192)),
    "dropout_rate": optional(number(0, 1)),
    "minimalistic": BOOLEAN,
    "include_preprocessing": optional(BOOLEAN),
    "width_rule": optional(IDENTIFIER),  # the builder checks the name against its table
    "bn_epsilon": optional(number(0, 1, low_open=True)),
}
NEVER_IN_RECORD = ("weights", "input_tensor", "feature_extractor", "feature_keys")  # use-time options



def _resize(value):
    return value is None or SIDE(value) or value in ("stretch", "letterbox")


_resize.text = f'null, "stretch", "letterbox" or an integer in [1, {MAX_SIDE}]'
def _three(low_open):
    def check(value):
        return isinstance(value, list) and len(value) == 3 and all(number(0, 1e4, low_open)(v) for v in value)

    check.text = f"3 numbers in {'(' if low_open else '['}0, 10000]"
    return check


PREPROCESSING_KEYS = {
    "mode": one_of(*PREPROCESSING_MODES),
    "size": optional(SIDE),
    "resize": _resize,
    "resample": one_of(*RESAMPLING),
    "crop_fraction": optional(number(0, 1, low_open=True)),
    "fill": integer(0, 255),
    "mean": _three(low_open=False),  # mode "meanstd": the weights' own, in 0-1 units
    "std": _three(low_open=True),
}

SOURCE_KEYS = {"naming": IDENTIFIER, "checkpoint": text(255), "sha256": HEX64}


def _parity(value):
    """The converter's parity measurements (`conversion.pipeline.measure_parity`), or "not measured"."""
    if isinstance(value, str):
        return len(value) <= 256
    scalar = (str, int, float, bool, type(None))
    return isinstance(value, dict) and len(value) <= 32 and all(
        IDENTIFIER(key) and isinstance(item, scalar) and (not isinstance(item, str) or len(item) <= 512)
        for key, item in value.items()
    )


_parity.text = 'an object of at most 32 named numbers, flags and short texts, or "not measured"'


FINETUNE_KEYS = {
    "from": text(255),
    "epochs": integer(0, 10**6),
    "batch_size": integer(1, 10**6),
    "lr": number(0, 1e6),
    "seed": integer(-(2**63), 2**64),
    "replicas": integer(1, 10**5),
    "image_size": list_of(SIDE, 2),
    "freeze_backbone": BOOLEAN,
    "replaced_layers": list_of(text(256), 64),
    "metrics": lambda v: isinstance(v, dict) and len(v) <= 64 and all(
        isinstance(k, str) and len(k) <= 64 and (v[k] is None or isinstance(v[k], (int, float))) for k in v),
}
FINETUNE_KEYS["metrics"].text = "an object of at most 64 metric names and numbers"


def check_fields(value, rules, where, required=()):
    """Checks the object `value` key by key against `rules`; raises RecordError."""
    if not isinstance(value, dict):
        raise RecordError(f"{where} is {_describe(value)}, not a JSON object")
    for key in required:
        if key not in value:
            raise RecordError(f"{where} has no '{key}'")
    for key, item in value.items():
        rule = rules.get(key)
        if rule is None:
            raise RecordError(f"{where} has an unknown key {_describe(key)}")
        if not rule(item):
            name = key if where == "the record" else f"{where}.{key}"
            raise RecordError(f"{name} is {_describe(item)}; expected {rule.text}")
    return value


# ----------------------------------------------------------------------- record


def check_builder_kwargs(kwargs, where="builder_kwargs"):
    """The builder arguments of a record: known names, each within its rule."""
    if isinstance(kwargs, dict):
        for key in NEVER_IN_RECORD:
            if key in kwargs:
                raise RecordError(f"{where} sets '{key}', which a record may not set")
    return check_fields(kwargs, BUILDER_ARGUMENTS, where)


def check_record(record):
    """Returns `record` (a parsed weights record) if it fits the schema; raises RecordError."""
    top = {
        "format": one_of(RECORD_FORMAT),
        "arch": one_of(*registry.SPECS),
        "builder": text(64, _IDENTIFIER),
        "builder_kwargs": lambda v: True,  # checked below
        "preprocessing": lambda v: True,
        "source": lambda v: True,
        "finetune": lambda v: True,
        "class_names": optional(list_of(text(256), MAX_CLASSES)),
        "parity": _parity,
    }
    check_fields(record, top, "the record", required=("format", "arch", "builder", "builder_kwargs", "preprocessing"))
    spec = registry.SPECS[record["arch"]]
    if record["builder"] != spec.builder_name:
        raise RecordError(f"builder {_describe(record['builder'])} does not build {record['arch']} "
                          f"(its builder is {spec.builder_name})")
    check_builder_kwargs(record["builder_kwargs"])
    preprocessing = check_fields(record["preprocessing"], PREPROCESSING_KEYS, "preprocessing", required=("mode",))
    if preprocessing.get("resize") == "letterbox" and not _is_int(preprocessing.get("size")):
        raise RecordError("preprocessing: a letterbox resize needs an integer size")
    if preprocessing["mode"] == "meanstd" and not {"mean", "std"} <= set(preprocessing):
        raise RecordError("preprocessing: mode 'meanstd' needs its mean and std")
    if "source" in record:
        check_fields(record["source"], SOURCE_KEYS, "source")
    if "finetune" in record:
        check_fields(record["finetune"], FINETUNE_KEYS, "finetune")
    return record


def check_signature(kwargs, parameters, builder_name):
    """Raises RecordError unless every key of `kwargs` is one of the builder's `parameters`."""
    unknown = [key for key in kwargs if key not in parameters]
    if unknown:
        raise RecordError(f"builder_kwargs has {_describe(unknown[0])}, which {builder_name} does not take")


# ----------------------------------------------------------------------- caches

MANIFEST_ENTRY_KEYS = {
    "file": text(255),
    "cache_version": integer(0, 10**6),
    "sha256": HEX64,
    "source": text(1024),
    "source_sha256": optional(HEX64),
    "license": text(1024),
}


def check_manifest(manifest):
    """Returns `manifest` (a parsed MANIFEST.json) if it fits the schema; raises RecordError.

    `{"downloads": {file name: sha256}, source name: {file, cache_version, sha256, ...}}`
    """
    if not isinstance(manifest, dict):
        raise RecordError(f"the manifest is {_describe(manifest)}, not a JSON object")
    for key, entry in manifest.items():
        if not IDENTIFIER(key):
            raise RecordError(f"the manifest has an entry named {_describe(key)}")
        if key == "downloads":
            if not isinstance(entry, dict) or not all(text(255)(k) and HEX64(v) for k, v in entry.items()):
                raise RecordError("downloads is not an object of file names and sha256 digests")
            continue
        check_fields(entry, MANIFEST_ENTRY_KEYS, key, required=("file", "cache_version", "sha256"))
    return manifest


COMPILED_KEYS = {
    "format": one_of(COMPILED_FORMAT),
    "arch": one_of(*registry.SPECS),
    "weights_sha256": HEX64,
    "size": lambda v: isinstance(v, list) and len(v) == 2 and all(SIDE(s) for s in v),
    "version": text(32, _IDENTIFIER),
    "tflite_sha256": HEX64,
}
COMPILED_KEYS["size"].text = f"[height, width], integers in [1, {MAX_SIDE}]"


def check_compiled_record(record):
    """Returns the side record of a compiled cache entry if it fits the schema; raises RecordError."""
    return check_fields(record, COMPILED_KEYS, "the record", required=tuple(COMPILED_KEYS))
