"""The package's layers import one way (io <- data <- models <- config <- inference <- training <- cli, evaluation
beside) and no module imports itself through a cycle. Lazy imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vidseg"
LEAVES = {"vidseg", "vidseg.errors", "vidseg.constants", "vidseg.registry", "vidseg.machine"}
ALLOWED = {
    "io": {"io"},
    "data": {"io", "data"},
    "evaluation": {"io", "data", "evaluation"},
    "models": {"io", "data", "models", "weights"},
    "weights": {"io", "data", "models", "weights"},
    "config": {"io", "data", "models", "weights", "config"},
    "inference": {"io", "data", "models", "weights", "config", "inference"},
    "training": {"io", "data", "models", "weights", "config", "inference", "evaluation", "training"},
}
APPLICATION = {"cli", "bench", "demo", "app"}  # the top: may import anything


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from pkg import submodule`` imports the submodule
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def _layer(module: str) -> str:
    return "leaf" if module in LEAVES else module.split(".")[1]


def test_layers_import_one_way():
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        layer = _layer(module)
        for target in _imports(path, modules):
            target_layer = _layer(target)
            if target_layer == "leaf":
                continue
            if layer == "leaf" or (layer not in APPLICATION and target_layer not in ALLOWED[layer]):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "upward or sideways imports:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    modules = _modules()
    graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
    # A package's __init__ re-exports its submodules; a submodule reaching its own package is the cycle.
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start and not start.startswith(f"{node}.") and not node.startswith(f"{start}."):
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles))[:20])
