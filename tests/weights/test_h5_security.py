"""The one .h5 reader and the record's schema (issue 23): structure before data,
shapes before reading, nothing read that the model does not use, dtypes kept."""

import inspect
import json
import shutil

import h5py
import numpy as np
import pytest

import keras_lightnets as kl
from keras_lightnets import registry
from keras_lightnets.conversion.namings import NAMINGS
from keras_lightnets.weights import record as schema
from keras_lightnets.weights.h5 import (
    WeightsMismatchError,
    open_weights,
    read_layer_weights,
)
from keras_lightnets.weights.loading import load_weights
from tests import finetune_data as fd
from tests import hostile_files as hf

CLASSES = 3


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("h5") / "base.h5")
    fd.classifier_file(path, classes=CLASSES, size=32)
    return path


def corrupt_checksummed(group, name, data):
    """A fletcher32-checksummed dataset `name` whose stored bytes are damaged:
    reading it fails, so a load that succeeds never read it."""
    dataset = group.create_dataset(name, data=data, chunks=data.shape, fletcher32=True)
    offset = dataset.id.get_chunk_info(0).byte_offset
    group.file.flush()
    return offset


def damage(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def replace(base, out, layer, weight, data, checksum_damaged=False):
    shutil.copyfile(base, out)
    with h5py.File(out, "r+") as f:
        del f[layer][weight]
        offset = corrupt_checksummed(f[layer], weight, data) if checksum_damaged else None
        if not checksum_damaged:
            f[layer].create_dataset(weight, data=data)
    if offset is not None:
        damage(out, offset)
    return out


def weight_names(path, layer):
    with h5py.File(path, "r") as f:
        return [n.decode() for n in f[layer].attrs["weight_names"]]


# --------------------------------------------------------------------------- reading


def test_damaged_data_is_an_error_when_read(base, tmp_path):
    """What the tests below rely on: a damaged checksummed dataset cannot be read."""
    name = weight_names(base, "predictions")[0]
    out = replace(base, str(tmp_path / "damaged.h5"), "predictions", name,
                  np.zeros((56, CLASSES), "float32") + 1, checksum_damaged=True)
    with pytest.raises(WeightsMismatchError, match="corrupt HDF5 file"):
        read_layer_weights(out)


def test_shapes_are_checked_before_any_weight_is_read(base, tmp_path):
    """The first weight has another shape and a later one is damaged: the
    error is the shape's, so nothing was read before the check."""
    first_layer, first, shape = hf.first_weight(base)
    out = replace(base, str(tmp_path / "wrong.h5"), first_layer, first, np.ones((3, 3, 3, 8), "float32"))
    name = weight_names(base, "predictions")[0]
    replaced = replace(out, str(tmp_path / "wrong_and_damaged.h5"), "predictions", name,
                       np.ones((56, CLASSES), "float32"), checksum_damaged=True)
    with pytest.raises(WeightsMismatchError, match=r"layer 'Conv1' expects \(3, 3, 3, 16\), .* has \(3, 3, 3, 8\)"):
        kl.from_h5(replaced)


def test_weights_the_model_does_not_use_are_never_read(base, tmp_path):
    """By name, a file layer the model lacks is not read (here it could not be)."""
    out = str(tmp_path / "extra.h5")
    shutil.copyfile(base, out)
    with h5py.File(out, "r+") as f:
        group = f.create_group("unused_layer")
        group.attrs["weight_names"] = np.array([b"unused_layer/kernel:0"])
        offset = corrupt_checksummed(group, "unused_layer/kernel:0", np.ones((4, 4), "float32"))
        f.attrs["layer_names"] = np.array(list(f.attrs["layer_names"]) + [b"unused_layer"])
    damage(out, offset)
    with pytest.raises(WeightsMismatchError, match="corrupt HDF5 file"):
        read_layer_weights(out)  # reading everything fails...
    model = kl.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, classes=CLASSES, style="torch")
    load_weights(model, out, by_name=True)  # ...loading what the model uses does not
    np.testing.assert_array_equal(model.get_layer("Conv1").get_weights()[0], dict(read_layer_weights(base))["Conv1"][0])


def test_a_replaced_classifier_is_never_read(base, tmp_path):
    """Fine-tuning to another class count keeps every layer but the classifier,
    whose old weights are not even read."""
    from keras_lightnets.training import finetune as ft

    name = weight_names(base, "predictions")[0]
    out = replace(base, str(tmp_path / "head.h5"), "predictions", name, np.ones((56, CLASSES), "float32"),
                  checksum_damaged=True)
    model = kl.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, classes=7, style="torch", weights=None)
    assert ft.load_keeping_head(model, out, ("predictions",)) == ["predictions"]


