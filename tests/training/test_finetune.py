"""Fine-tuning: data checks, the tf.data preprocessing, training semantics,
replicas (MirroredStrategy on logical CPUs, MultiWorkerMirroredStrategy
with two local processes) and the atomic output."""

import io
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from keras_lightnets.cli import finetune as finetune_cli
from keras_lightnets.training import distribute
from keras_lightnets.training import finetune as ft
from keras_lightnets.training.data import check_dataset, find_dataset
from tests import finetune_data as fd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Classification and segmentation data, and random-weight input files."""
    root = tmp_path_factory.mktemp("finetune")
    fd.make_classification(str(root / "cls"))
    fd.make_segmentation(str(root / "seg"), size=64)
    fd.classifier_file(str(root / "cls.h5"), classes=5, size=48)
    fd.small_classifier_file(str(root / "small.h5"), classes=5, size=48)
    fd.deeplab_file(str(root / "seg.h5"), classes=4)
    return root


def run_cli(args, env=None, **kwargs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "keras_lightnets.finetune", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900, check=False, **kwargs,
    )


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def max_relative_difference(a, b):
    """Max over weight tensors of max|a - b| / max|a|."""
    worst = 0.0
    for name in a:
        for x, y in zip(a[name], b[name]):
            worst = max(worst, float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-12)))
    return worst


# ------------------------------------------------------------------ data


def test_layouts_are_found(tmp_path):
    fd.make_classification(str(tmp_path / "cls"), 2, 1)
    fd.make_segmentation(str(tmp_path / "seg"), 3, 1, size=40)
    fd.make_segmentation(str(tmp_path / "voc"), 3, 2, size=40, voc=True)
    cls = find_dataset(tmp_path / "cls")
    assert cls.task == "classification" and cls.class_names == sorted(fd.CLASS_PHOTOS)
    assert len(cls.train.images) == 6 and sorted(set(cls.train.labels)) == [0, 1, 2]
    seg, voc = find_dataset(tmp_path / "seg"), find_dataset(tmp_path / "voc")
    assert (seg.layout, voc.layout) == ("segmentation", "voc")
    assert len(voc.train.images) == 3 and len(voc.val.images) == 2
    assert check_dataset(seg) == 2 and check_dataset(voc) == 2


def test_prediction_reads_exactly_as_the_demo(work, tmp_path):
    """`python -m keras_lightnets.predict` sees the demo's pixels for every
    kind of record (torchvision's Resize + CenterCrop, a crop fraction,
    keras' stretch, full size), and the tf.data ops match `preprocess_input`."""
    import tensorflow as tf

    from keras_lightnets.preprocessing import preprocess_input, tf_preprocess
    from keras_lightnets.preprocessing.batches import prediction_batches
    from keras_lightnets.preprocessing.image import load_for

    paths = find_dataset(work / "cls").val.images[:3]
    Image.fromarray(np.zeros((70, 50, 3), "uint8") + 90).save(tmp_path / "portrait.png")
    paths.append(str(tmp_path / "portrait.png"))
    records = [
        {"mode": "torch", "size": 64, "resize": 73, "resample": "bilinear"},
        {"mode": "lite", "size": 64, "crop_fraction": 0.875, "resample": "bicubic"},
        {"mode": "tf", "size": 64, "resize": "stretch", "resample": "nearest"},
        {"mode": "bgr", "size": 64, "crop_fraction": 1.0, "resample": "bilinear"},
    ]
    for record in records:
        expected = np.stack([preprocess_input(load_for(p, record), record["mode"]) for p in paths])
        batches = list(prediction_batches(paths, record, (64, 64), 3))
        assert [len(b[0]) for b in batches] == [3, 1]
        np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), expected, err_msg=str(record))
    (images, shapes, messages), = prediction_batches(paths[-1:], {"mode": "tf"}, None, 8)
    np.testing.assert_array_equal(images[0], preprocess_input(load_for(paths[-1], {"size": None}), "tf"))
    assert shapes == [(70, 50)] and messages == [""]
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    for mode in ("tf", "torch", "caffe", "lite", "bgr", "unit", {"mode": "meanstd", "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.4]}):
        np.testing.assert_allclose(tf_preprocess(tf.constant(x), mode).numpy(), preprocess_input(x, mode), atol=1e-5)


def test_augmentation_is_deterministic_under_seed(work):
    from keras_lightnets.training import data

    dataset = find_dataset(work / "seg")
    pre = fd.FULL_SIZE_PREPROCESSING

    def first_batches(seed):
        ds = data.training_dataset(dataset, dataset.train, pre, (48, 48), 4, seed=seed, epochs=2)
        return [(x.numpy(), y.numpy()) for x, y in ds]

    a, b, c = first_batches(1), first_batches(1), first_batches(2)
    # evaluation: every image once, in file order, the last batch partial
    val = data.training_dataset(dataset, dataset.val, pre, (48, 48), 3, training=False)
    assert [len(y) for _, y in val] == [3, 1] and val.cardinality() == 2
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not np.array_equal(a[0][0], c[0][0])
    # a new epoch draws a new order and new augmentation
    assert not np.array_equal(a[0][0], a[len(a) // 2][0])
    assert set(np.unique(np.concatenate([y for _, y in a]))) <= {0, 1, 2, 255}


def test_scaled_down_masks_are_padded_with_the_ignore_label(tmp_path):
    """DeepLab's augmentation pads an image scaled below the crop size; the
    mask's padding is 255 (ignored by the loss and mean IoU), never a class."""
    from keras_lightnets.training import data

    fd.make_segmentation(str(tmp_path / "seg"), 4, 1, size=40)
    for mask_path in find_dataset(tmp_path / "seg").train.labels:  # every pixel class 1, no 0 anywhere
        Image.fromarray(np.ones((40, 40), "uint8"), "L").save(mask_path)
    dataset = find_dataset(tmp_path / "seg")
    masks = np.concatenate([y.numpy() for _, y in data.training_dataset(
        dataset, dataset.train, fd.FULL_SIZE_PREPROCESSING, (32, 32), 4, seed=0, epochs=4)])
    assert set(np.unique(masks)) == {1, 255}
    assert max((mask == 255).mean() for mask in masks) > 0.2  # some were scaled down and padded


# -------------------------------------------------------------- bad input


def _bad_input_cases(root):
    cases = {}
    empty = root / "empty"
    (empty / "train" / "cat").mkdir(parents=True)
    cases["empty"] = (empty, [], str(empty / "train"))

    unreadable = root / "unreadable"
    fd.make_classification(str(unreadable), 2, 1)
    bad = unreadable / "train" / "coffee" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cases["unreadable"] = (unreadable, [], str(bad))

    sizes = root / "sizes"
    fd.make_segmentation(str(sizes), 3, 1, size=40)
    mask = sizes / "train" / "masks" / "img001.png"
    Image.open(mask).resize((30, 40)).save(mask)
    cases["mask size"] = (sizes, [], str(mask))

    ids = root / "ids"
    fd.make_segmentation(str(ids), 3, 1, size=40)
    mask = ids / "val" / "masks" / "img003.png"
    values = np.array(Image.open(mask))
    values[10:12, 10:12] = 7
    Image.fromarray(values, "L").save(mask)
    cases["class id"] = (ids, ["--num-classes", "3"], str(mask))
    return cases


def test_bad_input_one_line_exit_2_nothing_written(work, tmp_path, capsys):
    for name, (folder, extra, culprit) in _bad_input_cases(tmp_path).items():
        weights = work / ("seg.h5" if name in ("mask size", "class id") else "cls.h5")
        out = tmp_path / f"{name}.h5"
        code = finetune_cli.main(["--weights", str(weights), "--data", str(folder), "--out", str(out), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2, name
        assert len(err.splitlines()) == 1 and culprit in err, (name, err)
        assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_global_batch_smaller_than_the_replica_count_is_refused(work, tmp_path):
    """Every replica needs an image in every training step (its synchronized
    BatchNorm statistics and gradients would otherwise come from nothing)."""

    class FourReplicas:
        num_replicas_in_sync = 4

    with pytest.raises(ft.FinetuneError, match="--batch-size 3 is smaller than the 4 replicas"):
        ft.finetune(str(work / "small.h5"), str(work / "cls"), str(tmp_path / "out.h5"), batch_size=3,
                    strategy=FourReplicas())
    assert os.listdir(tmp_path) == []


def test_wrong_task_and_existing_output(work, tmp_path, capsys):
    assert finetune_cli.main(["--weights", str(work / "seg.h5"), "--data", str(work / "cls"), "--out", str(tmp_path / "o.h5")]) == 2
    assert "segmentation model" in capsys.readouterr().err
    existing = tmp_path / "exists.h5"
    existing.write_bytes(b"keep")
    assert finetune_cli.main(["--weights", str(work / "cls.h5"), "--data", str(work / "cls"), "--out", str(existing)]) == 2
    assert "--force" in capsys.readouterr().err and existing.read_bytes() == b"keep"


# --------------------------------------------------------- training semantics


def test_head_replaced_rest_kept_and_torch_bn_constants(work):
    import keras

    model, _, replaced, backbone = ft.build_model(str(work / "cls.h5"), classes=3, image_size=(48, 48))
    saved = ft.read_h5_weights(str(work / "cls.h5"))
    assert replaced == ["predictions"] and model.get_layer("predictions").kernel.shape == (1280, 3)
    np.testing.assert_array_equal(model.get_layer("block_3_project_BN").moving_mean.numpy(), saved["block_3_project_BN"][2])
    assert "predictions" not in backbone and "Conv1" in backbone
    copy = distribute.training_copy(model, synchronized=True, dropout=False)
    bns = [layer for layer in copy.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all((bn.epsilon, bn.momentum) == (1e-5, 0.9) for bn in bns)
    assert all(type(bn).__name__ == "SyncBatchNormalization" for bn in bns)
    assert copy.get_layer("dropout").rate == 0.0
    np.testing.assert_array_equal(copy.get_weights()[5], model.get_weights()[5])


def test_output_record_describes_the_fine_tuned_model(work, tmp_path, capsys):
    """OUT.h5's record is what from_h5, the demo, predict and export read:
    the new class count and names, the input size trained at (and the eval
    size with it), and how it was made, metrics as the epoch line says."""
    import keras_lightnets as kl
    from keras_lightnets.cli.main import main

    out = tmp_path / "out.h5"
    args = ["finetune", "--weights", str(work / "small.h5"), "--data", str(work / "cls"), "--out", str(out),
            "--epochs", "1", "--batch-size", "12", "--image-size", "40", "40", "--run-eagerly"]
    assert main(args) == 0
    (line,) = json_lines(capsys.readouterr().out)
    record, before = kl.weights_info(out), kl.weights_info(work / "small.h5")
    assert record["builder_kwargs"] == {**before["builder_kwargs"], "classes": 3, "input_shape": [40, 40, 3]}
    assert record["preprocessing"] == {**before["preprocessing"], "size": 40}
    assert record["class_names"] == sorted(fd.CLASS_PHOTOS) and record["source"] == before["source"]
    made = record["finetune"]
    assert made["metrics"].keys() == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(made["metrics"][k] == pytest.approx(line[k], abs=1e-6) for k in made["metrics"])
    assert {k: made[k] for k in ("from", "epochs", "batch_size", "replicas", "image_size", "replaced_layers")} == {
        "from": "small.h5", "epochs": 1, "batch_size": 12, "replicas": 1, "image_size": [40, 40],
        "replaced_layers": ["conv_preds"]}  # MobileNet v1: a 1x1-conv classifier
    model = kl.from_h5(out)
    assert model.input_shape == (None, 40, 40, 3) and model.output_shape == (None, 3)


def test_loss_ignores_void_pixels_and_averages_the_labelled_ones():
    """The fine-tuning loss, against its definition: softmax cross-entropy
    over the labelled pixels only (255 is void, as in Pascal VOC), averaged
    over them; what the network says on void pixels does not count."""
    loss = distribute.loss_class()()
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (2, 4, 5, 3)).astype("float32")
    labels = rng.integers(0, 3, (2, 4, 5))
    labels[:, 0] = 255
    valid = labels != 255
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_p, np.where(valid, labels, 0)[..., None], -1)[..., 0][valid].mean()
    assert float(loss(labels, logits)) == pytest.approx(expected, rel=1e-5)
    on_void = logits.copy()
    on_void[:, 0] = -on_void[:, 0] * 10
    assert float(loss(labels, on_void)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(np.full((1, 2, 2), 255), logits[:1, :2, :2])) == 0.0


@pytest.mark.slow
def test_classifier_learns_and_output_loads(work, tmp_path, monkeypatch):
    import keras_lightnets as kl
    from keras_lightnets.catalog import pretrained_file

    monkeypatch.setenv("KERAS_LIGHTNETS_CACHE", str(tmp_path / "cache"))
    pretrained = pretrained_file("efficientnet_lite0")  # real ImageNet weights, 1000 classes
    out = tmp_path / "lite0_3classes.h5"
    lines = []

    class Lines:
        def write(self, text):
            lines.extend(json.loads(t) for t in text.splitlines())

        def flush(self):
            pass

    # the head on a frozen backbone: full fine-tuning at this lr moves the
    # ImageNet features more than 24 images can teach (val top-1 0.5-0.67)
    ft.finetune(pretrained, str(work / "cls"), str(out), epochs=3, batch_size=8, lr=0.01,
                image_size=(64, 64), freeze_backbone=True, verbose=0, stream=Lines())
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert lines[-1]["loss"] < 0.5 * lines[0]["loss"]
    assert lines[-1]["val_accuracy"] > 1 / 3 + 0.3  # chance is 1/3
    before, after = ft.read_h5_weights(pretrained), ft.read_h5_weights(str(out))
    kept = [name for name in before if name in after and before[name][0].shape == after[name][0].shape]
    assert len([n for n in kept if "bn" in n.lower()]) > 30  # BatchNorm statistics included
    for name in kept:
        for x, y in zip(before[name], after[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)
    assert before.keys() - set(kept) == {"predictions"}  # the one replaced layer: 1000 -> 3 classes
    record = kl.weights_info(out)
    assert record["builder_kwargs"]["classes"] == 3 and record["class_names"] == sorted(fd.CLASS_PHOTOS)
    assert record["preprocessing"]["size"] == 64 and record["source"]["naming"] == "efficientnet_lite_pytorch"
    model = kl.from_h5(out)
    assert model.output_shape == (None, 3)


def chance_miou(mask_paths, classes):
    """The mIoU of the best constant answer (every pixel the same class)."""
    from keras_lightnets.training.data import read_mask

    labels = np.concatenate([read_mask(p).ravel() for p in mask_paths])
    labels = labels[labels != 255]
    counts = np.bincount(labels, minlength=classes)
    present = np.count_nonzero(counts)
    return max(counts) / labels.size / present  # IoU = frequency for that class, 0 for the others


@pytest.mark.slow
def test_segmentation_learns(work, tmp_path):
    """DeepLabV3+ from an ImageNet backbone on photo crops whose masks follow
    colour rules: the loss falls and the validation mIoU beats the best
    constant answer."""
    start, out = tmp_path / "imagenet_backbone.h5", tmp_path / "out.h5"
    fd.imagenet_deeplab_file(str(start), classes=3)
    history = ft.finetune(str(start), str(work / "seg"), str(out), epochs=10, batch_size=4, lr=0.01,
                          image_size=(64, 64), freeze_backbone=True, verbose=0, stream=io.StringIO())
    chance = chance_miou(find_dataset(work / "seg").val.labels, 3)
    print(f"segmentation: loss {history['loss'][0]:.3f} -> {history['loss'][-1]:.3f}, val loss "
          f"{history['val_loss'][0]:.3f} -> {history['val_loss'][-1]:.3f}, val mIoU {history['val_miou'][-1]:.3f} "
          f"(constant answer {chance:.3f})")
    # a batch of 4 random crops makes one epoch's training loss noisy: compare the last three
    assert np.mean(history["loss"][-3:]) < 0.75 * history["loss"][0]
    assert history["val_loss"][-1] < 0.9 * history["val_loss"][0]
    assert history["val_miou"][-1] > chance + 0.15
    # the frozen backbone kept its weights and BatchNorm statistics; the head trained
    before, after = ft.read_h5_weights(str(start)), ft.read_h5_weights(str(out))
    _, _, _, backbone = ft.build_model(str(start), image_size=(64, 64))
    frozen = [name for name in before if name in backbone]
    assert len([n for n in frozen if n.endswith(("_BN", "bn_Conv1"))]) > 30
    for name in frozen:
        for x, y in zip(before[name], after[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)
    head = [name for name in before if name not in backbone]
    assert "logits" in head and "aspp_project_bn" in head
    assert all(any(not np.array_equal(x, y) for x, y in zip(before[n], after[n])) for n in head), head


# ------------------------------------------------------------- replicas


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# Two replicas against one device in miniature (a one-layer network, float32
# as users train): the preparation `finetune` makes (`training_model`), then
# `fit` and `evaluate` in graph mode on batches split unevenly and, at the
# end of validation, a batch of one image (a replica without images).
TINY_REPLICAS_SCRIPT = """
import json
import numpy as np
from keras_lightnets.training import distribute
two = distribute.make_strategy(2)
import keras, tensorflow as tf
from keras_lightnets.training.finetune import training_model

def network(segmentation):
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(x)
    x = keras.layers.Dropout(0.3)(keras.layers.ReLU()(x))
    if not segmentation:
        x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))

def batches(count, segmentation, training, seed):
    rng = np.random.default_rng(seed)
    images = rng.normal(2.0, 1.0, (count, 6, 6, 3)).astype("float32")
    if segmentation:
        labels = rng.integers(0, 3, (count, 6, 6)).astype("uint8")
        labels[:, :2] = 255  # ignored
    else:
        labels = rng.integers(0, 3, count).astype("int32")
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(5, drop_remainder=training)

results = {}
for segmentation in (False, True):
    for name, strategy in (("two", two), ("one", tf.distribute.get_strategy())):
        keras.utils.set_random_seed(0)
        train, val = batches(12, segmentation, True, 1), batches(6, segmentation, False, 2)
        model = training_model(network(segmentation), strategy, 3, segmentation, 0.1, train.element_spec)
        history = model.fit(train, validation_data=val, epochs=2, verbose=0)
        evaluation = model.evaluate(val, verbose=0, return_dict=True)
        results[f"{segmentation}-{name}"] = {
            "weights": [w.tolist() for w in model.get_weights()],
            "logs": {**{k: v[-1] for k, v in history.history.items()}, **{"evaluate_" + k: v for k, v in evaluation.items()}},
        }
print(json.dumps(results))
"""


def test_two_replicas_compute_what_one_device_computes():
    """Weights, BatchNorm statistics, losses and metrics of 2 replicas equal
    one device's, in graph mode, whatever the batch split: 12 training
    images in batches of 5 (3 + 2 per replica, 2 dropped), 6 validation
    images (3 + 2, then 1 + 0)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    result = subprocess.run([sys.executable, "-c", TINY_REPLICAS_SCRIPT], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.splitlines()[-1])
    for task in ("False", "True"):
        one, two = results[f"{task}-one"], results[f"{task}-two"]
        differences = [float(np.abs(np.subtract(b, a)).max() / np.abs(a).max()) for a, b in zip(one["weights"], two["weights"])]
        print(f"segmentation={task}: relative differences {', '.join(f'{d:.1e}' for d in differences)}")
        assert len(differences) == 7 and max(differences) < 1e-5
        assert one["logs"].keys() == two["logs"].keys() and len(one["logs"]) == 6
        for key, value in one["logs"].items():
            assert two["logs"][key] == pytest.approx(value, rel=1e-5), (task, key)


# The replica runs are the user's: `lightnets finetune` in graph mode with the
# default options (dropout included) but --epochs 1 and small images, on data
# sets whose sizes are no multiple of the global batch of 5: two training
# steps split 3 + 2 over the replicas (a remainder dropped), then validation
# batches of 5 (3 + 2) and 1 (1 + 0: one replica without images).
#
# They run in float64 (Keras's floatx, from the user's keras.json): in float32
# the replicas' partial sums round differently, and the near-constant channels
# of these small random-weight networks amplify that to 1e-2 after one epoch,
# as much as one device differs from itself in float32 and float64; float64
# shows whether the computation itself is the same.
REPLICA_ARGS = ["--epochs", "1", "--batch-size", "5", "--image-size", "48", "48"]
REPLICA_CASES = {"classifier": ("small.h5", "partial_cls"), "deeplab": ("seg.h5", "partial_seg")}
# One process, so TensorFlow starts once: the first run splits the CPU into
# two logical devices (`--replicas 2`), the next ones reuse them.
REPLICA_SCRIPT = """
import json, sys
from keras_lightnets.cli.main import main
for args in json.loads(sys.argv[1]):
    if main(["finetune", *args]) != 0:
        sys.exit(1)
"""


def float64_keras_home(folder):
    folder.mkdir(exist_ok=True)
    (folder / "keras.json").write_text(json.dumps({"floatx": "float64", "backend": "tensorflow"}))
    return folder


def replica_args(work, task):
    weights, folder = REPLICA_CASES[task]
    return ["--weights", str(work / weights), "--data", str(work / folder), *REPLICA_ARGS]


@pytest.fixture(scope="module")
def replica_runs(work, tmp_path_factory):
    """`{(task, replicas): (OUT.h5, epoch line)}` after one epoch, both tasks
    on 2 replicas and on one device."""
    folder = tmp_path_factory.mktemp("replicas")
    fd.make_classification(str(work / "partial_cls"), 4, 2)  # 12 training images, 6 validation
    fd.make_segmentation(str(work / "partial_seg"), 11, 6, size=64)
    runs = {(task, r): folder / f"{task}-r{r}.h5" for r in (2, 1) for task in REPLICA_CASES}
    commands = [[*replica_args(work, task), "--replicas", str(r), "--out", str(out)] for (task, r), out in runs.items()]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT,
           "KERAS_HOME": str(float64_keras_home(folder / "keras_home"))}
    result = subprocess.run([sys.executable, "-c", REPLICA_SCRIPT, json.dumps(commands)], capture_output=True,
                            text=True, env=env, cwd=ROOT, timeout=1800, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = json_lines(result.stdout)
    assert len(lines) == len(runs)  # one epoch line per run
    return {key: (out, line) for (key, out), line in zip(runs.items(), lines)}


def assert_same_epoch(one, other):
    """The epoch lines agree on every metric (both validation metrics included)."""
    metrics = set(one) - {"seconds", "images_per_second"}
    assert metrics == set(other) - {"seconds", "images_per_second"} and any(k.startswith("val_") for k in metrics)
    for key in metrics:
        assert other[key] == pytest.approx(one[key], rel=1e-5, abs=2e-6), key


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(REPLICA_CASES))
def test_replicas_match_one_device(replica_runs, work, task):
    """2 MirroredStrategy replicas with global batch B give the weights, the
    losses and the metrics of 1 device with batch B after one epoch, in graph
    mode (classifier: Dropout; DeepLabV3+: BatchNorm on feature maps, the
    ignore label, random scale and crop)."""
    (one_file, one_line), (two_file, two_line) = replica_runs[task, 1], replica_runs[task, 2]
    one, two = ft.read_h5_weights(one_file), ft.read_h5_weights(two_file)
    initial = ft.read_h5_weights(str(work / REPLICA_CASES[task][0]))
    moved = max(float(np.abs(a - b).max()) for n in initial if n in one for a, b in zip(one[n], initial[n]) if a.shape == b.shape)
    assert moved > 1e-3  # the epoch changed the weights
    difference = max_relative_difference(one, two)
    print(f"{task}: 1 vs 2 replicas in graph mode, max relative difference {difference:.2e}")
    assert difference < 1e-4
    assert_same_epoch(one_line, two_line)


@pytest.mark.slow
def test_multi_worker_matches_one_device(replica_runs, work, tmp_path):
    """Two MultiWorkerMirroredStrategy processes on 127.0.0.1 (TF_CONFIG)
    give the weights and metrics of one device; only the chief writes."""
    keras_home = float64_keras_home(tmp_path / "keras_home")
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        out = tmp_path / f"mw{index}.h5"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT, "TF_CONFIG": config, "KERAS_HOME": str(keras_home)}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "keras_lightnets.finetune", *replica_args(work, "classifier"), "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        ))
    results = [w.communicate(timeout=1800) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    (line,) = json_lines(results[0][0])
    assert json_lines(results[1][0]) == []
    assert not (tmp_path / "mw1.h5").exists()  # only the chief writes
    one_file, one_line = replica_runs["classifier", 1]
    difference = max_relative_difference(ft.read_h5_weights(one_file), ft.read_h5_weights(tmp_path / "mw0.h5"))
    print(f"MultiWorkerMirroredStrategy, 2 workers vs 1 device: max relative difference {difference:.2e}")
    assert difference < 1e-4
    assert_same_epoch(one_line, line)


def test_killed_run_leaves_no_output(work, tmp_path):
    out = tmp_path / "killed.h5"
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_lightnets.finetune", "--weights", str(work / "small.h5"), "--data",
         str(work / "cls"), "--out", str(out), "--epochs", "200", "--batch-size", "12", "--image-size", "48", "48",
         "--run-eagerly"],  # the first epoch in a few seconds: no graph to trace
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT},
    )
    try:
        first = process.stdout.readline()  # the first epoch is done: training is under way
        assert json.loads(first)["epoch"] == 1
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.stdout.close()
    assert not out.exists() and os.listdir(tmp_path) == []
