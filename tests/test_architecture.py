"""docs/architecture.md stays true: the modules it names exist, and it names every module."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "architecture.md"
PACKAGES = ("pneumo", "app")


def named_modules() -> set[str]:
    """Every `pneumo/….py` or `app/….py` path the page names (in backticks or not)."""
    text = DOC.read_text(encoding="utf-8")
    return set(re.findall(r"\b(?:pneumo|app)/[\w/]*\w\.py\b", text))


def existing_modules() -> set[str]:
    """Every module of the packages on disk now (compared at run time: a module added or
    removed since the page was written makes the test fail)."""
    return {p.relative_to(REPO).as_posix() for package in PACKAGES
            for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts}


def test_every_module_named_exists():
    missing = sorted(m for m in named_modules() if not (REPO / m).is_file())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_module_is_named():
    unnamed = sorted(existing_modules() - named_modules())
    assert not unnamed, f"docs/architecture.md does not name: {unnamed}"


# --------------------------------------------------------------------------- imports


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str = "pneumo") -> dict[str, set[str]]:
    """{module: the package's modules it imports}, imports inside functions included."""
    import ast

    files = {_module_name(p): p for p in (REPO / package).rglob("*.py")
             if "__pycache__" not in p.parts}
    edges: dict[str, set[str]] = {m: set() for m in files}
    for name, path in files.items():
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                root = (".".join(base[:len(base) - node.level + 1] + [node.module or ""]).strip(".")
                        if node.level else node.module or "")
                targets = [f"{root}.{a.name}" if f"{root}.{a.name}" in files else root
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target not in (name, package):
                    edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_pneumo_modules():
    found = cycles(import_graph())
    assert not found, f"import cycles (imports inside functions count): {found}"


def test_the_serving_runtime_and_the_operating_point_import_no_tensorflow():
    """pneumo.litert serves without TensorFlow; pneumo.operating_point is numpy + scikit-learn."""
    import ast

    for module in ("litert", "operating_point"):
        tree = ast.parse((REPO / "pneumo" / f"{module}.py").read_text(encoding="utf-8"))
        heavy = sorted({alias.name for node in ast.walk(tree)
                        if isinstance(node, (ast.Import, ast.ImportFrom))
                        for alias in (node.names if isinstance(node, ast.Import)
                                      else [ast.alias(node.module or "")])
                        if alias.name.split(".")[0] in ("tensorflow", "keras", "tf_keras_vis")})
        assert not heavy, f"pneumo/{module}.py imports {heavy}"
        graph = import_graph()
        assert not graph[f"pneumo.{module}"] - {"pneumo.errors", "pneumo.metrics",
                                                "pneumo.layers"}, graph[f"pneumo.{module}"]