def test_float16_and_float64_weights_load_as_stored(base, tmp_path):
    """Float weights of any width are read as they are stored (no other type is)."""
    for dtype in ("float16", "float64"):
        out = str(tmp_path / f"{dtype}.h5")
        shutil.copyfile(base, out)
        with h5py.File(out, "r+") as f:
            for layer in f.attrs["layer_names"]:
                for name in f[layer].attrs["weight_names"]:
                    data = f[layer][name][()]
                    del f[layer][name]
                    f[layer].create_dataset(name, data=data.astype(dtype))
        with open_weights(out) as weights:
            assert {info.dtype.name for _, infos in weights.layers for info in infos} == {dtype}
        model = kl.from_h5(out)
        expected = dict(read_layer_weights(base))["Conv1"][0].astype(dtype).astype("float32")
        np.testing.assert_array_equal(model.get_layer("Conv1").get_weights()[0], expected)


def test_a_hard_link_cycle_does_not_loop_and_a_user_block_is_found(base, tmp_path):
    out = str(tmp_path / "cycle.h5")
    with h5py.File(base, "r") as source, h5py.File(out, "w", userblock_size=512) as f:
        for name, value in source.attrs.items():
            f.attrs[name] = value
        for name in source:
            source.copy(source[name], f, name)
        f["Conv1"]["loop"] = f["Conv1"]  # a group inside itself
    with open_weights(out) as weights:
        assert len(weights.layers) == len(read_layer_weights(base))


# ---------------------------------------------------------------------- the schema


def test_builder_arguments_are_the_union_of_the_builders_parameters():
    """The schema's table of builder arguments can neither miss one nor invent one."""
    parameters = set()
    for name in registry.builder_modules():
        parameters |= set(inspect.signature(kl.get_builder(name)).parameters)
    assert parameters - set(schema.NEVER_IN_RECORD) == set(schema.BUILDER_ARGUMENTS)


def converter_record(spec, kwargs, naming):
    from keras_lightnets.conversion.pipeline import make_record

    return make_record(spec, kwargs, naming, __file__, parity={"reference": "x", "max_abs_diff": 1e-6,
                                                                  "top5_identical": True})


def test_records_of_every_arch_naming_and_timm_model_fit_the_schema():
    """The schema is not stricter than the records the converter writes
    (`make_record` checks its record as every reader does)."""
    from keras_lightnets.conversion.namings import timm_models

    written = 0
    for spec in registry.SPECS.values():
        for naming in spec.namings:
            if not hasattr(NAMINGS[naming], "preprocessing"):  # timm's: per model, below
                converter_record(spec, {**spec.builder_kwargs, **spec.options, "classes": 10}, NAMINGS[naming])
                written += 1
    for name in timm_models.supported_models():
        arch, kwargs = timm_models.keras_arch(name)
        spec = registry.SPECS[arch]
        for naming in spec.namings:
            if NAMINGS[naming].NAME == timm_models.naming_source(name):
                converter_record(spec, {**kwargs, "classes": 1000}, NAMINGS[naming])
                written += 1
    assert written >= 70  # 39 arch x naming records, 31 timm models


def test_an_argument_of_another_builder_is_refused_by_the_builders_signature(base, tmp_path):
    """`backbone` is a builder argument (DeepLabV3Plus's) but not MobileNetV2's."""
    record = hf.read_record(base)
    record["builder_kwargs"]["backbone"] = "resnet50"
    out = hf.write_record_attribute(base, str(tmp_path / "other.h5"), json.dumps(record))
    with pytest.raises(WeightsMismatchError, match='builder_kwargs has "backbone", which MobileNetV2 does not take'):
        kl.from_h5(out)


@pytest.mark.parametrize("text, fragment", [
    ("[" * 17 + "]" * 17, "nested 17 deep"),
    ('{"a": "' + "[" * 100 + '"}', None),  # brackets inside strings are text
    ("x" * (schema.MAX_RECORD_BYTES + 1), "more than"),
    ('{"a": 1' + "0" * 5000 + "}", "not valid JSON"),
], ids=["too-deep", "brackets-in-strings", "too-long", "5000-digit-integer"])
def test_json_is_bounded_before_it_is_parsed(text, fragment):
    if fragment is None:
        assert schema.parse_json(text) == {"a": "[" * 100}
    else:
        with pytest.raises(schema.RecordError, match=fragment):
            schema.parse_json(text)
