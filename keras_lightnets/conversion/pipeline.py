"""checkpoint → read → detect naming → plan → map → parity → write → report.

Each step is a small function; `convert_checkpoint` runs them in order. The
pipeline builds the Keras model with the `build` callable it is given (the
arch's builder, or `builder_for(arch)` once `--arch auto` has found it), so
it never imports the model modules.
"""

import dataclasses
import importlib
import importlib.metadata
import json
import os
import time

import numpy as np

from keras_lightnets.conversion import detect, layouts, snapshot
from keras_lightnets.conversion.errors import ConversionError
from keras_lightnets.files import check_output_path
from keras_lightnets.weights import h5 as h5format
from keras_lightnets.weights.h5 import create_from_arrays, layer_variables
from keras_lightnets.weights.record import RECORD_FORMAT, RecordError, check_record

MAX_LISTED = 8
PARITY_ATOL = 1e-4  # classification logits, float32 CPU (onnx2tf and nobuco check 1e-4)
SEGMENTATION_ARGMAX_AGREEMENT = 0.9999
# Segmentation argmax agreement counts the pixels whose reference top two
# classes are further apart than this (times the logits' spread when it
# exceeds 1): closer ones are float rounding's to swap.
SEGMENTATION_TIE_MARGIN = 1e-4
NOT_MEASURED = "not measured"


class ParityError(ConversionError):
    """The Keras model does not reproduce the PyTorch reference.

    Attributes:
        parity: the measurements (`check_parity`'s).
        details: the layer-by-layer report lines (`--diff-layers`), or [].
    """

    def __init__(self, message, parity):
        super().__init__(message)
        self.parity = parity
        self.details = []


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
    by_design: list = dataclasses.field(default_factory=list)  # unused tensors the naming leaves out on purpose
    by_design_note: str = ""
    layer_diff: list = dataclasses.field(default_factory=list)
    inferred: str | None = None  # --arch auto or a snapshot's config.json: what told the arch

    def __str__(self):
        def listing(items):
            shown = ", ".join(items[:MAX_LISTED])
            return f"{len(items)} ({shown}{', ...' if len(items) > MAX_LISTED else ''})" if items else "none"

        kwargs = ", ".join(f"{k}={v!r}" for k, v in self.builder_kwargs.items())
        wrapper = f", unwrapped {{'{self.wrapper}'}}" if self.wrapper else ""
        prefix = f", prefix '{self.prefix}' stripped" if self.prefix else ""
        parity = parity_summary(self.parity) if self.parity else self.parity_note
        return "\n".join(
            [
                f"checkpoint      {self.checkpoint} ({self.file_format}{wrapper}{prefix})",
                f"naming          {self.naming}",
                f"arch            {self.arch}: {kwargs}",
                *([f"inferred        {self.inferred}"] if self.inferred else []),
                f"tensors mapped  {self.tensors_mapped} into {self.parameters:,} Keras parameters",
                f"unused tensors  {listing(self.unused)}"
                + (f"; {len(self.by_design)} left out by design: {self.by_design_note}" if self.by_design else ""),
                f"unset weights   {listing(self.unset)}",
                f"parity          {parity}",
                *(f"layer diff      {line}" for line in self.layer_diff),
                f"written         {self.output or 'nothing'}"
                + (f" in {self.seconds:.1f} s" if self.output else ""),
            ]
        )


def parity_summary(parity):
    """One line of measured parity: `max |Δlogit| 3.1e-06 vs ... on 2 inputs, top-5 identical, ...`."""
    if "top5_identical" in parity:
        agreement = f"top-5 {'identical' if parity['top5_identical'] else 'DIFFERENT'}"
    else:
        agreement = (
            f"argmax agreement {100 * parity['argmax_agreement']:.3f} % of {parity['decided_pixels']:,} pixels "
            f"(top-two gap > {parity['tie_margin']:.1e})"
        )
    return (
        f"max |Δlogit| {parity['max_abs_diff']:.2e} vs {parity['reference']} on {parity['inputs']} inputs "
        f"of {parity['input_size']}, {agreement}, max |Δprobability| {parity['max_prob_diff']:.2e}"
    )


