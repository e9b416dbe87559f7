"""Keras' private API, used in one module: present on this Keras, and a clear error when it is not."""

import keras
import pytest

from keras_lightnets import keras_internals


def test_this_keras_has_every_private_attribute_the_package_uses():
    keras_internals.check()


def test_a_keras_without_one_gets_a_clear_error(monkeypatch):
    monkeypatch.delattr(keras.layers.BatchNormalization, "_moments")
    with pytest.raises(keras_internals.KerasInternalsChanged, match=r"lacks BatchNormalization\._moments.*pip install"):
        keras_internals.check()


def test_the_install_requirement_bounds_keras_to_the_tested_releases():
    import configparser
    import os

    from tests.helpers import REPO

    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    requirement = [line for line in config["options"]["install_requires"].split() if line.startswith("keras")]
    assert requirement == [f"keras>={keras_internals.TESTED_KERAS[0]},<3.16"]
    assert keras.__version__.rpartition(".")[0] in keras_internals.TESTED_KERAS
