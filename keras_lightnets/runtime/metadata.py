"""TFLite model metadata for apps: MediaPipe Tasks' ImageClassifier and ImageSegmenter.

    from keras_lightnets.runtime.metadata import add_image_metadata, read_image_metadata

    content = add_image_metadata(tflite_bytes(model), "classifier", labels, mean=127.5, std=127.5)
    read_image_metadata(content)  # -> dict: names, normalization, labels, tensors

`add_image_metadata` writes what MediaPipe's own metadata writers
(`mediapipe.tasks.python.metadata.metadata_writers.image_classifier` /
`image_segmenter`) write: a `ModelMetadata` flatbuffer (schema
`mediapipe/tasks/metadata/metadata_schema.fbs`, identifier "M001") in a
buffer of the model named by a `TFLITE_METADATA` entry of the model's
`metadata` list, with its `min_parser_version`, and the label file
`labels.txt` (TENSOR_AXIS_LABELS of the output tensor) appended to the
flatbuffer as a zip archive (stored, not compressed), as MediaPipe's
`MetadataPopulator` appends it. Only the `flatbuffers` package is needed
(a TensorFlow dependency); no TensorFlow, MediaPipe or tflite-support.

The TFLite model itself is not re-serialised: a new root `Model` table, its
`buffers` and `metadata` vectors and the metadata buffer are written in
front of the original flatbuffer, which follows unchanged (16-byte aligned),
so every tensor, operator and weight keeps its bytes; the original root and
vectors are left unreferenced. An earlier TFLITE_METADATA entry and an
appended zip are replaced.

What MediaPipe reads (mediapipe/tasks/cc/vision/utils/image_tensor_specs.cc,
components/processors/image_preprocessing_graph.cc):
- the input tensor must be uint8 or float32, shape 1 x H x W x 3 (or 4); H
  and W are read from the flatbuffer's `shape`, not `shape_signature`;
- a float32 input needs NormalizationOptions (kNotFound otherwise); mean and
  std must have 1 or 3 values, and the 3 values must be equal ("Per-channel
  image normalization is not available", kUnimplemented): MediaPipe maps
  pixels 0..255 linearly onto [(0 - mean) / std, (255 - mean) / std];
- a uint8 input gets the pixels 0..255 as they are; NormalizationOptions are
  not read;
- ImageProperties' color space, when given, must be RGB.
So a per-channel mean/std (torchvision's ImageNet statistics) cannot be
expressed: `keras_lightnets.runtime.export` exports such models with a uint8
input and the normalisation inside the graph.

`read_image_metadata` reads untrusted files (`lightnets info`): every offset
and length is checked against the bytes, appended files are read only when
stored or deflated, small and uniquely named, and a malformed file is a
`MetadataError`.

Importing this module imports the standard library and `flatbuffers` only.
"""

import contextlib
import io
import struct
import zipfile

import flatbuffers
from flatbuffers.table import Table

from keras_lightnets.runtime import tflite_schema as schema
from keras_lightnets.runtime.tflite_schema import FlatbufferError, model_io  # noqa: F401  (part of this API)

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
SEGMENTER_METADATA_NAME = "SEGMENTER_METADATA"
SEGMENTER_IDENTIFIER = b"V001"
LABELS_FILE = "labels.txt"

TASKS = ("classifier", "segmenter")
ACTIVATIONS = {"none": 0, "sigmoid": 1, "softmax": 2}  # mediapipe.tasks Activation

# MediaPipe's metadata writers' defaults (metadata_writer.py, image_classifier.py, image_segmenter.py)
DEFAULT_NAMES = {"classifier": "ImageClassifier", "segmenter": "ImageSegmenter"}
DEFAULT_DESCRIPTIONS = {
    "classifier": "Identify the most prominent object in the image from a known set of categories.",
    "segmenter": "Semantic image segmentation predicts whether each pixel of an image is associated with a certain class.",
}
INPUT_NAME, INPUT_DESCRIPTION = "image", "Input image to be processed."
OUTPUT_NAMES = {"classifier": "score", "segmenter": "segmentation_masks"}
OUTPUT_DESCRIPTIONS = {
    "classifier": "Score of the labels respectively.",
    "segmenter": "Masks over the target objects with high accuracy.",
}
LABELS_DESCRIPTION = "Labels for categories that the model can recognize."