# ---------------------------------------------------------------- steps


def record_preprocessing(spec, kwargs, naming):
    """The eval transform to record: the naming's for this checkpoint
    (`preprocessing(spec, kwargs)`, or `PREPROCESSING`), else the arch's."""
    if hasattr(naming, "preprocessing"):
        try:
            return naming.preprocessing(spec, kwargs)
        except ValueError as err:
            raise ConversionError(f"the {naming.NAME} eval transform of {spec.name}: {err}") from None
    return getattr(naming, "PREPROCESSING", spec.preprocessing)


def check_options(spec, options):
    """The arch's options (`output_stride`): those given, else their defaults."""
    for option, value in options.items():
        if value is not None and option not in spec.options:
            raise ConversionError(f"--{option.replace('_', '-')} applies to DeepLab archs, not {spec.name}")
    return {k: default if options.get(k) is None else options[k] for k, default in spec.options.items()}


def plan_builder_kwargs(spec, naming, tensors, num_classes=None, chosen=None):
    """The builder arguments: the spec's, what the checkpoint says (width,
    classes, ...), and the arch's options (`check_options`)."""
    chosen = chosen or {}
    try:
        kwargs = {**spec.builder_kwargs, **naming.builder_kwargs(spec, tensors), **chosen}
    except KeyError as err:
        raise ConversionError(
            f"the checkpoint has no tensor {err} that the {naming.NAME} naming of {spec.name} has: "
            "wrong --arch or --source?"
        ) from None
    except (IndexError, ValueError) as err:
        raise ConversionError(f"cannot read the {spec.name} configuration from the checkpoint: {err}") from None
    if "classes" not in kwargs:  # a backbone-only checkpoint
        if num_classes is None:
            raise ConversionError(f"the checkpoint has no {spec.name} classifier: give --num-classes")
        kwargs["classes"] = num_classes
    if num_classes is not None and num_classes != kwargs["classes"]:
        raise ConversionError(
            f"--num-classes {num_classes}, but the checkpoint's classifier has {kwargs['classes']} classes"
        )
    return kwargs


def build_model(build, kwargs):
    """Builds the Keras model (logits) with its variables uninitialised
    (Keras's deferred initialisation): the mapping needs only each layer's
    class and weight shapes, and random values would cost the checkpoint's
    size and most of the build's time. `create_model_values` gives them the
    checkpoint's values when the parity check runs the model.
    """
    import keras

    with keras.StatelessScope(initialize_variables=False):
        return build(weights=None, classifier_activation=None, **kwargs)


def create_model_values(model, mapped):
    """Creates the model's variables: the mapped arrays, and the layers'
    own initialisers for the rest (`--allow-partial`)."""
    create_from_arrays(
        (variable, array)
        for layer_name, rows in mapped.items()
        for variable, (_, array) in zip(layer_variables(model.get_layer(layer_name)), rows)
    )


def map_weights(model, tensors, rows, release=False):
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
        variables = layer_variables(layer)
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


def unused_by_design(naming, keys):
    """`(keys, note)`: the checkpoint tensors `naming` leaves out on purpose
    (its optional `UNUSED_BY_DESIGN`, `{key prefix: why}`), and why."""
    reasons = getattr(naming, "UNUSED_BY_DESIGN", {})
    found = {prefix: sorted(k for k in keys if k.startswith(prefix)) for prefix in reasons}
    note = "; ".join(f"{prefix}* ({reasons[prefix]})" for prefix, matched in found.items() if matched)
    return sorted(k for matched in found.values() for k in matched), note


