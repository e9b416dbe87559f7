"""Batch prediction over folders: results, resuming, bad files, class maps."""

import json

import numpy as np
import pytest
from PIL import Image

from keras_lightnets.cli import predict
from keras_lightnets.cli.main import main as lightnets
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


def expected_probabilities(folder, model, names):
    """The model's probabilities for each file, read and preprocessed as the demo does."""
    from keras_lightnets.preprocessing import preprocess_input
    from keras_lightnets.preprocessing.image import load_image

    x = np.stack([preprocess_input(load_image(folder / name, 48, 0.875, "bilinear"), "torch") for name in names])
    return dict(zip(names, model.predict(x, verbose=0)))


def check_each_line_is_its_files(out, expected):
    """Every readable file once, each line the prediction of the file it names."""
    with open(out, "rb") as f:
        content = f.read()
    assert content.endswith(b"\n")
    lines = [json.loads(line) for line in content.splitlines()]
    assert sorted(line["file"] for line in lines) == sorted(expected)
    for line in lines:
        got = np.zeros(5)
        for class_id, _, probability in line["top"]:
            got[class_id] = probability
        np.testing.assert_allclose(got, expected[line["file"]], atol=1e-4, err_msg=line["file"])


def test_results_belong_to_their_files_across_skips_and_resumes(photos, tmp_path, capsys):
    """An unreadable file amid a batch, files done by an earlier run among
    those still to do, and a complete last line without its newline: every
    file is predicted once, and each line holds its own file's prediction."""
    weights = tmp_path / "w.h5"
    model = fd.classifier_file(str(weights), classes=5, size=48, calibrated=True)
    names = sorted(f"{split}/{name}/0.jpg" for split in ("train", "val") for name in fd.CLASS_PHOTOS)
    expected = expected_probabilities(photos, model, names)
    closest = min(np.abs(expected[a] - expected[b]).max() for a in names for b in names if a < b)
    assert closest > 1e-3  # a result given to another file shows
    out = tmp_path / "results.jsonl"
    args = ["predict", str(photos), "--weights", str(weights), "--out", str(out)]  # as users run it
    assert lightnets(args) == 0  # one batch: 2 photos, broken.jpg, 4 photos
    check_each_line_is_its_files(out, expected)

    # an earlier run had done the first and third photos only
    kept = [line for line in read_lines(out) if line["file"] in (names[0], names[2])]
    out.write_text("".join(json.dumps(line) + "\n" for line in kept))
    assert lightnets(args) == 0
    assert f"{len(names) - 2} images predicted" in capsys.readouterr().err
    check_each_line_is_its_files(out, expected)

    # a run killed between writing a line and its newline: that line is kept and counted done
    capsys.readouterr()
    out.write_bytes(out.read_bytes()[:-1])
    assert lightnets(args) == 0
    assert "0 images predicted" in capsys.readouterr().err
    check_each_line_is_its_files(out, expected)


def test_an_existing_output_keeps_its_complete_lines_and_drops_only_a_torn_last_one(tmp_path):
    """`read_results`: what a resumed run counts done is exactly what it keeps;
    anything that is not this command's output is refused, left untouched."""
    from keras_lightnets.runtime.folder import (
        MAX_RESULT_LINE,
        PredictError,
        read_results,
    )

    lines = [json.dumps({"file": f"{i}.jpg", "top": [[i, "x", 0.5]]}).encode() + b"\n" for i in range(3)]
    out = tmp_path / "r.jsonl"
    for content, done, keep, missing_newline in [
        (b"".join(lines), {"0.jpg", "1.jpg", "2.jpg"}, len(b"".join(lines)), False),
        (b"".join(lines)[:-1], {"0.jpg", "1.jpg", "2.jpg"}, len(b"".join(lines)) - 1, True),  # complete, no newline
        (b"".join(lines)[:-5], {"0.jpg", "1.jpg"}, len(b"".join(lines[:2])), False),  # torn: cut away, redone
        (lines[0] + b'{"file": "', {"0.jpg"}, len(lines[0]), False),
    ]:
        out.write_bytes(content)
        assert read_results(out) == (done, keep, missing_newline), content
    for content in (
        b"notes without a newline",
        lines[0] + b"notes without a newline",
        lines[0] + b'{"file": "' + b"x" * MAX_RESULT_LINE + b'"}\n' + lines[1],  # an overlong line amid results
        lines[0] + b'{"file": "\xc3\xa9',  # a torn result line is ASCII (json.dumps escapes)
    ):
        out.write_bytes(content)
        with pytest.raises(PredictError, match="is not a result line of this command"):
            read_results(out)
        assert out.read_bytes() == content


# Pascal VOC's class colours as its development kit publishes them (classes 0-20).
VOC_COLOURS = [
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
    (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128),
    (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0), (0, 64, 128),
]


def test_voc_palette_is_pascal_vocs():
    from keras_lightnets.labels import VOC_CLASSES, voc_palette

    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert [tuple(int(c) for c in row) for row in palette[:21]] == VOC_COLOURS
    assert VOC_CLASSES[15] == "person" and tuple(palette[15]) == (192, 128, 128)
    assert tuple(palette[255]) == (224, 224, 192)  # the void label's outline colour


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
    for index, (line, size) in enumerate(zip(lines, ((72, 56), (64, 64)))):
        assert line["mask"] == f"seg_masks/{index}.png"  # beside the results, relative to them
        mask = Image.open(tmp_path / line["mask"])
        assert mask.mode == "P" and mask.size == size
        assert mask.getpalette()[: 3 * len(VOC_COLOURS)] == [c for colour in VOC_COLOURS for c in colour]
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