# metadata_schema.fbs enums
_COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}
_RGB, _GRAYSCALE = 1, 2
_CONTENT_FEATURE, _CONTENT_IMAGE = 1, 2  # ContentProperties union
_UNIT_NORMALIZATION = 1  # ProcessUnitOptions union
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType
_FILE_TYPES = {0: "UNKNOWN", 1: "DESCRIPTIONS", 2: "TENSOR_AXIS_LABELS", 3: "TENSOR_VALUE_LABELS",
               4: "TENSOR_AXIS_SCORE_CALIBRATION", 5: "VOCABULARY", 6: "SCANN_INDEX_FILE"}

_FLOAT32, _UINT8 = 0, 3  # TFLite TensorType

# metadata_schema.fbs:
_MM = dict(name=0, description=1, version=2, subgraph_metadata=3, author=4, license=5, associated_files=6,
           min_parser_version=7)
_SGM = dict(name=0, description=1, input_tensor_metadata=2, output_tensor_metadata=3, associated_files=4,
            input_process_units=5, output_process_units=6, input_tensor_groups=7, output_tensor_groups=8,
            custom_metadata=9)
_TM = dict(name=0, description=1, dimension_names=2, content=3, process_units=4, stats=5, associated_files=6)
_CONTENT = dict(content_properties_type=0, content_properties=1, range=2)
_IMAGE_PROPERTIES = dict(color_space=0, default_size=1)
_VALUE_RANGE = dict(min=0, max=1)
_PROCESS_UNIT = dict(options_type=0, options=1)
_NORMALIZATION = dict(mean=0, std=1)
_STATS = dict(max=0, min=1)
_FILE = dict(name=0, description=1, type=2, locale=3, version=4)
_CUSTOM = dict(name=0, data=1)
_SEGMENTER_OPTIONS = dict(activation=0, min_parser_version=1)  # image_segmenter_metadata_schema.fbs


FILE_LIMIT = 16 << 20  # bytes of one appended file read back


class MetadataError(FlatbufferError):
    """Metadata that cannot be written for this model (MediaPipe would refuse it), or unreadable metadata."""


# ------------------------------------------------------------------ reading


def _flatbuffer_end(content):
    """Where the flatbuffer ends: the start of an appended zip archive (associated files), else the end."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            offsets = [info.header_offset for info in archive.infolist()]
    except (zipfile.BadZipFile, ValueError, EOFError):
        return len(content)
    return min(offsets) if offsets else len(content)


def associated_files(tflite_bytes):
    """The files appended to the model as a zip archive, `{name: bytes}` ({} if none).

    Only stored or deflated members of at most `FILE_LIMIT` bytes and unique
    names are read (the file may come from anywhere); others are an error.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(tflite_bytes))) as archive:
            members = archive.infolist()
            names = [info.filename for info in members]
            for info in members:
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.file_size > FILE_LIMIT:
                    raise MetadataError(f"appended file {info.filename!r}: not a small stored or deflated file")
            if len(set(names)) != len(names):
                raise MetadataError("the appended files have duplicate names")
            return {info.filename: archive.read(info) for info in members}
    except (zipfile.BadZipFile, ValueError, EOFError) as err:
        if isinstance(err, MetadataError):
            raise
        return {}


def metadata_buffer(tflite_bytes):
    """The TFLITE_METADATA flatbuffer of the model (bytes), or None."""
    return schema.named_buffer(tflite_bytes, METADATA_NAME)


def _read_file(table):
    return {
        "name": schema.string(table, _FILE["name"]),
        "description": schema.string(table, _FILE["description"]),
        "type": _FILE_TYPES.get(schema.scalar(table, _FILE["type"], "b", 0), "UNKNOWN"),
        "locale": schema.string(table, _FILE["locale"]),
    }


