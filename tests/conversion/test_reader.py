"""keras_lightnets.conversion.reader: torch-written checkpoints read back exactly; hostile or corrupt ones are refused."""

import argparse
import ast
import collections
import json
import os
import pathlib
import pickle
import struct
import time
import tracemalloc
import zipfile

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from keras_lightnets.conversion.reader import (
    Checkpoint,
    CheckpointError,
    read_checkpoint,
)
from tests import hostile_pickles as hp

READER_SOURCES = sorted((pathlib.Path(__file__).resolve().parents[2] / "keras_lightnets" / "conversion" / "reader").glob("*.py"))
FORMATS = ["zip", "legacy"]
FORMAT_NAMES = {"zip": "pytorch-zip", "legacy": "pytorch-legacy"}


def save(obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def small_state_dict(seed=0):
    """A conv/bn/linear state_dict with random BatchNorm statistics (and num_batches_tracked)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
        model[1].num_batches_tracked.fill_(7)
    return model.state_dict()


def assert_matches(checkpoint, state_dict, prefix=""):
    expected = {
        k[len(prefix):]: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")
    }
    assert list(checkpoint.tensors) == list(expected)
    for name, tensor in expected.items():
        array = checkpoint.tensors[name]
        assert array.dtype == np.float32 and array.shape == tuple(tensor.shape)
        np.testing.assert_array_equal(array, tensor.numpy())


def refused(path, *fragments):
    """Expect a CheckpointError: one line, starting with the file name, holding each fragment."""
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(os.path.basename(path)), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def refused_within(path, fragment, peak_bytes):
    """`refused`, allocating under `peak_bytes` (Python's allocations, `tracemalloc`) meanwhile."""
    tracemalloc.start()
    try:
        refused(path, fragment)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < peak_bytes


# ----------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", FORMATS)
def test_plain_state_dict(tmp_path, fmt):
    state_dict = small_state_dict()
    path = save(state_dict, tmp_path / "plain.pth", fmt)
    checkpoint = read_checkpoint(path)
    assert isinstance(checkpoint, Checkpoint)
    assert_matches(checkpoint, state_dict)
    assert "1.num_batches_tracked" not in checkpoint.tensors
    assert checkpoint.format == FORMAT_NAMES[fmt]
    assert checkpoint.wrapper is None and checkpoint.prefix is None
    assert checkpoint.alias_groups == [] and checkpoint.extra == {}
    assert checkpoint.nbytes == os.path.getsize(path)


def _optimizer(state_dict):
    params = [torch.nn.Parameter(v.clone()) for k, v in state_dict.items() if v.is_floating_point()]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    return optimizer.state_dict()  # holds momentum tensors


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "wrapper, build",
    [
        ("state_dict", lambda sd: {"state_dict": sd, "epoch": 3}),
        ("model_state", lambda sd: {"model_state": sd, "optimizer_state": _optimizer(sd), "epoch": 3}),
        ("model_state_dict", lambda sd: {"model_state_dict": sd, "epoch": 3}),
        ("model", lambda sd: {"model": sd, "epoch": 3}),
        ("net", lambda sd: {"net": sd, "epoch": 3}),
        ("ema", lambda sd: {"ema": sd, "epoch": 3}),
        ("state_dict_ema", lambda sd: {"state_dict_ema": sd, "epoch": 3}),
        ("model.state_dict", lambda sd: {"model": {"state_dict": sd, "arch": "mbv2"}, "epoch": 3}),
    ],
)
def test_wrappers(tmp_path, fmt, wrapper, build):
    state_dict = small_state_dict()
    checkpoint = read_checkpoint(save(build(state_dict), tmp_path / "wrapped.pth", fmt))
    assert_matches(checkpoint, state_dict)
    assert checkpoint.wrapper == wrapper
    assert checkpoint.extra["epoch"] == 3
    assert "optimizer_state" not in checkpoint.extra  # it holds tensors: not plain data
    if wrapper == "model.state_dict":
        assert checkpoint.extra["arch"] == "mbv2"


@pytest.mark.parametrize(
    "keys, expected",
    [
        (["ema", "model", "state_dict"], "state_dict"),
        (["ema", "net", "model_state"], "model_state"),
        (["ema", "net"], "net"),
        (["model_ema", "ema"], "ema"),
    ],
)
def test_wrapper_preference(tmp_path, keys, expected):
    wrapped = {key: small_state_dict(seed) for seed, key in enumerate(keys)}
    checkpoint = read_checkpoint(save(wrapped, tmp_path / "many.pth", "zip"))
    assert checkpoint.wrapper == expected
    assert_matches(checkpoint, wrapped[expected])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_prefixes_are_stripped(tmp_path, fmt, prefix):
    state_dict = collections.OrderedDict((prefix + k, v) for k, v in small_state_dict().items())
    checkpoint = read_checkpoint(save({"state_dict": state_dict}, tmp_path / "prefixed.pth", fmt))
    assert checkpoint.prefix == prefix
    assert_matches(checkpoint, state_dict, prefix)


def test_prefix_kept_unless_all_keys_have_it(tmp_path):
    state_dict = {"module.a": torch.ones(2), "b": torch.zeros(2)}
    checkpoint = read_checkpoint(save(state_dict, tmp_path / "mixed.pth", "zip"))
    assert checkpoint.prefix is None
    assert list(checkpoint.tensors) == ["module.a", "b"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_dtypes(tmp_path, fmt):
    torch.manual_seed(0)
    values = torch.randn(5, 3) * 100
    state_dict = {
        "f16": values.half(),
        "bf16": values.bfloat16(),
        "f64": values.double(),
        "i64": torch.arange(-5, 10, dtype=torch.int64) * (2**40),
        "i32": torch.arange(-5, 10, dtype=torch.int32),
        "i16": torch.arange(-5, 10, dtype=torch.int16),
        "i8": torch.arange(-5, 10, dtype=torch.int8),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "mask": torch.tensor([True, False, True]),
    }
    tensors = read_checkpoint(save(state_dict, tmp_path / "dtypes.pth", fmt)).tensors
    for name in ("f16", "bf16", "f64"):
        assert tensors[name].dtype == np.float32
        np.testing.assert_array_equal(tensors[name], state_dict[name].float().numpy())  # exact
    integer_dtypes = {"i64": np.int64, "i32": np.int32, "i16": np.int16, "i8": np.int8, "u8": np.uint8}
    for name, dtype in {**integer_dtypes, "mask": np.bool_}.items():
        assert tensors[name].dtype == dtype
        np.testing.assert_array_equal(tensors[name], state_dict[name].numpy())


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_contiguous_views(tmp_path, fmt):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    half = torch.arange(60, dtype=torch.float16).reshape(6, 10)
    views = {
        "transposed": base.t(),
        "sliced": base[2:, 3:7],
        "strided": base[::2, 1::3],
        "expanded": torch.arange(4.0).reshape(4, 1).expand(4, 5),
        "negated": base[1]._neg_view(),
        "half_transposed": half.t(),
        "bf16_sliced": half.bfloat16()[1:, 2:],
    }
    tensors = read_checkpoint(save(views, tmp_path / "views.pth", fmt)).tensors
    for name, view in views.items():
        np.testing.assert_array_equal(tensors[name], view.float().resolve_neg().numpy(), err_msg=name)
        assert tensors[name].flags["C_CONTIGUOUS"] and tensors[name].flags["WRITEABLE"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_extra_plain_values(tmp_path, fmt):
    args = argparse.Namespace(lr=0.01, arch="mobilenet_v2", steps=[10, 20])
    wrapped = {
        "model_state": small_state_dict(),
        "epoch": 3,
        "best_score": np.float64(0.77),
        "best_iter": np.int64(1200),
        "args": args,
        "device": torch.device("cuda", 1),
        "history": {"loss": [0.5, 0.25], "done": True, "note": None},
        "a_tensor": torch.ones(3),
    }
    checkpoint = read_checkpoint(save(wrapped, tmp_path / "extra.pth", fmt))
    assert checkpoint.extra == {
        "epoch": 3,
        "best_score": 0.77,
        "best_iter": 1200,
        "args": {"lr": 0.01, "arch": "mobilenet_v2", "steps": [10, 20]},
        "device": "cuda:1",
        "history": {"loss": [0.5, 0.25], "done": True, "note": None},
    }
    assert type(checkpoint.extra["best_score"]) is float and type(checkpoint.extra["best_iter"]) is int


@pytest.mark.parametrize("fmt", FORMATS)
def test_aliases(tmp_path, fmt):
    t = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    state_dict = {"a": t, "b": t, "c": t[1:], "d": t.t(), "e": t.clone(), "f": t[1:]}
    checkpoint = read_checkpoint(save(state_dict, tmp_path / "tied.pth", fmt))
    assert checkpoint.alias_groups == [("a", "b"), ("c", "f")]
    assert checkpoint.tensors["a"] is checkpoint.tensors["b"]
    assert checkpoint.tensors["c"] is not checkpoint.tensors["a"]
    for name, tensor in state_dict.items():
        np.testing.assert_array_equal(checkpoint.tensors[name], tensor.numpy())


def test_aliases_from_tied_module_weights(tmp_path):
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    model[1].weight = model[0].weight
    checkpoint = read_checkpoint(save(model.state_dict(), tmp_path / "tied.pth", "zip"))
    assert checkpoint.alias_groups == [("0.weight", "1.weight")]


def test_unused_tensors_are_not_read(tmp_path):
    """Storages only used outside the state_dict (optimizer state) are neither needed nor read."""
    checkpoint = {"model": {"w": torch.ones(3)}, "optimizer": {"m": torch.zeros(4)}}
    path = save(checkpoint, tmp_path / "ck.pth", "zip")
    broken = tmp_path / "optimizer_data_missing.pth"
    hp.replace_zip_entries(path, broken, {"/data/1": None})
    np.testing.assert_array_equal(read_checkpoint(broken).tensors["w"], np.ones(3, np.float32))


def write_safetensors(path, tensors, metadata=None, corrupt=None):
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        offsets = [offset, offset + len(data)]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": offsets}
        blobs.append(data)
        offset += len(data)
    if metadata is not None:
        header["__metadata__"] = metadata
    if corrupt:
        corrupt(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))
    return path


def _bf16_bits(array):
    return (np.asarray(array, np.float32).view(np.uint32) >> 16).astype("<u2")


def test_safetensors(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    h = rng.standard_normal(5).astype(np.float16)
    b = _bf16_bits(rng.standard_normal(6))
    d = rng.standard_normal(2)
    n = np.arange(-3, 3, dtype=np.int64)
    path = write_safetensors(
        tmp_path / "model.safetensors",
        {
            "module.w": ("F32", w.shape, w.astype("<f4").tobytes()),
            "module.h": ("F16", h.shape, h.astype("<f2").tobytes()),
            "module.b": ("BF16", b.shape, b.tobytes()),
            "module.d": ("F64", d.shape, d.astype("<f8").tobytes()),
            "module.n": ("I64", n.shape, n.astype("<i8").tobytes()),
            "module.bn.num_batches_tracked": ("I64", (), np.int64(3).tobytes()),
        },
        metadata={"format": "pt"},
    )
    checkpoint = read_checkpoint(path)
    assert checkpoint.format == "safetensors" and checkpoint.prefix == "module."
    assert checkpoint.extra == {"format": "pt"}
    assert list(checkpoint.tensors) == ["w", "h", "b", "d", "n"]
    np.testing.assert_array_equal(checkpoint.tensors["w"], w)
    np.testing.assert_array_equal(checkpoint.tensors["h"], h.astype(np.float32))
    np.testing.assert_array_equal(checkpoint.tensors["b"], (b.astype(np.uint32) << 16).view(np.float32))
    np.testing.assert_array_equal(checkpoint.tensors["d"], d.astype(np.float32))
    np.testing.assert_array_equal(checkpoint.tensors["n"], n)
    assert checkpoint.tensors["n"].dtype == np.int64
    assert all(a.dtype == np.float32 for k, a in checkpoint.tensors.items() if k != "n")


@pytest.mark.parametrize(
    "corrupt, fragment",
    [
        (lambda h: h["w"].update(data_offsets=[0, 4000]), "lies outside the data"),
        (lambda h: h["w"].update(shape=[5, 4]), "does not match its shape"),
        (lambda h: h["w"].update(data_offsets=[-8, 40]), "lies outside the data"),
        (lambda h: h["w"].update(dtype="C64"), "malformed safetensors entry"),
        (lambda h: h["w"].update(data_offsets=[0, 24, 48]), "malformed safetensors entry"),
        (lambda h: h.update(x=["not", "a", "dict"]), "malformed safetensors entry"),
        (lambda h: h["w"].update(shape=[2, "5"]), "expected integers"),
    ],
)
def test_safetensors_bad_entries(tmp_path, corrupt, fragment):
    w = np.zeros((3, 4), np.float32)
    entries = {"w": ("F32", w.shape, w.tobytes())}
    path = write_safetensors(tmp_path / "bad.safetensors", entries, corrupt=corrupt)
    refused(path, fragment)


def test_safetensors_header_too_large(tmp_path):
    path = tmp_path / "huge_header.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + b'{"w": {}}')
    refused(path, "not a PyTorch checkpoint")
    path.write_bytes(struct.pack("<Q", 200) + b"{" + b" " * 300)
    refused(path, "corrupt safetensors header")


@pytest.mark.parametrize("savez", [np.savez, np.savez_compressed])
def test_npz(tmp_path, savez):
    rng = np.random.default_rng(0)
    arrays = {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((3, 5)).astype(np.float32)),
        "half": rng.standard_normal(7).astype(np.float16),
        "steps": np.arange(5, dtype=np.int64),
    }
    path = tmp_path / "weights.npz"
    savez(path, **arrays)
    checkpoint = read_checkpoint(path)
    assert checkpoint.format == "npz" and list(checkpoint.tensors) == list(arrays)
    for name, array in arrays.items():
        np.testing.assert_array_equal(checkpoint.tensors[name], array)
    assert checkpoint.tensors["half"].dtype == np.float32
    assert checkpoint.tensors["steps"].dtype == np.int64


def test_npz_object_array_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "objects.npz"
    np.savez(path, w=np.zeros(2, np.float32), evil=np.array([hp.Payload("exec", marker)], dtype=object))
    refused(path, "'evil.npy'", "dtype")
    assert not marker.exists()


def test_npz_claiming_a_huge_array(tmp_path):
    path = tmp_path / "huge.npz"
    np.savez(path, w=np.zeros(4, np.float32))
    with zipfile.ZipFile(path) as archive:
        member = archive.read("w.npy")
    patched = member.replace(b"(4,)", b"(1099511627776,)".ljust(4))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", patched)
    refused(path, "'w.npy'", "expected 1099511627776 x 4")


# --------------------------------------------------------------------------- hostile


def test_payloads_are_live(tmp_path):
    """The payloads below really run under plain pickle: the reader's refusals are meaningful."""
    for kind in hp.PAYLOAD_GLOBALS:
        marker = tmp_path / f"marker_{kind}"
        pickle.loads(pickle.dumps(hp.Payload(kind, marker), protocol=2))
        assert marker.exists(), kind
        marker.unlink()
        assert pickle.loads(hp.payload_then(42, kind, marker)) == 42
        assert marker.exists(), kind


@pytest.mark.parametrize("kind", hp.PAYLOAD_GLOBALS)
def test_payload_as_zip_data_pkl(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = save(small_state_dict(), tmp_path / "real.pth", "zip")
    crafted = tmp_path / "crafted.pth"
    payload = pickle.dumps(hp.Payload(kind, marker), protocol=2)
    hp.replace_zip_entries(path, crafted, {"/data.pkl": payload})
    refused(crafted, f"refused to unpickle '{hp.PAYLOAD_GLOBALS[kind]}'", "state_dict")
    assert not marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", hp.PAYLOAD_GLOBALS)
def test_payload_inside_a_real_checkpoint(tmp_path, fmt, kind):
    marker = tmp_path / "pwned"
    checkpoint = {"state_dict": small_state_dict(), "hook": hp.Payload(kind, marker)}
    path = save(checkpoint, tmp_path / "ck.pth", fmt)
    refused(path, f"'{hp.PAYLOAD_GLOBALS[kind]}'")
    assert not marker.exists()


LEGACY_PICKLES = ["magic number", "protocol version", "sys_info", "object", "storage keys"]


@pytest.mark.parametrize("position", LEGACY_PICKLES)
@pytest.mark.parametrize("kind", hp.PAYLOAD_GLOBALS)
def test_payload_in_each_legacy_pickle(tmp_path, kind, position):
    marker = tmp_path / "pwned"
    path = save(small_state_dict(), tmp_path / "real.pth", "legacy")
    pieces, storage_data = hp.legacy_pieces(path)
    index = LEGACY_PICKLES.index(position)
    if index == 3:
        pieces[3] = pickle.dumps(hp.Payload(kind, marker), protocol=2)
    else:  # a pickle that still yields the expected value once the payload has run
        pieces[index] = hp.payload_then(pickle.loads(pieces[index]), kind, marker)
    crafted = tmp_path / "crafted.pth"
    crafted.write_bytes(b"".join(pieces) + storage_data)
    refused(crafted, f"refused to unpickle '{hp.PAYLOAD_GLOBALS[kind]}'")
    assert not marker.exists()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model", [nn.Linear(2, 2), nn.Sequential(nn.Conv2d(1, 1, 1)), Net()])
def test_pickled_module_is_refused(tmp_path, fmt, model):
    path = save(model, tmp_path / "model.pth", fmt)
    message = refused(path, "refused to unpickle", type(model).__name__, "save model.state_dict()")
    if type(model).__module__.startswith("torch.nn"):
        assert "nn.Module" in message


@pytest.mark.parametrize("fmt", FORMATS)
def test_module_in_wrapper_is_refused(tmp_path, fmt):
    path = save({"model": nn.Linear(2, 2), "epoch": 1}, tmp_path / "model.pth", fmt)
    refused(path, "'torch.nn.modules.linear.Linear'", "nn.Module", "state_dict")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated
def test_torchscript_is_refused(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), path)
    refused(path, "TorchScript archive", "model.state_dict()")


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantized_tensor_is_refused(tmp_path, fmt):
    quantized = torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.qint8)
    path = save({"w": torch.ones(2), "q": quantized}, tmp_path / "quantized.pth", fmt)
    refused(path, "quantized tensor", "_rebuild_qtensor", "dequantize")


@pytest.mark.parametrize("fmt", FORMATS)
def test_sparse_tensor_is_refused(tmp_path, fmt):
    path = save({"w": torch.ones(2), "s": torch.eye(3).to_sparse()}, tmp_path / "sparse.pth", fmt)
    refused(path, "sparse tensor", "_rebuild_sparse_tensor", "to_dense")


def _zip_with(tmp_path, obj, storages=()):
    path = tmp_path / "crafted.pth"
    hp.write_zip_checkpoint(path, hp.dumps_with_storages(obj), storages)
    return path


def test_build_state_on_tensor_is_refused(tmp_path):
    # _rebuild_tensor_v2(...) followed by BUILD {"shape": ...}: pickle must not set attributes.
    storage = hp.FakeStorage("0", torch.FloatStorage, np.zeros(4, np.float32).tobytes())
    tensor_pickle = hp.dumps_with_storages(hp.FakeTensor(storage, 0, (4,), (1,)))
    assert tensor_pickle.endswith(b".")
    crafted = tensor_pickle[:-1] + pickle.dumps({"shape": (1000,)}, protocol=2)[2:-1] + b"b."
    path = tmp_path / "crafted.pth"
    hp.write_zip_checkpoint(path, crafted, [storage])
    refused(path, "refused to set state")


def test_build_state_on_namespace_and_dtype_is_checked(tmp_path):
    # Namespace() then BUILD (None, {"x": 1}): a "slot state" pickle would set as attributes.
    namespace_build = b"\x80\x02cargparse\nNamespace\n)\x81N}(X\x01\x00\x00\x00xK\x01u\x86b."
    path = tmp_path / "crafted.pth"
    hp.write_zip_checkpoint(path, namespace_build)
    refused(path, "non-dict state")
    object_dtype = pickle.dumps(np.array([1], dtype=object).dtype, protocol=2)
    hp.write_zip_checkpoint(path, object_dtype)
    refused(path, "numpy dtype 'O8'")


def test_numpy_string_scalar_is_refused(tmp_path):
    path = save({"state_dict": {"w": torch.ones(1)}, "name": np.str_("x")}, tmp_path / "ck.pth", "zip")
    refused(path, "numpy dtype 'U1'")


def test_huge_memo_index_fails_fast(tmp_path):
    # EMPTY_LIST, LONG_BINPUT 2**27: the C unpickler would allocate and zero a 2 GiB memo.
    path = tmp_path / "memo.pth"
    hp.write_zip_checkpoint(path, b"\x80\x02]r" + struct.pack("<I", 2**27) + b".")
    refused_within(path, "memo index 134217728", 50 * 2**20)


def test_codecs_encode_only_for_latin1_bytes(tmp_path):
    path = tmp_path / "crafted.pth"
    # _codecs.encode("x", "utf-8")
    crafted = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00utf-8\x86R."
    hp.write_zip_checkpoint(path, crafted)
    refused(path, "'_codecs.encode'")


# --------------------------------------------------------------------------- corrupt


def test_truncated_zip(tmp_path):
    path = save(small_state_dict(), tmp_path / "full.pth", "zip")
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    refused(cut, "corrupt or truncated zip archive")


def test_truncated_legacy_storage(tmp_path):
    path = save({"w": torch.randn(100)}, tmp_path / "full.pth", "legacy")
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[:-10])
    refused(cut, "truncated", "storage")


