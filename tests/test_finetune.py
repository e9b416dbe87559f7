"""Fine-tuning: data checks, the tf.data preprocessing, training semantics,
replicas (MirroredStrategy on logical CPUs, MultiWorkerMirroredStrategy
with two local processes) and the atomic output."""

import io
import json
import os
import shutil
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not np.array_equal(a[0][0], c[0][0])
    # a new epoch draws a new order and new augmentation
    assert not np.array_equal(a[0][0], a[len(a) // 2][0])
    assert set(np.unique(np.concatenate([y for _, y in a]))) <= {0, 1, 2, 255}


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


# Replicas run in float64 (Keras's floatx): in float32 the replicas' summation
# order changes the last bits, which the near-constant channels of a
# random-weight network amplify to ~1e-4 in the logits after one step;
# float64 shows whether the computation itself is the same.
REPLICA_ARGS = ["--epochs", "1", "--lr", "0.01", "--no-dropout", "--seed", "3", "--image-size", "48", "48"]
REPLICA_CASES = {"classifier": ("small.h5", "cls", "12"), "deeplab": ("seg.h5", "seg", "6")}  # two steps an epoch
# One process, so TensorFlow starts once: the first run splits the CPU into
# two logical devices (`--replicas 2`), the next ones reuse them. The steps
# run eagerly (`--run-eagerly`), here and in the multi-worker test: tracing
# the training graphs of 2 replicas took 180 s against 75 s for the whole
# eager script. What is ours (the strategy, the sharded input, synchronized
# BatchNorm, the global batch, the chief's write) is the same either way.
REPLICA_SCRIPT = """
import json, sys
import keras
keras.config.set_floatx("float64")
from keras_lightnets.cli import finetune
for args in json.loads(sys.argv[1]):
    if finetune.main(args) != 0:
        sys.exit(1)
"""


def replica_args(work, task, data=None):
    weights, folder, batch = REPLICA_CASES[task]
    return ["--weights", str(work / weights), "--data", str(data or work / folder), "--batch-size", batch, *REPLICA_ARGS]


@pytest.fixture(scope="module")
def replica_runs(work, tmp_path_factory):
    """`{(task, replicas): OUT.h5}` after one epoch: DeepLabV3+ with 2 replicas,
    then both tasks on one device (the classifier's is the multi-worker test's
    reference: 2 worker processes cover its replicas)."""
    folder = tmp_path_factory.mktemp("replicas")
    outs = {(task, r): folder / f"{task}-r{r}.h5" for task, r in (("deeplab", 2), ("deeplab", 1), ("classifier", 1))}
    runs = [[*replica_args(work, task), "--replicas", str(r), "--run-eagerly", "--out", str(out)]
            for (task, r), out in outs.items()]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
    result = subprocess.run([sys.executable, "-c", REPLICA_SCRIPT, json.dumps(runs)], capture_output=True,
                            text=True, env=env, cwd=ROOT, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(json_lines(result.stdout)) == len(runs)  # one epoch line per run
    return outs


@pytest.mark.slow
def test_replicas_match_one_device(replica_runs, work):
    """2 MirroredStrategy replicas with global batch B give the weights of
    1 device with batch B after one epoch (DeepLabV3+: BatchNorm on feature
    maps, the ignore label, random scale and crop)."""
    task = "deeplab"
    one, two = ft.read_h5_weights(replica_runs[task, 1]), ft.read_h5_weights(replica_runs[task, 2])
    initial = ft.read_h5_weights(str(work / REPLICA_CASES[task][0]))
    moved = max(float(np.abs(a - b).max()) for n in initial if n in one for a, b in zip(one[n], initial[n]) if a.shape == b.shape)
    assert moved > 1e-3  # the epoch changed the weights
    difference = max_relative_difference(one, two)
    print(f"{task}: 1 vs 2 replicas, max relative difference {difference:.2e}")
    assert difference < 1e-4


@pytest.mark.slow
def test_multi_worker_matches_one_device(replica_runs, work, tmp_path):
    """Two MultiWorkerMirroredStrategy processes on 127.0.0.1 (TF_CONFIG)
    give the weights of one device; only the chief writes."""
    keras_home = tmp_path / "keras_home"
    keras_home.mkdir()
    (keras_home / "keras.json").write_text(json.dumps({"floatx": "float64", "backend": "tensorflow"}))
    data = tmp_path / "train_only"  # no val split: no evaluation pass in the workers
    shutil.copytree(work / "cls" / "train", data / "train")
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        out = tmp_path / f"mw{index}.h5"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT, "TF_CONFIG": config, "KERAS_HOME": str(keras_home)}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "keras_lightnets.finetune", *replica_args(work, "classifier", data), "--run-eagerly",
             "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        ))
    results = [w.communicate(timeout=900) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    assert len(json_lines(results[0][0])) == 1 and json_lines(results[1][0]) == []
    assert not (tmp_path / "mw1.h5").exists()  # only the chief writes
    one = ft.read_h5_weights(replica_runs["classifier", 1])
    difference = max_relative_difference(one, ft.read_h5_weights(tmp_path / "mw0.h5"))
    print(f"MultiWorkerMirroredStrategy, 2 workers vs 1 device: max relative difference {difference:.2e}")
    assert difference < 1e-4


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
