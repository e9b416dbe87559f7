"""Shared test utilities: photos, random weights, running the CLIs, parity checks."""

import http.server
import os
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


def torch_forward(model, images_nhwc):
    """Runs `model` on NHWC float32 images; returns numpy logits."""
    x = torch.as_tensor(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        return model.eval()(x).numpy()


def nchw(images_nhwc):
    return np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))


def reference_images(size=224, seed=0):
    """Two real photos and one noise image, ImageNet mean/std normalised."""
    rng = np.random.default_rng(seed)
    images = np.stack(
        [photo("chelsea", size), photo("coffee", size), rng.uniform(0, 255, (size, size, 3))]
    ).astype("float32")
    return kl.preprocess_input(images, "torch")


def run_cli(capsys, *args):
    """`lightnets convert ARGS`, as users run it: `(exit status, stdout, stderr)`."""
    status = lightnets(["convert", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def top5(logits):
    return np.argsort(-logits, axis=1)[:, :5]


def assert_parity(keras_logits, torch_logits):
    assert keras_logits.shape == torch_logits.shape
    diff = np.abs(keras_logits - torch_logits).max()
    assert diff <= PARITY_ATOL, f"max |Δlogit| = {diff:.2e}"
    np.testing.assert_array_equal(top5(keras_logits), top5(torch_logits))
    # logits of unit scale or more, so that 1e-4 is a real test
    assert torch_logits.std() > 0.5


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
