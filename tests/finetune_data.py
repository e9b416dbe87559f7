"""Small data sets and weights files for the fine-tuning and prediction tests.

Photos from scikit-image: classification crops (one photo per class),
segmentation crops with masks from colour rules, and weights files written
with a converter-style record from randomly initialised models.
"""

import os

import numpy as np
from PIL import Image

CLASS_PHOTOS = ("astronaut", "coffee", "immunohistochemistry")
SEGMENTATION_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
TORCH_PREPROCESSING = {"mode": "torch", "size": 64, "crop_fraction": 0.875, "resample": "bilinear"}
FULL_SIZE_PREPROCESSING = {"mode": "torch", "size": None, "crop_fraction": None, "resample": "bilinear"}


def photo(name):
    import skimage.data

    return getattr(skimage.data, name)()


def make_classification(root, train_per_class=8, val_per_class=4, seed=0):
    """`root/{train,val}/<photo>/*.jpg`: random crops of one photo per class."""
    rng = np.random.default_rng(seed)
    for name in CLASS_PHOTOS:
        image = photo(name)
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                side = int(rng.integers(80, 160))
                top = int(rng.integers(0, image.shape[0] - side))
                left = int(rng.integers(0, image.shape[1] - side))
                crop = Image.fromarray(image[top : top + side, left : left + side])
                crop.resize((96, 96)).save(os.path.join(folder, f"{i}.jpg"), quality=92)
    return root


def segmentation_rule(rgb):
    """Class ids from colour: 1 bright, 2 reddish, 0 otherwise; a 255 border."""
    rgb = rgb.astype("int32")
    grey = rgb.mean(axis=-1)
    mask = np.zeros(rgb.shape[:2], "uint8")
    mask[grey > 150] = 1
    mask[(rgb[..., 0] > rgb[..., 1] + 40) & (grey <= 150)] = 2
    mask[:2], mask[-2:], mask[:, :2], mask[:, -2:] = 255, 255, 255, 255
    return mask


def make_segmentation(root, train=12, val=4, size=80, seed=0, voc=False):
    """`root/{train,val}/{images,masks}` (or a Pascal VOC folder) of photo crops."""
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(train + val):
        image = photo(SEGMENTATION_PHOTOS[index % len(SEGMENTATION_PHOTOS)])
        top = int(rng.integers(0, image.shape[0] - size))
        left = int(rng.integers(0, image.shape[1] - size))
        crop = image[top : top + size, left : left + size]
        samples.append((f"img{index:03d}", crop, segmentation_rule(crop), "train" if index < train else "val"))
    palette = np.zeros((256, 3), "uint8")
    palette[1], palette[2], palette[255] = (128, 0, 0), (0, 128, 0), (224, 224, 192)
    for stem, crop, mask, split in samples:
        if voc:
            image_path = os.path.join(root, "JPEGImages", stem + ".jpg")
            mask_path = os.path.join(root, "SegmentationClass", stem + ".png")
        else:
            image_path = os.path.join(root, split, "images", stem + ".jpg")
            mask_path = os.path.join(root, split, "masks", stem + ".png")
        for path in (image_path, mask_path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(crop).save(image_path, quality=95)
        mask_image = Image.fromarray(mask, "L").convert("P")
        mask_image.putpalette(palette.reshape(-1).tolist())
        mask_image.save(mask_path)
    if voc:
        sets = os.path.join(root, "ImageSets", "Segmentation")
        os.makedirs(sets, exist_ok=True)
        for split in ("train", "val"):
            with open(os.path.join(sets, f"{split}.txt"), "w") as f:
                f.writelines(f"{stem}\n" for stem, _, _, s in samples if s == split)
    return root


def randomise_bn(model, seed=0):
    """Random BatchNorm statistics and affine parameters (as a converted file has)."""
    from keras import layers

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.8, 1.2, gamma.shape).astype("float32"),
                rng.normal(0, 0.1, beta.shape).astype("float32"),
                rng.normal(0, 0.1, mean.shape).astype("float32"),
                rng.uniform(0.5, 2.0, var.shape).astype("float32"),
            ])


def calibrate_bn(model, images):
    """Sets every BatchNormalization's moving statistics to those of its
    inputs on `images` (one training-mode pass with momentum 0): the
    activations of a random network then keep their spread through every
    layer, so that its outputs depend on its input."""
    from keras import layers

    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.momentum = 0.0
    model(images, training=True)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum


