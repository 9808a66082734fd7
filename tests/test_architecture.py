"""The layering of docs/architecture.md, checked on the import graph of src/edgeft.

A package may import its own layer's packages or lower ones, never a higher one; no two modules
import each other (directly or around a loop); no package reaches into another's private names.
"""

import ast
from pathlib import Path

import networkx as nx

SRC = Path(__file__).resolve().parents[1] / "src" / "edgeft"

# Lowest first. Keep in step with the picture in docs/architecture.md.
LAYERS = [
    {"errors", "paths", "cores", "quiet", "config", "processes"},
    {"data", "models"},
    {"methods"},
    {"train"},
    {"planner", "compress"},
    {"measure", "generate"},
    {"runtime", "federated"},
    {"cli"},
]
LAYER = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = f.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(mods: dict[str, Path]):
    """(importer module, imported module, imported names) for every edgeft import, module-level or local."""
    for mod, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgeft"):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    yield mod, (sub if sub in mods else node.module), ([] if sub in mods else [a.name])
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("edgeft"):
                        yield mod, a.name, []


def _package(mod: str) -> str:
    return mod.split(".")[1] if mod.count(".") else "edgeft"


def test_every_package_has_a_layer():
    pkgs = {_package(m) for m in _modules()} - {"edgeft", "__main__"}
    assert pkgs - set(LAYER) == set(), "add the new package to LAYERS and to docs/architecture.md"


def test_no_package_imports_a_higher_layer():
    mods = _modules()
    upward = sorted({f"{a} -> {b}" for a, b, _ in _imports(mods)
                     if _package(a) in LAYER and _package(b) in LAYER and LAYER[_package(b)] > LAYER[_package(a)]})
    assert upward == []


def test_no_import_cycles():
    mods = _modules()
    graph = nx.DiGraph((a, b) for a, b, _ in _imports(mods) if a != b and not b.startswith(a + "."))
    # a package's __init__ re-exporting its own modules is not a cycle of logic
    graph.remove_edges_from([(a, b) for a, b in list(graph.edges) if b.startswith(a + ".")
                             or a.startswith(b + ".") and mods.get(b, Path()).name == "__init__.py"])
    assert list(nx.simple_cycles(graph)) == []


def test_no_private_names_cross_packages():
    mods = _modules()
    private = sorted(f"{a} imports {b}.{n}" for a, b, names in _imports(mods) for n in names
                     if n.startswith("_") and _package(a) != _package(b))
    assert private == []
