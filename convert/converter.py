"""checkpoint → reader → naming map → layouts → .h5: the conversion pipeline."""

import dataclasses
import importlib
import os
import time

import numpy as np

from convert import h5, layouts
from convert.archs import ARCHS
from convert.reader import read_checkpoint
from convert.sources import NAMINGS
from keras_lightnets.weights import sha256_of

MAX_LISTED = 8
PARITY_ATOL = 1e-4  # GUIDE.md section 6: classification, float32 CPU


class ConversionError(ValueError):
    """The checkpoint cannot become the requested Keras weights; one-line message."""


@dataclasses.dataclass
class Report:
    checkpoint: str
    output: str | None
    arch: str
    file_format: str
    wrapper: str | None
    prefix: str | None
    naming: str
    builder_kwargs: dict
    tensors_mapped: int
    parameters: int
    unused: list
    unset: list
    parity: dict | None
    parity_note: str
    seconds: float

    def __str__(self):
        def listing(items):
            shown = ", ".join(items[:MAX_LISTED])
            return f"{len(items)} ({shown}{', ...' if len(items) > MAX_LISTED else ''})" if items else "none"

        kwargs = ", ".join(f"{k}={v!r}" for k, v in self.builder_kwargs.items())
        wrapper = f", unwrapped {{'{self.wrapper}'}}" if self.wrapper else ""
        prefix = f", prefix '{self.prefix}' stripped" if self.prefix else ""
        if self.parity:
            p = self.parity
            parity = (
                f"max |Δlogit| {p['max_abs_diff']:.2e} vs {p['reference']} on {p['images']} images, "
                f"top-5 {'identical' if p['top5_identical'] else 'DIFFERENT'}"
            )
        else:
            parity = self.parity_note
        return "\n".join(
            [
                f"checkpoint      {self.checkpoint} ({self.file_format}{wrapper}{prefix})",
                f"naming          {self.naming}",
                f"arch            {self.arch}: {kwargs}",
                f"tensors mapped  {self.tensors_mapped} into {self.parameters:,} Keras parameters",
                f"unused tensors  {listing(self.unused)}",
                f"unset weights   {listing(self.unset)}",
                f"parity          {parity}",
                f"written         {self.output or 'nothing'}"
                + (f" in {self.seconds:.1f} s" if self.output else ""),
            ]
        )


def _resolve_naming(arch_name, arch, keys, naming):
    if naming is not None:
        if naming not in arch.namings:
            raise ConversionError(
                f"--source {naming!r} does not apply to {arch_name}; choose from {', '.join(arch.namings)}"
            )
        return NAMINGS[naming]
    for name in arch.namings:
        if NAMINGS[name].detect(keys):
            return NAMINGS[name]
    sample = ", ".join(sorted(keys)[:4])
    raise ConversionError(
        f"the checkpoint's keys ({sample}, ...) match no {arch_name} naming "
        f"({', '.join(arch.namings)}); is --arch right?"
    )


def build_model(builder, kwargs, allocate=True):
    """Builds the Keras model; `allocate=False` gives it shapes but no values.

    Without a parity check the converter only needs each layer's class and
    weight shapes, so the variables are left uninitialised (Keras' deferred
    initialisation) instead of costing the checkpoint's size again.
    """
    import keras

    import keras_lightnets

    if allocate:
        return getattr(keras_lightnets, builder)(weights=None, classifier_activation=None, **kwargs)
    with keras.StatelessScope(initialize_variables=False):
        return getattr(keras_lightnets, builder)(weights=None, classifier_activation=None, **kwargs)


