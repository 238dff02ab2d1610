"""The package's imports point one way: no module reaches back into one that imports it (function-level imports
included), so a change in a lower layer never needs the upper one."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "xai_cxr"


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{module}.{a.name}" for a in node.names] + [module]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in modules and t != name:
                found.add(t)
                break
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_walker_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_package_has_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert "xai_cxr.commands" in graph["xai_cxr.cli"]            # the walker sees function-level imports
    assert _cycles(graph) == []


def _unit(module: str) -> str:
    """The layer unit of a module: the package itself, or its top-level module or sub-package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _upward(graph: dict[str, set[str]], layers) -> list[tuple[str, str]]:
    """Imports that reach a unit of a higher layer, or another unit of the same layer."""
    level = {unit: i for i, group in enumerate(layers) for unit in group}
    return sorted((a, b) for a, targets in graph.items() for b in targets
                  if _unit(a) != _unit(b) and level[_unit(b)] >= level[_unit(a)])


def test_the_layer_check_finds_a_planted_upward_import():
    layers = (("config",), ("data",), ("models",))
    graph = {"xai_cxr.data.decode": {"xai_cxr.config"}, "xai_cxr.models.ood": {"xai_cxr.data.decode"},
             "xai_cxr.data.scan": {"xai_cxr.models.ood"}}
    assert _upward(graph, layers) == [("xai_cxr.data.scan", "xai_cxr.models.ood")]


def test_no_module_imports_a_higher_layer():
    from xai_cxr import LAYERS
    modules = _modules()
    units = {_unit(m) for m in modules}
    assert units == {u for group in LAYERS for u in group}, "every unit of the package has a place in LAYERS"
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _upward(graph, LAYERS) == []
