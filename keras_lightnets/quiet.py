"""Keeping TensorFlow's start-up notices off the terminal of commands that promise one-line output."""

import contextlib
import os


@contextlib.contextmanager
def stderr_silenced():
    """Sends file descriptor 2 to /dev/null for the duration.

    TensorFlow's C++ runtime writes start-up notices (oneDNN, CUDA stubs)
    straight to fd 2 when it is imported, whatever TF_CPP_MIN_LOG_LEVEL says;
    a command that promises one-line errors imports it under this.
    """
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with stderr_silenced():
        import tensorflow  # noqa: F401