def _map_weights(model, tensors, rows, release=False):
    """Returns `({layer name: [(weight name, array)]}, used keys)`.

    `release=True` deletes each checkpoint tensor from `tensors` once its
    Keras copy exists, so that a conversion holds one copy of the weights.
    """
    mapped, used = {}, set()
    for prefix, layer_name in rows:
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            raise ConversionError(f"internal naming table names no Keras layer {layer_name!r}") from None
        fetched = []

        def fetch(name, prefix=prefix, layer_name=layer_name, fetched=fetched):
            key = f"{prefix}.{name}"
            if key not in tensors:
                raise ConversionError(
                    f"the checkpoint has no tensor '{key}' (for Keras layer '{layer_name}'): "
                    "wrong --arch or --source?"
                )
            fetched.append(key)
            return tensors[key]

        try:
            arrays = layouts.keras_arrays(layer, fetch)
        except layouts.LayoutError as err:
            raise ConversionError(f"'{prefix}' → Keras layer '{layer_name}': {err}") from None
        variables = list(layer.trainable_weights) + list(layer.non_trainable_weights)
        for variable, array in zip(variables, arrays):
            if tuple(variable.shape) != array.shape:
                raise ConversionError(
                    f"checkpoint '{prefix}' ({', '.join(fetched)}) does not fit Keras layer "
                    f"'{layer_name}': {variable.name} expects {tuple(variable.shape)}, "
                    f"the checkpoint gives {array.shape}"
                )
        mapped[layer_name] = [(f"{layer_name}/{v.name}:0", a) for v, a in zip(variables, arrays)]
        used.update(fetched)
        if release:
            for key in fetched:
                if not any(tensors[key] is array for array in arrays):
                    del tensors[key]
    return mapped, used


def _unused_keys(keys, used, alias_groups):
    covered = set(used)
    for group in alias_groups:
        if covered.intersection(group):
            covered.update(group)
    return sorted(k for k in keys if k not in covered)


