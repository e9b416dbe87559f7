"""TFLite metadata for MediaPipe (runtime/metadata.py, runtime/tflite_schema.py): written as
MediaPipe's own writers write it, read back, the model's bytes untouched, untrusted files refused."""

import io
import json
import struct
import sys
import types
import zipfile

import keras
import numpy as np
import pytest

from keras_lightnets.layers.resize import BilinearResize
from keras_lightnets.runtime import metadata as md
from keras_lightnets.runtime.tflite import Runner, tflite_bytes
from tests.helpers import small_classifier

LABELS = ["tench", "goldfish", "shark", "hen", "ostrich"]


def small_segmenter(shape=(48, 64, 3), classes=4, seed=0):
    """(1, H, W, classes) logits at the input's size (a stride-2 conv, then BilinearResize)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(classes, 1)(x)
    return keras.Model(inputs, BilinearResize(name="logits_resize")([x, inputs]), name="small_segmenter")


@pytest.fixture(scope="module")
def classifier_bytes():
    return tflite_bytes(small_classifier())


@pytest.fixture(scope="module")
def segmenter_bytes():
    return tflite_bytes(small_segmenter())


def _schema_model(content):
    from tensorflow.lite.python import schema_py_generated as schema

    return schema.Model.GetRootAs(content, 0)


def _buffer_data_offsets(content):
    """Absolute offsets of every TFLite Buffer's data (TensorFlow's own schema reader)."""
    model = _schema_model(content)
    buffers = (model.Buffers(i) for i in range(model.BuffersLength()))
    return [b._tab.Vector(b._tab.Offset(4)) for b in buffers if b.DataLength()]


def test_classifier_round_trip(classifier_bytes):
    content = md.add_image_metadata(classifier_bytes, "classifier", LABELS, mean=127.5, std=127.5,
                                    name="tiny", description="a test", version="7", author="me", license="MIT")
    info = md.read_image_metadata(content)
    assert (info["name"], info["description"], info["version"], info["author"], info["license"]) == (
        "tiny", "a test", "7", "me", "MIT")
    assert info["task"] == "classifier" and info["min_parser_version"] == "1.0.0" and info["activation"] is None
    (image,), (score,) = info["inputs"], info["outputs"]
    assert image["name"] == "image" and image["content"] == "image" and image["color_space"] == "RGB"
    assert (image["mean"], image["std"], image["min"], image["max"]) == ([127.5], [127.5], [-1.0], [1.0])
    assert image["tensor"]["dtype"] == "float32" and image["tensor"]["shape"] == (None, 32, 32, 3)
    assert score["name"] == "score" and score["content"] == "feature" and score["labels"] == LABELS
    assert (score["min"], score["max"]) == ([0.0], [1.0])
    assert score["associated_files"] == [{"name": "labels.txt", "description": md.LABELS_DESCRIPTION,
                                          "type": "TENSOR_AXIS_LABELS", "locale": None}]
    assert md.associated_files(content) == {"labels.txt": "\n".join(LABELS).encode()}


def test_model_bytes_unchanged_and_aligned(classifier_bytes):
    content = md.add_image_metadata(classifier_bytes, "classifier", LABELS, mean=127.5, std=127.5)
    end = min(i.header_offset for i in zipfile.ZipFile(io.BytesIO(content)).infolist())
    start = end - len(classifier_bytes)  # the original follows the new front part unchanged
    assert start % 16 == 0 and content[start:end] == classifier_bytes
    # every buffer keeps its alignment; the metadata buffer is 16-byte aligned (Buffer.data: force_align 16)
    before, after = _buffer_data_offsets(classifier_bytes), _buffer_data_offsets(content[:end])
    assert [o % 16 for o in after] == [o % 16 for o in before] + [0]
    model = _schema_model(content[:end])
    names = [model.Metadata(i).Name() for i in range(model.MetadataLength())]
    assert names == [b"min_runtime_version", b"CONVERSION_METADATA", b"TFLITE_METADATA"]
    batch = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(Runner(content)(batch), Runner(classifier_bytes)(batch))


def test_tensorflow_unpacks_the_rewritten_model(classifier_bytes):
    from tensorflow.lite.python import schema_py_generated as schema

    content = md.add_image_metadata(classifier_bytes, "classifier", LABELS, mean=127.5, std=127.5)
    before, after = (schema.ModelT.InitFromObj(_schema_model(c)) for c in (classifier_bytes, content))
    assert after.version == before.version and len(after.subgraphs) == len(before.subgraphs)
    assert len(after.buffers) == len(before.buffers) + 1
    for old, new in zip(before.buffers, after.buffers):
        assert (old.data is None and new.data is None) or np.array_equal(old.data, new.data)
    entry = after.metadata[-1]
    assert entry.name == b"TFLITE_METADATA" and entry.buffer == len(before.buffers)
    assert bytes(after.buffers[entry.buffer].data) == md.metadata_buffer(content)


def test_segmenter_metadata(segmenter_bytes):
    labels = ["background", "a", "b", "c"]
    info = md.read_image_metadata(md.add_image_metadata(segmenter_bytes, "segmenter", labels, 0.0, 255.0,
                                                        activation="softmax"))
    assert info["task"] == "segmenter" and info["name"] == "ImageSegmenter" and info["activation"] == "softmax"
    assert info["min_parser_version"] == "1.5.0"  # SubGraphMetadata.custom_metadata is a 1.5.0 member
    (masks,) = info["outputs"]
    assert masks["name"] == "segmentation_masks" and masks["color_space"] == "GRAYSCALE"
    assert masks["range"] == (1, 2) and masks["labels"] == labels
    plain = md.read_image_metadata(md.add_image_metadata(segmenter_bytes, "segmenter", labels, 0.0, 255.0))
    assert plain["activation"] is None and plain["min_parser_version"] == "1.0.0"


def test_uint8_input_needs_no_normalization():
    model = small_classifier()
    pixels = keras.Input((32, 32, 3), dtype="uint8")
    wrapped = keras.Model(pixels, model(keras.layers.Rescaling(1 / 255)(pixels)))
    (image,) = md.read_image_metadata(md.add_image_metadata(tflite_bytes(wrapped), "classifier", LABELS))["inputs"]
    assert image["tensor"]["dtype"] == "uint8" and "mean" not in image
    assert (image["min"], image["max"]) == ([0.0], [255.0])


def test_rewriting_replaces_metadata_and_labels(classifier_bytes):
    first = md.add_image_metadata(classifier_bytes, "classifier", LABELS, mean=127.5, std=127.5)
    upper = [s.upper() for s in LABELS]
    second = md.add_image_metadata(first, "classifier", upper, mean=0.0, std=255.0)
    info = md.read_image_metadata(second)
    assert info["outputs"][0]["labels"] == upper and info["inputs"][0]["mean"] == [0.0]
    assert md.associated_files(second) == {"labels.txt": "\n".join(upper).encode()}
    model = _schema_model(second)
    assert [model.Metadata(i).Name() for i in range(model.MetadataLength())].count(b"TFLITE_METADATA") == 1
    assert md.add_image_metadata(classifier_bytes, "classifier", LABELS, mean=127.5, std=127.5) == first
    assert md.read_image_metadata(classifier_bytes) is None and md.associated_files(classifier_bytes) == {}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "needs mean and std"),
        ({"mean": [123.7, 116.3, 103.5], "std": [58.4, 57.1, 57.4]}, "per-channel"),
        ({"mean": [1.0, 2.0], "std": [1.0, 2.0]}, "1 or 3 values"),
        ({"mean": 1.0}, "go together"),
        ({"mean": 1.0, "std": 0.0}, "std must not be 0"),
        ({"mean": 127.5, "std": 127.5, "labels": ["a"]}, "1 labels for 5 classes"),
        ({"mean": 127.5, "std": 127.5, "task": "detector"}, "task must be"),
        ({"mean": 127.5, "std": 127.5, "activation": "softmax"}, "activation is for the segmenter"),
        ({"mean": 127.5, "std": 127.5, "task": "segmenter"}, "segmenter output"),
        ({"mean": 127.5, "std": 127.5, "labels": ["a\nb", "c", "d", "e", "f"]}, "line break"),
    ],
)
def test_refusals(classifier_bytes, kwargs, message):
    with pytest.raises(md.MetadataError, match=message):
        md.add_image_metadata(classifier_bytes, **{"task": "classifier", "labels": LABELS, **kwargs})


def test_free_size_refused_unless_asked():
    content = tflite_bytes(small_segmenter(shape=(None, None, 3)), input_shape=(None, None, 3))
    with pytest.raises(md.MetadataError, match=r"stored shape \(1, 1, 1, 3\)"):
        md.add_image_metadata(content, "segmenter", list("abcd"), 127.5, 127.5)
    written = md.add_image_metadata(content, "segmenter", list("abcd"), 127.5, 127.5, allow_free_size=True)
    assert md.read_image_metadata(written)["inputs"][0]["tensor"]["shape"] == (None, None, None, 3)


def test_not_a_tflite_file_and_newer_model_fields():
    import flatbuffers

    with pytest.raises(md.MetadataError, match="TFL3"):
        md.add_image_metadata(b"PK\x03\x04" + bytes(100), "classifier", LABELS, 127.5, 127.5)
    builder = flatbuffers.Builder(0)  # a Model table with a field this writer does not know
    builder.StartObject(9)
    builder.PrependUint32Slot(8, 1, 0)
    builder.Finish(builder.EndObject(), b"TFL3")
    with pytest.raises(md.FlatbufferError, match="newer than this writer"):
        md.schema.with_metadata_buffer(bytes(builder.Output()), md.METADATA_NAME, b"x")


# ---------------------------------------------------------------- untrusted files (`lightnets info`)


def _vector_length_position(content, buffer):
    """Where the length of the metadata flatbuffer's subgraph_metadata vector is, in `content`."""
    root = md.schema.root_table(buffer, md.METADATA_IDENTIFIER, "metadata")
    off = md.schema.slot(root, md._MM["subgraph_metadata"])
    return content.index(buffer) + root.Pos + off + struct.unpack_from("<I", buffer, root.Pos + off)[0]


