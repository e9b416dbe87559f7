"""Which arch and naming a checkpoint is: `--arch auto` and wrapper key prefixes.

`find_arch` answers from the keys and shapes alone, by asking the namings
themselves: a naming's `detect(keys)` says whether the keys are its own, its
`builder_kwargs(spec, tensors)` reads the width, variant and class count (and
refuses a checkpoint of another variant). The keys and tensors they looked at
are the evidence the report names.

A wrapper prefix shared by every key (`backbone.`, `model.`, `net.`, ...) is
stripped only when the keys match no naming as they are and match one once it
is gone: segmentation_models_pytorch's own keys start with `encoder.`.
"""

import dataclasses

from keras_lightnets import registry
from keras_lightnets.conversion.errors import ConversionError
from keras_lightnets.conversion.namings import NAMINGS, source_name

AUTO = "auto"
SHOWN = 3  # keys, tensors and candidates named in one line


@dataclasses.dataclass
class Detection:
    """What the checkpoint is: the arch's spec, its naming, the tensors under
    their naming's keys (`prefix` stripped), and for `--arch auto` the
    inference in words (`inferred`)."""

    spec: registry.ModelSpec
    naming: object
    tensors: dict
    prefix: str | None = None
    inferred: str | None = None

    def renamed(self, groups):
        """Groups of checkpoint names (the reader's `alias_groups`) under the tensors' names."""
        cut = len(self.prefix or "")
        return [tuple(name[cut:] for name in group) for group in groups]


class _SeenKeys(frozenset):
    """Keys that record which of them a naming's `detect` asked for and found."""

    def __init__(self, keys):
        super().__init__()
        self.found = []

    def __contains__(self, key):
        hit = super().__contains__(key)
        if hit and key not in self.found:
            self.found.append(key)
        return hit


class _SeenTensors(dict):
    """Tensors that record which of them a naming's `builder_kwargs` read."""

    def __init__(self, tensors):
        super().__init__(tensors)
        self.read = []

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if key not in (read for read, _ in self.read):
            self.read.append((key, tuple(getattr(value, "shape", ()))))
        return value


@dataclasses.dataclass
class Candidate:
    spec: registry.ModelSpec
    naming: object
    kwargs: dict
    keys: list  # the keys `detect` found
    read: list  # (key, shape) of the tensors `builder_kwargs` read

    @property
    def complete(self):
        """Whether the checkpoint holds the whole network (a class count), not a backbone."""
        return "classes" in self.kwargs

    def describe(self):
        return f"{self.spec.name} ({self.naming.NAME} naming)"


def requested_spec(arch):
    """The spec of `arch`, or None for `"auto"`; a ConversionError for an unknown arch."""
    if arch is None or arch == AUTO:
        return None
    try:
        return registry.get_spec(arch)
    except ValueError as err:
        raise ConversionError(str(err)) from None


def namings_of(spec, source=None):
    """The spec's naming modules (only the one of `source` when given)."""
    if source is None:
        return [NAMINGS[name] for name in spec.namings]
    chosen = [NAMINGS[name] for name in spec.namings if source_name(name) == source]
    if not chosen:
        choices = ", ".join(source_name(name) for name in spec.namings)
        raise ConversionError(f"--source {source!r} does not apply to {spec.name}; choose from {choices}")
    return chosen


def detect_naming(spec, keys, source=None, tensors=None):
    """The naming module of `source` (a source name such as `"torchvision"`),
    or the one of the arch's namings that recognises the keys. When several
    do, those that can also read the arch's configuration from `tensors`
    remain; more than one is an error that lists them. With the `tensors`, a
    refusal names the arch they fit instead, if one does."""
    namings = namings_of(spec, source)
    if source is not None:
        return namings[0]
    found = [naming for naming in namings if naming.detect(keys)]
    if len(found) > 1 and tensors is not None:
        found = [naming for naming in found if _reads(naming, spec, tensors)] or found
    if len(found) > 1:  # same keys, different networks (timm's efficientnet_lite0 and tf_efficientnet_lite0)
        described = "; ".join(f"{naming.NAME}: {naming_summary(naming)}" for naming in found)
        raise ConversionError(f"the checkpoint fits several {spec.name} namings; choose one with --source: {described}")
    if found:
        return found[0]
    sample = ", ".join(sorted(keys)[:4])
    raise ConversionError(
        f"the checkpoint's keys ({sample}, ...) match no {spec.name} naming "
        f"({', '.join(naming.NAME for naming in namings)}); is --arch right?" + _fits_instead(tensors, spec)
    )


def _reads(naming, spec, tensors):
    try:
        naming.builder_kwargs(spec, tensors)
    except (KeyError, IndexError, ValueError):
        return False
    return True


def naming_summary(naming):
    """The first line of a naming's docstring: whose checkpoints it reads."""
    return (naming.__doc__ or naming.NAME).strip().splitlines()[0].rstrip(".")


