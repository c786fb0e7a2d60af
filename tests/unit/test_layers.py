"""The package's layers point one way, and no module imports another in a cycle.

Every ``import`` in ``nkflow/`` (including the ones inside functions, which keep start-up fast but
are dependencies all the same) is read with :mod:`ast`. A module may import from its own layer or
from a lower one; importing from a stage above is the fault issue #13 names ("no module imports
from a stage above it"). The layer table is the one in ``docs/DEVELOPING.md``; a test below keeps
the two in step, so moving a module means saying where it now sits.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "nkflow"
DEVELOPING = PACKAGE.parent / "docs" / "DEVELOPING.md"

# lowest first; a module's layer is that of its longest listed prefix
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "nkflow",
        "nkflow.errors",
        "nkflow.columns",
        "nkflow.tables",
        "nkflow.schemas",
        "nkflow.reasons",
    ),
    ("nkflow.provenance", "nkflow.synthetic"),
    ("nkflow.fcs",),
    ("nkflow.gating",),
    ("nkflow.qc",),
    ("nkflow.clinical",),
    ("nkflow.config",),
    ("nkflow.figures",),
    ("nkflow.tube",),
    ("nkflow.plan", "nkflow.report"),
    ("nkflow.review",),
    ("nkflow.qualify",),
    ("nkflow.stages",),
    ("nkflow.cli",),
)


def module_name(path: Path) -> str:
    """``nkflow/fcs/io.py`` -> ``nkflow.fcs.io``; a package's ``__init__`` is the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The layer of the longest prefix of ``module`` that the table lists."""
    best, best_len = None, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best_len:
                best, best_len = i, len(name)
    if best is None:
        raise AssertionError(f"{module}: not in the layer table of tests/unit/test_layers.py")
    return best


def imports_of(path: Path) -> set[str]:
    """The ``nkflow`` modules a file imports (``from nkflow.x import y`` counts ``nkflow.x.y``
    when that is a module, else ``nkflow.x``)."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            if base.split(".")[0] != "nkflow":
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "nkflow")
    found.discard(own)
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_imports_from_a_stage_above_it():
    upward = [
        f"{mod} (layer {layer_of(mod)}) imports {dep} (layer {layer_of(dep)})"
        for mod, deps in graph().items()
        for dep in sorted(deps)
        if layer_of(dep) > layer_of(mod)
    ]
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_no_import_cycles():
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The checks can fail: a gating module that imports the report is caught."""
    fake = tmp_path / "nkflow"
    (fake / "gating").mkdir(parents=True)
    (fake / "report").mkdir()
    for p in ("__init__.py", "gating/__init__.py", "report/__init__.py"):
        (fake / p).write_text("")
    (fake / "gating" / "tree.py").write_text("def f():\n    from nkflow.report import x\n")
    (fake / "report" / "x.py").write_text("from nkflow.gating import tree\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(
        AssertionError, match=r"nkflow.gating.tree \(layer 3\) imports nkflow.report"
    ):
        test_no_module_imports_from_a_stage_above_it()
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles()


def test_developing_md_lists_the_same_layers():
    text = DEVELOPING.read_text(encoding="utf-8")
    block = re.search(r"<!-- layers -->\n(.*?)<!-- /layers -->", text, re.S)
    assert block, "docs/DEVELOPING.md: no <!-- layers --> block"
    rows = [r for r in block.group(1).splitlines() if re.match(r"\|\s*\d+\s*\|", r)]
    documented = [tuple(sorted(re.findall(r"`([a-z_.]+)`", r.split("|")[2]))) for r in rows]
    expected = [
        tuple(sorted(n.removeprefix("nkflow.") or "nkflow" for n in names)) for names in LAYERS
    ]
    assert documented == expected