def _read_tensor_metadata(table, files):
    info = {"name": schema.string(table, _TM["name"]), "description": schema.string(table, _TM["description"])}
    content = schema.subtable(table, _TM["content"])
    if content is not None:
        kind = schema.scalar(content, _CONTENT["content_properties_type"], "B", 0)
        properties = schema.subtable(content, _CONTENT["content_properties"])
        info["content"] = {_CONTENT_FEATURE: "feature", _CONTENT_IMAGE: "image"}.get(kind, f"type {kind}")
        if kind == _CONTENT_IMAGE and properties is not None:
            info["color_space"] = _COLOR_SPACES.get(schema.scalar(properties, _IMAGE_PROPERTIES["color_space"], "b", 0))
        value_range = schema.subtable(content, _CONTENT["range"])
        if value_range is not None:
            info["range"] = (schema.scalar(value_range, _VALUE_RANGE["min"], "i", 0),
                             schema.scalar(value_range, _VALUE_RANGE["max"], "i", 0))
    for unit in schema.tables(table, _TM["process_units"]):
        options = schema.subtable(unit, _PROCESS_UNIT["options"])
        if schema.scalar(unit, _PROCESS_UNIT["options_type"], "B", 0) == _UNIT_NORMALIZATION and options is not None:
            info["mean"] = schema.scalars(options, _NORMALIZATION["mean"], "f")
            info["std"] = schema.scalars(options, _NORMALIZATION["std"], "f")
    stats = schema.subtable(table, _TM["stats"])
    if stats is not None:
        info["min"] = schema.scalars(stats, _STATS["min"], "f")
        info["max"] = schema.scalars(stats, _STATS["max"], "f")
    info["associated_files"] = [_read_file(t) for t in schema.tables(table, _TM["associated_files"])]
    for file in info["associated_files"]:
        if file["type"] == "TENSOR_AXIS_LABELS" and "labels" not in info and file["name"] in files:
            info["labels"] = files[file["name"]].decode("utf-8").split("\n")
    return info


def read_image_metadata(tflite_bytes):
    """What `add_image_metadata` wrote (any TFLite metadata is read the same way).

    Returns:
        None for a model without TFLITE_METADATA; else a dict: `name`,
        `description`, `version`, `author`, `license`, `min_parser_version`,
        `task` ("classifier", "segmenter" or None), `activation` (the
        segmenter's, or None), `inputs` / `outputs` (one dict per tensor:
        the metadata's `name`, `description`, `content`, `color_space`,
        `mean`/`std` (NormalizationOptions), `min`/`max` (Stats), `labels`
        (its TENSOR_AXIS_LABELS file), `associated_files`, and the model
        tensor's `tensor` (`model_io`)), `files` (names of the appended files).
    """
    with _as_metadata_error("unreadable TFLite metadata: "):
        return _read_image_metadata(bytes(tflite_bytes))


@contextlib.contextmanager
def _as_metadata_error(prefix=""):
    """Errors of malformed flatbuffers as one `MetadataError` line."""
    try:
        yield
    except MetadataError:
        raise
    except (FlatbufferError, struct.error, IndexError, UnicodeDecodeError) as err:
        raise MetadataError(f"{prefix}{err}") from None


def _read_image_metadata(tflite_bytes):
    buffer = metadata_buffer(tflite_bytes)
    if buffer is None:
        return None
    root = schema.root_table(buffer, METADATA_IDENTIFIER, "TFLite metadata")
    files = associated_files(tflite_bytes)
    inputs, outputs = model_io(tflite_bytes)
    result = {key: schema.string(root, _MM[key]) for key in ("name", "description", "version", "author", "license",
                                                        "min_parser_version")}
    subgraphs = schema.tables(root, _MM["subgraph_metadata"])
    result.update(task=None, activation=None, inputs=[], outputs=[], files=sorted(files))
    if subgraphs:
        subgraph = subgraphs[0]
        result["inputs"] = [_read_tensor_metadata(t, files) for t in schema.tables(subgraph, _SGM["input_tensor_metadata"])]
        result["outputs"] = [_read_tensor_metadata(t, files) for t in schema.tables(subgraph, _SGM["output_tensor_metadata"])]
        for custom in schema.tables(subgraph, _SGM["custom_metadata"]):
            data = schema.byte_vector(custom, _CUSTOM["data"])
            if schema.string(custom, _CUSTOM["name"]) == SEGMENTER_METADATA_NAME and data[4:8] == SEGMENTER_IDENTIFIER:
                value = schema.scalar(Table(data, schema.u32(data, 0)), _SEGMENTER_OPTIONS["activation"], "b", 0)
                result["activation"] = {v: k for k, v in ACTIVATIONS.items()}.get(value, f"type {value}")
    for entries, tensors in ((result["inputs"], inputs), (result["outputs"], outputs)):
        for entry, tensor in zip(entries, tensors):
            entry["tensor"] = tensor
    if result["outputs"]:
        output = result["outputs"][0]
        if output.get("content") == "feature":
            result["task"] = "classifier"
        elif output.get("content") == "image" and output.get("color_space") == "GRAYSCALE":
            result["task"] = "segmenter"
    return result


