"""demo.py as a user runs it."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

LINE = re.compile(r"^(\d+)\. (.+): (\d\.\d{4})$")


def run_demo(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "demo.py"), *map(str, args)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )


def test_demo_classifies_the_example_photos():
    result = run_demo(os.path.join(REPO, "examples", "coffee.jpg"), "--top", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [int(m.group(1)) for m in parsed] == [1, 2, 3]
    assert parsed[0].group(2) == "espresso"
    probabilities = [float(m.group(3)) for m in parsed]
    assert probabilities == sorted(probabilities, reverse=True) and probabilities[0] > 0.5

    cat = run_demo(os.path.join(REPO, "examples", "cat.jpg"), "--top", "1")
    assert cat.returncode == 0 and re.match(r"^1\. .*cat: ", cat.stdout), cat.stdout


def test_demo_with_converted_weights(tmp_path):
    from keras_lightnets.weights import pretrained_weights

    result = run_demo(os.path.join(REPO, "examples", "coffee.jpg"), "--weights", pretrained_weights("efficientnet_lite0"), "--top", "1")
    assert result.returncode == 0 and result.stdout.startswith("1. espresso: ")


@pytest.mark.parametrize(
    "make_args",
    [
        lambda t: [t / "missing.jpg"],
        lambda t: [t],
        lambda t: [(t / "notes.jpg").write_text("not a photo") and t / "notes.jpg"],
        lambda t: [os.path.join(REPO, "examples", "cat.jpg"), "--model", "resnet9000"],
        lambda t: [os.path.join(REPO, "examples", "cat.jpg"), "--weights", t / "none.h5"],
        lambda t: [os.path.join(REPO, "examples", "cat.jpg"), "--top", "0"],
    ],
    ids=["missing", "directory", "non-image", "unknown-model", "missing-weights", "bad-top"],
)
def test_bad_input_exits_2_with_one_line(make_args, tmp_path):
    result = run_demo(*make_args(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
