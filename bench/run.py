"""Speed of keras-lightnets' inference path against keras.applications, PyTorch and ONNX Runtime.

    pip install -e ".[test,bench]"   # torch, onnxruntime, onnx
    python bench/run.py [--quick] [--rounds N]

Everything runs in this one process, interleaved (round r times every mode
once, in a seeded random order, so that no mode always follows the same
one), and each figure is the median of the rounds after warm-up.
Prints a table (ms, images/s, % of the measured fp32 matmul peak), then the
ratios the project tracks, with their targets:

- `Predictor` (BatchNorm folded) / keras.applications under `tf.function`,
  same weights: MobileNet and MobileNetV2 1.0 224, batch 1 and 8;
- `Predictor` / the bare TFLite interpreter on the same flatbuffer
  (`set_tensor`, `invoke`, `get_tensor`): its per-call overhead;
- `Predictor(quantize="int8")` (first convolutions float) / the fp32
  `Predictor`, MobileNetV2 (random weights here; agreement on real weights:
  bench/int8.py);
- DeepLabV3+ MobileNetV2 OS16 512: `Predictor` / PyTorch eager (VainF's
  network, the converter's shipped reference), TFLite 2 threads / ONNX Runtime;
- the demo's cold start with cached weights and a compiled flatbuffer
  (`python demo.py`, which then imports neither Keras nor TensorFlow);

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

from keras_lightnets.quiet import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402

import keras_lightnets as kl  # noqa: E402
from keras_lightnets.conversion.references import vainf  # noqa: E402
from keras_lightnets.conversion.references.torchvision.mobilenet_v2 import MobileNetV2  # noqa: E402
from keras_lightnets.runtime.calibration import calibration_inputs  # noqa: E402
from keras_lightnets.runtime.folding import fold_batchnorm  # noqa: E402
from keras_lightnets.runtime.predictor import Predictor  # noqa: E402
from keras_lightnets.runtime.tflite import Runner, load_interpreter, tflite_bytes  # noqa: E402

# (numerator mode, denominator mode, target) per network
OVERHEAD = ("ours Predictor", "ours bare TFLite interpreter", 1.05)
TARGETS = {
    "MobileNet 1.0 224": [("ours Predictor", "keras.applications tf.function", 0.6), OVERHEAD],
    "MobileNetV2 1.0 224": [
        ("ours Predictor", "keras.applications tf.function", 0.6), OVERHEAD,
        ("ours Predictor int8", "ours Predictor", round(1 / 1.8, 3)),
    ],
    "DeepLabV3+ MobileNetV2 OS16 512": [
        ("ours Predictor", "PyTorch eager", 0.7),
        ("ours TFLite 2 threads", "ONNX Runtime", 1.0),
        OVERHEAD,
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
    runner = Runner(tflite_bytes(fold_batchnorm(model)), threads)
    return lambda: runner(x)


def bare_interpreter(content, x, threads):
    """The TFLite interpreter alone on `content`, input resized to `x`'s shape."""
    interpreter = load_interpreter(content, threads)
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]
    interpreter.resize_tensor_input(source, list(x.shape), strict=True)
    interpreter.allocate_tensors()

    def run():
        interpreter.set_tensor(source, x)
        interpreter.invoke()
        return interpreter.get_tensor(target)

    return run


def keras_modes(model, batch, prefix, tflite=False, notes=None, int8=False):
    """`{mode: zero-argument callable}` for a Keras model."""
    x = np.random.default_rng(0).uniform(-1, 1, (batch,) + tuple(model.input_shape[1:])).astype("float32")
    graph = graph_function(model)
    tensor = tf.constant(x)
    modes = {f"{prefix} tf.function": lambda: graph(tensor).numpy()}
    if prefix == "ours":
        start = time.perf_counter()
        predictor = Predictor(model, threads=THREADS)  # runtime="auto"
        if notes is not None:
            notes.append(f"`Predictor` runtime {predictor.runtime!r}, built (fold + conversion) in "
                         f"{time.perf_counter() - start:.1f} s")
        modes["ours Predictor"] = lambda: predictor(x)
        if predictor.flatbuffer is not None:
            modes["ours bare TFLite interpreter"] = bare_interpreter(predictor.flatbuffer, x, THREADS)
        if int8:
            start = time.perf_counter()
            photos = calibration_inputs({"mode": "tf", "size": model.input_shape[1]})
            quantized = Predictor(model, threads=THREADS, quantize="int8", calibration=photos)
            if notes is not None:
                notes.append(f"int8 `Predictor` built (photos, calibration, conversion) in "
                             f"{time.perf_counter() - start:.0f} s")
            modes["ours Predictor int8"] = lambda: quantized(x)
        on_tf = Predictor(model, runtime="tf")
        modes["ours Predictor runtime='tf'"] = lambda: on_tf(x)
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
    """`{mode: [seconds of each round]}`, timing every mode once per round,
    in a seeded random order (a mode that always ran after the same other
    one would inherit its cache state and its threads' spinning)."""
    for _ in range(warmup):
        for run in modes.values():
            run()
    times = {name: [] for name in modes}
    rng = np.random.default_rng(0)
    for _ in range(rounds):
        for name in rng.permutation(list(modes)):
            run = modes[name]
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(times, numerator, denominator):
    """The median over rounds of `numerator`'s time over `denominator`'s in
    the same round: the machine's load, which drifts between rounds, mostly
    cancels (the ratio of the medians does not)."""
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator]))


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
                      MobileNetV2))
    cases.append(("DeepLabV3+ MobileNetV2 OS16 512", 1,
                  lambda: kl.DeepLabV3Plus((512, 512, 3), classes=21, backbone="mobilenetv2", output_stride=16),
                  None, lambda: vainf.DeepLabV3Plus("mobilenetv2", 21, 16)))
    return cases


