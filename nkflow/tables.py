r"""Deterministic reading and writing of result tables: the one TSV reader and writer.

Contract: every table writer gives identical bytes for identical inputs: tab-separated, UTF-8,
``\n`` line endings, a header row, missing values as empty cells (never ``0`` or ``nan``),
floats formatted with :data:`FLOAT_FORMAT` (10 significant digits, so event counts up to
10^10 stay exact), booleans as ``true``/``false``, dates ``YYYY-MM-DD``. The column order is
the caller's. Writes go to a temporary file that is renamed into place, so an interrupted job
never leaves a half-written table; a file whose bytes would not change is not rewritten.

Two ways in: :func:`write_tsv` formats a typed frame by its dtypes (the tube tables);
:func:`tsv_bytes` formats object-typed rows by the column kinds the caller declares
(``integer``, ``number``, ``boolean``, ``date``, ``text``; others by their value), as the
clinical tables (visits, endpoints, plan) hold them. :func:`parse_cell` reads such a cell back.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: the one float format of every result table: 10 significant digits, enough to trace a number
#: to its inputs and recompute it (and to keep event counts up to 10^10 exact); readers that
#: show numbers to people round them there (nkflow.report._format), never in the table
FLOAT_FORMAT = "%.10g"

#: an id that may name a results file or folder (patient, sample, tube, gate): letters, digits,
#: '.', '_', '-', no leading punctuation, no '..'; the sheet schemas hold the same pattern
SAFE_ID = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]*$")


def format_frame(df: pd.DataFrame) -> str:
    """Return the TSV text of ``df`` in nkflow's fixed format."""
    import pandas as pd

    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_bool_dtype(out[col]):
            out[col] = out[col].map({True: "true", False: "false"})
        elif out[col].dtype == object:
            out[col] = out[col].map(
                lambda v: ("true" if v else "false") if isinstance(v, bool) else v
            )
    return out.to_csv(
        sep="\t", index=False, na_rep="", float_format=FLOAT_FORMAT, lineterminator="\n"
    )


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` atomically to ``path``; a file that already holds them is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_tsv(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` atomically to ``path`` in nkflow's fixed TSV format."""
    write_bytes(path, format_frame(df).encode("utf-8"))


def read_tsv(path: Any, text: bool = False) -> pd.DataFrame:
    """Read a TSV written by :func:`write_tsv` (empty cells become missing values).

    With ``text``, every cell is the string as written (an empty cell is ``""``), for
    comparing tables as text; ``path`` may also be a binary file.
    """
    import pandas as pd

    if text:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
    return pd.read_csv(path, sep="\t", dtype=None, keep_default_na=False, na_values=[""])


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def format_cell(v: Any, kind: str = "") -> str:
    """One cell as :func:`tsv_bytes` writes it, ``kind`` the column's declared kind.

    '' for missing; a ``boolean`` column ``true``/``false`` (a word such as ``unknown`` as
    is); an ``integer`` column plain; dates ISO; floats :data:`FLOAT_FORMAT` (outside
    ``text`` columns); tabs and newlines of text become spaces.
    """
    if _missing(v):
        return ""
    if kind == "boolean":
        return v if isinstance(v, str) else ("true" if bool(v) else "false")
    if kind == "integer":
        return str(int(v))
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and kind != "text":
        return FLOAT_FORMAT % v
    if hasattr(v, "item") and not isinstance(v, str):  # numpy scalar
        return format_cell(v.item(), kind)
    return str(v).replace("\t", " ").replace("\n", " ")


def json_value(v: Any, kind: str = "") -> Any:
    """One cell as a JSON (or spreadsheet) value.

    Numbers as :func:`format_cell` writes them, ``true``/``false`` as booleans, dates ISO, missing
    as None.
    """
    if _missing(v):
        return None
    if kind == "boolean":
        return v if isinstance(v, str) else bool(v)
    if kind == "integer":
        return int(v)
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, float) and kind != "text":
        return float(FLOAT_FORMAT % v)
    if hasattr(v, "item") and not isinstance(v, str):
        return json_value(v.item(), kind)
    return v


def parse_cell(text: str, kind: str) -> Any:
    """The value of one cell written by :func:`format_cell` (``''`` -> None; untyped -> text)."""
    if text == "":
        return None
    if kind == "boolean":
        return text == "true"
    if kind == "integer":
        return int(text)
    if kind == "date":
        return dt.date.fromisoformat(text)
    if kind == "number":
        return float(text)
    return text


def tsv_bytes(df: pd.DataFrame, columns: Sequence[str], kinds: Mapping[str, str]) -> bytes:
    """TSV bytes of ``df[columns]`` (header + one line per row), cells by :func:`format_cell`."""
    lines = ["\t".join(columns)]
    for rec in df.to_dict(orient="records"):
        lines.append("\t".join(format_cell(rec.get(c), kinds.get(c, "")) for c in columns))
    return ("\n".join(lines) + "\n").encode("utf-8")


def write_xlsx(
    path: Path, sheets: Sequence[tuple[str, pd.DataFrame, Sequence[str]]], kinds: Mapping[str, str]
) -> None:
    """A workbook with one sheet per ``(title, frame, columns)``; no clock in its bytes.

    Numbers as numbers (as :func:`json_value` gives them), missing blank, header frozen.
    """
    from openpyxl import Workbook

    wb = Workbook()
    fixed = dt.datetime(2000, 1, 1)
    wb.properties.created = fixed
    wb.properties.modified = fixed
    for i, (title, df, cols) in enumerate(sheets):
        sheet = wb.active if i == 0 else wb.create_sheet(title)
        sheet.title = title
        sheet.append(list(cols))
        for rec in df.to_dict(orient="records"):
            sheet.append([json_value(rec.get(c), kinds.get(c, "")) for c in cols])
        sheet.freeze_panes = "B2"
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(_fixed_time_xlsx(wb, fixed))


def _fixed_time_xlsx(wb: Any, when: dt.datetime) -> bytes:
    """The workbook's bytes with no clock in them.

    ``Workbook.save`` stamps ``modified`` with the current time and every zip member with the
    local time: the same inputs then gave a different file each second. Here the document
    properties and the zip entries all carry ``when``.
    """
    import io
    import zipfile

    from openpyxl.writer.excel import ExcelWriter

    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        ExcelWriter(wb, archive).save()  # writes the properties as set (no 'now')
    out = io.BytesIO()
    with (
        zipfile.ZipFile(raw) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=when.timetuple()[:6])
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = info.external_attr
            dst.writestr(fixed, src.read(info.filename))
    return out.getvalue()
