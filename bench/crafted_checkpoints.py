"""Crafted hostile and malformed checkpoints, torch-free (issue 13).

Pickles assembled opcode by opcode and files laid out byte by byte: each case
of `CRAFTED` writes a file that the reader must refuse with its own one-line
error, quickly and in bounded memory. bench/reader_limits.py times them;
tests/conversion/test_reader_hardening.py checks each one.
"""

import pickle
import struct
import zipfile
import zlib

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


# ---------------------------------------------------------------- crafted, torch-free
# Pickles assembled opcode by opcode, for the cases of issue 13: each writes a file that
# the reader must refuse with its own one-line error, quickly and in bounded memory.


def op_int(value):
    """LONG1: any integer up to 255 bytes."""
    encoded = pickle.encode_long(value)
    return b"\x8a" + bytes([len(encoded)]) + encoded


def op_str(text):
    encoded = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(encoded)) + encoded


def op_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_tuple(items):
    return b"(" + b"".join(items) + b"t"


NEG_METADATA = b"}" + op_str("neg") + b"\x88s"  # {"neg": True}


def op_tensor(key, numel, offset, size, stride, storage="FloatStorage", metadata=None):
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()[, metadata])."""
    pid = op_tuple([op_str("storage"), op_global("torch", storage), op_str(key), op_str("cpu"),
                    op_int(numel)]) + b"Q"
    args = [pid, op_int(offset), op_tuple(map(op_int, size)), op_tuple(map(op_int, stride)),
            b"\x89", op_global("collections", "OrderedDict") + b")R"]
    if metadata is not None:
        args.append(metadata)
    return op_global("torch._utils", "_rebuild_tensor_v2") + op_tuple(args) + b"R"


def op_dict(items):
    """A dict from (key opcodes, value opcodes) pairs."""
    return b"}(" + b"".join(key + value for key, value in items) + b"u"


def pickle_of(body):
    return b"\x80\x02" + body + b"."


def tuple_dag(depth):
    """Opcodes pushing t[depth] where t[0] = (None, None) and t[i] = (t[i-1], t[i-1]):
    a few bytes per level, 2**depth elements to hash or compare."""
    ops = b"NN\x86r" + struct.pack("<I", 1)
    for level in range(1, depth):
        get = b"j" + struct.pack("<I", level)
        ops += b"0" + get + get + b"\x86r" + struct.pack("<I", level + 1)
    return ops


def list_dag(depth):
    """Like tuple_dag with lists: a repr of 2**depth items."""
    ops = b"]r" + struct.pack("<I", 1) + b"(NNe"
    for level in range(1, depth):
        get = b"j" + struct.pack("<I", level)
        ops += b"0](" + get + get + b"er" + struct.pack("<I", level + 1)
    return ops


def write_crafted_zip(path, data_pkl, storages=(), compress_pickle=False, root="archive"):
    """A torch-style zip from data.pkl bytes and {key: bytes} storages; data.pkl deflated if asked."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{root}/data.pkl", data_pkl,
                         zipfile.ZIP_DEFLATED if compress_pickle else zipfile.ZIP_STORED)
        archive.writestr(f"{root}/byteorder", b"little")
        for key, data in dict(storages).items():
            archive.writestr(f"{root}/data/{key}", data)
        archive.writestr(f"{root}/version", b"3\n")


def write_raw_zip(path, members, zip64_offset=None):
    """A zip written field by field: ``members`` are (name bytes, data, general-purpose flags).

    With ``zip64_offset``, every central directory entry gives its local header's
    offset as 0xFFFFFFFF plus a zip64 extra field holding ``zip64_offset``.
    """
    local, central = b"", b""
    for name, data, flags in members:
        offset = len(local)
        crc = zlib.crc32(data)
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, 0, 0, 0, crc, len(data),
                             len(data), len(name), 0) + name + data
        extra, field = b"", offset
        if zip64_offset is not None:
            extra, field = struct.pack("<HHQ", 1, 8, zip64_offset), 0xFFFFFFFF
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45, 45, flags, 0, 0, 0, crc, len(data),
                               len(data), len(name), len(extra), 0, 0, 0, 0, field) + name + extra
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central),
                      len(local), 0)
    with open(path, "wb") as file:
        file.write(local + central + end)


def write_safetensors_raw(path, header_text, data=b""):
    encoded = header_text.encode() if isinstance(header_text, str) else header_text
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded + data)


