"""Speed of keras-lightnets against keras.applications, PyTorch and ONNX Runtime.

    pip install -e ".[test,bench]"
    python bench/run.py [--quick]

Everything runs in this one process, interleaved (round r times every mode
once, in turn), and each figure is the median of the rounds after warm-up.
Prints a table (ms, images/s, % of the measured fp32 matmul peak, ratio to
keras.applications with the same weights and mode) and writes bench/RESULTS.md
with the CPU, core count and versions. Then: the converter's throughput and
memory (bench/convert_speed.py) and the demo's cold start, split by stage.
Never run by the tests: timings are not assertions.
"""

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from keras_lightnets.cli import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402

import keras_lightnets as kl  # noqa: E402
from keras_lightnets.export import _tflite_bytes  # noqa: E402
from keras_lightnets.inference import Predictor  # noqa: E402


def matmul_peak_gflops(n=2048, rounds=10):
    """Measured fp32 matmul throughput of this machine (TensorFlow, all cores)."""
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    f = tf.function(lambda: tf.matmul(a, b))
    f().numpy()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        f().numpy()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9


def count_macs(model):
    """Multiply-accumulates of one image through the conv and dense layers."""
    macs = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "DepthwiseConv2D"):
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, k_out = layer.kernel.shape
            macs += h * w * kh * kw * c_in * k_out
        elif kind == "Dense":
            macs += int(np.prod(layer.kernel.shape))
    return macs


def keras_modes(model, batch):
    """The ways a Keras user runs a model, as zero-argument callables."""
    x = np.random.default_rng(0).uniform(-1, 1, (batch,) + tuple(model.input_shape[1:])).astype("float32")
    spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32)
    graph = tf.function(lambda t: model(t, training=False), input_signature=[spec])
    xla = tf.function(lambda t: model(t, training=False), input_signature=[spec], jit_compile=True)
    predictor = Predictor(model)
    tensor = tf.constant(x)
    modes = {
        "model(x)": lambda: model(x, training=False).numpy(),
        "predict": lambda: model.predict(x, verbose=0, batch_size=batch),
        "tf.function": lambda: graph(tensor).numpy(),
        "XLA": lambda: xla(tensor).numpy(),
        "Predictor": lambda: predictor(x),
    }
    content = _tflite_bytes(model, "none", None)
    for threads in (1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            interpreter = tf.lite.Interpreter(model_content=content, num_threads=threads)
        source = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(source["index"], list(x.shape))
        interpreter.allocate_tensors()
        target = interpreter.get_output_details()[0]

        def run(interpreter=interpreter, source=source, target=target):
            interpreter.set_tensor(source["index"], x)
            interpreter.invoke()
            return interpreter.get_tensor(target["index"])

        modes[f"TFLite {threads} thread{'s' if threads > 1 else ''}"] = run
    return modes


def torch_modes(module, batch, size, onnx=True):
    x = torch.rand(batch, 3, size, size)
    module = module.eval()

    def eager():
        with torch.inference_mode():
            return module(x)

    modes = {"PyTorch eager": eager}
    if onnx:
        try:
            import onnxruntime
        except ImportError:
            return modes
        path = os.path.join(tempfile.mkdtemp(), "model.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (x,), path, dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "batch"}})
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        array = x.numpy()
        modes["ONNX Runtime"] = lambda: session.run(None, {"x": array})
    return modes


def interleaved(modes, rounds, warmup=3):
    """Median seconds per mode, timing every mode once per round."""
    for _ in range(warmup):
        for run in modes.values():
            run()
    times = {name: [] for name in modes}
    for _ in range(rounds):
        for name, run in modes.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def reference_networks():
    from efficientnet_lite_pytorch import EfficientNet

    from tests import torch_models

    return {
        "MobileNet 1.0 224": (
            lambda: kl.MobileNet(classifier_activation=None),
            lambda: keras.applications.MobileNet(weights=None, classifier_activation=None),
            torch_models.SeedMobileNetV1,
        ),
        "MobileNetV2 1.0 224": (
            lambda: kl.MobileNetV2(classifier_activation=None),
            lambda: keras.applications.MobileNetV2(weights=None, classifier_activation=None),
            torch_models.TorchvisionMobileNetV2,
        ),
        "EfficientNet-Lite0 224": (
            lambda: kl.EfficientNetLite0(classifier_activation=None),
            None,
            lambda: EfficientNet.from_name("efficientnet-lite0"),
        ),
    }


def deeplab_network():
    from tests import torch_deeplab

    return (
        "DeepLabV3+ MobileNetV2 OS16 512",
        lambda: kl.DeepLabV3Plus((512, 512, 3), classes=21, backbone="mobilenetv2", output_stride=16),
        None,
        lambda: torch_deeplab.VainFDeepLabV3Plus("mobilenetv2", 21, 16),
    )


def bench_network(name, ours_builder, keras_builder, torch_builder, batch, rounds, peak):
    ours = ours_builder()
    macs = count_macs(ours)
    modes = {f"ours {k}": v for k, v in keras_modes(ours, batch).items()}
    if keras_builder is not None:
        reference = keras_builder()
        reference.set_weights(ours.get_weights())
        modes.update({f"keras.applications {k}": v for k, v in keras_modes(reference, batch).items()})
    modes.update(torch_modes(torch_builder(), batch, ours.input_shape[1]))
    seconds = interleaved(modes, rounds)
    rows = []
    for mode, s in seconds.items():
        family, _, how = mode.partition(" ")
        ratio = ""
        if mode.startswith("ours ") and f"keras.applications {how}" in seconds:
            ratio = f"{s / seconds[f'keras.applications {how}']:.2f}"
        gflops = 2 * macs * batch / s / 1e9
        rows.append((name, batch, mode, s * 1e3, batch / s, 100 * gflops / peak, ratio))
    return rows, macs


def cold_start(image):
    """Seconds from process start to the demo's answer, by stage."""
    script = f"""
import time; start = time.perf_counter()
import sys; sys.path.insert(0, {REPO!r})
from keras_lightnets.cli import import_tensorflow_quietly
import_tensorflow_quietly()
import keras_lightnets as kl
from keras_lightnets.image import load_image
from keras_lightnets.inference import Predictor
from keras_lightnets.weights import pretrained_weights, weights_info
t_import = time.perf_counter()
path = pretrained_weights("efficientnet_lite0")
info = weights_info(path)["preprocessing"]
model = kl.EfficientNetLite0(weights=None)
t_build = time.perf_counter()
from keras_lightnets.weights import load_weights
load_weights(model, path)
t_load = time.perf_counter()
x = kl.preprocess_input(load_image({image!r}, info["size"], info["crop_fraction"], info["resample"])[None], info["mode"])
kl.decode_predictions(Predictor(model)(x), top=5)
t_infer = time.perf_counter()
print(t_import - start, t_build - t_import, t_load - t_build, t_infer - t_load)
"""
    start = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(REPO, "demo.py"), image], check=True, capture_output=True)
    total = time.perf_counter() - start
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    return total, [float(v) for v in out.split()]