def _reference_parity(arch, tensors, model, num_images=2, seed=0):
    """Compares the Keras model with the arch's PyTorch reference, if installed."""
    module_name, model_name = arch.reference.split(":")
    try:
        torch = importlib.import_module("torch")
        reference_module = importlib.import_module(module_name)
    except ImportError:
        return None, f"not run: needs torch and {module_name} (pip install torch {module_name})"
    size = model.input_shape[1] or 224
    reference = reference_module.EfficientNet.from_name(
        model_name, num_classes=model.output_shape[-1]
    )
    state = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
    result = reference.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        return None, f"not run: {arch.reference} does not take this state_dict"
    images = np.random.default_rng(seed).uniform(-2, 2, (num_images, size, size, 3)).astype("float32")
    with torch.no_grad():
        expected = reference.eval()(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    got = np.asarray(model(images, training=False))
    top5 = lambda logits: np.argsort(-logits, axis=1)[:, :5]  # noqa: E731
    return {
        "reference": arch.reference,
        "images": num_images,
        "max_abs_diff": float(np.abs(got - expected).max()),
        "top5_identical": bool((top5(got) == top5(expected)).all()),
    }, ""


def convert_checkpoint(
    path,
    out,
    arch,
    source=None,
    num_classes=None,
    output_stride=None,
    force=False,
    allow_partial=False,
    check=True,
):
    """Converts a PyTorch checkpoint into a Keras weights file.

    Args:
        path: the checkpoint (.pth/.pt/.bin zip or legacy, .safetensors, .npz).
        out: the .h5 file to write.
        arch: one of `convert.ARCHS`.
        source: force a naming (`convert.sources.NAMINGS`) instead of detecting it.
        num_classes: the expected class count; an error if the checkpoint differs.
        output_stride: DeepLab archs only (default 16): a state_dict does not
            record it; the report's arch line shows the one used.
        force: replace `out` if it exists.
        allow_partial: write even if tensors are unused or Keras weights unset.
        check: compare against the PyTorch reference when one is installed.

    Returns:
        A `Report`; `str(report)` is the one-screen summary.

    Raises:
        ConversionError, convert.reader.CheckpointError: with one-line messages.
    """
    started = time.perf_counter()
    if arch not in ARCHS:
        raise ConversionError(f"unknown arch {arch!r}; choose from {', '.join(ARCHS)}")
    spec = ARCHS[arch]
    options = {"output_stride": output_stride}
    for option, value in options.items():
        if value is not None and option not in spec.options:
            raise ConversionError(f"--{option.replace('_', '-')} applies to DeepLab archs, not {arch}")
    options = {k: default if options[k] is None else options[k] for k, default in spec.options.items()}
    out = os.path.abspath(os.fspath(out))
    if os.path.isdir(out):
        raise ConversionError(f"{out} is a directory; give the .h5 file to write")
    if not os.path.isdir(os.path.dirname(out)):
        raise ConversionError(f"{os.path.dirname(out)}: no such directory")
    if os.path.exists(out) and not force:
        raise ConversionError(f"{out} exists; use --force to replace it")

    checkpoint = read_checkpoint(path)
    tensors = checkpoint.tensors
    naming = _resolve_naming(arch, spec, set(tensors), source)
    try:
        kwargs = {**spec.builder_kwargs, **naming.builder_kwargs(arch, tensors), **options}
    except KeyError as err:
        raise ConversionError(
            f"the checkpoint has no tensor {err} that the {naming.NAME} naming of {arch} has: "
            "wrong --arch or --source?"
        ) from None
    except (IndexError, ValueError) as err:
        raise ConversionError(f"cannot read the {arch} configuration from the checkpoint: {err}") from None
    if "classes" not in kwargs:  # a backbone-only checkpoint
        if num_classes is None:
            raise ConversionError(f"the checkpoint has no {arch} classifier: give --num-classes")
        kwargs["classes"] = num_classes
    if num_classes is not None and num_classes != kwargs["classes"]:
        raise ConversionError(
            f"--num-classes {num_classes}, but the checkpoint's classifier has {kwargs['classes']} classes"
        )
    run_parity = check and spec.reference is not None
    model = build_model(spec.builder, kwargs, allocate=run_parity)
    keys = set(tensors)
    mapped, used = _map_weights(model, tensors, naming.layer_map(model, keys), release=not run_parity)

    unused = _unused_keys(keys, used, checkpoint.alias_groups)
    unset = [l.name for l in model.layers if l.weights and l.name not in mapped]
    if (unused or unset) and not allow_partial:
        problems = []
        if unused:
            problems.append(f"{len(unused)} checkpoint tensors unused (first: '{unused[0]}')")
        if unset:
            problems.append(f"{len(unset)} Keras layers unset (first: '{unset[0]}')")
        raise ConversionError("; ".join(problems) + ": wrong --arch? (--allow-partial writes anyway)")

    layer_weights = []
    for layer in model.layers:
        variables = list(layer.trainable_weights) + list(layer.non_trainable_weights)
        if layer.name in mapped:
            if run_parity:
                for variable, (_, array) in zip(variables, mapped[layer.name]):
                    variable.assign(array)
            layer_weights.append((layer.name, mapped[layer.name]))
        elif variables:  # --allow-partial: a fresh initialisation
            layer_weights.append(
                (layer.name, [(f"{layer.name}/{v.name}:0", np.asarray(v.value)) for v in variables])
            )

    parity, parity_note = (None, "not run (--no-check)")
    if run_parity:
        parity, parity_note = _reference_parity(spec, tensors, model)
        if parity and (parity["max_abs_diff"] > PARITY_ATOL or not parity["top5_identical"]):
            raise ConversionError(
                f"the Keras model does not reproduce {parity['reference']}: max |Δlogit| "
                f"{parity['max_abs_diff']:.2e}; nothing written"
            )
    elif check:
        parity_note = "not run: no pip-installable PyTorch reference for this naming"
    metadata = {
        "format": 1,
        "arch": arch,
        "builder": spec.builder,
        "builder_kwargs": kwargs,
        "preprocessing": spec.preprocessing,
        "source": {
            "naming": naming.NAME,
            "checkpoint": os.path.basename(os.fspath(path)),
            "sha256": sha256_of(path),
        },
    }
    written = h5.write_weights(out, layer_weights, metadata, overwrite=force)
    return Report(
        checkpoint=os.fspath(path),
        output=written,
        arch=arch,
        file_format=checkpoint.format,
        wrapper=checkpoint.wrapper,
        prefix=checkpoint.prefix,
        naming=naming.NAME,
        builder_kwargs=kwargs,
        tensors_mapped=len(used),
        parameters=sum(int(np.prod(v.shape)) for v in model.weights),
        unused=unused,
        unset=unset,
        parity=parity,
        parity_note=parity_note,
        seconds=time.perf_counter() - started,
    )
