"""JSON Schemas of the configuration and the sheets (``workflow/schemas``): loading and checking.

Contract: :func:`load_schema` returns one schema; :func:`fill_defaults` inserts its declared
defaults; :func:`check_against_schema` raises
:class:`~nkflow.errors.ConfigError` naming the file, the field (dotted path), what was found and
what was expected. The bottom of the validation stack: it imports nothing else of nkflow.
"""

from __future__ import annotations

import json
from pathlib import Path
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
        return yaml.safe_load(fh)


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


def _field_path(parts: Any) -> str:
    path = ".".join(str(p) for p in parts)
    return path or "(top level)"


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
    field = _field_path(parts)
    hint = err.schema.get("description") if isinstance(err.schema, dict) else None
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        msg = f"{source}: field '{field}': {err.message}; allowed keys: {', '.join(allowed)}"
    elif err.validator == "required":
        msg = f"{source}: field '{field}': {err.message}"
    else:
        found = json.dumps(err.instance, default=str)
        if len(found) > 80:
            found = found[:77] + "..."
        msg = (
            f"{source}: field '{field}': found {found}, expected {err.message.split(' is ', 1)[-1]}"
        )
        if err.validator not in ("type", "enum", "pattern", "minimum", "maximum"):
            msg = f"{source}: field '{field}': {err.message}"
    if hint:
        msg += f" -- '{field}' is: {hint.strip()} (see the comments in config/config.yaml)"
    raise ConfigError(msg)
