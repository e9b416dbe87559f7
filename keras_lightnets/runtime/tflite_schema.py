"""TFLite flatbuffers read and extended by their schema's field ids, with `flatbuffers` only.

Reading: checked accessors over `flatbuffers.table.Table` (a vector whose
length does not fit in the bytes, an offset outside them, is a
`FlatbufferError`, never a huge loop), `model_io` (the tensors a model
takes and gives) and `named_buffer` (a metadata buffer). Writing:
`with_metadata_buffer` gives a model a new named metadata buffer without
re-serialising it (see there). Field ids are the declaration order in
tensorflow/compiler/mlir/lite/schema/schema.fbs.

Importing this module imports the standard library and `flatbuffers` only.
"""

import struct

from flatbuffers.table import Table

from keras_lightnets.errors import LightnetsError

TFLITE_IDENTIFIER = b"TFL3"
MODEL_FIELDS = 8  # version, operator_codes, subgraphs, description, buffers, metadata_buffer, metadata, signature_defs
M_VERSION, M_SUBGRAPHS, M_BUFFERS, M_METADATA = 0, 2, 4, 6
SG_TENSORS, SG_INPUTS, SG_OUTPUTS, SG_OPERATORS = 0, 1, 2, 3
T_SHAPE, T_TYPE, T_NAME, T_SHAPE_SIGNATURE = 0, 1, 3, 7
B_DATA, B_OFFSET = 0, 1
META_NAME, META_BUFFER = 0, 1
OP_LARGE_CUSTOM_OPTIONS_OFFSET = 9
TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
                7: "int16", 9: "int8", 10: "float64"}


class FlatbufferError(LightnetsError, ValueError):
    """Bytes that are not the flatbuffer they should be, or one this module cannot extend; one line."""


# ------------------------------------------------------------------ checked reading


def u32(buf, position):
    if not 0 <= position <= len(buf) - 4:
        raise FlatbufferError(f"offset {position} outside the {len(buf)} bytes")
    return struct.unpack_from("<I", buf, position)[0]


def slot(table, field):
    """The field's offset inside `table` (0: absent)."""
    return table.Offset(4 + 2 * field)


def scalar(table, field, fmt, default):
    off = slot(table, field)
    if not off:
        return default
    position = table.Pos + off
    if position + struct.calcsize("<" + fmt) > len(table.Bytes):
        raise FlatbufferError(f"a field at {position} outside the {len(table.Bytes)} bytes")
    return struct.unpack_from("<" + fmt, table.Bytes, position)[0]


def _vector(table, field, item_size):
    """`(start, length)` of a vector field, checked to lie inside the bytes; None if absent."""
    off = slot(table, field)
    if not off:
        return None
    length = u32(table.Bytes, table.Pos + off + u32(table.Bytes, table.Pos + off))
    start = table.Vector(off)
    if start + length * item_size > len(table.Bytes):
        raise FlatbufferError(f"a vector of {length} items at {start} outside the {len(table.Bytes)} bytes")
    return start, length


def string(table, field):
    span = _vector(table, field, 1)
    if span is None:
        return None
    start, length = span
    try:
        return bytes(table.Bytes[start : start + length]).decode("utf-8")
    except UnicodeDecodeError:
        raise FlatbufferError(f"a string at {start} is not UTF-8") from None


def subtable(table, field):
    off = slot(table, field)
    return Table(table.Bytes, table.Pos + off + u32(table.Bytes, table.Pos + off)) if off else None


def tables(table, field):
    span = _vector(table, field, 4)
    if span is None:
        return []
    start, length = span
    return [Table(table.Bytes, start + 4 * i + u32(table.Bytes, start + 4 * i)) for i in range(length)]


def scalars(table, field, fmt):
    span = _vector(table, field, struct.calcsize("<" + fmt))
    if span is None:
        return None
    start, length = span
    return list(struct.unpack_from(f"<{length}{fmt}", table.Bytes, start))


def byte_vector(table, field):
    span = _vector(table, field, 1)
    if span is None:
        return b""
    start, length = span
    return bytes(table.Bytes[start : start + length])


def root_table(buf, identifier, what):
    if len(buf) < 8 or bytes(buf[4:8]) != identifier:
        raise FlatbufferError(f"not a {what} flatbuffer (no {identifier.decode()} identifier)")
    return Table(buf, u32(buf, 0))


def _tensor_info(tensor):
    shape = scalars(tensor, T_SHAPE, "i") or []
    signature = scalars(tensor, T_SHAPE_SIGNATURE, "i") or shape
    dtype = scalar(tensor, T_TYPE, "b", 0)
    return {
        "name": string(tensor, T_NAME),
        "dtype": TENSOR_TYPES.get(dtype, f"type {dtype}"),
        "shape": tuple(None if side < 0 else side for side in signature),
        "stored_shape": tuple(shape),  # what MediaPipe reads: a free side is 1 here
    }


def model_io(tflite_bytes):
    """`(inputs, outputs)` of the model's first subgraph: lists of dicts
    name, dtype ("float32", "uint8", ...), shape (None for free sides) and
    stored_shape (the flatbuffer's `shape`, which MediaPipe reads)."""
    model = root_table(tflite_bytes, TFLITE_IDENTIFIER, "TFLite")
    subgraphs = tables(model, M_SUBGRAPHS)
    if not subgraphs:
        raise FlatbufferError("the TFLite model has no subgraph")
    tensors = tables(subgraphs[0], SG_TENSORS)

    def infos(field):
        indices = scalars(subgraphs[0], field, "i") or []
        if any(not 0 <= i < len(tensors) for i in indices):
            raise FlatbufferError("a subgraph input or output names no tensor")
        return [_tensor_info(tensors[i]) for i in indices]

    return infos(SG_INPUTS), infos(SG_OUTPUTS)


