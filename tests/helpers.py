"""Shared test utilities: photos, random weights, running the CLIs, parity checks."""

import http.server
import os
import re
import subprocess
import sys
import threading

import numpy as np
import torch
from keras import layers
from torch import nn

import keras_lightnets as kl
from keras_lightnets.cli.main import main as lightnets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARITY_ATOL = 1e-4


def photo(name="chelsea", size=224):
    """A real photo from scikit-image's sample data, resized, float32 0-255."""
    import skimage.data
    from PIL import Image

    img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype="float32")


def small_classifier(shape=(32, 32, 3), classes=5, seed=0):
    """A one-conv Keras classifier (softmax), for tests of the exports' plumbing."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape)
    x = layers.Conv2D(8, 3, activation="relu")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax")(x), name="small_classifier")


def randomize_keras_weights(model, seed=0):
    """Gives every variable random values; BN gets random affine parameters,
    means and variances in [0.5, 2], so a wrong mapping cannot hide."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
        else:
            for variable in layer.weights:
                shape = tuple(variable.shape)
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
                if len(shape) == 4 and layer.__class__.__name__ == "DepthwiseConv2D":
                    fan_in = shape[0] * shape[1]
                scale = np.sqrt(2.0 / max(fan_in, 1))
                variable.assign(rng.normal(0, scale, shape).astype("float32"))


def save_legacy_h5(model, path):
    """Writes `model`'s weights in the legacy layout of keras.applications' files."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


@torch.no_grad()
def randomize_torch_model(model, calibration_images, seed=0):
    """Random weights with data-calibrated, then perturbed, BN statistics.

    Convolutions get He-normal weights; BN gets random gamma/beta; the
    running statistics are first measured on `calibration_images` (so every
    layer's output has roughly unit spread and no error is washed out or
    saturated), then perturbed per channel (variance x U[0.6, 1.6], mean
    shifted) so that a swapped or default statistic changes the logits.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.normal_(0, (2.0 / fan_in) ** 0.5, generator=gen)
            if module.bias is not None:
                module.bias.normal_(0, 0.5, generator=gen)
        elif isinstance(module, nn.Linear):
            module.weight.normal_(0, (2.0 / module.in_features) ** 0.5, generator=gen)
            if module.bias is not None:
                module.bias.normal_(0, 0.5, generator=gen)
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.uniform_(0.5, 1.5, generator=gen)
            module.bias.normal_(0, 0.3, generator=gen)
            module.reset_running_stats()
            module.momentum = None  # cumulative average: stats of this one batch
    model.train()
    model(torch.as_tensor(calibration_images))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            std = module.running_var.sqrt()
            module.running_mean.add_(0.2 * std * torch.randn(n, generator=gen))
            module.running_var.mul_(torch.empty(n).uniform_(0.6, 1.6, generator=gen))
            module.momentum = 0.1
    return model.eval()


@torch.no_grad()
def unit_logits(model, images, classifiers=None):
    """Divides the classifier layers' weights and biases (by default the
    model's last Conv2d/Linear) by the spread of the logits on `images`, so
    that the logits have unit spread; returns those scaled logits.

    Calibrated BatchNorms keep each conv's output at unit scale, but residual
    streams, squeeze-excite gates and random heads grow the logits (std ~15
    for a random ResNet-101 or MobileNetV3); the gates are meant for
    unit-scale logits. The classifiers and the resizes after them are
    linear, so scaling their weights and biases scales the logits.
    """
    if classifiers is None:
        classifiers = [[m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1]]
    logits = torch_forward(model, images)
    scale = float(logits.std())
    for layer in classifiers:
        layer.weight /= scale
        layer.bias /= scale
    return logits / scale


def torch_forward(model, images_nhwc):
    """Runs `model` on NHWC float32 images; returns numpy logits."""
    x = torch.as_tensor(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        return model.eval()(x).numpy()


def nchw(images_nhwc):
    return np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))