def completeness(model, keys, used, mapped, alias_groups, allow_partial):
    """`(unused checkpoint keys, unset Keras layers)`; an error unless empty or `allow_partial`."""
    covered = set(used)
    for group in alias_groups:
        if covered.intersection(group):
            covered.update(group)
    unused = sorted(k for k in keys if k not in covered)
    unset = [layer.name for layer in model.layers if layer.weights and layer.name not in mapped]
    if (unused or unset) and not allow_partial:
        problems = []
        if unused:
            problems.append(f"{len(unused)} checkpoint tensors unused (first: '{unused[0]}')")
        if unset:
            problems.append(f"{len(unset)} Keras layers unset (first: '{unset[0]}')")
        raise ConversionError("; ".join(problems) + ": wrong --arch? (--allow-partial writes anyway)")
    return unused, unset


def layer_weights(model, mapped):
    """The file's `[(layer, [(weight name, array)])]`: the mapped arrays, and a
    fresh initialisation for layers the checkpoint does not set
    (`--allow-partial`)."""
    result = []
    for layer in model.layers:
        variables = layer_variables(layer)
        if layer.name in mapped:
            result.append((layer.name, mapped[layer.name]))
        elif variables:
            result.append(
                (layer.name, [(f"{layer.name}/{v.name}:0", np.asarray(v.value)) for v in variables])
            )
    return result


def torch_importable():
    """Whether PyTorch imports (it is imported: the parity check needs it next)."""
    try:
        importlib.import_module("torch")
    except ImportError:
        return False
    return True


def resolve_reference(reference, naming):
    """The parity reference: `reference` (a callable or `"module:function"`),
    else the naming's own (`naming.reference`), or None.

    A reference is called as `reference(spec, builder_kwargs, tensors)` and
    returns a PyTorch module in eval mode holding the checkpoint's weights;
    it raises ImportError when what it needs is not installed and
    ValueError when it cannot hold the checkpoint.
    """
    if reference is None:
        return getattr(naming, "reference", None)
    if callable(reference):
        return reference
    module_name, _, function = str(reference).partition(":")
    try:
        return getattr(importlib.import_module(module_name), function or "reference")
    except (ImportError, AttributeError) as err:
        raise ConversionError(f"--reference {reference}: cannot import it ({err})") from None


def describe_reference(torch_model, naming, given=None):
    """How the report names the reference: `torchvision MobileNetV2 (shipped
    reference)`, `torchvision 0.29.1 MobileNetV2` (the library itself), or
    the `--reference` given."""
    cls = type(torch_model)
    if given is not None:
        return f"{given if isinstance(given, str) else getattr(given, '__qualname__', repr(given))} ({cls.__name__})"
    if cls.__module__.startswith("keras_lightnets.conversion.references."):
        source = naming.NAME if naming is not None else cls.__module__.split(".")[-1]
        return f"{source} {cls.__name__} (shipped reference)"
    library = cls.__module__.split(".")[0]
    try:
        version = importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        version = ""
    return " ".join(part for part in (library, version, cls.__name__) if part)