@pytest.mark.parametrize("cut_inside", ["object", "storage count"])
def test_truncated_legacy_pickles(tmp_path, cut_inside):
    path = save({"w": torch.randn(100)}, tmp_path / "full.pth", "legacy")
    pieces, _ = hp.legacy_pieces(path)
    end = sum(len(p) for p in pieces[:3]) + len(pieces[3]) // 2
    if cut_inside == "storage count":
        end = sum(len(p) for p in pieces) + 4
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:end])
    refused(cut, "truncated")


def test_legacy_huge_storage_count_fails_fast(tmp_path):
    path = save({"w": torch.randn(1000)}, tmp_path / "full.pth", "legacy")
    pieces, storage_data = hp.legacy_pieces(path)
    crafted = tmp_path / "huge.pth"
    crafted.write_bytes(b"".join(pieces) + struct.pack("<q", 2**40) + storage_data[8:])
    tracemalloc.start()
    started = time.perf_counter()
    try:
        refused(crafted, "storage", "claims 1099511627776 x 4 bytes")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2
    assert peak < 10 * 2**20


def test_legacy_storage_count_mismatch(tmp_path):
    path = save({"w": torch.randn(10)}, tmp_path / "full.pth", "legacy")
    pieces, storage_data = hp.legacy_pieces(path)
    crafted = tmp_path / "short.pth"
    crafted.write_bytes(b"".join(pieces) + struct.pack("<q", 9) + storage_data[8:])
    refused(crafted, "holds 9 elements, expected 10")


