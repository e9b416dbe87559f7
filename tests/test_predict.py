"""Batch prediction over folders: results, resuming, bad files, class maps."""

import json

import numpy as np
import pytest
from PIL import Image

from keras_lightnets.cli import predict
from tests import finetune_data as fd


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six crops in two folders, a broken .jpg and a text file to ignore."""
    root = tmp_path_factory.mktemp("photos")
    fd.make_classification(str(root / "set"), 1, 1)
    (root / "set" / "train" / "coffee" / "broken.jpg").write_bytes(b"GIF89a broken")
    (root / "set" / "notes.txt").write_text("not an image")
    return root / "set"


def read_lines(path):
    with open(path, encoding="utf8") as f:
        return [json.loads(line) for line in f]


def test_classification_results_resume_and_bad_files(photos, tmp_path, capsys):
    weights = tmp_path / "w.h5"
    model = fd.classifier_file(str(weights), classes=5, size=48)
    out = tmp_path / "results.jsonl"
    assert predict.main([str(photos), "--weights", str(weights), "--out", str(out), "--batch-size", "4", "--top", "2"]) == 0
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "broken.jpg" in skipped[0]
    lines = read_lines(out)
    assert sorted(line["file"] for line in lines) == sorted(
        f"{split}/{name}/0.jpg" for split in ("train", "val") for name in fd.CLASS_PHOTOS
    )
    # the same probabilities as the model on the same preprocessing
    from keras_lightnets.preprocessing import preprocess_input
    from keras_lightnets.preprocessing.image import load_image

    first = lines[0]
    x = preprocess_input(load_image(photos / first["file"], 48, 0.875, "bilinear")[None], "torch")
    expected = model.predict(x, verbose=0)[0]
    assert first["top"][0][0] == int(np.argmax(expected)) and len(first["top"]) == 2
    assert abs(first["top"][0][2] - expected.max()) < 0.02

    # resuming: a line cut short is dropped and redone, the rest is skipped
    with open(out, "rb+") as f:
        content = f.read()
        f.seek(0)
        f.truncate()
        f.write(content[: len(content) - 20])
    assert predict.main([str(photos), "--weights", str(weights), "--out", str(out)]) == 0
    again = read_lines(out)
    assert len(again) == len(lines) and [l["file"] for l in again[:-1]] == [l["file"] for l in lines[:-1]]
    assert "1 images predicted" in capsys.readouterr().err


def test_segmentation_writes_class_maps(tmp_path, capsys):
    weights = tmp_path / "seg.h5"
    fd.deeplab_file(str(weights), classes=4)
    folder = tmp_path / "images"
    folder.mkdir()
    for index, (name, size) in enumerate((("chelsea", (72, 56)), ("coffee", (64, 64)))):
        Image.fromarray(fd.photo(name)[:size[1], :size[0]]).save(folder / f"{index}.png")
    out = tmp_path / "seg.jsonl"
    assert predict.main([str(folder), "--weights", str(weights), "--out", str(out)]) == 0
    lines = read_lines(out)
    assert [line["file"] for line in lines] == ["0.png", "1.png"]
    for line, size in zip(lines, ((72, 56), (64, 64))):
        mask = Image.open(tmp_path / line["mask"])
        assert mask.mode == "P" and mask.size == size
        assert np.asarray(mask).max() < 4
        assert abs(sum(line["pixels"].values()) - 1) < 1e-4


def test_bad_arguments_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"not hdf5")
    assert predict.main([str(tmp_path / "empty"), "--weights", str(weights), "--out", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no images" in err
    assert not (tmp_path / "r.jsonl").exists()
