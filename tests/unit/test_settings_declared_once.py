"""A setting is declared once: in its JSON schema, with its default and description.

Two checks that fail when a setting is declared a second time:

* every field of a frozen settings object is one property of its block's schema, holding a
  ``default`` and a ``description``, and every property of that block is read by one field (a
  field without a property, a property without a default, or a property nothing reads fails);
* no module under ``nkflow/`` repeats a schema default as a literal: neither as the fallback of
  ``mapping.get("<setting>", <literal>)`` nor as the default of a parameter named like the
  setting, when the literal equals that setting's schema default (the copy that drifts when the
  schema changes).
"""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from nkflow.clinical.endpoint_settings import EndpointSettings
from nkflow.clinical.uncertainty import UncertaintySettings
from nkflow.figures import FigureSettings
from nkflow.gating.perturb import PerturbSettings
from nkflow.qc import _config as qc_config
from nkflow.review.settings import ReviewSettings
from nkflow.schemas import load_schema

PACKAGE = Path(__file__).resolve().parents[2] / "nkflow"
SETTINGS_SCHEMAS = ("config", "qc", "endpoints", "uncertainty")

#: settings object -> (schema, path to its block, properties of the block read by another object)
OBJECTS: dict[type, tuple[str, tuple[str, ...], set[str]]] = {
    qc_config.TimeQcConfig: ("qc", ("time",), set()),
    qc_config.MarginConfig: ("qc", ("margins",), set()),
    qc_config.FloorConfig: ("qc", ("floors",), set()),
    qc_config.ViabilityConfig: ("qc", ("viability",), set()),
    qc_config.CompensationQcConfig: ("qc", ("compensation",), set()),
    qc_config.DateQcConfig: ("qc", ("dates",), set()),
    qc_config.AcquisitionConfig: ("qc", ("acquisition",), set()),
    EndpointSettings: ("endpoints", (), set()),
    UncertaintySettings: ("uncertainty", (), {"perturbation"}),
    PerturbSettings: ("uncertainty", ("perturbation",), set()),
    FigureSettings: ("config", ("figures",), set()),
    ReviewSettings: ("config", ("review",), set()),
}

#: fields taken from outside their block: ReviewSettings.results is the top-level ``results``
OUTSIDE = {(ReviewSettings, "results"): ("config", ("results",))}

#: a key named like a setting that is not one (found by the scan, checked by hand)
NOT_A_SETTING = {
    ("gating/tree.py", "random_state"): "a gate tree's auto-gate seed, validated with the tree",
}


def _schema_at(name: str, path: tuple[str, ...]) -> dict[str, Any]:
    schema = load_schema(name)
    for key in path:
        schema = schema["properties"][key]
    return schema


def _declared(prop: dict[str, Any]) -> bool:
    return "default" in prop and bool(str(prop.get("description", "")).strip())


@pytest.mark.parametrize("cls", list(OBJECTS), ids=lambda c: c.__name__)
def test_every_settings_field_is_one_schema_property_with_default_and_description(cls):
    name, path, elsewhere = OBJECTS[cls]
    props = _schema_at(name, path)["properties"]
    names = {f.name for f in fields(cls)}
    where = ".".join((name, *path))
    for f in sorted(names):
        if (cls, f) in OUTSIDE:
            assert _declared(_schema_at(*OUTSIDE[(cls, f)])), f"{cls.__name__}.{f}"
            continue
        assert f in props, f"{cls.__name__}.{f} has no property in {where}"
        assert _declared(props[f]), f"{where}.{f} lacks a default or a description"
    unread = set(props) - names - elsewhere
    assert not unread, f"{where}: {sorted(unread)} declared but read by no field"


def _schema_defaults() -> dict[str, list[Any]]:
    """Setting name -> its scalar schema defaults (a name may be declared in several blocks)."""
    out: dict[str, list[Any]] = {}

    def walk(schema: Any) -> None:
        for key, prop in (schema.get("properties") or {}).items():
            if isinstance(prop, dict):
                d = prop.get("default")
                if d is not None and not isinstance(d, dict | list):
                    out.setdefault(key, []).append(d)
                walk(prop)

    for name in SETTINGS_SCHEMAS:
        walk(load_schema(name))
    return out


def _repeated_defaults(tree: ast.AST, defaults: dict[str, list[Any]]) -> list[tuple[int, str]]:
    """(line, setting) of every literal in ``tree`` that repeats a schema default."""

    def same(key: str, node: ast.AST | None) -> bool:
        if key not in defaults or node is None:
            return False
        try:
            value = ast.literal_eval(node)
        except ValueError:
            return False
        return any(type(value) is type(d) and value == d for d in defaults[key])

    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            key = node.args[0] if len(node.args) == 2 else None
            if (
                node.func.attr in ("get", "setdefault")
                and isinstance(key, ast.Constant)
                and isinstance(key.value, str)
                and same(key.value, node.args[1])
            ):
                hits.append((node.lineno, key.value))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            pos = [*a.posonlyargs, *a.args]
            pairs = [*zip(pos[len(pos) - len(a.defaults) :], a.defaults, strict=True)]
            pairs += zip(a.kwonlyargs, a.kw_defaults, strict=True)
            hits += [(node.lineno, arg.arg) for arg, d in pairs if same(arg.arg, d)]
    return hits


def test_the_scan_finds_a_repeated_default():
    defaults = _schema_defaults()
    planted = ast.parse(
        'def f(x, tie_rule="closest_then_earlier"):\n'
        '    return x.get("threshold_per_ul", 100), x.get("threshold_per_ul", 7)\n'
    )
    assert sorted(_repeated_defaults(planted, defaults)) == [
        (1, "tie_rule"),
        (2, "threshold_per_ul"),
    ]


def test_no_module_repeats_a_schema_default():
    defaults = _schema_defaults()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for line, key in _repeated_defaults(ast.parse(path.read_text(encoding="utf-8")), defaults):
            if (rel, key) not in NOT_A_SETTING:
                found.append(f"nkflow/{rel}:{line}: {key}")
    assert found == [], "schema defaults repeated in code (read the settings instead)"