def calibration_images(height, width, seed=0):
    """A real photo and smooth noise at (height, width), ImageNet mean/std normalised."""
    from PIL import Image

    cat = Image.fromarray(photo("chelsea", 256).astype("uint8")).resize((width, height), Image.Resampling.BILINEAR)
    noise = np.random.default_rng(seed).uniform(0, 255, (height // 8 + 1, width // 8 + 1, 3)).astype("uint8")
    noise = Image.fromarray(noise).resize((width, height), Image.Resampling.BICUBIC)
    images = np.stack([np.asarray(cat), np.asarray(noise)]).astype("float32")
    return kl.preprocess_input(images, "torch")


def reference_images(size=224, seed=0):
    """Two real photos and one noise image, ImageNet mean/std normalised."""
    rng = np.random.default_rng(seed)
    images = np.stack(
        [photo("chelsea", size), photo("coffee", size), rng.uniform(0, 255, (size, size, 3))]
    ).astype("float32")
    return kl.preprocess_input(images, "torch")


def write_safetensors(path, state_dict):
    """`state_dict` (torch tensors) as a .safetensors file, float32, as `safetensors.torch.save_file` lays it out."""
    import json
    import struct

    header, blobs, offset = {}, [], 0
    for name, tensor in state_dict.items():
        data = tensor.detach().numpy().astype("<f4" if tensor.is_floating_point() else "<i8").tobytes()
        dtype = "F32" if tensor.is_floating_point() else "I64"
        header[name] = {"dtype": dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))
    return path


def run_cli(capsys, *args):
    """`lightnets convert ARGS`, as users run it: `(exit status, stdout, stderr)`."""
    status = lightnets(["convert", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


PARITY_LINE = re.compile(
    r"^parity +max \|Δlogit\| (\S+) vs (.+) on (\d+) inputs of \d+x\d+, (.+), max \|Δprobability\| (\S+)$", re.M
)


def reported_parity(report):
    """`(max |Δlogit|, reference, verdict)` of a conversion report's parity line."""
    match = PARITY_LINE.search(report)
    assert match, f"no measured parity in the report:\n{report}"
    return float(match.group(1)), match.group(2), match.group(4)


def assert_reported_parity(report, reference):
    """The conversion measured parity against `reference` (as the report names
    it) and passed the gate: classification max |Δlogit| ≤ 1e-4 and the same
    top-5; segmentation argmax agreement ≥ 99.99 %."""
    difference, described, verdict = reported_parity(report)
    assert described == reference, f"parity measured against {described!r}, not {reference!r}"
    if verdict.startswith("argmax agreement"):
        assert float(verdict.split()[2]) >= 99.99, verdict
    else:
        assert verdict == "top-5 identical" and difference <= PARITY_ATOL, (difference, verdict)


def top5(logits):
    return np.argsort(-logits, axis=1)[:, :5]


def assert_parity(keras_logits, torch_logits):
    assert keras_logits.shape == torch_logits.shape
    diff = np.abs(keras_logits - torch_logits).max()
    assert diff <= PARITY_ATOL, f"max |Δlogit| = {diff:.2e}"
    np.testing.assert_array_equal(top5(keras_logits), top5(torch_logits))
    # logits of unit scale or more, so that 1e-4 is a real test
    assert torch_logits.std() > 0.5


ORIGINAL_CHECKPOINT_ENV = "KL_TEST_ORIGINAL_CHECKPOINT"


def original_marvis_reference(spec, builder_kwargs, tensors):
    """A parity reference (`--reference tests.helpers:original_marvis_reference`)
    that ignores the converted checkpoint and holds the weights of the file
    named by $KL_TEST_ORIGINAL_CHECKPOINT instead (the unperturbed original),
    so that a tampered checkpoint meets the weights it should have had."""
    from keras_lightnets.conversion.references.common import holding
    from keras_lightnets.conversion.references.marvis import MobileNet

    state_dict = torch.load(os.environ[ORIGINAL_CHECKPOINT_ENV], weights_only=True)
    stem = state_dict["model.0.0.weight"].shape[0]
    model = MobileNet(state_dict["fc.weight"].shape[0], state_dict["model.1.0.weight"].shape[0] // stem, stem / 32)
    return holding(model, {k: v.numpy() for k, v in state_dict.items()})


def run_demo(*args, env=None):
    """`python demo.py ARGS` from the repository; `env`: variables to set."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "demo.py"), *map(str, args)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )


def without_tensorflow(tmp_path, env=None):
    """`env` plus a PYTHONPATH on which importing tensorflow or keras fails."""
    folder = tmp_path / "no_tensorflow"
    for name in ("tensorflow", "keras"):
        os.makedirs(folder / name, exist_ok=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} imported')\n")
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    return {**(env or {}), "PYTHONPATH": path}


def files_in(folder):
    """Every file under `folder`, hidden ones included."""
    return sorted(
        os.path.relpath(os.path.join(root, f), folder) for root, _, names in os.walk(folder) for f in names
    )


def closed_port_url():
    """The URL of a loopback port nobody listens on."""
    import socket

    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class LoopbackServer:
    """A loopback HTTP server serving `files` (`{url path: bytes}`); paths in
    `cut` get their full Content-Length but only half the bytes."""

    def __init__(self):
        self.files, self.cut, self.requests = {}, set(), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in server.cut else body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def slow_converter(delay):
    """`python -c` source of the converter's CLI (`convert`'s arguments after
    it) with every HDF5 dataset write slowed by `delay` seconds, so that a
    signal lands while the file is being written."""
    return f"""
import sys, time, h5py
create = h5py.Group.create_dataset
def slow_create(self, *args, **kwargs):
    time.sleep({delay})
    return create(self, *args, **kwargs)
h5py.Group.create_dataset = slow_create
from convert.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def keras_applications_request(monkeypatch, modules, family, **kwargs):
    """`(fname, origin, file_hash)`: what the installed keras.applications'
    `family(weights="imagenet", **kwargs)` asks `get_file` for (patched in
    `modules`, stopped there), with our own base-URL override off."""
    import warnings

    import keras

    from keras_lightnets.weights import fetch

    class Stop(Exception):
        pass

    asked = []

    def fake_get_file(fname, origin, file_hash=None, **_):
        asked.append((fname, origin, file_hash))
        raise Stop

    for module in modules:
        monkeypatch.setattr(module.file_utils, "get_file", fake_get_file)
    monkeypatch.setattr(fetch, "KERAS_BASE_URL", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            getattr(keras.applications, family)(weights="imagenet", **kwargs)
        except Stop:
            return asked[0]
    raise AssertionError(f"keras.applications.{family} fetched no file")