def test_legacy_storage_key_list_mismatch(tmp_path):
    path = save({"w": torch.randn(10)}, tmp_path / "full.pth", "legacy")
    pieces, storage_data = hp.legacy_pieces(path)
    pieces[4] = pickle.dumps(["not-a-storage"], protocol=2)
    crafted = tmp_path / "keys.pth"
    crafted.write_bytes(b"".join(pieces) + storage_data)
    refused(crafted, "storage list does not match")


def test_legacy_bad_magic_number(tmp_path):
    path = save({"w": torch.randn(10)}, tmp_path / "full.pth", "legacy")
    pieces, storage_data = hp.legacy_pieces(path)
    pieces[0] = pickle.dumps(12345, protocol=2)
    crafted = tmp_path / "magic.pth"
    crafted.write_bytes(b"".join(pieces) + storage_data)
    refused(crafted, "magic number")


def test_zip_storage_shorter_than_declared(tmp_path):
    path = save({"w": torch.randn(10)}, tmp_path / "full.pth", "zip")
    crafted = tmp_path / "short.pth"
    hp.replace_zip_entries(path, crafted, {"/data/0": np.zeros(9, np.float32).tobytes()})
    refused(crafted, "storage '0' holds 36 bytes, expected 10 x 4")


def test_zip_storage_missing(tmp_path):
    path = save({"w": torch.randn(10)}, tmp_path / "full.pth", "zip")
    crafted = tmp_path / "missing.pth"
    hp.replace_zip_entries(path, crafted, {"/data/0": None})
    refused(crafted, "'full/data/0' is missing")