# ------------------------------------------------------------------ writing the metadata flatbuffer


def _normalization_values(value, what):
    if value is None:
        return None
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) not in (1, 3):
        raise MetadataError(f"{what}: MediaPipe accepts 1 or 3 values, got {len(values)}")
    return values


def _float_vector(builder, values):
    builder.StartVector(4, len(values), 4)
    for value in reversed(values):
        builder.PrependFloat32(value)
    return builder.EndVector()


def _offset_vector(builder, offsets):
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _table(builder, fields, slots):
    """A table from `{field name: (kind, value)}`; kind "offset", "int8", "uint8" or "int32"."""
    builder.StartObject(len(fields))
    for name, (kind, value) in slots.items():
        if value is None:
            continue
        slot = fields[name]
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "int8":
            builder.PrependInt8Slot(slot, value, -1)  # default -1: always written, as the object API does
        elif kind == "uint8":
            builder.PrependUint8Slot(slot, value, 0)
        elif kind == "int32":
            builder.PrependInt32Slot(slot, value, -(2**31))
    return builder.EndObject()


def _string_or_none(builder, text):
    return None if text is None else builder.CreateString(text)


def _stats(builder, min_values, max_values):
    maxs = None if max_values is None else _float_vector(builder, max_values)
    mins = None if min_values is None else _float_vector(builder, min_values)
    return _table(builder, _STATS, {"max": ("offset", maxs), "min": ("offset", mins)})


def _label_file(builder):
    name = builder.CreateString(LABELS_FILE)
    description = builder.CreateString(LABELS_DESCRIPTION)
    return _table(builder, _FILE, {"name": ("offset", name), "description": ("offset", description),
                                   "type": ("int8", _TENSOR_AXIS_LABELS)})


def _segmenter_options(activation):
    builder = flatbuffers.Builder(0)
    table = _table(builder, _SEGMENTER_OPTIONS, {"activation": ("int8", ACTIVATIONS[activation])})
    builder.Finish(table, SEGMENTER_IDENTIFIER)
    return bytes(builder.Output())


