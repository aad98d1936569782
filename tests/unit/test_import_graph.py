"""The package's import graph: no cycles, and the stages depend on each other in one direction only.

The graph is built from the source with ``ast`` (nothing is imported), counting every ``import`` statement,
including the ones inside functions: a function-level import hides a cycle from Python but not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "focaltag"

# Lower layers never import higher ones. Top-level modules (focaltag.errors, focaltag.metrics, ...) are the
# base every stage may use. serve/ is an application beside cli/: above everything it serves, and cli/ may
# start it (``focaltag serve``), so cli sits one step higher. ray/ (``focaltag.ray``, the ``[ray]`` extra) runs
# the tagger and the cache writer on a cluster: it uses inference/ and audio/, nothing below may import it (they
# work without Ray), and cli/ calls it; it is a package rather than a top-level module because the base layer
# may not import inference/.
LAYERS: tuple[str, ...] = (
    "<base>", "data", "audio", "models", "training", "evaluation", "inference", "outputs", "library", "ray",
    "experiments", "serve",
    "cli",
)

# Known exceptions to the layer order, each with the reason it is tolerated; keep this empty if possible.
# The test fails when an entry is fixed, so the list cannot go stale.
ALLOWED_LAYER_VIOLATIONS: dict[tuple[str, str], str] = {
    ("focaltag.data.torch_dataset", "focaltag.audio.cache"):
        "the training chunk datasets read the waveform cache; they move with issue 14's chunk-reader work",
    ("focaltag.data.torch_dataset", "focaltag.audio.chunks"):
        "the training chunk datasets read the waveform cache; they move with issue 14's chunk-reader work",
}


def _modules() -> dict[str, tuple[Path, bool]]:
    mods: dict[str, tuple[Path, bool]] = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (path, is_pkg)
    return mods


def _targets(node: ast.AST, package: str, mods: dict[str, tuple[Path, bool]]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = package.split(".")
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
    # ``from pkg import sub`` imports the submodule pkg.sub; ``from pkg import name`` imports pkg.
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the focaltag modules it imports (anywhere in the file)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            for target in _targets(node, package, mods):
                while target and target not in mods:  # ``import focaltag.x.y.attr`` -> the module part
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS):
        return LAYERS.index(parts[1]) if parts[1] in LAYERS else -1
    if module == f"{PACKAGE}.__main__":
        return len(LAYERS) - 1  # ``python -m focaltag`` runs the CLI
    return 0


def test_every_package_is_placed_in_a_layer():
    packages = {name.split(".")[1] for name, (_p, is_pkg) in _modules().items()
                if is_pkg and name.count(".") >= 1}
    unplaced = sorted(p for p in packages if p not in LAYERS)
    assert not unplaced, f"add these packages to LAYERS in {__file__}: {unplaced}"


def test_the_graph_is_found():
    graph = import_graph()
    # sanity: the parser sees both module-level and function-level imports
    assert "focaltag.errors" in graph["focaltag.cli"]
    assert any(PACKAGE + ".inference" in t for t in graph["focaltag.cli.tag"])
    assert len(graph) > 40


def test_no_import_cycles():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles (modules that reach each other): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_layers_point_one_way():
    graph = import_graph()
    bad = sorted((a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))
    unexpected = [f"{a} -> {b}" for a, b in bad if (a, b) not in ALLOWED_LAYER_VIOLATIONS]
    assert not unexpected, ("lower layers must not import higher ones (" + " -> ".join(LAYERS) + "): "
                            + ", ".join(unexpected))
    stale = [f"{a} -> {b}" for a, b in ALLOWED_LAYER_VIOLATIONS if (a, b) not in bad]
    assert not stale, f"remove fixed entries from ALLOWED_LAYER_VIOLATIONS: {stale}"


@pytest.mark.parametrize("text, cycles", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_cycle_finder(text, cycles):
    assert _cycles(text) == cycles
