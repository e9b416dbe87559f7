"""Time and memory of the checkpoint reader on crafted hostile files (issue 13).

Each case of `bench/crafted_checkpoints.CRAFTED` is written at about 10 MB where it
can grow (the others are as small as the attack needs), then read in a fresh
process that reports its wall time and its peak RSS above the RSS it had after
importing the reader. Target: every input of at most 10 MB answers (with the
reader's own error) in at most 5 s using at most 2 x its size + 300 MB.

    python bench/reader_limits.py [--scale BYTES] [--only NAME ...]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.crafted_checkpoints import CRAFTED  # noqa: E402

CHILD = r"""
import json, sys, time
from keras_lightnets.conversion.reader import CheckpointError, read_checkpoint

def status_kb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))

with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # reset the peak RSS (VmHWM) to the current RSS
before = status_kb("VmRSS:")
started = time.perf_counter()
try:
    read_checkpoint(sys.argv[1])
    outcome, message = "read", ""
except CheckpointError as exc:
    outcome, message = "CheckpointError", str(exc)
seconds = time.perf_counter() - started
peak = status_kb("VmHWM:")
print(json.dumps({"outcome": outcome, "message": message, "seconds": seconds,
                  "extra_mb": (peak - before) / 1024}))
"""

TIME_LIMIT = 5.0


def run_case(name, build, folder, scale):
    path = os.path.join(folder, f"{name}.bin")
    build(path, scale)
    size = os.path.getsize(path)
    process = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True,
                             cwd=ROOT, timeout=120)
    os.unlink(path)
    if process.returncode != 0:
        lines = process.stderr.strip().splitlines() or ["no output"]
        return {"name": name, "size": size, "outcome": f"crash: {lines[-1][:120]}",
                "seconds": float("nan"), "extra_mb": float("nan"), "message": ""}
    return {"name": name, "size": size, **json.loads(process.stdout)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10_000_000, help="target file size in bytes")
    parser.add_argument("--only", nargs="*", help="case names")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, (issue_class, build) in CRAFTED.items():
            if args.only and name not in args.only:
                continue
            row = run_case(name, build, folder, args.scale)
            row["class"] = issue_class
            budget_mb = 2 * row["size"] / 2**20 + 300
            row["ok"] = (row["outcome"] == "CheckpointError" and row["seconds"] <= TIME_LIMIT
                         and row["extra_mb"] <= budget_mb and len(row["message"]) <= 300)
            rows.append(row)
            print(f"{name:44s} {row['size'] / 1e6:7.2f} MB {row['seconds']:6.2f} s "
                  f"{row['extra_mb']:7.1f} MB  {'ok' if row['ok'] else 'FAIL'}  {row['outcome']}",
                  flush=True)
    worst_time = max(rows, key=lambda r: r["seconds"])
    worst_memory = max(rows, key=lambda r: r["extra_mb"])
    print(f"\n{sum(r['ok'] for r in rows)}/{len(rows)} within the targets; "
          f"slowest {worst_time['name']} {worst_time['seconds']:.2f} s; "
          f"most memory {worst_memory['name']} {worst_memory['extra_mb']:.0f} MB")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
