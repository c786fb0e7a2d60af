"""JSON Schemas of the configuration and the sheets (``workflow/schemas``): loading and checking.

Contract: :func:`load_schema` returns one schema; :func:`fill_defaults` inserts its declared
defaults; :func:`check_against_schema` raises
:class:`~nkflow.errors.ConfigError` naming the file, the field (dotted path), what was found and
what was expected; a block marked ``x-reason-severities`` takes its keys and defaults from the
reason registry (:mod:`nkflow.reasons`). :func:`build_settings` is the one way a block of
settings becomes a frozen settings object: the schema validates and holds every default, the
object only the values. The bottom of the validation stack: it imports nothing else of nkflow
but the registry.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nkflow.errors import ConfigError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"  # symlink to workflow/schemas


def load_schema(name: str) -> dict[str, Any]:
    """Load ``workflow/schemas/<name>.schema.yaml``.

    Raises
    ------
    ConfigError
        When the schema file is missing (the installation is incomplete).
    """
    import yaml

    path = SCHEMA_DIR / f"{name}.schema.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{path}: schema for sheet '{name}' not found; expected it in {SCHEMA_DIR}; "
            "fix: reinstall nkflow from the repository (pip install -e .)"
        )
    with path.open(encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    _fill_reason_severities(schema)
    return schema


def _fill_reason_severities(node: Any) -> None:
    """Give a block marked ``x-reason-severities`` its keys and defaults from the reason registry.

    So the registry (:data:`nkflow.reasons.SEVERITY_KEYS`, ``DEFAULT_SEVERITY``) is their one
    declaration.
    """
    if not isinstance(node, dict):
        return
    if node.get("x-reason-severities"):
        from nkflow.reasons import DEFAULT_SEVERITY, SEVERITY_KEYS

        node["propertyNames"] = {"enum": list(SEVERITY_KEYS)}
        node["default"] = dict(DEFAULT_SEVERITY)
    for sub in node.get("properties", {}).values():
        _fill_reason_severities(sub)


@functools.lru_cache(maxsize=32)
def _cached_schema(name: str) -> dict[str, Any]:
    """A schema read once per process (only read, never modified)."""
    return load_schema(name)


def build_settings(
    cls: type, raw: Any, schema: str, *, prefix: str, path: tuple[str, ...] = ()
) -> Any:
    """The frozen dataclass ``cls`` from a (possibly partial, ``None``: all defaults) block.

    The block is checked against ``workflow/schemas/<schema>.schema.yaml`` (at the property
    ``path``; ``prefix`` is its dotted path in messages) and filled with its defaults; each field
    takes one setting, a whole number written ``10.0`` an ``int``, a list a ``tuple``, a mapping
    a read-only mapping.

    Raises
    ------
    ConfigError
        Naming the field the schema refuses.
    """
    sub = _cached_schema(schema)
    for key in path:
        sub = sub["properties"][key]
    block = copy.deepcopy(dict(raw or {}))
    check_against_schema(block, sub, source="config", prefix=prefix)
    fill_defaults(block, sub)
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        v = block[f.name]
        if v is not None and f.type == "int":
            v = int(v)
        elif v is not None and f.type in ("float", "float | None"):
            v = float(v)
        elif str(f.type).startswith("tuple"):
            v = tuple(v)  # a list in YAML; a tuple keeps the frozen object hashable
        elif str(f.type).startswith("Mapping"):
            v = MappingProxyType(v)
        kw[f.name] = v
    return cls(**kw)


_EXPECTED_TYPE = {
    "integer": "a whole number",
    "number": "a number",
    "string": "text",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping of names to values",
    "null": "nothing (null)",
}


def _describe(schema: Any) -> str:
    """A sub-schema in words (the alternatives of an ``anyOf``)."""
    if not isinstance(schema, dict):
        return str(schema)
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    if "pattern" in schema:
        return f"text matching the pattern {schema['pattern']}"
    if "type" in schema:
        kinds = [schema["type"]] if isinstance(schema["type"], str) else list(schema["type"])
        return " or ".join(_EXPECTED_TYPE.get(k, k) for k in kinds)
    return schema.get("description", "a value of another shape")


def expected_text(err: Any) -> str:
    """What a failing JSON-schema keyword expects, in words (not jsonschema's message)."""
    kw, v = err.validator, err.validator_value
    if kw == "type":
        kinds = [v] if isinstance(v, str) else list(v)
        return " or ".join(_EXPECTED_TYPE.get(k, k) for k in kinds)
    if kw == "enum":
        return "one of " + ", ".join(map(str, v))
    if kw == "const":
        return repr(v)
    if kw in ("anyOf", "oneOf") and isinstance(v, list):
        return " or ".join(_describe(sub) for sub in v)
    one = v == 1
    words = {
        "minimum": f"a value of at least {v}",
        "maximum": f"a value of at most {v}",
        "exclusiveMinimum": f"a value greater than {v}",
        "exclusiveMaximum": f"a value less than {v}",
        "minItems": "a non-empty list" if one else f"a list of at least {v} items",
        "maxItems": f"a list of at most {v} item{'' if one else 's'}",
        "minLength": "non-empty text" if one else f"text of at least {v} characters",
        "maxLength": f"text of at most {v} characters",
        "minProperties": "a non-empty mapping" if one else f"a mapping of at least {v} entries",
        "pattern": f"text matching the pattern {v}",
        "uniqueItems": "a list without repeats",
    }
    if kw in words:
        return words[kw]
    return err.message


def fill_defaults(instance: Any, schema: dict[str, Any]) -> None:
    """Insert ``default`` values of object properties that are absent (in place)."""
    if not isinstance(instance, dict) or not isinstance(schema, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if not isinstance(sub, dict):
            continue
        if key not in instance and "default" in sub:
            instance[key] = json.loads(json.dumps(sub["default"]))
        if key in instance:
            fill_defaults(instance[key], sub)


def check_against_schema(
    data: Any, schema: dict[str, Any], *, source: str, prefix: str = ""
) -> None:
    """Validate ``data`` against ``schema``; raise ConfigError naming the first bad field.

    Parameters
    ----------
    data
        The parsed document (or block of it).
    schema
        A JSON schema (draft 2020-12).
    source
        The file (or option) the data came from, used in the message.
    prefix
        Dotted path of ``data`` inside the document, for messages about a block.

    Raises
    ------
    ConfigError
        With file, field, found value, expectation and the schema's description as the fix.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(e.absolute_path), e.message))
    if not errors:
        return
    err = errors[0]
    parts = ([prefix] if prefix else []) + list(err.absolute_path)
    field = ".".join(str(p) for p in parts) or "(top level)"
    hint = err.schema.get("description") if isinstance(err.schema, dict) else None
    renamed = err.schema.get("x-renamed", {}) if err.validator == "additionalProperties" else {}
    if old := sorted(k for k in renamed if k in err.instance):
        where, new = "".join(f"{p}." for p in parts), renamed[old[0]]
        msg = (
            f"{source}: field '{where}{old[0]}': this setting has been renamed; expected "
            f"'{where}{new}'; fix: rename the key to {new} (the value means the same)"
        )
        field, hint = where + new, err.schema["properties"][new].get("description")
    elif err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        msg = f"{source}: field '{field}': {err.message}; allowed keys: {', '.join(allowed)}"
    elif err.validator == "required":
        have = err.instance if isinstance(err.instance, dict) else {}
        gone = [k for k in err.validator_value if k not in have]
        msg = (
            f"{source}: field '{field}': required key(s) {', '.join(gone)} missing; found keys "
            f"{', '.join(map(str, have)) or 'none'}"
        )
    else:
        found = json.dumps(err.instance, default=str)
        if len(found) > 80:
            found = found[:77] + "..."
        msg = f"{source}: field '{field}': found {found}; expected {expected_text(err)}"
    if hint:
        msg += f" -- '{field}' is: {hint.strip()} (see the comments in config/config.yaml)"
    raise ConfigError(msg)
