"""Column declarations of the tables nkflow exports, and the one writer that formats them.

Contract
--------
* A :class:`Table` is an ordered tuple of :class:`Column` (name, type, unit, definition, allowed
  values). The writers of the tables declared with it (:mod:`nkflow.clinical.kinetics`,
  :mod:`nkflow.clinical.exports`) take their header, their cell format and their checks from the
  declaration, and the data dictionary (:func:`nkflow.clinical.exports.data_dictionary`) is generated
  from the same objects, so the two cannot drift.
* ``visits.tsv`` and ``endpoints.tsv`` keep their writer (:func:`nkflow.tables.tsv_bytes`); their
  column order, units and definitions are one mapping beside the writer
  (``nkflow.clinical.visits.VISIT_DEFINITIONS``, ``nkflow.clinical.endpoints.ENDPOINT_DEFINITIONS``)
  and their types come from ``nkflow.clinical.visits.KINDS``, so a column cannot be written
  without a definition. :func:`declare_from_writer` still refuses a column list and definitions
  that disagree, naming the columns.
* :func:`format_cell` is pure: missing (None, NaN) -> empty cell, never 0; integers plain;
  numbers :data:`nkflow.tables.FLOAT_FORMAT` (full precision for numbers nkflow computed, verbatim digits for numbers read
  from a table); booleans ``true``/``false``; dates ISO.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nkflow import tables
from nkflow.errors import ConfigError

#: the column types a dictionary may name, with what a cell of each looks like
TYPES = {
    "text": "free text",
    "id": "identifier matching ^[A-Za-z0-9][A-Za-z0-9._-]*$",
    "integer": "whole number",
    "number": "decimal number (written %.10g, or as read from the source table)",
    "boolean": "true or false",
    "date": "calendar date YYYY-MM-DD",
    "codes": "';'-joined codes (empty = none)",
}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Column:
    """One column of an exported table.

    Attributes
    ----------
    name
        Header text.
    type
        One of :data:`TYPES`.
    unit
        Unit of the values (``cells/uL``, ``%``, ``day``); empty when the column has none.
    definition
        What the value means, in one or two sentences.
    allowed
        The allowed values (an empty tuple: any value of the type).
    """

    name: str
    type: str
    unit: str
    definition: str
    allowed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Table:
    """An exported table: its file name, what a row is, and its columns in order.

    The file name is relative to the results directory.
    """

    name: str
    path: str
    row: str
    columns: tuple[Column, ...]

    def names(self) -> tuple[str, ...]:
        """Column names in order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        """The declaration of column ``name`` (KeyError naming the table when absent)."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.path}: no column {name!r}")


def format_cell(column: Column, value: Any) -> str:
    """The text of one cell of ``column`` (see the module contract).

    It is :func:`nkflow.tables.format_cell` of the column's kind; a number that is not finite is
    refused.
    """
    kind = column.type if column.type in ("boolean", "integer", "number") else "text"
    if kind == "number" and not isinstance(value, str) and value is not None and value == value:
        if not math.isfinite(float(value)):
            raise ValueError(f"{column.name}: {value!r} is not a finite number")
        value = float(value)
    return tables.format_cell(value, kind)


def table_text(table: Table, rows: Iterable[Mapping[str, Any]], *, delimiter: str = "\t") -> str:
    r"""The table as text: header, one line per row, ``\n`` endings.

    Tab-separated cells never contain a tab (replaced by a space); comma-separated output quotes
    a cell only when it holds a comma, quote or newline (RFC 4180).
    """
    names = table.names()
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(names)
    for row in rows:
        writer.writerow([format_cell(c, row.get(c.name)) for c in table.columns])
    return buf.getvalue()


def cell_problems(column: Column, text: str) -> list[str]:
    """What is wrong with one written cell of ``column`` (empty list: nothing)."""
    if text == "":
        return []
    kind = column.type
    bad = False
    if kind == "boolean" and column.allowed:
        kind = "text"  # a yes/no column that may also say 'unknown': its allowed values decide
    if kind == "integer":
        bad = not re.fullmatch(r"-?\d+", text)
    elif kind == "number":
        try:
            bad = not math.isfinite(float(text))
        except ValueError:
            bad = True
    elif kind == "boolean":
        bad = text not in ("true", "false")
    elif kind == "date":
        bad = not _DATE.match(text)
    elif kind == "id":
        bad = not _ID.match(text)
    if bad:
        return [f"column {column.name!r}: {text!r} is not {TYPES[kind]}"]
    if column.allowed:
        values = text.split(";") if kind == "codes" else [text]
        unknown = [v for v in values if v not in column.allowed]
        if unknown:
            return [
                f"column {column.name!r}: {', '.join(map(repr, unknown))} not among the allowed "
                f"values {', '.join(column.allowed)}"
            ]
    return []


def check_rows(table: Table, header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Every difference between written rows and the table's declaration.

    The header, types and allowed values are compared; each difference names the 1-based data row.
    """
    out = []
    if tuple(header) != table.names():
        out.append(f"{table.path}: header {list(header)} differs from {list(table.names())}")
        return out
    for i, row in enumerate(rows, start=1):
        if len(row) != len(table.columns):
            out.append(f"{table.path}: row {i}: {len(row)} cells, expected {len(table.columns)}")
            continue
        for col, text in zip(table.columns, row, strict=True):
            out.extend(f"{table.path}: row {i}: {p}" for p in cell_problems(col, text))
    return out


# --------------------------------------------------------------------------- visits / endpoints


#: a definition: (unit, text) or (unit, text, allowed values)
Definition = tuple[str, str] | tuple[str, str, tuple[str, ...]]


def _derived(name: str, known: Mapping[str, Definition]) -> Definition | None:
    """Definitions that follow from the name: ``<x>_lo95`` / ``<x>_hi95`` bound ``<x>``."""
    for suffix, word in (("_lo95", "lower"), ("_hi95", "upper")):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and base in known:
            return (known[base][0], f"{word} bound of the 95 % interval of {base}")
    return None


def declare_from_writer(
    name: str,
    path: str,
    row: str,
    columns: Sequence[str],
    types: Mapping[str, set[str]],
    definitions: Mapping[str, Definition],
) -> Table:
    """Declare a table whose writer lives elsewhere.

    Names and order come from ``columns``, types from the writer's column sets (``{type: names}``,
    the rest text), unit and definition (and allowed values) from ``definitions``;
    ``<x>_lo95``/``<x>_hi95`` need no entry of their own.

    Raises
    ------
    ConfigError
        A column of the writer without a definition, or a definition of no column.
    """
    missing = [c for c in columns if c not in definitions and _derived(c, definitions) is None]
    extra = [c for c in definitions if c not in columns]
    problems = [
        f"{what} {', '.join(names)}"
        for what, names in (("no definition for", missing), ("defined but not written:", extra))
        if names
    ]
    if problems:
        raise ConfigError(
            f"{path}: column declarations out of step with the writer: {'; '.join(problems)}; "
            "fix: add or remove them in the definitions beside the writer (VISIT_DEFINITIONS in "
            "nkflow/clinical/visits.py, ENDPOINT_DEFINITIONS in nkflow/clinical/endpoints.py)"
        )
    out = []
    for c in columns:
        kind = next((t for t, members in types.items() if c in members), "text")
        d = definitions.get(c) or _derived(c, definitions) or ("", "")
        allowed = d[2] if len(d) == 3 else ()  # type: ignore[misc]
        out.append(Column(c, kind, d[0], d[1], allowed))
    return Table(name, path, row, tuple(out))