def _metadata_flatbuffer(task, input_dtype, output_dtype, mean, std, name, description, version, author,
                         license, activation):
    builder = flatbuffers.Builder(1024)
    # input: ImageProperties RGB, NormalizationOptions, Stats (as metadata_info.InputImageTensorMd)
    image = _table(builder, _IMAGE_PROPERTIES, {"color_space": ("int8", _RGB)})
    content = _table(builder, _CONTENT, {"content_properties_type": ("uint8", _CONTENT_IMAGE),
                                          "content_properties": ("offset", image)})
    units = None
    if mean is not None:
        means, stds = _float_vector(builder, mean), _float_vector(builder, std)
        options = _table(builder, _NORMALIZATION, {"mean": ("offset", means), "std": ("offset", stds)})
        unit = _table(builder, _PROCESS_UNIT, {"options_type": ("uint8", _UNIT_NORMALIZATION),
                                               "options": ("offset", options)})
        units = _offset_vector(builder, [unit])
    if input_dtype == _UINT8:
        stats = _stats(builder, [0.0], [255.0])
    elif mean is not None:
        stats = _stats(builder, [(0.0 - m) / s for m, s in zip(mean, std)], [(255.0 - m) / s for m, s in zip(mean, std)])
    else:
        stats = _stats(builder, None, None)
    input_name, input_description = builder.CreateString(INPUT_NAME), builder.CreateString(INPUT_DESCRIPTION)
    input_metadata = _table(builder, _TM, {
        "name": ("offset", input_name), "description": ("offset", input_description),
        "content": ("offset", content), "process_units": ("offset", units), "stats": ("offset", stats),
    })
    # output: the labels file on it; classifier: FeatureProperties and the score range,
    # segmenter: GRAYSCALE ImageProperties over dimensions 1..2 (metadata_info.SegmentationMaskMd)
    files = _offset_vector(builder, [_label_file(builder)])
    if task == "classifier":
        properties = _table(builder, {}, {})
        content = _table(builder, _CONTENT, {"content_properties_type": ("uint8", _CONTENT_FEATURE),
                                              "content_properties": ("offset", properties)})
        ranges = {_FLOAT32: ([0.0], [1.0]), _UINT8: ([0.0], [255.0])}.get(output_dtype, (None, None))
        stats = _stats(builder, *ranges)
    else:
        properties = _table(builder, _IMAGE_PROPERTIES, {"color_space": ("int8", _GRAYSCALE)})
        value_range = _table(builder, _VALUE_RANGE, {"min": ("int32", 1), "max": ("int32", 2)})
        content = _table(builder, _CONTENT, {"content_properties_type": ("uint8", _CONTENT_IMAGE),
                                              "content_properties": ("offset", properties),
                                              "range": ("offset", value_range)})
        stats = _stats(builder, None, None)
    output_name = builder.CreateString(OUTPUT_NAMES[task])
    output_description = builder.CreateString(OUTPUT_DESCRIPTIONS[task])
    output_metadata = _table(builder, _TM, {
        "name": ("offset", output_name), "description": ("offset", output_description),
        "content": ("offset", content), "stats": ("offset", stats), "associated_files": ("offset", files),
    })
    custom = None
    if activation is not None:
        data = _segmenter_options(activation)
        custom_name = builder.CreateString(SEGMENTER_METADATA_NAME)
        builder.StartVector(1, len(data), 16)  # data:[ubyte] (force_align: 16)
        for byte in reversed(data):
            builder.PrependUint8(byte)
        custom_data = builder.EndVector()
        custom = _offset_vector(builder, [_table(builder, _CUSTOM, {"name": ("offset", custom_name),
                                                                    "data": ("offset", custom_data)})])
    subgraph = _table(builder, _SGM, {
        "input_tensor_metadata": ("offset", _offset_vector(builder, [input_metadata])),
        "output_tensor_metadata": ("offset", _offset_vector(builder, [output_metadata])),
        "custom_metadata": ("offset", custom),
    })
    # mediapipe/tasks/cc/metadata/metadata_version.cc: 1.0.0, raised by the newest member used;
    # of what is written here only SubGraphMetadata.custom_metadata (1.5.0) raises it
    min_parser_version = "1.5.0" if custom is not None else "1.0.0"
    strings = {key: _string_or_none(builder, text) for key, text in (
        ("name", name), ("description", description), ("version", version), ("author", author),
        ("license", license), ("min_parser_version", min_parser_version))}
    root = _table(builder, _MM, {
        **{key: ("offset", offset) for key, offset in strings.items()},
        "subgraph_metadata": ("offset", _offset_vector(builder, [subgraph])),
    })
    builder.Finish(root, METADATA_IDENTIFIER)
    return bytes(builder.Output())


