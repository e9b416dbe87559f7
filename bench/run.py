"""Speed of keras-lightnets' inference path against keras.applications, PyTorch and ONNX Runtime.

    pip install -e ".[test,bench]"   # torch, onnxruntime, onnx
    python bench/run.py [--quick] [--rounds N]

Everything runs in this one process, interleaved (round r times every mode
once, in turn), and each figure is the median of the rounds after warm-up.
Prints a table (ms, images/s, % of the measured fp32 matmul peak), then the
ratios the project tracks, with their targets:

- `Predictor` (BatchNorm folded) / keras.applications under `tf.function`,
  same weights: MobileNet and MobileNetV2 1.0 224, batch 1 and 8;
- DeepLabV3+ MobileNetV2 OS16 512: `Predictor` / PyTorch eager (VainF's
  network, bench/torch_reference.py), TFLite 2 threads / ONNX Runtime;
- the demo's cold start with cached weights (`python demo.py`);

and writes them to bench/RESULTS.md with the CPU, core count and versions.
The converter has its own benchmark (bench/convert_speed.py). Per-op
profile of DeepLabV3+: bench/profile_ops.py. Never run by the tests:
timings are not assertions.
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
sys.path.insert(0, HERE)

from keras_lightnets.cli import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402

import keras_lightnets as kl  # noqa: E402
import torch_reference  # noqa: E402
from keras_lightnets.export import tflite_bytes  # noqa: E402
from keras_lightnets.inference import Predictor, fold_batchnorm  # noqa: E402

# (numerator mode, denominator mode, target) per network
TARGETS = {
    "MobileNet 1.0 224": [("ours Predictor", "keras.applications tf.function", 0.6)],
    "MobileNetV2 1.0 224": [("ours Predictor", "keras.applications tf.function", 0.6)],
    "DeepLabV3+ MobileNetV2 OS16 512": [
        ("ours Predictor", "PyTorch eager", 0.7),
        ("ours TFLite 2 threads", "ONNX Runtime", 1.0),
    ],
}
COLD_START_TARGET = 4.0
THREADS = os.cpu_count()


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


def graph_function(model):
    spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32)
    return tf.function(lambda t: model(t, training=False), input_signature=[spec])


def tflite_runner(model, x, threads):
    content = tflite_bytes(fold_batchnorm(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_content=content, num_threads=threads)
    source = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(source["index"], list(x.shape))
    interpreter.allocate_tensors()
    target = interpreter.get_output_details()[0]

    def run():
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"])

    return run


def keras_modes(model, batch, prefix, tflite=False):
    """`{mode: zero-argument callable}` for a Keras model."""
    x = np.random.default_rng(0).uniform(-1, 1, (batch,) + tuple(model.input_shape[1:])).astype("float32")
    graph = graph_function(model)
    tensor = tf.constant(x)
    modes = {f"{prefix} tf.function": lambda: graph(tensor).numpy()}
    if prefix == "ours":
        predictor = Predictor(model)
        modes["ours Predictor"] = lambda: predictor(x)
    if tflite:
        modes[f"{prefix} TFLite 2 threads"] = tflite_runner(model, x, 2)
    return modes


def torch_modes(module, batch, size):
    x = torch.rand(batch, 3, size, size)
    module = module.eval()

    def eager():
        with torch.inference_mode():
            return module(x)

    modes = {"PyTorch eager": eager}
    import onnxruntime

    path = os.path.join(tempfile.mkdtemp(), "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), path, dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
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


def networks(batches):
    """`[(name, batch, ours builder, keras.applications builder, torch builder)]`."""
    cases = []
    for batch in batches:
        cases.append(("MobileNet 1.0 224", batch,
                      lambda: kl.MobileNet(classifier_activation=None),
                      lambda: keras.applications.MobileNet(weights=None, classifier_activation=None), None))
        cases.append(("MobileNetV2 1.0 224", batch,
                      lambda: kl.MobileNetV2(classifier_activation=None),
                      lambda: keras.applications.MobileNetV2(weights=None, classifier_activation=None),
                      torch_reference.TorchvisionMobileNetV2))
    cases.append(("DeepLabV3+ MobileNetV2 OS16 512", 1,
                  lambda: kl.DeepLabV3Plus((512, 512, 3), classes=21, backbone="mobilenetv2", output_stride=16),
                  None, lambda: torch_reference.VainFDeepLabV3PlusMobileNetV2(21, 16)))
    return cases


def bench_network(name, batch, ours_builder, keras_builder, torch_builder, rounds, peak):
    ours = ours_builder()
    macs = count_macs(ours)
    modes = keras_modes(ours, batch, "ours", tflite=True)
    if keras_builder is not None:
        reference = keras_builder()
        reference.set_weights(ours.get_weights())
        modes.update(keras_modes(reference, batch, "keras.applications"))
    if torch_builder is not None:
        modes.update(torch_modes(torch_builder(), batch, ours.input_shape[1]))
    seconds = interleaved(modes, rounds)
    rows = []
    for mode, s in seconds.items():
        gflops = 2 * macs * batch / s / 1e9
        rows.append((name, batch, mode, s * 1e3, batch / s, 100 * gflops / peak))
    ratios = [
        (name, batch, f"{num} / {den}", seconds[num] / seconds[den], target)
        for num, den, target in TARGETS.get(name, [])
    ]
    return rows, ratios


def cold_start(image, runs=3):
    """Median seconds from process start to the demo's answer over `runs`
    runs, and the stages of one run (import, build, load, fold, first
    inference)."""
    script = f"""
