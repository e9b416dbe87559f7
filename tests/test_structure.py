"""The package's shape: one-way imports, one registry, nothing reaching into tests."""

import ast
import os

import pytest

from tests.helpers import REPO

PACKAGES = ("keras_lightnets", "convert")


def python_files(*roots):
    for root in roots:
        top = os.path.join(REPO, root)
        if os.path.isfile(top):
            yield top
            continue
        for folder, _, names in os.walk(top):
            yield from (os.path.join(folder, n) for n in sorted(names) if n.endswith(".py"))


def module_name(path):
    relative = os.path.relpath(path, REPO)[: -len(".py")].replace(os.sep, ".")
    return relative.removesuffix(".__init__")


def imports_of(path, modules=None):
    """Every module a file imports, function-level imports included.

    `from package import module` counts as importing that module (not the
    package's `__init__`) when `module` is one of `modules`.
    """
    tree = ast.parse(open(path, encoding="utf8").read(), path)
    package = module_name(path) if path.endswith("__init__.py") else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names}
            named = submodules & set(modules or ())
            found.update(named or {base})
            if named != submodules:
                found.add(base)
    return found


def import_graph(roots=PACKAGES):
    files = {module_name(p): p for p in python_files(*roots)}
    graph = {}
    for name, path in files.items():
        # `from keras_lightnets import blocks` names a module; `from x import y` a name in x
        graph[name] = sorted((imports_of(path, files) & set(files)) - {name})
    return graph


def find_cycle(graph):
    """A list of modules forming an import cycle, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in graph.get(node, ()):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_among_the_package_files():
    graph = import_graph()
    assert len(graph) > 30  # the walk found the package
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None


LIBRARY_LAYERS = ("keras_lightnets.runtime", "keras_lightnets.training", "keras_lightnets.cli")
# plain data every layer may read (the architecture tables the builders, namings and references share)
SHARED_DATA = {"keras_lightnets.models.tables", "keras_lightnets.models"}


@pytest.mark.parametrize(
    "importer, forbidden",
    [
        ("keras_lightnets", "convert"),  # the thin entries sit on top of the library
        ("keras_lightnets", "demo"),
        # the converter is handed the arch's builder; it never builds models itself
        *(("keras_lightnets.conversion", layer) for layer in (
            "keras_lightnets.models", "keras_lightnets.catalog", "keras_lightnets.weights.pretrained",
            "keras_lightnets.weights.loading", *LIBRARY_LAYERS)),
        # plain data and leaf modules: no Keras, no TensorFlow
        *((plain, framework) for plain in (
            "keras_lightnets.registry", "keras_lightnets.models.tables", "keras_lightnets.errors",
            "keras_lightnets.files", "keras_lightnets.weights.sources", "keras_lightnets.weights.record",
            "keras_lightnets.conversion.namings.timm_models") for framework in ("keras", "tensorflow")),
        # layers are the ground floor of the networks
        *(("keras_lightnets.layers", upper) for upper in (
            "keras_lightnets.models", "keras_lightnets.weights", "keras_lightnets.conversion", *LIBRARY_LAYERS)),
        *(("keras_lightnets.models", upper) for upper in ("keras_lightnets.conversion", *LIBRARY_LAYERS)),
        *(("keras_lightnets.weights", upper) for upper in LIBRARY_LAYERS),
        ("keras_lightnets.training", "keras_lightnets.runtime"),  # evaluate reads training's data folders
        ("keras_lightnets.runtime", "keras_lightnets.cli"),
        ("keras_lightnets.training", "keras_lightnets.cli"),
        ("bench", "tests"),
        ("keras_lightnets", "tests"),
    ],
)
def test_layers_import_one_way(importer, forbidden):
    root = importer.split(".")[0]
    modules = {module_name(path) for path in python_files(*PACKAGES)}
    offenders = [
        (module_name(path), target)
        for path in python_files(root)
        if module_name(path) == importer or module_name(path).startswith(importer + ".")
        for target in imports_of(path, modules)
        if (target == forbidden or target.startswith(forbidden + ".")) and target not in SHARED_DATA
    ]
    assert not offenders, offenders


def test_no_test_module_imports_another():
    offenders = [
        (module_name(path), target)
        for path in python_files("tests")
        for target in imports_of(path)
        if target.rpartition(".")[2].startswith("test_") or target == "tests.conftest"
    ]
    assert not offenders, offenders


def test_tests_are_laid_out_like_the_package():
    """tests/<layer>/ for each layer of keras_lightnets; at the top only the shared helpers and the
    tests of the whole (structure, docs, untrusted inputs, Keras' internals)."""
    package = {name for name in os.listdir(os.path.join(REPO, "keras_lightnets"))
               if os.path.isfile(os.path.join(REPO, "keras_lightnets", name, "__init__.py"))}
    folders = {name for name in os.listdir(os.path.join(REPO, "tests"))
               if os.path.isdir(os.path.join(REPO, "tests", name)) and name != "__pycache__"}
    assert folders <= package, folders - package
    top = {name for name in os.listdir(os.path.join(REPO, "tests")) if name.startswith("test_")}
    assert top == {"test_structure.py", "test_docs.py", "test_untrusted_inputs.py", "test_keras_internals.py"}, top


def test_every_registry_arch_is_buildable_from_its_builder_string():
    from keras_lightnets import registry
    from keras_lightnets.conversion.namings import NAMINGS

    for spec in registry.SPECS.values():
        module = os.path.join(REPO, *spec.builder_module.split(".")) + ".py"
        source = open(module, encoding="utf8").read()
        assert f"def {spec.builder_name}(" in source or f"{spec.builder_name} = " in source, spec.name
        assert spec.namings and set(spec.namings) <= set(NAMINGS), spec.name


def test_the_public_api_cli_and_demo_choices_come_from_the_registry(capsys):
    import keras_lightnets
    from convert.__main__ import main
    from keras_lightnets import registry

    builders = {spec.builder_name for spec in registry.SPECS.values()}
    assert builders <= set(keras_lightnets.__all__)
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in registry.SPECS)


def test_no_module_is_over_600_lines():
    long = {module_name(path): n for path in python_files("keras_lightnets") if (n := len(open(path).readlines())) > 600}
    assert not long, long


PRIVATE_KERAS = ("._nodes_by_depth", "._inbound_nodes", "._keras_history", "._moments", "._maybe_symbolic_build",
                 "._initializer", "._reduction_axes", "keras.src")


def test_keras_private_api_is_touched_in_one_module():
    offenders = [
        (module_name(path), name)
        for path in python_files("keras_lightnets")
        if not path.endswith("keras_internals.py")
        for name in PRIVATE_KERAS
        if name in open(path, encoding="utf8").read()
    ]
    assert not offenders, offenders