def write_npz_raw(path, members):
    """An .npz from {name: (header text, data)} with any header text, version 1.0."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, (header, data) in members.items():
            encoded = header.encode("latin1")
            archive.writestr(name, b"\x93NUMPY\x01\x00" + struct.pack("<H", len(encoded)) + encoded + data)


def write_legacy_raw(path, object_pickle, storages=(), header=None):
    """A legacy checkpoint from raw object pickle bytes and [(key, numel, bytes)] storages."""
    sys_info = {"protocol_version": LEGACY_PROTOCOL_VERSION, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    if header is None:
        header = b"".join(pickle.dumps(v, protocol=2)
                          for v in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, sys_info))
    keys = pickle.dumps([key for key, _, _ in storages], protocol=2)
    with open(path, "wb") as file:
        file.write(header + object_pickle + keys)
        for _, numel, data in storages:
            file.write(struct.pack("<q", numel) + data)


def _zero_element_zip(path, scale):
    body = op_dict([(op_str("w"), op_tensor("0", 0, 0, (0, 2**64), (1, 1)))])
    write_crafted_zip(path, pickle_of(body), {"0": b""})


def _zero_element_npz(path, scale):
    write_npz_raw(path, {"w.npy": ("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 2**64), }", b"")})


def _zero_element_npz_digits(path, scale):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (0, %d), }" % 2**62
    write_npz_raw(path, {"w.npy": (header, b"")})


def _zero_element_safetensors(path, scale):
    write_safetensors_raw(path, '{"w": {"dtype": "F32", "shape": [0, %d], "data_offsets": [0, 0]}}' % 2**64)


def _huge_stride(storage, itemsize, metadata=None):
    def build(path, scale):
        body = op_dict([(op_str("w"), op_tensor("0", 4, 0, (1, 4), (2**64, 1), storage, metadata))])
        write_crafted_zip(path, pickle_of(body), {"0": bytes(4 * itemsize)})
    return build


def _bool_negated(path, scale):
    body = op_dict([(op_str("w"), op_tensor("0", 4, 0, (4,), (1,), "BoolStorage", NEG_METADATA))])
    write_crafted_zip(path, pickle_of(body), {"0": bytes(4)})


def _safetensors_huge_int(path, scale):
    write_safetensors_raw(path, '{"w": {"dtype": "F32", "shape": [%s], "data_offsets": [0, 4]}}'
                          % ("9" * max(5000, scale // 2)), bytes(4))


def _safetensors_deep(path, scale):
    depth = max(100_000, scale // 2 - 8)
    write_safetensors_raw(path, "{" + '"a":' + "[" * depth + "]" * depth + "}")


def _zip64_offset(path, scale):
    pkl = pickle_of(op_dict([]))
    write_raw_zip(path, [(b"archive/data.pkl", pkl, 0)], zip64_offset=2**64 - 1)


def _zip_bad_utf8_name(path, scale):
    pkl = pickle_of(op_dict([]))
    write_raw_zip(path, [(b"archive/data\xff\xfe.pkl", pkl, 0x800)])


def _zip_corrupt_deflate(path, scale):
    pkl = pickle_of(op_dict([(op_str(f"k{i}"), op_int(i)) for i in range(2000)]))
    write_crafted_zip(path, pkl, compress_pickle=True)
    data = bytearray(open(path, "rb").read())
    start = data.find(b"archive/data.pkl") + len("archive/data.pkl")
    for i in range(start + 20, start + 60):
        data[i] ^= 0xA5
    with open(path, "wb") as file:
        file.write(bytes(data))


def _npy_token_error(path, scale):
    write_npz_raw(path, {"w.npy": ("{'descr': '<f4', 'fortran_order': False, 'shape': (3,)'''", bytes(12))})


def _npy_nested_minus(path, scale):
    depth = 9000  # the .npy v1 header holds at most 65535 bytes
    write_npz_raw(path, {"w.npy": ("{'descr': '<f4', 'fortran_order': False, 'shape': (%s1,), }"
                                   % ("- " * depth), bytes(4))})


def _npy_long_plus(path, scale):
    write_npz_raw(path, {"w.npy": ("{'descr': '<f4', 'fortran_order': False, 'shape': (%s,), }"
                                   % "+".join(["1"] * 20000), bytes(4))})


def _hash_bomb_key(path, scale):
    body = b"}" + tuple_dag(60) + b"Ns"  # {t60: None}
    write_crafted_zip(path, pickle_of(body))


def _hash_bomb_legacy_header(path, scale):
    sys_info = pickle.dumps({"little_endian": True}, protocol=2)[:-1]  # a dict on the stack
    sys_info = sys_info[:2] + sys_info[2:] + tuple_dag(60) + b"Ns."
    header = (pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2) + pickle.dumps(LEGACY_PROTOCOL_VERSION, protocol=2)
              + sys_info)
    write_legacy_raw(path, pickle_of(op_dict([])), header=header)


def _hash_bomb_numpy_dtype(path, scale):
    dtype = op_global("numpy", "dtype") + b"(" + tuple_dag(60) + b"\x89\x88tR"
    write_crafted_zip(path, pickle_of(op_dict([(op_str("dtype"), dtype)])))


def _hash_collisions(path, scale):
    """Many distinct integer keys with the same hash (i + k * (2**61 - 1)), in tuples."""
    keys = [op_tuple([op_int(7 + k * (2**61 - 1))]) for k in range(max(3000, scale // 40))]
    write_crafted_zip(path, pickle_of(b"}(" + b"".join(key + b"N" for key in keys) + b"u"))


def _repr_bomb(path, scale):
    # A tensor whose size is a list of 2**40 items: the error message must not repr it.
    tensor = (op_global("torch._utils", "_rebuild_tensor_v2") + b"(" + op_tuple([
        op_str("storage"), op_global("torch", "FloatStorage"), op_str("0"), op_str("cpu"), op_int(4)])
        + b"Q" + op_int(0) + list_dag(40) + op_tuple([op_int(1)]) + b"\x89" + b"}" + b"tR")
    write_crafted_zip(path, pickle_of(op_dict([(op_str("w"), tensor)])), {"0": bytes(16)})


def _repr_bomb_describe(path, scale):
    # No state_dict: the message describes the object, whose keys are huge.
    body = op_dict([(op_str("k" * 2_000_000), op_int(1)), (op_str("\x1b[31m\ud800"), op_int(2))])
    write_crafted_zip(path, pickle_of(body))


def _long_global_name(path, scale):
    write_crafted_zip(path, pickle_of(op_global("os" * 100_000, "system\x1b[2J") + b")R"))


def write_deflated_zip(path, entries):
    """A zip of deflated entries, each given as (name, head, chunk, repeats, tail) and
    holding head + chunk * repeats + tail; built in seconds however large it inflates."""
    local, central = b"", b""
    for name, head, chunk, repeats, tail in entries:
        flush = zlib.compressobj(9, zlib.DEFLATED, -15)
        compressed_head = flush.compress(head) + flush.flush(zlib.Z_FULL_FLUSH)
        block = zlib.compressobj(9, zlib.DEFLATED, -15)
        compressed_chunk = block.compress(chunk) + block.flush(zlib.Z_FULL_FLUSH)  # self-contained
        end = zlib.compressobj(9, zlib.DEFLATED, -15)
        compressed_tail = end.compress(tail) + end.flush(zlib.Z_FINISH)
        compressed = compressed_head + compressed_chunk * repeats + compressed_tail
        crc = zlib.crc32(head)
        for _ in range(repeats):
            crc = zlib.crc32(chunk, crc)
        crc = zlib.crc32(tail, crc)
        size = len(head) + len(chunk) * repeats + len(tail)
        encoded = name.encode()
        offset = len(local)
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(compressed),
                             size, len(encoded), 0) + encoded + compressed
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(compressed),
                               size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded
    end_record = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                             len(central), len(local), 0)
    with open(path, "wb") as file:
        file.write(local + central + end_record)


def _inflation_bomb(size):
    def build(path, scale):
        # A data.pkl inflating to ~1000x the file: a valid pickle prefix of APPENDs.
        write_deflated_zip(path, [("archive/data.pkl", b"\x80\x02]", b"Na" * 2**16,
                                   size * 1000 // 2**17, b".")])
    return build


def _opcode_flood(path, scale):
    # A legacy pickle of `scale` bytes of opcodes, stored plainly (no compression).
    body = b"](" + b"N" * max(1_200_000, scale - 16) + b"e"  # past 500 k + size / 16
    write_legacy_raw(path, pickle_of(body))


def _container_flood(path, scale):
    body = b"](" + b"}" * max(1_200_000, scale - 16) + b"e"
    write_legacy_raw(path, pickle_of(body))


def _build_sets_function_defaults(path, scale):
    # BUILD on an allowed function, with slot state {"__defaults__": (...)}.
    build = op_global("torch._utils", "_rebuild_tensor_v2") + b"N}" + op_str("__defaults__") + op_tuple(
        [b"\x88", b"N", b"N"]) + b"s\x86b0"
    write_crafted_zip(path, pickle_of(build + op_dict([])))


def _safetensors_long_shape(path, scale):
    shape = ",".join(["1"] * max(100_000, scale // 3))
    write_safetensors_raw(path, '{"w": {"dtype": "F32", "shape": [%s], "data_offsets": [0, 4]}}' % shape,
                          bytes(4))


def _storage_inflation(path, scale):
    # A 1 KB deflated storage claiming 1 GB once inflated.
    body = op_dict([(op_str("w"), op_tensor("0", 2**28, 0, (1,), (1,)))])
    write_deflated_zip(path, [("archive/data.pkl", pickle_of(body), b"", 0, b""),
                              ("archive/data/0", b"", bytes(2**16), 2**14, b"")])


def _container_flood_within_budget(path, scale):
    # As many dicts as the opcode budget allows, then storage bytes: the pickle is built.
    scale = max(scale, 100_000)
    count = 500_000 + scale // 16 - 1_000
    body = b"](" + b"}" * count + b"e"
    write_legacy_raw(path, pickle_of(body), [("0", 0, bytes(max(0, scale - count - 200)))])


def _zip_many_entries(path, scale):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for i in range(max(1000, scale // 110)):
            archive.writestr(f"archive/data/{i}", b"")


# name -> (issue class, builder(path, scale)); `scale` is the file size to aim for, in bytes,
# where the case grows with it (the tests use small files, the benchmark ~10 MB).
CRAFTED = {
    "zero_element_huge_dims_zip": ("1", _zero_element_zip),
    "zero_element_huge_dims_npz": ("1", _zero_element_npz),
    "zero_element_huge_dims_npz_in_bounds_digits": ("1", _zero_element_npz_digits),
    "zero_element_huge_dims_safetensors": ("1", _zero_element_safetensors),
    "huge_stride_half": ("2", _huge_stride("HalfStorage", 2)),
    "huge_stride_bfloat16": ("2", _huge_stride("BFloat16Storage", 2)),
    "huge_stride_negated": ("2", _huge_stride("FloatStorage", 4, NEG_METADATA)),
    "bool_negated": ("3", _bool_negated),
    "safetensors_huge_integer": ("4", _safetensors_huge_int),
    "safetensors_deep_nesting": ("5", _safetensors_deep),
    "zip64_offset": ("6", _zip64_offset),
    "zip_bad_utf8_name": ("7", _zip_bad_utf8_name),
    "zip_corrupt_deflate": ("8", _zip_corrupt_deflate),
    "npy_header_token_error": ("9", _npy_token_error),
    "npy_header_nested_minus": ("10", _npy_nested_minus),
    "npy_header_long_plus": ("10", _npy_long_plus),
    "hash_bomb_dict_key": ("hash", _hash_bomb_key),
    "hash_bomb_legacy_header": ("hash", _hash_bomb_legacy_header),
    "hash_bomb_numpy_dtype": ("hash", _hash_bomb_numpy_dtype),
    "hash_collisions": ("hash", _hash_collisions),
    "repr_bomb_size": ("repr", _repr_bomb),
    "repr_bomb_describe": ("repr", _repr_bomb_describe),
    "long_global_name": ("repr", _long_global_name),
    "inflation_bomb_65k": ("inflate", _inflation_bomb(65_000)),
    "inflation_bomb_1m": ("inflate", _inflation_bomb(1_000_000)),
    "storage_inflation": ("inflate", _storage_inflation),
    "opcode_flood": ("work", _opcode_flood),
    "container_flood": ("work", _container_flood),
    "build_sets_function_defaults": ("neighbour", _build_sets_function_defaults),
    "safetensors_long_shape": ("neighbour", _safetensors_long_shape),
    "container_flood_within_budget": ("work", _container_flood_within_budget),
    "zip_many_entries": ("work", _zip_many_entries),
}
