import ctypes
import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# With a pytest-xdist worker per core, TensorFlow's, TFLite's (which follows
# TF_NUM_INTRAOP_THREADS) and torch's own thread pools in every worker (and
# its subprocesses) would fight over the same cores; one compute thread each
# runs the suite about 15 % faster.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")) >= len(os.sched_getaffinity(0)):
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

try:  # glibc: fewer malloc arenas and giving freed memory back keep the suite's peak low
    _LIBC = ctypes.CDLL("libc.so.6")
    _LIBC.mallopt(-8, 2)  # M_ARENA_MAX
except (OSError, AttributeError):
    _LIBC = None


# Modules handed to the workers first: their long tests (the replica and
# multi-worker fine-tuning runs, about two minutes on one worker) would
# otherwise start near the end and leave the other worker idle meanwhile.
LONGEST_FIRST = ("tests/training/test_finetune.py",)


def pytest_collection_modifyitems(config, items):
    """Runs `LONGEST_FIRST` modules first, each module's tests in their own order."""
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in LONGEST_FIRST)


def pytest_collection_finish(session):
    """What the collected modules imported (TensorFlow, torch, Keras: half a
    million objects) stays out of the garbage collector's full passes, which
    then take 0.04 s instead of 0.3 s (every `clear_session` runs one)."""
    gc.collect()
    gc.freeze()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def server():
    """A loopback HTTP server (`tests.helpers.LoopbackServer`)."""
    from tests.helpers import LoopbackServer

    s = LoopbackServer()
    yield s
    s.close()


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Private pretrained-weights caches; nothing reachable unless a test serves it."""
    from keras_lightnets.weights import cache, fetch
    from tests.helpers import closed_port_url

    folders = {name: tmp_path / name for name in ("cache", "keras", "torch_home")}
    monkeypatch.setenv("KERAS_LIGHTNETS_CACHE", str(folders["cache"]))
    monkeypatch.setenv("TORCH_HOME", str(folders["torch_home"]))
    monkeypatch.setattr(cache, "KERAS_CACHE_DIR", str(folders["keras"]))
    for env in ("KERAS_LIGHTNETS_KERAS_URL", "KERAS_LIGHTNETS_TORCHVISION_URL", "KERAS_LIGHTNETS_HASHES", "KERAS_LIGHTNETS_PIP"):
        monkeypatch.delenv(env, raising=False)
    dead = closed_port_url()
    monkeypatch.setattr(fetch, "KERAS_BASE_URL", dead)
    monkeypatch.setattr(fetch, "TORCHVISION_BASE_URL", dead)
    monkeypatch.setattr(fetch, "PIP_COMMAND", "off")
    return folders


def _release_memory():
    import keras

    keras.backend.clear_session()  # gc.collect() included
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


@pytest.fixture(autouse=True, scope="module")
def release_models_after_each_module():
    """Each test module's models, traced functions and arrays are freed after it."""
    yield
    _release_memory()


def _resident_bytes():
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


@pytest.fixture(autouse=True)
def release_models_after_large_tests(request):
    """The long tests, and any that grew the process by over 256 MB (large models), free theirs at
    once, not at the module's end: the next one then starts low, and the suite's peak stays low."""
    before = _resident_bytes()
    yield
    if request.node.get_closest_marker("slow") is not None or _resident_bytes() - before > 256 << 20:
        _release_memory()


@pytest.fixture(autouse=True)
def log_peak_memory(request):
    """With $LIGHTNETS_RSS_LOG set, each test's process peak (and its children's) is appended there:
    where the suite's largest process grows (docs/development.md)."""
    yield
    path = os.environ.get("LIGHTNETS_RSS_LOG")
    if path:
        import resource

        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        with open(path, "a", encoding="utf8") as f:
            f.write(f"{os.getpid()} {own} {children} {request.node.nodeid}\n")