def photo_crops(size, count=8):
    """`count` seeded `size` x `size` crops of the class photos: uint8 RGB pixels."""
    rng = np.random.default_rng(1)
    crops = []
    for index in range(count):
        image = photo(CLASS_PHOTOS[index % len(CLASS_PHOTOS)])
        top, left = int(rng.integers(0, image.shape[0] - size)), int(rng.integers(0, image.shape[1] - size))
        crops.append(image[top : top + size, left : left + size])
    return np.stack(crops).astype("uint8")


def calibration_images(size, count=8):
    """`photo_crops`, preprocessed in "torch" mode, for `calibrate_bn`."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return ((photo_crops(size, count) / 255.0 - mean) / std).astype("float32")


def write_weights_file(path, builder, builder_kwargs, preprocessing, arch, seed=0, calibrated=False):
    """Builds `builder(**builder_kwargs)` with random weights and writes it
    with a converter-style record; returns the model. `calibrated`: moving
    statistics from photos (`calibrate_bn`) instead of random ones."""
    import keras

    import keras_lightnets as kl
    from keras_lightnets.weights.h5 import save_model_weights

    keras.utils.set_random_seed(seed)
    model = kl.MODELS[builder](**builder_kwargs)
    randomise_bn(model, seed)
    if calibrated:
        calibrate_bn(model, calibration_images(builder_kwargs["input_shape"][0] or 64))
    record = {
        "format": 1,
        "arch": arch,
        "builder": builder,
        "builder_kwargs": builder_kwargs,
        "preprocessing": preprocessing,
        "source": {"naming": "test", "checkpoint": "random", "sha256": "0" * 64},
    }
    save_model_weights(model, path, record)
    return model


def classifier_file(path, classes=5, size=64, calibrated=False):
    """A MobileNetV2 α 0.35 (PyTorch style) file with `classes` classes
    (random BatchNorm statistics, under which its output barely depends on
    its input, unless `calibrated`)."""
    kwargs = {"style": "torch", "alpha": 0.35, "classes": classes, "input_shape": [size, size, 3]}
    return write_weights_file(path, "MobileNetV2", kwargs, {**TORCH_PREPROCESSING, "size": size}, "mobilenet_v2",
                              calibrated=calibrated)


def small_classifier_file(path, classes=5, size=48):
    """A MobileNet α 0.25 (PyTorch style) file: half the layers of MobileNetV2,
    so half the tracing time of a training step, BatchNorm and Dropout kept."""
    kwargs = {"style": "torch", "alpha": 0.25, "classes": classes, "input_shape": [size, size, 3]}
    return write_weights_file(path, "MobileNet", kwargs, {**TORCH_PREPROCESSING, "size": size}, "mobilenet_v1")


def deeplab_file(path, classes=4):
    """A DeepLabV3+ (MobileNetV2 α 0.35 backbone, VainF's separable head) file
    with `classes` classes. Separable, because TensorFlow runs a dense 3x3 conv
    dilated 6-18 on the few-pixel feature maps of small test images as
    hundreds of padded blocks (space-to-batch): half of a training step."""
    kwargs = {"style": "torch", "alpha": 0.35, "classes": classes, "input_shape": [None, None, 3],
              "backbone": "mobilenetv2", "separable": True}
    return write_weights_file(path, "DeepLabV3Plus", kwargs, FULL_SIZE_PREPROCESSING, "deeplabv3plus_mobilenetv2")


def imagenet_deeplab_file(path, classes=3):
    """A DeepLabV3+ whose MobileNetV2 backbone holds torchvision's ImageNet
    weights (converted offline, as the demo's are) and whose head is new:
    the usual start of a segmentation fine-tune."""
    import keras

    import keras_lightnets as kl
    from keras_lightnets.catalog import pretrained_file
    from keras_lightnets.weights.h5 import read_layer_weights, save_model_weights

    keras.utils.set_random_seed(0)
    kwargs = {"style": "torch", "alpha": 1.0, "classes": classes, "input_shape": [None, None, 3], "backbone": "mobilenetv2"}
    model = kl.DeepLabV3Plus(**kwargs)
    imagenet = dict(read_layer_weights(pretrained_file("mobilenet_v2")))
    loaded = 0
    for layer in model.layers:
        if layer.name in imagenet and [tuple(w.shape) for w in layer.weights] == [a.shape for a in imagenet[layer.name]]:
            layer.set_weights(imagenet[layer.name])
            loaded += 1
    assert loaded > 100, loaded  # the whole backbone
    record = {
        "format": 1,
        "arch": "deeplabv3plus_mobilenetv2",
        "builder": "DeepLabV3Plus",
        "builder_kwargs": kwargs,
        "preprocessing": FULL_SIZE_PREPROCESSING,
        "source": {"naming": "test", "checkpoint": "torchvision mobilenet_v2 backbone", "sha256": "0" * 64},
    }
    save_model_weights(model, path, record)
    return model
