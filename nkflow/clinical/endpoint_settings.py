"""The ``endpoints`` settings: their defaults and the merge with a config's ``endpoints`` block.

Contract: the settings are declared once, in ``workflow/schemas/endpoints.schema.yaml`` (types,
ranges, defaults, descriptions); :func:`settings` validates a config's block against it and
returns ``DEFAULTS`` overlaid with the block (a new dict), or raises
:class:`~nkflow.errors.ConfigError` naming the field. Below the sheets and the endpoint code, so
both read the same settings without importing each other.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from nkflow.errors import ConfigError
from nkflow.schemas import check_against_schema, load_schema

#: Where the default ``dose_range_per_kg`` comes from (stated in the report when it fires).
DOSE_RANGE_SOURCE = (
    "the protocol's dosing scheme of 2-5 x 10^6 NK cells/kg per infusion (DOMAIN.md section 1)"
)


@functools.lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    """The endpoints schema, read once (only read, never modified)."""
    return load_schema("endpoints")


#: every setting's default, read from ``workflow/schemas/endpoints.schema.yaml`` (declared
#: there once; nothing here repeats a value)
DEFAULTS: dict[str, Any] = {k: v["default"] for k, v in _schema()["properties"].items()}


def settings(config: dict[str, Any]) -> dict[str, Any]:
    """``DEFAULTS`` overlaid with ``config['endpoints']`` (nested dicts merged one level).

    The schema is the validator (unknown keys, types, enums, ranges); only the rules across
    fields are checked here.

    Raises
    ------
    ConfigError
        A value the schema refuses (the field named), or a dose range upside down.
    """
    user = dict((config or {}).get("endpoints") or {})
    check_against_schema(user, _schema(), source="config", prefix="endpoints")
    out = copy.deepcopy(DEFAULTS)
    for k, v in user.items():
        if isinstance(DEFAULTS[k], dict):
            out[k].update(v or {})
        else:
            out[k] = v
    lo, hi = out["dose_range_per_kg"]
    if lo > hi:
        raise ConfigError(
            f"config: field 'endpoints.dose_range_per_kg': found [{lo:g}, {hi:g}]; expected "
            "[low, high] NK cells/kg per infusion with low <= high, e.g. [2.0e+6, 5.0e+6]; "
            "fix: swap the two numbers"
        )
    return out
