"""The reason-code registry (nkflow/reasons.py, workflow/schemas/reasons.yaml): every code the
package emits is registered, config/config.yaml documents every configurable severity, the
reason tables of config/README.md and docs/DEVELOPING.md agree with the registry, and a
:class:`Reason` is written and read back as ``code[:detail]``."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from nkflow.reasons import CODES, DEFAULT_SEVERITY, Reason

ROOT = Path(__file__).resolve().parents[2]

# Where a code goes: call name -> argument positions holding a code ("gate_" calls hold the
# gating engine's flag code, which QC reports as gate_<code>).
_CODE_ARGS = {"make_check": (2,), "_not_assessed": (3,), "fail": (0, 1), "not_computed": (0,)}
_CODE_ARGS |= {"Reason": (0,)}
_GATE_ARGS = {"FitFailure": (0,), "_flag": (0,)}
_CODE_LISTS = {"reasons", "flags", "codes", "missing", "not_found"}
_CODE_KEYS = {"reason", "flags", "missing", "reason_code"}
_CODE = re.compile(r"^[a-z][a-z0-9_]*[a-z0-9]$")


def _strings(node: ast.AST | None, scope: ast.AST | None) -> Iterator[str]:
    """The string literals ``node`` may evaluate to (leading literal of an f-string or a sum;
    a local name: the literals assigned to it, or its default, in ``scope``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.JoinedStr) and node.values:
        yield from _strings(node.values[0], None)
    elif isinstance(node, ast.BinOp):
        yield from _strings(node.left, scope)
    elif isinstance(node, ast.IfExp):
        yield from _strings(node.body, scope)
        yield from _strings(node.orelse, scope)
    elif isinstance(node, (ast.List, ast.Tuple)):
        for elt in node.elts:
            yield from _strings(elt, scope)
    elif isinstance(node, ast.Name) and scope is not None:
        for n in ast.walk(scope):
            if isinstance(n, ast.Assign):
                for target in n.targets:
                    names = target.elts if isinstance(target, ast.Tuple) else [target]
                    values = n.value.elts if isinstance(n.value, ast.Tuple) else None
                    for i, t in enumerate(names):
                        if isinstance(t, ast.Name) and t.id == node.id:
                            v = values[i] if values and len(values) == len(names) else n.value
                            yield from _strings(v, None)
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = n.args.args[len(n.args.args) - len(n.args.defaults) :]
                for a, d in zip(args, n.args.defaults, strict=True):
                    if a.arg == node.id:
                        yield from _strings(d, None)


def _callee(func: ast.AST | None) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def emitted_codes(source: str, gating: bool = False) -> Iterator[tuple[str, int]]:
    """``(code, line)`` for every literal code ``source`` passes where codes go: the code
    argument of the check, failure and reason constructors, items added to a list of reasons,
    flags or missing inputs, values stored under a reason/flags key (``gating``: also the
    ``code`` of a flag record)."""
    tree = ast.parse(source)
    scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]

    def scope_of(node: ast.AST) -> ast.AST | None:
        inside = [f for f in scopes if f.lineno <= node.lineno <= (f.end_lineno or 0)]
        return max(inside, key=lambda f: f.lineno, default=None)

    for n in ast.walk(tree):
        found: list[tuple[str, ast.AST]] = []
        if isinstance(n, ast.Call):
            name = _callee(n.func)
            for table, prefix in ((_CODE_ARGS, ""), (_GATE_ARGS, "gate_")):
                for i in table.get(name, ()):
                    if i < len(n.args):
                        found += [(prefix + s, n) for s in _strings(n.args[i], scope_of(n))]
            if name == "note" and len(n.args) == 3:  # tube.py: note(check, code, message)
                found += [(s, n) for s in _strings(n.args[1], scope_of(n))]
            for kw in n.keywords:
                if kw.arg in _CODE_KEYS:
                    found += [(s, n) for s in _strings(kw.value, scope_of(n))]
            target = n.func.value if isinstance(n.func, ast.Attribute) else None
            if name in ("append", "extend") and _callee(target) in _CODE_LISTS:
                for a in n.args:
                    found += [(s, n) for s in _strings(a, scope_of(n))]
        elif isinstance(n, ast.Dict) and gating:
            for k, v in zip(n.keys, n.values, strict=True):
                if isinstance(k, ast.Constant) and k.value == "code":
                    found += [("gate_" + s, n) for s in _strings(v, None)]
        elif isinstance(n, ast.Assign):
            for t in n.targets:
                names = t.elts if isinstance(t, ast.Tuple) else [t]
                values = n.value.elts if isinstance(n.value, ast.Tuple) else None
                for i, tt in enumerate(names):
                    v = values[i] if values and len(values) == len(names) else n.value
                    key = tt.slice if isinstance(tt, ast.Subscript) else None
                    keyed = isinstance(key, ast.Constant) and key.value in _CODE_KEYS
                    if keyed or (isinstance(tt, ast.Name) and tt.id == "codes"):
                        found += [(s, n) for s in _strings(v, scope_of(n))]
        for text, node in found:
            code = text.split(":", 1)[0]
            if _CODE.match(code):
                yield code, node.lineno


