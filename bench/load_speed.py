"""Time to build a model and load a converted weights file (not a test).

    python bench/load_speed.py [--repeats 3]

For each model, a random-weights file with a converter-style record is
written once; then, each in a fresh process (TensorFlow imported and a small
model built first, so that neither start-up is counted):
- `from_h5`: `keras_lightnets.from_h5(path)`, whose builder, given
  `weights`, builds with Keras's deferred variables and creates each from
  the file's value (`builders.loads_without_random_values`);
- `build, then load`: `builder(weights=None)`, which draws random initial
  values, then `load_weights(model, path)`, which overwrites them (what
  every builder given `weights` did until now).
Prints a table of median seconds and their ratio.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = {
    "MobileNetV2 1.0 224": ("MobileNetV2", "mobilenet_v2", {"style": "torch", "classes": 1000}),
    "DeepLabV3+ MobileNetV2": ("DeepLabV3Plus", "deeplabv3plus_mobilenetv2", {"backbone": "mobilenetv2", "input_shape": [None, None, 3]}),
    "DeepLabV3+ ResNet-101 OS8": ("DeepLabV3Plus", "deeplabv3plus_resnet101", {"backbone": "resnet101", "output_stride": 8, "input_shape": [None, None, 3]}),
}

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {repo!r})
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras_lightnets as kl
mode, builder, path, kwargs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
kl.MobileNetV2(alpha=0.35, weights=None, input_shape=(96, 96, 3))  # TensorFlow and Keras warm
started = time.perf_counter()
if mode == "from_h5":
    kl.from_h5(path)
else:
    from keras_lightnets.weights.loading import load_weights
    load_weights(kl.MODELS[builder](weights=None, **kwargs), path)
print(json.dumps(time.perf_counter() - started))
"""


def write_file(path, builder, arch, kwargs):
    import keras_lightnets as kl
    from keras_lightnets.weights.h5 import save_model_weights

    model = kl.MODELS[builder](weights=None, **kwargs)
    record = {"format": 1, "arch": arch, "builder": builder, "builder_kwargs": kwargs,
              "preprocessing": {"mode": "torch"}, "source": {"naming": "random"}}
    save_model_weights(model, path, record)


def measure(mode, builder, path, kwargs):
    run = subprocess.run([sys.executable, "-c", CHILD.format(repo=REPO), mode, builder, path, json.dumps(kwargs)],
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    sys.path.insert(0, REPO)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print("| model | `from_h5` s | build, then load s | ratio |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for label, (builder, arch, kwargs) in MODELS.items():
            path = os.path.join(folder, f"{arch}.h5")
            write_file(path, builder, arch, kwargs)
            times = {mode: [] for mode in ("from_h5", "builder")}
            for _ in range(args.repeats):  # alternated: this machine's speed drifts
                for mode in times:
                    times[mode].append(measure(mode, builder, path, kwargs))
            fast, slow = (statistics.median(times[mode]) for mode in ("from_h5", "builder"))
            print(f"| {label} | {fast:.2f} | {slow:.2f} | {fast / slow:.2f} |", flush=True)


if __name__ == "__main__":
    main()