@pytest.mark.parametrize(
    "field, value, fragment",
    [("flags", 0x1, "is encrypted"), ("method", 99, "is compressed with method 99; only stored and deflate members are read")],
)
def test_zip_encrypted_or_unknown_compression(tmp_path, field, value, fragment):
    data = bytearray(save({"w": torch.zeros(10)}, tmp_path / "full.pth", "zip").read_bytes())
    # Patch every local (PK\3\4) and central (PK\1\2) header; the zeros in the data hold no signature.
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        while at >= 0:
            if field == "flags":
                data[at + flags_at] |= value
            else:
                struct.pack_into("<H", data, at + flags_at + 2, value)
            at = data.find(signature, at + 4)
    crafted = tmp_path / "patched.pth"
    crafted.write_bytes(bytes(data))
    refused(crafted, fragment)


def test_zip_big_endian_is_refused(tmp_path):
    path = save({"w": torch.randn(10)}, tmp_path / "full.pth", "zip")
    crafted = tmp_path / "big.pth"
    hp.replace_zip_entries(path, crafted, {"/byteorder": b"big"})
    refused(crafted, "'big'-endian")


def test_zip_storage_claiming_huge_size(tmp_path):
    # A 40-byte entry whose persistent id claims 2**40 elements: refused before reading.
    storage = hp.FakeStorage("0", torch.FloatStorage, np.zeros(10, np.float32).tobytes(), numel=2**40)
    path = _zip_with(tmp_path, {"w": hp.FakeTensor(storage, 0, (10,), (1,))}, [storage])
    refused_within(path, "storage '0' holds 40 bytes, expected 1099511627776 x 4", 10 * 2**20)