def versions():
    names = ("tensorflow", "keras", "torch", "onnxruntime", "numpy")
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 only, 10 rounds")
    args = parser.parse_args()
    rounds = 10 if args.quick else 20
    batches = (1,) if args.quick else (1, 32)
    torch.set_num_threads(os.cpu_count())
    peak = matmul_peak_gflops()
    lines = [
        f"# Benchmarks ({cpu_model()}, {os.cpu_count()} cores)",
        "",
        f"{versions()}. Measured fp32 matmul peak: {peak:.0f} GFLOPS. Median of {rounds} interleaved rounds.",
        "",
        "| network | batch | mode | ms | images/s | % of peak | ratio to keras.applications |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    name, *deeplab = deeplab_network()
    cases = [(n, b, batch) for n, b in reference_networks().items() for batch in batches]
    cases.append((name, deeplab, 1))
    for name, (ours, keras_builder, torch_builder), batch in cases:
        rows, _ = bench_network(name, ours, keras_builder, torch_builder, batch, rounds, peak)
        for row in rows:
            line = "| {} | {} | {} | {:.1f} | {:.0f} | {:.1f} | {} |".format(*row)
            lines.append(line)
            print(line, flush=True)
    total, (t_import, t_build, t_load, t_infer) = cold_start(os.path.join(REPO, "examples", "coffee.jpg"))
    cold = [
        "",
        f"Demo cold start (cached weights): {total:.2f} s from `python demo.py examples/coffee.jpg` to the answer; "
        f"by stage: import {t_import:.2f} s, build {t_build:.2f} s, load {t_load:.2f} s, first inference {t_infer:.2f} s.",
    ]
    print("\n".join(cold))
    lines += cold
    with open(os.path.join(HERE, "RESULTS.md"), "w", encoding="utf8") as f:
        f.write("\n".join(lines) + "\n\nConverter throughput and memory: bench/CONVERT_RESULTS.md.\n")
    import convert_speed

    convert_speed.main([])


if __name__ == "__main__":
    main()