def test_every_emitted_code_is_registered():
    unknown = []
    for path in sorted((ROOT / "nkflow").rglob("*.py")):
        gating = "gating" in path.parts
        for code, line in emitted_codes(path.read_text(encoding="utf-8"), gating=gating):
            if code not in CODES:
                unknown.append(f"{path.relative_to(ROOT)}:{line}: {code}")
    assert not unknown, "register these in workflow/schemas/reasons.yaml:\n" + "\n".join(unknown)


def test_the_scan_finds_codes_where_they_go():
    source = """
def f(cfg, exc, ok):
    code = "margin_x" if ok else "margin_y"
    reasons.append("visit_z")
    flags.append(f"flag_w:{ok}")
    e["reason"] = "reason_v"
    return make_check(cfg, "margins", code, None, None, "m"), fail("fail_u", exc)

def g(n, cfg, message, code="default_t"):
    return make_check(cfg, "time_qc", code, None, None, message)
"""
    found = {c for c, _ in emitted_codes(source)}
    expected = {"margin_x", "margin_y", "visit_z", "flag_w", "reason_v", "fail_u", "default_t"}
    assert found == expected
    assert {c for c, _ in emitted_codes('x = {"code": "no_peak"}', gating=True)} == {"gate_no_peak"}


def test_registry_entries_are_complete():
    stages = {"tube", "gating", "merge", "endpoints", "readout", "plan"}
    for code, entry in CODES.items():
        assert _CODE.match(code), code
        assert entry.stage in stages, code
        assert entry.written_in and entry.meaning.strip(), code
        assert entry.severity in (None, "PASS", "WARN", "FAIL"), code


def test_config_yaml_documents_every_configurable_severity():
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text(encoding="utf-8"))
    assert list(config["qc"]["severity"].items()) == list(DEFAULT_SEVERITY.items())


def _readme_codes(section_start: str, section_end: str) -> set[str]:
    text = (ROOT / "config/README.md").read_text(encoding="utf-8")
    section = text[text.index(section_start) : text.index(section_end)]
    cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {m.split(":")[0] for cell in cells for m in re.findall(r"`([^`]+)`", cell)}


def test_readme_reason_and_flag_tables_list_the_registry():
    documented = _readme_codes("### Reason codes and flags", "### plan.tsv")
    columns = {"visits.reason", "visits.flags", "endpoints.reason", "endpoints.flags"}
    registered = {c for c, e in CODES.items() if columns & set(e.written_in)}
    assert documented == registered


def test_readme_uncertainty_status_lists_the_registry():
    text = (ROOT / "config/README.md").read_text(encoding="utf-8")
    line = next(x for x in text.splitlines() if x.startswith("| `uncertainty_status`"))
    documented = set(re.findall(r"`([a-z_]+)`", line.split("`not_computed:<reason>`:")[1]))
    assert documented == {c for c, e in CODES.items() if "endpoints.uncertainty" in e.written_in}


def test_developing_md_verdict_codes_are_registered():
    text = (ROOT / "docs/DEVELOPING.md").read_text(encoding="utf-8")
    verdicts = text[text.index("## Verdicts") :]
    codes = re.findall(r"`([a-z_]+)`", verdicts[verdicts.index("reason codes:") :].split(")")[0])
    assert "no_sample_in_window" in codes
    assert set(codes) <= set(CODES)


def test_reason_is_written_and_read_back():
    r = Reason("missing_marker", "CD56")
    assert str(r) == "missing_marker:CD56"
    assert Reason.parse(str(r)) == r
    assert Reason.parse("verdict_unstable:nk.CD56:1.2-1.5").detail == "nk.CD56:1.2-1.5"
    assert str(Reason.parse("fcs_unreadable")) == "fcs_unreadable"