def test_crafted_zip_reads_when_in_bounds(tmp_path):
    """The crafted-pickle writer itself is sound: the in-bounds version of the tests below reads."""
    data = np.arange(12, dtype=np.float32)
    storage = hp.FakeStorage("0", torch.FloatStorage, data.tobytes())
    path = _zip_with(tmp_path, {"w": hp.FakeTensor(storage, 2, (2, 5), (5, 1))}, [storage])
    np.testing.assert_array_equal(read_checkpoint(path).tensors["w"], data[2:12].reshape(2, 5))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "offset, size, stride, fragment",
    [
        (3, (2, 5), (5, 1), "lies outside its storage"),  # last element at 12 of 12
        (0, (13,), (1,), "lies outside its storage"),
        (0, (3, 4), (4, 2), "lies outside its storage"),
        (0, (2, 2), (-1, 1), "negative offset, size or stride"),
        (-1, (2,), (1,), "negative offset, size or stride"),
        (0, (3,), (True,), "expected integers"),
    ],
)
def test_tensor_outside_its_storage(tmp_path, fmt, offset, size, stride, fragment):
    storage = hp.FakeStorage("0", torch.FloatStorage, np.arange(12, dtype=np.float32).tobytes())
    obj = {"w": hp.FakeTensor(storage, offset, size, stride)}
    path = tmp_path / "outside.pth"
    if fmt == "zip":
        hp.write_zip_checkpoint(path, hp.dumps_with_storages(obj), [storage])
    else:
        hp.write_legacy_checkpoint(path, hp.dumps_with_storages(obj), [storage])
    refused(path, fragment)


