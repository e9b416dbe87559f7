"""DeepLabV3+ with and without the dilated-convolution rewrite of `fold_batchnorm`.

    python bench/dilated.py [--sizes 129 257 513] [--backbones mobilenetv2 resnet50] [--rounds 5]

For each backbone and input size (output stride 16, VainF head, 21 classes,
random weights and BatchNorm statistics), the folded graph without the rewrite (`fold_batchnorm(model,
dilated=False)`: Keras' SpaceToBatch -> conv -> BatchToSpace lowering of every
dilated conv) against the folded graph with it (taps that read only padding
dropped, native dilated kernels), each on `Predictor`'s two runtimes
(TFLite with XNNPACK, and `tf.function`), interleaved, median of the rounds.
Prints a table with the largest |Δ| between the two graphs' outputs and
writes it to bench/DILATED_RESULTS.md. Not run by the tests.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from keras_lightnets.cli import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

import keras  # noqa: E402
import numpy as np  # noqa: E402
from run import cpu_model, versions  # noqa: E402

import keras_lightnets as kl  # noqa: E402
from keras_lightnets.runtime.folding import fold_batchnorm  # noqa: E402
from keras_lightnets.runtime.predictor import Predictor  # noqa: E402


def with_random_values(model, seed=0):
    """He-normal kernels, small random biases, BatchNorm statistics and affine
    parameters of unit scale: outputs whose differences mean something."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if "moving_variance" in variable.path or "gamma" in variable.path:
            value = rng.uniform(0.5, 2.0, shape)
        elif len(shape) == 1:
            value = rng.normal(0, 0.2, shape)
        else:
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        variable.assign(value.astype("float32"))
    return model


def modes(model, x):
    """`{(graph, runtime): zero-argument callable}` and the rewritten graph's layer lists."""
    before = fold_batchnorm(model, dilated=False)
    after = fold_batchnorm(model)
    graph = after.layers[-1]
    calls = {}
    for runtime in ("tflite", "tf"):
        calls["before", runtime] = Predictor(before, fold=False, runtime=runtime)
        calls["after", runtime] = Predictor(after, fold=False, runtime=runtime)
    return calls, graph.trimmed, graph.native_dilated


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[129, 257, 513])
    parser.add_argument("--backbones", nargs="+", default=["mobilenetv2", "resnet50"])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    lines = [
        f"# Dilated convolutions in DeepLabV3+ ({cpu_model()}, {os.cpu_count()} cores)",
        "",
        f"{versions()}. `python bench/dilated.py`: median of {args.rounds} interleaved rounds, batch 1, "
        f"load average at the start {os.getloadavg()[0]:.1f}. before: `fold_batchnorm(model, dilated=False)`; "
        "after: `fold_batchnorm(model)` (taps reading only padding dropped, native dilated kernels).",
        "",
        "| backbone | px | runtime | before ms | after ms | after / before | max abs diff (max abs output) | taps dropped | native |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for backbone in args.backbones:
        for size in args.sizes:
            model = kl.DeepLabV3Plus((size, size, 3), classes=21, backbone=backbone, output_stride=16)
            with_random_values(model)
            x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype("float32")
            calls, trimmed, native = modes(model, x)
            outputs = {key: call(x) for key, call in calls.items()}  # warm-up
            times = {key: [] for key in calls}
            for _ in range(args.rounds):
                for key, call in calls.items():
                    start = time.perf_counter()
                    call(x)
                    times[key].append(time.perf_counter() - start)
            for runtime in ("tflite", "tf"):
                before, after = (statistics.median(times[graph, runtime]) * 1e3 for graph in ("before", "after"))
                diff = float(np.abs(outputs["before", runtime] - outputs["after", runtime]).max())
                line = (f"| {backbone} | {size} | {runtime} | {before:.1f} | {after:.1f} | {after / before:.2f} | "
                        f"{diff:.1e} ({np.abs(outputs['before', runtime]).max():.1f}) | {', '.join(trimmed) or '-'} | {len(native)} |")
                lines.append(line)
                print(line, flush=True)
            del calls, model
            keras.backend.clear_session()
    with open(os.path.join(HERE, "DILATED_RESULTS.md"), "w", encoding="utf8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