def test_malformed_metadata_is_one_error(classifier_bytes):
    content = md.add_image_metadata(classifier_bytes, "classifier", LABELS, mean=127.5, std=127.5)
    position = _vector_length_position(content, md.metadata_buffer(content))
    huge = bytearray(content)
    struct.pack_into("<I", huge, position, 0x7FFFFFFF)  # a vector of 2**31 tables: refused, not looped over
    with pytest.raises(md.MetadataError, match="outside the"):
        md.read_image_metadata(bytes(huge))
    start = content.index(md.metadata_buffer(content))
    lost = content[:start] + struct.pack("<I", 0x7FFFFFF0) + content[start + 4 :]  # a root table far outside
    with pytest.raises(md.MetadataError, match="unreadable TFLite metadata"):
        md.read_image_metadata(lost)


def test_appended_files_read_only_when_small_and_plain(classifier_bytes):
    content = md.add_image_metadata(classifier_bytes, "classifier", LABELS, mean=127.5, std=127.5)
    flatbuffer = content[: min(i.header_offset for i in zipfile.ZipFile(io.BytesIO(content)).infolist())]
    for compression, size in ((zipfile.ZIP_LZMA, 10), (zipfile.ZIP_DEFLATED, md.FILE_LIMIT + 1)):
        archive = io.BytesIO()
        archive.write(flatbuffer)
        with zipfile.ZipFile(archive, "a", compression=compression) as files:
            files.writestr("labels.txt", b"a" * size)
        with pytest.raises(md.MetadataError, match="labels.txt"):
            md.read_image_metadata(archive.getvalue())