def test_expansion_bomb_is_refused(tmp_path):
    # One float expanded by zero strides to 2**40 elements: within bounds, but not materialised.
    storage = hp.FakeStorage("0", torch.FloatStorage, np.ones(1, np.float32).tobytes())
    path = _zip_with(tmp_path, {"w": hp.FakeTensor(storage, 0, (2**20, 2**20), (0, 0))}, [storage])
    refused(path, "tensor 'w'", "far more than the file holds")


def test_conflicting_storage_declarations(tmp_path):
    floats = hp.FakeStorage("0", torch.FloatStorage, np.zeros(4, np.float32).tobytes())
    longs = hp.FakeStorage("0", torch.LongStorage, np.zeros(2, np.int64).tobytes(), dtype_size=8)
    obj = {"a": hp.FakeTensor(floats, 0, (4,), (1,)), "b": hp.FakeTensor(longs, 0, (2,), (1,))}
    refused(_zip_with(tmp_path, obj, [floats]), "declared twice")


def test_no_state_dict_inside(tmp_path):
    path = save({"epoch": 3, "config": {"lr": 0.1}}, tmp_path / "nothing.pth", "zip")
    refused(path, "no state_dict found", "'epoch'", "'config'")
    path = save(torch.ones(3), tmp_path / "tensor.pth", "zip")
    refused(path, "a single tensor")
    path = save([torch.ones(3)], tmp_path / "list.pth", "legacy")
    refused(path, "a list")