def add_image_metadata(tflite_bytes, task, labels, mean=None, std=None, name=None, description=None,
                       version=None, author=None, license=None, activation=None, allow_per_channel=False,
                       allow_free_size=False):
    """Returns `tflite_bytes` with MediaPipe Tasks metadata and its label file.

    Args:
        tflite_bytes: a TFLite flatbuffer with one input, an image
            `(1 or free, H, W, 3)` uint8 or float32, and one output:
            classifier `(1, classes)`, segmenter `(1, H', W', classes)`.
        task: "classifier" or "segmenter".
        labels: the class names, one per output class (written as
            `labels.txt`, TENSOR_AXIS_LABELS of the output tensor).
        mean, std: NormalizationOptions, in 0-255 pixel units (the float
            input is `(pixel - mean) / std`): a number or 1 or 3 values.
            Required for a float32 input; for uint8 inputs optional (written,
            as MediaPipe's writer does, but MediaPipe does not read them).
        name, description: the model's; MediaPipe's writers' defaults
            ("ImageClassifier" / "ImageSegmenter" and their descriptions).
        version, author, license: written when given.
        activation: segmenter only: what MediaPipe applies to the output
            for its confidence masks: "none", "softmax" or "sigmoid" (the
            SEGMENTER_METADATA custom metadata; default: none written, which
            MediaPipe reads as "none"). The category mask is the argmax either way.
        allow_per_channel: write 3 different means/stds. MediaPipe refuses
            such a model when it is created ("Per-channel image
            normalization is not available"); other readers of the schema
            accept it. Default False: refused here.
        allow_free_size: write metadata for an input with free height or
            width. MediaPipe accepts such a model but reads the stored shape,
            1 x 1, and runs it on the image shrunk to one pixel (measured
            with mediapipe 1.2.3). Default False: refused here; export at a
            fixed size for MediaPipe.

    Raises:
        MetadataError: a model or an argument that MediaPipe would not accept.
    """
    tflite_bytes = bytes(tflite_bytes)
    if task not in TASKS:
        raise MetadataError(f"task must be one of {TASKS}, got {task!r}")
    if activation is not None and (task != "segmenter" or activation not in ACTIVATIONS):
        raise MetadataError(f"activation is for the segmenter, one of {sorted(ACTIVATIONS)}; got {activation!r}")
    with _as_metadata_error():
        inputs, outputs = model_io(tflite_bytes)
    if len(inputs) != 1 or len(outputs) != 1:
        raise MetadataError(f"one input and one output needed, the model has {len(inputs)} and {len(outputs)}")
    (image,), (output,) = inputs, outputs
    if image["dtype"] not in ("float32", "uint8"):
        raise MetadataError(f"MediaPipe takes a uint8 or float32 input, the model's is {image['dtype']}")
    if len(image["shape"]) != 4 or image["shape"][3] not in (3, 4) or image["shape"][0] not in (None, 1):
        raise MetadataError(f"MediaPipe takes a (1, H, W, 3) input, the model's is {image['shape']}")
    if None in image["shape"][1:3] and not allow_free_size:
        raise MetadataError(
            f"the input's height and width must be fixed, the model's shape is {image['shape']}: MediaPipe "
            f"reads the flatbuffer's stored shape {image['stored_shape']} and would shrink images to it"
        )
    mean, std = _normalization_values(mean, "mean"), _normalization_values(std, "std")
    if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std)):
        raise MetadataError("mean and std go together, with the same number of values")
    if image["dtype"] == "float32" and mean is None:
        raise MetadataError("a float32 input needs mean and std (MediaPipe requires NormalizationOptions); "
                            "or give the model a uint8 input with the normalization inside")
    if mean is not None:
        if any(s == 0 for s in std):
            raise MetadataError("std must not be 0")
        if not allow_per_channel and (len(set(mean)) > 1 or len(set(std)) > 1):
            raise MetadataError(
                f"per-channel mean {mean} / std {std}: MediaPipe refuses per-channel normalization; "
                "give the model a uint8 input with the normalization inside"
            )
    expected_rank = 2 if task == "classifier" else 4
    if len(output["shape"]) != expected_rank or output["shape"][0] not in (None, 1):
        raise MetadataError(f"a {task} output is {'(1, classes)' if task == 'classifier' else '(1, H, W, classes)'}, "
                            f"the model's is {output['shape']}")
    labels = [str(label) for label in labels]
    if any("\n" in label for label in labels):
        raise MetadataError("a label must not contain a line break")
    if output["shape"][-1] is not None and len(labels) != output["shape"][-1]:
        raise MetadataError(f"{len(labels)} labels for {output['shape'][-1]} classes")
    metadata = _metadata_flatbuffer(
        task, _UINT8 if image["dtype"] == "uint8" else _FLOAT32,
        {"float32": _FLOAT32, "uint8": _UINT8}.get(output["dtype"], -1), mean, std,
        DEFAULT_NAMES[task] if name is None else name,
        DEFAULT_DESCRIPTIONS[task] if description is None else description,
        version, author, license, activation,
    )
    with _as_metadata_error():
        content = schema.with_metadata_buffer(tflite_bytes[: _flatbuffer_end(tflite_bytes)], METADATA_NAME, metadata)
    archive = io.BytesIO()
    archive.write(content)
    # appended as MediaPipe's MetadataPopulator does (zipfile, mode "a", stored), with a fixed
    # date so that the same model and labels give the same bytes
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_STORED) as files:
        info = zipfile.ZipInfo(LABELS_FILE, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        files.writestr(info, "\n".join(labels))
    return archive.getvalue()
