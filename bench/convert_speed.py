"""Converter throughput and peak memory on a ~100 MB checkpoint.

    python bench/convert_speed.py [--classes 10000] [--repeats 3]

Writes an EfficientNet-Lite4 state_dict with a large classifier (about 104 MB
of float32 at 10,000 classes) in the zip and the legacy format, then measures
in fresh processes, so that one run's memory does not hide the next's:
- `read`: `convert.read_checkpoint` alone;
- `convert`: the whole `convert_checkpoint` (read, build the Keras model, map,
  write the .h5), memory counted from after the imports.
Prints a table (MB/s of checkpoint, peak RSS increase and its ratio to the
checkpoint size) and writes it to bench/CONVERT_RESULTS.md. Needs torch (to
write the checkpoints) and efficientnet-lite-pytorch.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {repo!r})
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
mode, path, out = sys.argv[1:4]


def high_water_mark():
    # VmHWM is this process image's peak RSS (ru_maxrss would carry the
    # parent's peak across fork + exec)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024


from convert.reader import read_checkpoint
if mode == "convert":
    from convert.converter import convert_checkpoint
    import keras_lightnets  # noqa: F401  (imports and TF start-up are not the converter's cost)
    keras_lightnets.EfficientNetLite4
before = high_water_mark()
start = time.perf_counter()
if mode == "read":
    tensors = read_checkpoint(path).tensors
else:
    convert_checkpoint(path, out, "efficientnet_lite4", force=True, check=False)
seconds = time.perf_counter() - start
peak = high_water_mark()
print(json.dumps({{"seconds": seconds, "peak_increase": peak - before}}))
"""


def write_checkpoints(folder, classes):
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    state = EfficientNet.from_name("efficientnet-lite4", num_classes=classes).state_dict()
    paths = {"zip": os.path.join(folder, "lite4_zip.pth"), "legacy": os.path.join(folder, "lite4_legacy.pth")}
    torch.save(state, paths["zip"])
    torch.save(state, paths["legacy"], _use_new_zipfile_serialization=False)
    return paths


def measure(mode, path, out):
    script = CHILD.format(repo=REPO)
    result = subprocess.run(
        [sys.executable, "-c", script, mode, path, out], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        paths = write_checkpoints(folder, args.classes)
        for file_format, path in paths.items():
            size = os.path.getsize(path)
            for mode in ("read", "convert"):
                runs = [measure(mode, path, os.path.join(folder, "out.h5")) for _ in range(args.repeats)]
                seconds = statistics.median(r["seconds"] for r in runs)
                peak = max(r["peak_increase"] for r in runs)
                rows.append((file_format, mode, size / 1e6, seconds, size / 1e6 / seconds, peak / 1e6, peak / size))
    header = "| format | stage | checkpoint MB | seconds (median) | MB/s | peak RSS increase MB | × checkpoint |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    lines += [f"| {f} | {m} | {mb:.1f} | {s:.3f} | {rate:.0f} | {peak:.1f} | {ratio:.2f} |" for f, m, mb, s, rate, peak, ratio in rows]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    text = "\n".join([f"# Converter speed ({machine})", "", *lines, ""])
    print(text)
    with open(os.path.join(HERE, "CONVERT_RESULTS.md"), "w", encoding="utf8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