def test_not_checkpoints(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    refused(empty, "empty.pth is empty")
    refused(tmp_path, f"{tmp_path.name} is a directory")
    refused(tmp_path / "absent.pth", "no such file")

    keras_file = tmp_path / "weights.h5"
    with h5py.File(keras_file, "w") as h5:
        h5.create_dataset("w", data=np.zeros(3))
    refused(keras_file, "weights.h5 is an HDF5/Keras file, not a PyTorch checkpoint")

    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    refused(noise, "not a PyTorch checkpoint: unknown format")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    refused(text, "not a PyTorch checkpoint: unknown format")

    plain_pickle = tmp_path / "plain.pkl"
    plain_pickle.write_bytes(pickle.dumps({"w": 1}, protocol=2))
    refused(plain_pickle, "magic number")

    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hi")
    refused(other_zip, "not a PyTorch checkpoint")


# ---------------------------------------------------------------------------- source


@pytest.mark.parametrize("module", READER_SOURCES, ids=lambda path: path.name)
def test_reader_never_imports_torch_or_plain_pickle(module):
    source = module.read_text()
    assert "import torch" not in source and "torch.load" not in source
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                modules = [alias.name for alias in node.names]
            assert not any(m.split(".")[0] in ("torch", "dill", "joblib") for m in modules), modules
        is_name = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        if is_name and node.value.id == "pickle":
            assert node.attr in ("Unpickler", "UnpicklingError"), f"pickle.{node.attr} used"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in ("eval", "exec", "__import__"), node.func.id
