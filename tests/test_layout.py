"""The package layout rules: no import circles between modules, stage modules below the gallery,
search and distributed layers, no module importing another's private names, no file over the limit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "biomatch"
#: Modules of one pipeline stage each: they never import the layers built on them.
STAGES = ("io", "extraction", "template", "descriptors", "index", "scoring", "calibration", "formats",
          "synthetic", "evaluation", "audit", "encryption")
UPPER = ("gallery", "distributed", "search", "cli", "bench")
#: The project's limit on a file of biomatch/ (lines): "about 800".
MAX_LINES = 800
#: Files still over it, to be split by their owners (issue 20): none may grow past its cap here,
#: and no other file may join them.
OVER_LIMIT = {"index.py": 810}
#: Private names still imported across modules, to be made public by their owners (no new ones).
KNOWN_PRIVATE_IMPORTS: set = set()


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(name: str, path: Path, modules: dict) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import in the file, function-level ones too."""
    out = []
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("biomatch")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("biomatch"):
                continue
            sub = [a.name for a in node.names if f"{target}.{a.name}" in modules]
            out += [(f"{target}.{s}", []) for s in sub]
            names = [a.name for a in node.names if f"{target}.{a.name}" not in modules]
            if names or not sub:
                out.append((target, names))
    return out


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return modules, {m: _imports(m, p, modules) for m, p in modules.items()}


def test_no_import_circles_between_modules(graph):
    _, imports = graph
    edges: dict[str, set] = {}
    for m, imps in imports.items():
        for target, _ in imps:
            if _unit(target) != _unit(m) and _unit(target) != "biomatch":
                edges.setdefault(_unit(m), set()).add(_unit(target))
    seen, cycles = set(), []

    def visit(node, path):
        for n in sorted(edges.get(node, ())):
            if n in path:
                cycles.append(path[path.index(n):] + [n])
            elif n not in seen:
                visit(n, path + [n])
        seen.add(node)

    for start in sorted(edges):
        visit(start, [start])
    assert not cycles, cycles


def test_stage_modules_never_import_the_layers_above(graph):
    _, imports = graph
    bad = [(m, t) for m, imps in imports.items() if _unit(m).split(".")[-1] in STAGES
           for t, _ in imps if _unit(t).split(".")[-1] in UPPER]
    assert not bad


def test_no_module_imports_another_modules_private_names(graph):
    _, imports = graph
    def is_module(package: str, name: str) -> bool:  # a private module (a compiled kernel) is a module, not a name
        import importlib.util

        try:
            return importlib.util.find_spec(f"{package}.{name}") is not None
        except (ImportError, AttributeError):  # ``package`` is a module, not a package
            return False

    bad = [(m, t, n) for m, imps in imports.items() for t, names in imps for n in names
           if n.startswith("_") and not n.startswith("__") and t != m and not is_module(t, n)
           and (m, t, n) not in KNOWN_PRIVATE_IMPORTS]
    assert not bad


def test_no_file_over_the_size_limit(graph):
    modules, _ = graph
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in modules.values()}
    big = {f: n for f, n in sizes.items() if n > OVER_LIMIT.get(f, MAX_LINES)}
    assert not big
