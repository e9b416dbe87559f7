"""Batch prediction and fine-tuning throughput (not a test).

    python bench/predict_speed.py [--images 256] [--batch-size 32] [--train]

Prediction: MobileNetV2 (α 1, PyTorch style, 224 px, random weights,
torchvision's eval transform) on JPEG crops of scikit-image photos, three ways:
- `Predictor` alone on images already decoded and preprocessed in memory;
- the `keras_lightnets.runtime.folder` reading (`prediction_batches`: decoding and
  preprocessing in threads, a batch at a time) + `Predictor`, after the same
  warm-up; the two alternate for `rounds` rounds and their medians are compared;
- `python -m keras_lightnets.predict` end to end (model build included).
Training (`--train`): images/s of the second epoch of
`python -m keras_lightnets.finetune` with 1 and 2 replicas (logical CPU
devices without a GPU), MobileNetV2 α 0.35 at 96 px.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def make_photos(folder, count, names=PHOTOS):
    """`count` JPEG crops (200-300 px) of scikit-image photos."""
    import numpy as np
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = [getattr(skimage.data, n)() for n in names]
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        image = photos[i % len(photos)]
        side = int(rng.integers(200, 300))
        top, left = (int(rng.integers(0, s - side)) for s in image.shape[:2])
        Image.fromarray(image[top : top + side, left : left + side]).save(os.path.join(folder, f"{i:04d}.jpg"), quality=90)


def write_random_weights(path, builder_kwargs, preprocessing):
    """A MobileNetV2 file with random weights and a converter-style record."""
    import keras_lightnets as kl
    from keras_lightnets.weights.h5 import save_model_weights

    model = kl.MobileNetV2(**builder_kwargs)
    record = {"format": 1, "arch": "mobilenet_v2", "builder": "MobileNetV2", "builder_kwargs": builder_kwargs,
              "preprocessing": preprocessing, "source": {"naming": "random"}}
    save_model_weights(model, path, record)


def bench_predict(work, count, batch_size, rounds=5):
    import statistics

    import keras_lightnets as kl
    from keras_lightnets.files import list_images
    from keras_lightnets.preprocessing.batches import prediction_batches
    from keras_lightnets.runtime.predictor import Predictor

    folder = os.path.join(work, "photos")
    make_photos(folder, count)
    weights = os.path.join(work, "mobilenet_v2.h5")
    write_random_weights(
        weights, {"style": "torch", "classes": 1000},
        {"mode": "torch", "size": 224, "resize": 256, "resample": "bilinear"},  # torchvision's eval transform
    )
    paths = list_images(folder)
    preprocessing = kl.weights_info(weights)["preprocessing"]
    model = kl.from_h5(weights)
    predictor = Predictor(model)
    batches = [x for x, _, _ in prediction_batches(paths, preprocessing, (224, 224), batch_size)]
    predictor(batches[0])  # compile

    def alone():
        for x in batches:
            predictor(x)

    def pipeline():
        for x, _, errors in prediction_batches(paths, preprocessing, (224, 224), batch_size):
            predictor(x if not any(errors) else x[[i for i, e in enumerate(errors) if not e]])

    # this machine's speed drifts between runs: the two alternate, and the medians are compared
    speeds = {"alone": [], "pipeline": []}
    for _ in range(rounds):
        for name, run in (("alone", alone), ("pipeline", pipeline)):
            started = time.perf_counter()
            run()
            speeds[name].append(count / (time.perf_counter() - started))
    alone_speed, pipeline_speed = (statistics.median(speeds[name]) for name in ("alone", "pipeline"))

    out = os.path.join(work, "results.jsonl")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "keras_lightnets.predict", folder, "--weights", weights, "--out", out,
         "--batch-size", str(batch_size)],
        check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    end_to_end = count / (time.perf_counter() - started)
    with open(out, encoding="utf8") as f:
        assert sum(1 for _ in f) == count
    return {"predictor_alone": alone_speed, "pipeline": pipeline_speed, "ratio": pipeline_speed / alone_speed,
            "ratio_per_round": [round(p / a, 3) for a, p in zip(speeds["alone"], speeds["pipeline"])],
            "cli_end_to_end": end_to_end}


def bench_train(work):
    data = os.path.join(work, "cls")
    for split, count in (("train", 32), ("val", 2)):
        for name in PHOTOS[:3]:
            make_photos(os.path.join(data, split, name), count, (name,))
    weights = os.path.join(work, "small.h5")
    write_random_weights(
        weights, {"style": "torch", "alpha": 0.35, "classes": 3, "input_shape": [96, 96, 3]},
        {"mode": "torch", "size": 96, "crop_fraction": 0.875, "resample": "bilinear"},
    )
    result = {}
    for replicas in (1, 2):
        run = subprocess.run(
            [sys.executable, "-m", "keras_lightnets.finetune", "--weights", weights, "--data", data,
             "--out", os.path.join(work, f"r{replicas}.h5"), "--epochs", "2", "--batch-size", "16",
             "--replicas", str(replicas)],
            check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True,
        )
        lines = [json.loads(l) for l in run.stdout.splitlines() if l.startswith("{")]
        result[f"train_images_per_second_{replicas}_replicas"] = lines[-1]["images_per_second"]
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        results = bench_predict(work, args.images, args.batch_size)
        if args.train:
            results.update(bench_train(work))
    results["load_average_1min"] = os.getloadavg()[0]
    results["cpus"] = os.cpu_count()
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
