import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def photo(name="chelsea", size=224):
    """A real photo from scikit-image's sample data, resized, float32 0-255."""
    from PIL import Image
    import skimage.data

    img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), dtype="float32")