def bench_network(name, batch, ours_builder, keras_builder, torch_builder, rounds, peak):
    ours = ours_builder()
    macs = count_macs(ours)
    notes = []
    modes = keras_modes(ours, batch, "ours", tflite=True, notes=notes, int8=name.startswith("MobileNetV2"))
    if keras_builder is not None:
        reference = keras_builder()
        reference.set_weights(ours.get_weights())
        modes.update(keras_modes(reference, batch, "keras.applications"))
    if torch_builder is not None:
        modes.update(torch_modes(torch_builder(), batch, ours.input_shape[1]))
    times = interleaved(modes, rounds)
    seconds = {mode: statistics.median(t) for mode, t in times.items()}
    rows = []
    for mode, s in seconds.items():
        gflops = 2 * macs * batch / s / 1e9
        rows.append((name, batch, mode, s * 1e3, batch / s, 100 * gflops / peak))
    ratios = [
        (name, batch, f"{num} / {den}", paired_ratio(times, num, den), target)
        for num, den, target in TARGETS.get(name, [])
    ]
    return rows, ratios, [f"{name}, batch {batch}: {note}." for note in notes]


def cold_start(image, runs=3):
    """Median seconds from process start to the demo's answer over `runs`
    runs with the pretrained weights and their flatbuffer cached (one untimed
    run first fills the cache), and the stages of that path in one run
    (imports, weights check, flatbuffer load, image, first inference)."""
    script = f"""
import time; start = time.perf_counter()
import sys; sys.path.insert(0, {REPO!r})
import demo  # then everything the cache-hit path imports, as one stage
from ai_edge_litert.interpreter import Interpreter
from keras_lightnets.weights import cache
from keras_lightnets.runtime import tflite
from keras_lightnets.weights.h5 import read_record, sha256_of
from keras_lightnets.preprocessing.image import load_for
from keras_lightnets.labels import decode_predictions
t_import = time.perf_counter()
weights = cache.cached_weights(demo.pretrained_source(demo.DEFAULT_MODEL))
record = read_record(weights)
preprocessing = record["preprocessing"]
digest = sha256_of(weights)
t_check = time.perf_counter()
runner = tflite.load_compiled(weights, (preprocessing["size"],) * 2, record["arch"], weights_digest=digest)
t_load = time.perf_counter()
batch = demo.image_batch({image!r}, preprocessing)
t_image = time.perf_counter()
demo.top_classes(runner(batch), 5)
t_infer = time.perf_counter()
assert "tensorflow" not in sys.modules and "keras" not in sys.modules
print(t_import - start, t_check - t_import, t_load - t_check, t_image - t_load, t_infer - t_image)
"""
    demo = [sys.executable, os.path.join(REPO, "demo.py"), image]
    subprocess.run(demo, check=True, capture_output=True)  # the cache is filled
    totals = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(demo, check=True, capture_output=True)
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
        "`Predictor` runs the folded graph (BatchNorm merged into the convolutions) on its `runtime=\"auto\"`",
        "choice (TFLite with XNNPACK on every usable core when it can, see the notes below), and with",
        "`runtime='tf'` as a `tf.function`; `tf.function` the Keras model as built; TFLite 2 threads is the",
        "flatbuffer of the folded graph on 2 threads; bare TFLite interpreter is `Predictor`'s own flatbuffer through",
        "`set_tensor`/`invoke`/`get_tensor` alone; `Predictor int8` is `Predictor(model, quantize=\"int8\")` calibrated",
        "on the shipped photos, its first 3 convolutions float (`tflite.FLOAT_HEAD`; random weights: speed only;",
        "agreement on real weights in bench/INT8_RESULTS.md).",
        "",
        "| network | batch | mode | ms | images/s | % of peak |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    all_ratios, all_notes = [], []
    for case in networks(batches):
        rows, ratios, notes = bench_network(*case, rounds=rounds, peak=peak)
        all_ratios += ratios
        all_notes += notes
        for row in rows:
            line = "| {} | {} | {} | {:.1f} | {:.0f} | {:.1f} |".format(*row)
            lines.append(line)
            print(line, flush=True)
    total, stages = cold_start(os.path.join(REPO, "examples", "coffee.jpg"), runs=1 if args.quick else 3)
    summary = [
        "",
        "## Ratios and targets",
        "",
        "| network | batch | ratio of (median of the rounds' ratios) | measured | target | |",
        "|---|---|---|---|---|---|",
        *[ratio_line(*r) for r in all_ratios],
        f"| demo cold start (s) | 1 | `python demo.py examples/coffee.jpg`, cached weights | {total:.2f} | ≤ {COLD_START_TARGET} | "
        f"{'met' if total <= COLD_START_TARGET else f'missed by {total / COLD_START_TARGET - 1:.0%}'} |",
        "",
        "Cold start by stage (one run, cache hit: no Keras, no TensorFlow): imports {:.2f} s, weights check "
        "{:.2f} s, flatbuffer load {:.2f} s, image {:.2f} s, first inference {:.2f} s.".format(*stages),
        "",
        *all_notes,
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