# ---------------------------------------------------------------- the same bytes as MediaPipe's writers


def _mediapipe_writers(monkeypatch):
    """MediaPipe's metadata writers. mediapipe 1.2.3's wheel imports a module it does not ship
    (mediapipe.tasks.cc.metadata.python._pywrap_metadata_version, the C++ min_parser_version);
    it is stubbed here, and min_parser_version is then not compared."""
    try:
        from mediapipe.tasks.cc.metadata.python import _pywrap_metadata_version  # noqa: F401

        stubbed = False
    except ImportError:
        stubbed = True
        stub = types.ModuleType("_pywrap_metadata_version")
        stub.GetMinimumMetadataParserVersion = lambda buffer: "stubbed"
        for name in ("mediapipe.tasks.cc", "mediapipe.tasks.cc.metadata", "mediapipe.tasks.cc.metadata.python"):
            if name not in sys.modules:
                monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        monkeypatch.setitem(sys.modules, "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version", stub)
        monkeypatch.setattr(sys.modules["mediapipe.tasks.cc.metadata.python"], "_pywrap_metadata_version", stub,
                            raising=False)
    from mediapipe.tasks.python.metadata import metadata as mp_metadata
    from mediapipe.tasks.python.metadata.metadata_writers import (
        image_classifier,
        image_segmenter,
        metadata_writer,
    )

    return stubbed, mp_metadata, image_classifier, image_segmenter, metadata_writer


def test_same_metadata_as_mediapipe_writers(monkeypatch, classifier_bytes, segmenter_bytes):
    stubbed, mp_metadata, image_classifier, image_segmenter, metadata_writer = _mediapipe_writers(monkeypatch)

    def as_json(content, convert=mp_metadata.convert_to_json):
        found = json.loads(convert(mp_metadata.get_metadata_buffer(bytes(content))))
        if stubbed:
            found.pop("min_parser_version")
        return found

    theirs, _ = image_classifier.MetadataWriter.create(
        bytearray(classifier_bytes), [127.5], [127.5], metadata_writer.Labels().add(LABELS)).populate()
    ours = md.add_image_metadata(classifier_bytes, "classifier", LABELS, 127.5, 127.5)
    assert as_json(ours) == as_json(theirs)
    read = md.read_image_metadata(bytes(theirs))  # and our reader reads MediaPipe's own files
    assert read["task"] == "classifier" and read["outputs"][0]["labels"] == LABELS and read["inputs"][0]["mean"] == [127.5]
    displayer = mp_metadata.MetadataDisplayer.with_model_buffer
    assert displayer(ours).get_associated_file_buffer("labels.txt") == \
        displayer(bytes(theirs)).get_associated_file_buffer("labels.txt")

    labels = ["background", "sky", "road", "car"]
    theirs, _ = image_segmenter.MetadataWriter.create(
        bytearray(segmenter_bytes), [0.0], [255.0], metadata_writer.Labels().add(labels),
        activation=image_segmenter.Activation.SOFTMAX).populate()
    ours = md.add_image_metadata(segmenter_bytes, "segmenter", labels, 0.0, 255.0, activation="softmax")
    assert as_json(ours, image_segmenter.convert_to_json) == as_json(theirs, image_segmenter.convert_to_json)
    assert '"activation": "SOFTMAX"' in image_segmenter.convert_to_json(mp_metadata.get_metadata_buffer(ours))
