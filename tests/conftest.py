import ctypes
import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

try:  # glibc: fewer malloc arenas and giving freed memory back keep the suite's peak low
    _LIBC = ctypes.CDLL("libc.so.6")
    _LIBC.mallopt(-8, 2)  # M_ARENA_MAX
except (OSError, AttributeError):
    _LIBC = None


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True, scope="module")
def release_models_after_each_module():
    """Each test module's models, traced functions and arrays are freed after it."""
    yield
    import keras

    keras.backend.clear_session()
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
