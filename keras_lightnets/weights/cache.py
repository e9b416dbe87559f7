"""The caches: converted pretrained files (with their MANIFEST.json), Keras' and torchvision's download folders.

Converted files live in a cache folder (`weights/` in a source checkout, else
`~/.cache/keras-lightnets`, or `$KERAS_LIGHTNETS_CACHE`) whose MANIFEST.json
records each file's sha256, the cache version and the checkpoint it was made
from; an entry made by another cache version, source or arch, or whose hash no
longer matches, is made again, never served.
"""

import json
import os
import tempfile

from keras_lightnets.files import NotRegularFileError, open_regular, safe_text
from keras_lightnets.weights.h5 import WeightsMismatchError, read_record, sha256_of
from keras_lightnets.weights.record import (
    MAX_MANIFEST_BYTES,
    RecordError,
    check_manifest,
    parse_json,
)
from keras_lightnets.weights.sources import SOURCES, KerasFile

# Bumped whenever converted pretrained files change, so caches are rebuilt.
CACHE_VERSION = 3
# Where Keras files are kept (None: Keras' own cache, `~/.keras/models`).
KERAS_CACHE_DIR = None


def cache_dir():
    """Where converted pretrained weights are kept (created on demand)."""
    path = os.environ.get("KERAS_LIGHTNETS_CACHE")
    if not path:
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        checkout = os.path.join(os.path.dirname(package), "weights")
        if os.path.isdir(checkout) and os.access(checkout, os.W_OK):
            path = checkout
        else:
            path = os.path.join(os.path.expanduser("~"), ".cache", "keras-lightnets")
    os.makedirs(path, exist_ok=True)
    return path


def keras_cache_dir():
    """Where keras.applications keeps its files: `$KERAS_HOME/models`, else
    `~/.keras/models` (`/tmp/.keras/models` when the home folder is read-only),
    Keras' own rule, found without importing Keras."""
    if KERAS_CACHE_DIR:
        path = KERAS_CACHE_DIR
    else:
        home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
        if "KERAS_HOME" not in os.environ and not os.access(os.path.expanduser("~"), os.W_OK):
            home = os.path.join("/tmp", ".keras")
        path = os.path.join(home, "models")
    os.makedirs(path, exist_ok=True)
    return path


def torch_hub_dir():
    """torchvision's own download cache (`$TORCH_HOME/hub/checkpoints`)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch"
    )
    return os.path.join(home, "hub", "checkpoints")


# ---------------------------------------------------------------- manifest


def read_manifest(path):
    """The cache's manifest, checked (`keras_lightnets.weights.record.check_manifest`);
    `{}` when there is none yet.

    Raises:
        WeightsMismatchError: a manifest that is not one (one line; nothing is changed).
    """
    try:
        with open_regular(path) as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
        return check_manifest(parse_json(raw, MAX_MANIFEST_BYTES, max_depth=4))
    except FileNotFoundError:
        return {}
    except (RecordError, NotRegularFileError, OSError) as err:
        raise WeightsMismatchError(
            f"{safe_text(path, 200)}: not a keras-lightnets cache manifest ({safe_text(err, 120)}); "
            "remove it and the cache is made again"
        ) from None


def write_manifest(path, manifest):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".", suffix=".json.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def update_manifest(folder, key, record):
    path = os.path.join(folder, "MANIFEST.json")
    manifest = read_manifest(path)
    manifest[key] = record
    write_manifest(path, manifest)


def cached(folder, name, target):
    """Whether the cache's `target` is the converted file of `SOURCES[name]`, made by
    this cache version from the known checkpoint, with the arch and the checkpoint's
    sha256 in its own record too; anything else is converted again, never served."""
    source = SOURCES[name]
    entry = read_manifest(os.path.join(folder, "MANIFEST.json")).get(name, {})
    checkpoint = entry.get("source_sha256")  # the full sha256 of the copy converted
    if not (
        entry.get("cache_version") == CACHE_VERSION
        and entry.get("file") == os.path.basename(target)
        and isinstance(checkpoint, str) and len(source.sha256) >= 8 and checkpoint.startswith(source.sha256)
        and os.path.isfile(target)
        and entry.get("sha256") == sha256_of(target)
    ):
        return False
    try:
        record = read_record(target)
    except (OSError, WeightsMismatchError):
        return False
    return record["arch"] == source.arch and record.get("source", {}).get("sha256") == checkpoint


def cached_weights(name):
    """Path of the converted weights of `SOURCES[name]` if the cache holds
    them (sha256 as recorded), else None. Converts and fetches nothing and
    imports no Keras; None for keras.applications' files."""
    if isinstance(SOURCES[name], KerasFile):
        return None
    folder = cache_dir()
    target = os.path.join(folder, f"{name}.h5")
    return target if cached(folder, name, target) else None