def named_buffer(tflite_bytes, name):
    """The data of the model's metadata buffer `name` (bytes), or None."""
    model = root_table(tflite_bytes, TFLITE_IDENTIFIER, "TFLite")
    buffers = tables(model, M_BUFFERS)
    for entry in tables(model, M_METADATA):
        if string(entry, META_NAME) == name:
            index = scalar(entry, META_BUFFER, "I", 0)
            data = byte_vector(buffers[index], B_DATA) if index < len(buffers) else b""
            if data:
                return data
    return None


# ------------------------------------------------------------------ a new metadata buffer


class _Writer:
    """Forward writer of the new front part; `refs` are uoffsets to fill once positions are known."""

    def __init__(self):
        self.data = bytearray()
        self.refs = []  # (position of the uoffset, target key)

    def align(self, n):
        self.data.extend(b"\0" * (-len(self.data) % n))

    def put(self, fmt, *values):
        position = len(self.data)
        self.data.extend(struct.pack("<" + fmt, *values))
        return position

    def ref(self, target):
        self.refs.append((self.put("I", 0), target))

    def table(self, fields):
        """A table whose fields are all 4 bytes: `fields` is a list over field ids of
        None (absent), ("u32", value) or ("ref", target)."""
        present = [i for i, field in enumerate(fields) if field is not None]
        last = present[-1] + 1 if present else 0
        self.align(2)
        vtable = self.put(f"{2 + last}H", 4 + 2 * last, 4 + 4 * len(present),
                          *[4 + 4 * present.index(i) if fields[i] is not None else 0 for i in range(last)])
        self.align(4)
        table = self.put("i", 0)
        struct.pack_into("<i", self.data, table, table - vtable)
        for i in present:
            kind, value = fields[i]
            if kind == "u32":
                self.put("I", value)
            else:
                self.ref(value)
        return table


def with_metadata_buffer(model_bytes, name, data):
    """The TFLite flatbuffer `model_bytes` with `data` as its metadata buffer `name`.

    The model is not re-serialised (as MediaPipe's populator does, through
    the object API): a new root `Model` table, new `buffers` and `metadata`
    vectors and the new buffer are written in front of the original
    flatbuffer, which follows byte for byte, shifted by a multiple of 16, so
    every tensor, operator and weight keeps its bytes and alignment; the
    original root and vectors are left unreferenced. An earlier entry
    `name` is replaced. Refused: a Model table with fields newer than this
    module knows, and >2 GB models with data outside the flatbuffer.
    """
    model = root_table(model_bytes, TFLITE_IDENTIFIER, "TFLite")
    vtable = model.Pos - struct.unpack_from("<i", model_bytes, model.Pos)[0]
    fields = (struct.unpack_from("<H", model_bytes, vtable)[0] - 4) // 2
    if any(slot(model, i) for i in range(MODEL_FIELDS, fields)):
        raise FlatbufferError("the TFLite Model table has fields newer than this writer knows")
    buffers = tables(model, M_BUFFERS)
    if any(scalar(buffer, B_OFFSET, "Q", 0) > 1 for buffer in buffers) or any(
        scalar(op, OP_LARGE_CUSTOM_OPTIONS_OFFSET, "Q", 0) > 1
        for subgraph in tables(model, M_SUBGRAPHS) for op in tables(subgraph, SG_OPERATORS)
    ):
        raise FlatbufferError("the model keeps data outside its flatbuffer (a >2 GB model); not supported")
    entries = tables(model, M_METADATA)
    old_index = next((scalar(e, META_BUFFER, "I", 0) for e in entries if string(e, META_NAME) == name), None)
    new_index = len(buffers) if old_index is None else old_index

    out = _Writer()
    out.put("I", 0)  # root offset, set below
    out.data.extend(TFLITE_IDENTIFIER)
    root_fields = []
    for field in range(MODEL_FIELDS):
        off = slot(model, field)
        if field == M_BUFFERS:
            root_fields.append(("ref", "buffers"))
        elif field == M_METADATA:
            root_fields.append(("ref", "metadata"))
        elif not off:
            root_fields.append(None)
        elif field == M_VERSION:
            root_fields.append(("u32", u32(model_bytes, model.Pos + off)))
        else:  # an offset field (vector, string) of the original: same target, shifted
            root_fields.append(("ref", ("old", model.Pos + off + u32(model_bytes, model.Pos + off))))
    root = out.table(root_fields)
    struct.pack_into("<I", out.data, 0, root)

    positions = {}
    count = max(len(buffers), new_index + 1)
    out.align(4)
    positions["buffers"] = out.put("I", count)
    for i in range(count):
        out.ref("new buffer" if i == new_index else ("old", buffers[i].Pos))
    kept = [e for e in entries if string(e, META_NAME) != name]
    positions["metadata"] = out.put("I", len(kept) + 1)
    for entry in kept:
        out.ref(("old", entry.Pos))
    out.ref("new entry")
    positions["new entry"] = out.table([("ref", "name"), ("u32", new_index)])
    out.align(4)
    positions["name"] = out.put(f"I{len(name) + 1}s", len(name), name.encode())
    positions["new buffer"] = out.table([("ref", "data")])
    out.align(16)  # Buffer.data is (force_align: 16)
    out.put("12x")
    positions["data"] = out.put("I", len(data))
    out.data.extend(data)
    out.align(16)
    shift = len(out.data)  # the original flatbuffer follows, 16-byte aligned: its own alignment holds
    for position, target in out.refs:
        absolute = shift + target[1] if isinstance(target, tuple) else positions[target]
        struct.pack_into("<I", out.data, position, absolute - position)
    return bytes(out.data) + model_bytes