def parity_images(model, spec, count=2, seed=0, multiple=1):
    """Random NHWC inputs of unit spread at the model's size (65x81 for any-size
    models, rounded up to a `multiple`: the naming's `INPUT_MULTIPLE`, for
    references that take only such sizes, as smp's)."""
    rows, cols = model.input_shape[1:3]
    rows, cols = rows or spec.input_size or 65, cols or spec.input_size or 81
    rows, cols = -(-rows // multiple) * multiple, -(-cols // multiple) * multiple
    return np.random.default_rng(seed).uniform(-2, 2, (count, rows, cols, 3)).astype("float32")


def build_reference(reference, spec, kwargs, tensors, naming, given=None):
    """`(torch model, its description)`, or `(None, why not)` when the naming's
    reference cannot be built; a reference `given` (`--reference`) that
    cannot be built is an error."""
    try:
        importlib.import_module("torch")
        torch_model = reference(spec, kwargs, tensors)
    except (ImportError, ValueError) as err:
        if given is not None:
            raise ConversionError(f"--reference {given}: {err}") from None
        if isinstance(err, ImportError):
            return None, f"{NOT_MEASURED}: the reference needs {err.name or err} (pip install it to measure parity)"
        return None, f"{NOT_MEASURED}: {err}"
    return torch_model.eval(), describe_reference(torch_model, naming, given)


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def measure_parity(model, spec, torch_model, description, multiple=1):
    """Compares the Keras model with the PyTorch reference on `parity_images`.

    Returns the measurements; raises ParityError (with them) when the Keras
    model does not reproduce the reference: classification max |Δlogit| >
    `PARITY_ATOL` or another top-5; segmentation argmax agreement below
    `SEGMENTATION_ARGMAX_AGREEMENT` on the pixels the reference decides by
    more than `SEGMENTATION_TIE_MARGIN` × max(1, the logits' standard deviation).
    """
    import torch

    images = parity_images(model, spec, multiple=multiple)
    try:
        with torch.no_grad():
            expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    except RuntimeError as err:
        raise ConversionError(f"the reference {description} fails on {images.shape[1]}x{images.shape[2]} inputs: "
                              f"{' '.join(str(err).split())[:200]}") from None
    got = np.asarray(model(images, training=False))
    if expected.ndim == 4:  # segmentation maps come out NCHW
        expected = expected.transpose(0, 2, 3, 1)
    if got.shape != expected.shape:
        raise ConversionError(f"the Keras model gives {got.shape}, the reference {description} {expected.shape}")
    measured = {
        "reference": description,
        "inputs": len(images),
        "input_size": f"{images.shape[1]}x{images.shape[2]}",
        "max_abs_diff": float(np.abs(got - expected).max()),
        "max_prob_diff": float(np.abs(_softmax(got.astype("float64")) - _softmax(expected.astype("float64"))).max()),
    }
    if spec.task == "segmentation":
        top_two = np.sort(expected, axis=-1)[..., -2:]
        measured["tie_margin"] = SEGMENTATION_TIE_MARGIN * max(1.0, float(expected.std()))
        decided = (top_two[..., 1] - top_two[..., 0]) > measured["tie_margin"]
        same = got.argmax(-1) == expected.argmax(-1)
        measured["decided_pixels"] = int(decided.sum())
        measured["argmax_agreement"] = float(same[decided].mean()) if decided.any() else 1.0
        failed = measured["argmax_agreement"] < SEGMENTATION_ARGMAX_AGREEMENT
        verdict = f"argmax agreement {100 * measured['argmax_agreement']:.3f} %"
    else:
        top5 = lambda logits: np.argsort(-logits, axis=1)[:, :5]  # noqa: E731
        measured["top5_identical"] = bool((top5(got) == top5(expected)).all())
        failed = not measured["top5_identical"] or measured["max_abs_diff"] > PARITY_ATOL
        verdict = f"top-5 {'identical' if measured['top5_identical'] else 'DIFFERENT'}"
    if failed:
        raise ParityError(
            f"the Keras model does not reproduce {description}: max |Δlogit| {measured['max_abs_diff']:.2e}, "
            f"{verdict}; nothing written (--diff-layers shows where they diverge)",
            measured,
        )
    return measured


def check_parity(model, spec, kwargs, tensors, reference, naming=None, given=None):
    """Builds the reference and compares (`measure_parity`).

    Returns `(measurements, "")`, or `(None, note)` when no reference could
    be built; raises ParityError when the Keras model does not reproduce it.
    """
    torch_model, description = build_reference(reference, spec, kwargs, tensors, naming, given)
    if torch_model is None:
        return None, description
    return measure_parity(model, spec, torch_model, description, input_multiple(naming)), ""


def layer_diff_lines(model, torch_model, rows, spec, multiple=1):
    """The `--diff-layers` report: the Keras model and its reference run
    once on the first parity input, compared layer by layer."""
    from keras_lightnets.conversion import diff

    images = parity_images(model, spec, multiple=multiple)[:1]
    diffs = diff.torch_layer_diffs(model, torch_model, rows, images)
    header = (
        f"{len(diffs)} Keras layers ↔ PyTorch modules on one {images.shape[1]}x{images.shape[2]} input, "
        f"tolerance {diff.RTOL:g} × max(1, max |PyTorch output|)"
    )
    return [header, *diff.report_lines(diffs)]


def input_multiple(naming):
    """What the sides of the naming's reference's inputs must be a multiple of."""
    return getattr(naming, "INPUT_MULTIPLE", 1)


def make_record(spec, kwargs, naming, path, parity=None, preprocessing=None):
    """The JSON record the weights file carries (for `from_h5`, the demo, exports);
    `parity`: the measurements, or None ("not measured"); `preprocessing`:
    the checkpoint's own eval transform, else its naming's or arch's. Checked as
    every reader checks it."""
    record = {
        "format": RECORD_FORMAT,
        "arch": spec.name,
        "builder": spec.builder_name,
        "builder_kwargs": kwargs,
        "preprocessing": preprocessing or record_preprocessing(spec, kwargs, naming),
        "source": {
            "naming": naming.NAME,
            "checkpoint": os.path.basename(os.fspath(path)),
            "sha256": h5format.sha256_of(path),
        },
        "parity": parity or NOT_MEASURED,
    }
    try:
        return check_record(json.loads(json.dumps(record)))
    except RecordError as err:
        raise ConversionError(f"the converted file's record would be refused when read: {err}") from None


# ---------------------------------------------------------------- the whole


def convert_checkpoint(
    path,
    out,
    arch="auto",
    build=None,
    source=None,
    num_classes=None,
    output_stride=None,
    force=False,
    allow_partial=False,
    check=True,
    reference=None,
    before_build=None,
    preprocessing=None,
    diff_layers=False,
    builder_for=None,
):
    """Converts a PyTorch checkpoint into a Keras weights file.

    Whenever PyTorch is importable (and `check`), the converted model is
    compared with a PyTorch reference holding the checkpoint (the naming's:
    the source library itself where installed, else the shipped
    `keras_lightnets.conversion.references`) on random inputs; a model that
    does not reproduce it is refused and nothing is written. The report and
    the file's record give the measurements, or say "not measured".

    Args:
        path: the checkpoint (.pth/.pt/.bin zip or legacy, .safetensors, .npz),
            or a Hugging Face-style snapshot folder (`conversion.snapshot`).
        out: the .h5 file to write.
        arch: a `keras_lightnets.registry.SPECS` name, or `"auto"`: the arch
            the keys and shapes say (`conversion.detect`; the report says why).
        build: the arch's Keras builder (`keras_lightnets.catalog.get_builder(arch)`).
        source: force a naming (`NAMINGS`) instead of detecting it.
        num_classes: the expected class count; an error if the checkpoint differs.
        output_stride: DeepLab archs only (default 16): a state_dict does not
            record it; the report's arch line shows the one used.
        force: replace `out` if it exists.
        allow_partial: write even if tensors are unused or Keras weights unset.
        check: compare with the PyTorch reference (when torch is importable).
        reference: the parity reference, a callable or `"module:function"`
            (see `resolve_reference`); by default the naming's.
        diff_layers: also compare the two models layer by layer (the
            report's `layer diff` lines; on a mismatch, the ParityError's
            `details`).
        before_build: called with no arguments once the checkpoint is read and
            matched to the arch, before Keras builds the model (the command
            line imports TensorFlow there, quietly, so that bad input is
            reported without waiting for it).
        preprocessing: the eval transform to record, when the checkpoint's
            own differs from its naming's or arch's (a pretrained source's).
        builder_for: without `build`, called with the arch found to give its
            builder (`get_builder` itself; the command line defers TensorFlow).

    Returns:
        A `Report`; `str(report)` is the one-screen summary.

    Raises:
        ConversionError, CheckpointError: with one-line messages;
        ParityError (a ConversionError) when parity fails.
    """
    started = time.perf_counter()
    if diff_layers and not check:
        raise ConversionError("--diff-layers compares with the PyTorch reference: drop --no-check")
    if build is None and builder_for is None:
        raise TypeError("convert_checkpoint needs build or builder_for")
    options = {"output_stride": output_stride}
    if detect.requested_spec(arch) is not None:
        check_options(detect.requested_spec(arch), options)
    out = check_output_path(out, overwrite=force)
    found = snapshot.locate(path, arch, source)  # a checkpoint file or a snapshot folder; --arch auto
    checkpoint, spec, naming, tensors = found.checkpoint, found.spec, found.naming, found.tensors
    keys = set(tensors)
    chosen = check_options(spec, options)
    kwargs = found.agreed(plan_builder_kwargs(spec, naming, tensors, num_classes, chosen))

    measure = check and (reference is not None or torch_importable())
    reference_fn = resolve_reference(reference, naming) if measure else None
    if before_build is not None:
        hook_started = time.perf_counter()
        before_build()
        started += time.perf_counter() - hook_started  # the report times the conversion, not TensorFlow's start
    model = build_model(build or builder_for(spec.name), kwargs)
    rows = naming.layer_map(model, keys)
    mapped, used = map_weights(model, tensors, rows, release=reference_fn is None)
    by_design, by_design_note = unused_by_design(naming, keys)
    unused, unset = completeness(
        model, keys.difference(by_design), used, mapped, checkpoint.alias_groups, allow_partial
    )
    if reference_fn is not None:
        create_model_values(model, mapped)
    weights = layer_weights(model, mapped)

    parity, parity_note, layer_diff = None, f"{NOT_MEASURED} (--no-check)", []
    if check and not measure:
        parity_note = f"{NOT_MEASURED}: PyTorch is not installed (pip install torch to measure parity)"
    elif check and reference_fn is None:
        parity_note = f"{NOT_MEASURED}: no PyTorch reference for this naming (--reference MODULE:FUNCTION adds one)"
    elif check and unset:
        parity_note = f"{NOT_MEASURED}: {len(unset)} Keras layers hold no checkpoint weights (--allow-partial)"
    elif check:
        torch_model, description = build_reference(reference_fn, spec, kwargs, tensors, naming, reference)
        if torch_model is None:
            parity_note = description
        else:
            multiple = input_multiple(naming)
            try:
                parity = measure_parity(model, spec, torch_model, description, multiple)
            except ParityError as err:
                if diff_layers:
                    err.details = layer_diff_lines(model, torch_model, rows, spec, multiple)
                raise
            if diff_layers:
                layer_diff = layer_diff_lines(model, torch_model, rows, spec, multiple)
    if diff_layers and not layer_diff:
        layer_diff = [f"not run: parity {parity_note}"]

    record = make_record(spec, kwargs, naming, found.file, parity, preprocessing or found.preprocessing)
    written = h5format.write_weights(out, weights, record, overwrite=force)
    return Report(
        checkpoint=os.fspath(path),
        output=written,
        arch=spec.name,
        file_format=checkpoint.format,
        wrapper=checkpoint.wrapper,
        prefix=found.prefix,
        naming=naming.NAME,
        builder_kwargs=kwargs,
        tensors_mapped=len(used),
        parameters=sum(int(np.prod(v.shape)) for v in model.weights),
        unused=unused,
        unset=unset,
        parity=parity,
        parity_note=parity_note,
        seconds=time.perf_counter() - started,
        by_design=by_design,
        by_design_note=by_design_note,
        layer_diff=layer_diff,
        inferred=found.inferred,
    )
