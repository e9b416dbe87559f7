"""Runs hostile-input cases through the commands' `main` in this process, one
after another, and reports each case's outcome, time and peak memory (the RSS
high-water mark, reset before each case) as one JSON line.

    python -m tests.untrusted_harness CASES.json

Imports nothing that starts TensorFlow: the cases must be refused before it.
"""

import contextlib
import io
import json
import os
import sys
import time

from tests import hostile_files as hf


def _entry(name):
    """The command's `main(argv) -> status` (`keras_lightnets.cli`), or `from_h5` as one."""
    import importlib

    if name != "from_h5":
        return importlib.import_module(f"keras_lightnets.cli.{name}").main

    def main(argv):
        import keras_lightnets
        from keras_lightnets.errors import LightnetsError

        try:
            keras_lightnets.from_h5(argv[0])
        except (LightnetsError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0

    return main


def _status_kb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def run_case(case, marker):
    """Runs one case in this process; returns its outcome, time and peak memory above the start."""
    environment = dict(os.environ)
    os.environ.update(case.get("env", {}))
    marker.reset()
    main = _entry(case["entry"])
    out, err = io.StringIO(), io.StringIO()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak RSS (VmHWM) starts again from the current RSS
    before = _status_kb("VmRSS:")
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(case["args"])
    except SystemExit as exit_:
        status = exit_.code
    except Exception as exc:  # noqa: BLE001 - a traceback is what these cases hunt
        status = f"{type(exc).__name__}: {str(exc)[:300]}"
    seconds = time.perf_counter() - started
    extra_mb = (_status_kb("VmHWM:") - before) / 1024
    os.environ.clear()
    os.environ.update(environment)
    return {"name": case["name"], "status": status, "stdout": out.getvalue(), "stderr": err.getvalue(),
            "seconds": seconds, "extra_mb": extra_mb, "untouched": marker.untouched()}


def run_batch(cases_path):
    with open(cases_path) as f:
        spec = json.load(f)
    marker = hf.Marker.__new__(hf.Marker)
    marker.token, marker.raw, marker.h5 = spec["marker"]["token"].encode(), *spec["marker"]["paths"]
    return [run_case(case, marker) for case in spec["cases"]]



if __name__ == "__main__":
    print(json.dumps(run_batch(sys.argv[1])))