def candidates(tensors, specs, source=None):
    """`(candidates, rejections)`: every (spec, naming) whose naming detects
    the keys and reads a configuration from the tensors; rejections are
    `(spec, naming, reason)` of namings that detect the keys but whose
    configuration reading refused them (another variant, another backbone)."""
    found, rejected = [], []
    for spec in specs:
        if source is not None and not any(source_name(name) == source for name in spec.namings):
            continue
        for naming in namings_of(spec, source):
            keys = _SeenKeys(tensors)
            if not naming.detect(keys):
                continue
            seen = _SeenTensors(tensors)
            try:
                kwargs = naming.builder_kwargs(spec, seen)
            except (KeyError, IndexError, ValueError) as err:
                rejected.append((spec, naming, err))
                continue
            found.append(Candidate(spec, naming, kwargs, keys.found, seen.read))
    return found, rejected


def best_candidates(found):
    """The candidates that hold a whole network, if any do, else all of them."""
    complete = [candidate for candidate in found if candidate.complete]
    return complete or found


def common_prefixes(keys):
    """The dotted prefixes every key starts with, shortest first, each leaving
    at least one component (`["model.", "model.backbone."]`)."""
    split = [key.split(".") for key in keys]
    if not split:
        return []
    depth = min(len(parts) for parts in split) - 1
    prefixes = []
    for index in range(depth):
        component = split[0][index]
        if any(parts[index] != component for parts in split):
            break
        prefixes.append(".".join(split[0][: index + 1]) + ".")
    return prefixes


def strip(tensors, prefix):
    return {key[len(prefix):]: value for key, value in tensors.items()} if prefix else tensors


def find_arch(tensors, arch=AUTO, source=None):
    """The `Detection` of a checkpoint's tensors, for `arch` (a spec name or
    `"auto"`) and an optional forced `source` naming."""
    spec = requested_spec(arch)
    specs = list(registry.SPECS.values()) if spec is None else [spec]
    for prefix in ["", *common_prefixes(tensors)]:
        view = strip(tensors, prefix)
        if spec is not None:
            if any(naming.detect(view) for naming in namings_of(spec, source)):
                return Detection(spec, detect_naming(spec, view, source, view), view, prefix or None)
            continue
        found, rejected = candidates(view, specs, source)
        if found or rejected:
            return _auto_detection(view, prefix, found, rejected)
    _refuse_two_networks(tensors, source)
    if spec is not None:
        return Detection(spec, detect_naming(spec, tensors, source, tensors), tensors)
    sample = ", ".join(sorted(tensors)[:4])
    raise ConversionError(
        f"the checkpoint's keys ({sample}, ...) match no naming of any arch"
        + (f" with --source {source}" if source else "")
        + " (python -m convert --help lists the archs and sources)"
    )


def _auto_detection(tensors, prefix, found, rejected):
    best = best_candidates(found)
    if not best:
        reasons = "; ".join(
            f"{spec.name} ({naming.NAME} naming): {reason}" for spec, naming, reason in rejected[:SHOWN]
        )
        raise ConversionError(f"the checkpoint's keys look like a known naming, but: {reasons}")
    if len(best) > 1:
        listed = ", ".join(candidate.describe() for candidate in best)
        if len({candidate.spec.name for candidate in best}) > 1:
            raise ConversionError(f"the checkpoint matches {len(best)} archs: {listed}; give --arch")
        raise ConversionError(f"the checkpoint matches {len(best)} namings: {listed}; give --source")
    chosen = best[0]
    return Detection(chosen.spec, chosen.naming, tensors, prefix or None, explain(chosen))


def explain(candidate):
    """The inference in words: the arch, the naming and the keys that told it,
    the configuration and the tensors it was read from."""
    keys = ", ".join(candidate.keys[:SHOWN]) or "all its keys and shapes"
    inferred = [f"{name}={value!r}" for name, value in candidate.kwargs.items()
                if candidate.spec.builder_kwargs.get(name) != value]
    text = f"{candidate.spec.name} ({candidate.naming.NAME} naming: {keys})"
    if inferred:
        text += f"; {', '.join(inferred)}"
        if candidate.read:
            shapes = ", ".join(f"{key} {'x'.join(map(str, shape))}" for key, shape in candidate.read[:SHOWN])
            text += f" from {shapes}" + (", ..." if len(candidate.read) > SHOWN else "")
    for option, default in candidate.spec.options.items():
        flag = option.replace("_", "-")
        text += f"; {option} is not in a state_dict: --{flag} sets it ({default} by default)"
    return text


def _refuse_two_networks(tensors, source):
    """Refuses keys that hold two networks side by side (`student.*`, `teacher.*`)
    under their common prefix, naming them."""
    specs = list(registry.SPECS.values())
    base = (common_prefixes(tensors) or [""])[-1]
    groups = sorted({key[len(base):].split(".", 1)[0] for key in tensors})
    networks = []
    for group in groups:
        prefix = f"{base}{group}."
        view = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        found, _ = candidates(view, specs, source)
        if found:
            networks.append(f"'{prefix}' ({', '.join(c.spec.name for c in best_candidates(found))})")
    if len(networks) > 1:
        raise ConversionError(
            f"the checkpoint holds {len(networks)} networks, under {' and '.join(networks[:SHOWN])}; "
            "save one of them alone"
        )


def _fits_instead(tensors, spec):
    """`"; they fit X (--arch X)"` when the tensors fit exactly one other arch."""
    if tensors is None:
        return ""
    others = [other for other in registry.SPECS.values() if other.name != spec.name]
    found = best_candidates(candidates(tensors, others)[0])
    return f"; they fit {found[0].describe()}: --arch {found[0].spec.name}" if len(found) == 1 else ""