import time; start = time.perf_counter()
import sys; sys.path.insert(0, {REPO!r})
from keras_lightnets.cli import import_tensorflow_quietly
import_tensorflow_quietly()
import keras_lightnets as kl
from keras_lightnets.image import load_for
from keras_lightnets.inference import Predictor
from keras_lightnets.models import pretrained_file, weights_info
t_import = time.perf_counter()
path = pretrained_file("efficientnet_lite0")
info = weights_info(path)["preprocessing"]
model = kl.EfficientNetLite0(weights=None)
t_build = time.perf_counter()
from keras_lightnets.weights import load_weights
load_weights(model, path)
t_load = time.perf_counter()
x = kl.preprocess_input(load_for({image!r}, info)[None], info["mode"])
predictor = Predictor(model)
t_fold = time.perf_counter()
kl.decode_predictions(predictor(x), top=5)
t_infer = time.perf_counter()
print(t_import - start, t_build - t_import, t_load - t_build, t_fold - t_load, t_infer - t_fold)
"""
    totals = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, os.path.join(REPO, "demo.py"), image], check=True, capture_output=True)
        totals.append(time.perf_counter() - start)
    total = statistics.median(totals)
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


def ratio_line(name, batch, what, ratio, target):
    verdict = "met" if ratio <= target else f"missed by {ratio / target - 1:.0%}"
    return f"| {name} | {batch} | {what} | {ratio:.2f} | ≤ {target} | {verdict} |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 only, 10 rounds, one cold start")
    parser.add_argument("--rounds", type=int, help="timed rounds per network (default 20)")
    parser.add_argument("--batches", type=int, nargs="+", help="classifier batch sizes (default 1 8)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads of TensorFlow, PyTorch and ONNX Runtime (TFLite: 2); 1 measures "
                             "work rather than parallel speed, steadier on a shared machine")
    parser.add_argument("--out", default="RESULTS.md", help="results file in bench/ (default RESULTS.md)")
    args = parser.parse_args()
    rounds = args.rounds or (10 if args.quick else 20)
    batches = args.batches or ((1,) if args.quick else (1, 8))
    global THREADS
    THREADS = args.threads
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    torch.set_num_threads(args.threads)
    peak = matmul_peak_gflops()
    lines = [
        f"# Benchmarks ({cpu_model()}, {os.cpu_count()} cores)",
        "",
        f"{versions()}. Measured fp32 matmul peak: {peak:.0f} GFLOPS. Median of {rounds} interleaved rounds, "
        f"{args.threads} thread(s) per framework. Load average at the start: {os.getloadavg()[0]:.1f} "
        "(other processes on the machine; above the core count, absolute times are inflated).",
        "`Predictor` runs the folded graph (BatchNorm merged into the convolutions); `tf.function` the Keras",
        "model as built; TFLite is exported from the folded graph.",
        "",
        "| network | batch | mode | ms | images/s | % of peak |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    all_ratios = []
    for case in networks(batches):
        rows, ratios = bench_network(*case, rounds=rounds, peak=peak)
        all_ratios += ratios
        for row in rows:
            line = "| {} | {} | {} | {:.1f} | {:.0f} | {:.1f} |".format(*row)
            lines.append(line)
            print(line, flush=True)
    total, stages = cold_start(os.path.join(REPO, "examples", "coffee.jpg"), runs=1 if args.quick else 3)
    summary = [
        "",
        "## Ratios and targets",
        "",
        "| network | batch | ratio of | measured | target | |",
        "|---|---|---|---|---|---|",
        *[ratio_line(*r) for r in all_ratios],
        f"| demo cold start (s) | 1 | `python demo.py examples/coffee.jpg`, cached weights | {total:.2f} | ≤ {COLD_START_TARGET} | "
        f"{'met' if total <= COLD_START_TARGET else f'missed by {total / COLD_START_TARGET - 1:.0%}'} |",
        "",
        "Cold start by stage (one run): import {:.2f} s, build {:.2f} s, load {:.2f} s, fold {:.2f} s, "
        "first inference {:.2f} s.".format(*stages),
    ]
    print("\n".join(summary))
    lines += summary
    write_results(args.out, "\n".join(lines) + "\n\nConverter throughput and memory: bench/CONVERT_RESULTS.md.\n")


PROFILE_HEADING = "## Where DeepLabV3+ spends its time"


def write_results(name, text):
    """Writes bench/`name`, keeping its profile section (from bench/profile_ops.py's output)."""
    path = os.path.join(HERE, name)
    kept = ""
    if os.path.exists(path):
        with open(path, encoding="utf8") as f:
            previous = f.read()
        if PROFILE_HEADING in previous:
            kept = "\n" + previous[previous.index(PROFILE_HEADING):]
    with open(path, "w", encoding="utf8") as f:
        f.write(text + kept)


if __name__ == "__main__":
    main()
