"""Loading and validating every side table.

The sample sheet, infusions, CBC, chimerism, STR peaks, response and adverse events.

Contract
--------
* Every sheet is a text table (``.csv`` comma-separated, otherwise tab-separated, or the
  configured ``sheet_format.<sheet>.delimiter``) read entirely as text (no type guessing, empty
  cell = ``""``), renamed to nkflow's columns by ``sheet_format.<sheet>.columns`` (a
  :class:`Sheet`), and checked row by row against its JSON schema in
  ``workflow/schemas/<sheet>.schema.yaml`` (``nkflow/schemas`` links there). Columns the schema
  marks ``kind: date`` are parsed by :func:`parse_date` (ISO, ISO with a time, ``06-Feb-2024``,
  and ``06/02/2024`` only with a stated ``date_order``).
* A wrong *setup* raises :class:`~nkflow.errors.ConfigError` whose message names the file, the
  1-based data row and its id, the column, what was found, what was expected and how to fix it.
  Duplicate keys are refused naming both rows (never last-row-wins). Ids are restricted to
  ``^[A-Za-z0-9][A-Za-z0-9._-]*$`` without ``..`` because they become wildcards, paths and shell
  words.
* Bad *data* in one row (QNS or negative ALC, a chimerism or CBC row for an unknown patient) is
  kept or dropped as documented and reported in the returned list of warnings; it never stops the
  cohort and is never coerced to 0.
* A controlled value (ALC unit, response category, panel, gate tree, tube, chimerism fraction)
  that nkflow cannot use is an error naming the rows and the allowed values; it never falls back
  to another value. Chimerism fractions are canonicalised through the fraction vocabulary
  (``fraction`` holds the canonical name, ``fraction_as_written`` the cell as written). A column
  nkflow does not read (``cytometer``, ``method``, ...) is a warning naming it.
* ``load_samples`` returns a DataFrame (a combined ``nk;treg`` row expanded into one row per
  tube); every other ``load_*`` returns ``(DataFrame, warnings)``. Loaders take a path (read
  with nkflow's own column names) or a :class:`Sheet` from :func:`sheet`.
* Loaders are pure apart from reading the named files; nothing here runs a command.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nkflow.clinical.counts import parse_alc
from nkflow.clinical.endpoint_settings import EndpointSettings
from nkflow.errors import ConfigError
from nkflow.schemas import check_against_schema, expected_text, load_schema

if TYPE_CHECKING:
    import pandas as pd

    from nkflow.clinical.chimerism import FractionVocab

logger = logging.getLogger(__name__)

#: the sheet keys of ``sheets:`` in config.yaml -> (schema, $defs entry or '')
SHEET_SCHEMAS = {
    "samples": ("samples", ""),
    "infusions": ("infusions", ""),
    "cbc": ("cbc", ""),
    "chimerism": ("chimerism", ""),
    "str_peaks": ("str_peaks", ""),
    "str_samples": ("str_peaks", "str_sample"),
    "response": ("response", ""),
    "adverse_events": ("adverse_events", ""),
}
DELIMITERS = {"tab": "\t", "comma": ",", "semicolon": ";"}
_DELIMITER_OF_SUFFIX = {".csv": "comma", ".tsv": "tab", ".tab": "tab", ".txt": "tab"}
DATE_ORDERS = ("day_first", "month_first")
DATE_FORMATS = (
    "YYYY-MM-DD, YYYY-MM-DD HH:MM (the time is not used), DD-Mon-YYYY (e.g. 06-Feb-2024), or "
    "DD/MM/YYYY or MM/DD/YYYY when the sheet's sheet_format.<sheet>.date_order is set"
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_TIME = r"(?:[ T](?:[01]?[0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]+)?)?)?"
_ISO_DATE = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})" + _TIME + "$")
_MON_DATE = re.compile(r"^([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})" + _TIME + "$")
_NUM_DATE = re.compile(r"^([0-9]{1,2})([/.])([0-9]{1,2})\2([0-9]{4})" + _TIME + "$")


@dataclass(frozen=True)
class Sheet:
    """One configured sheet: where it is and how the lab wrote it (``sheet_format.<key>``).

    ``columns`` maps an nkflow column to the column of the file that holds it; ``delimiter``
    is ``tab``, ``comma`` or ``semicolon`` (default from the file name: ``.csv`` comma, anything
    else tab); ``date_order`` (``day_first`` | ``month_first``) is needed only for dates written
    ``06/02/2024``.
    """

    key: str
    path: Path
    columns: Mapping[str, str] = field(default_factory=dict)
    delimiter: str = ""
    date_order: str | None = None

    def column(self, col: str) -> str:
        """``col`` as the file spells it, for messages: ``'alc' (alc_value)`` when mapped."""
        src = self.columns.get(col)
        return f"'{src}' ({col})" if src and src != col else f"'{col}'"

    @property
    def separator(self) -> str:
        """The field separator used to read the file."""
        name = self.delimiter or _DELIMITER_OF_SUFFIX.get(self.path.suffix.lower(), "tab")
        return DELIMITERS[name]


def sheet(config: dict[str, Any], key: str, base_dir: str | Path = ".") -> Sheet | None:
    """The configured sheet ``key`` (``sheets.<key>`` and ``sheet_format.<key>``), or None."""
    path_text = (config.get("sheets") or {}).get(key)
    if not path_text:
        return None
    fmt = (config.get("sheet_format") or {}).get(key) or {}
    return Sheet(
        key,
        Path(base_dir) / str(path_text),
        dict(fmt.get("columns") or {}),
        str(fmt.get("delimiter") or ""),
        fmt.get("date_order"),
    )


def required_sheet(config: dict[str, Any], key: str, base_dir: str | Path = ".") -> Sheet:
    """:func:`sheet`, refusing a sheet that is not configured.

    Raises
    ------
    ConfigError
        Naming the missing ``sheets.<key>`` field.
    """
    out = sheet(config, key, base_dir)
    if out is None:
        raise ConfigError(
            f"config: field 'sheets.{key}': missing; expected a path to the {key} sheet (TSV or "
            f"CSV); fix: add 'sheets: {{{key}: path/to/{key}.tsv}}' to config.yaml"
        )
    return out


def _as_sheet(source: Sheet | str | Path, key: str) -> Sheet:
    return source if isinstance(source, Sheet) else Sheet(key, Path(source))


def sheet_schema(key: str) -> dict[str, Any]:
    """The JSON schema a row of sheet ``key`` (:data:`SHEET_SCHEMAS`) is checked against."""
    name, sub = SHEET_SCHEMAS[key]
    schema = load_schema(name)
    return dict(schema["$defs"][sub]) if sub else schema


def read_table(source: Sheet | str | Path, *, header_only: bool = False) -> pd.DataFrame:
    """Read a sheet (or with ``header_only`` its header line) as text under nkflow's column names.

    Every cell is a ``str`` (empty cells ``""``, surrounding spaces kept). The separator comes
    from ``sheet_format.<key>.delimiter`` or the file name (``.csv`` comma, else tab); the
    ``columns`` mapping of a :class:`Sheet` renames the lab's columns to nkflow's.

    Raises
    ------
    ConfigError
        The file does not exist or cannot be parsed; a mapping names a column nkflow does not
        read from this sheet, a column the file does not have, or a column the file also has
        under nkflow's own name.
    """
    import pandas as pd

    sh = _as_sheet(source, "")
    p = sh.path
    if not p.is_file():
        raise ConfigError(f"{p}: file not found; fix: check the path in config.yaml 'sheets:'")
    try:
        df = pd.read_csv(
            p,
            sep=sh.separator,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8-sig",  # spreadsheet exports often start with a byte-order mark
            nrows=0 if header_only else None,
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        sep = next(k for k, v in DELIMITERS.items() if v == sh.separator)
        raise ConfigError(
            f"{p}: cannot be read as a {sep}-separated table ({exc}); fix: save the sheet as "
            "UTF-8 text with one header line (name it .csv for commas, .tsv for tabs, or set "
            f"sheet_format.{sh.key or '<sheet>'}.delimiter)"
        ) from exc
    if sh.columns:
        df = _map_columns(df, sh)
    return df


def _map_columns(df: pd.DataFrame, sh: Sheet) -> pd.DataFrame:
    field_ = f"config: field 'sheet_format.{sh.key}.columns"
    props = sheet_schema(sh.key).get("properties", {}) if sh.key in SHEET_SCHEMAS else {}
    header = [str(c) for c in df.columns]
    seen: dict[str, str] = {}
    for ours, theirs in sh.columns.items():
        if props and ours not in props:
            raise ConfigError(
                f"{field_}.{ours}': found {ours!r}, which is not a column of the {sh.key} sheet; "
                f"expected one of: {', '.join(sorted(props))}; fix: map each nkflow column to "
                f"the column of your file that holds it ({{nkflow column: your column}})"
            )
        if theirs not in header:
            raise ConfigError(
                f"{sh.path}: header: column {theirs!r} (mapped to {ours} by "
                f"sheet_format.{sh.key}.columns) not found; found columns {', '.join(header)}; "
                f"fix: correct the mapping in config.yaml or the file's header"
            )
        if theirs in seen:
            raise ConfigError(
                f"{field_}': column {theirs!r} is mapped to both {seen[theirs]} and {ours}; "
                "expected each column of the file to stand for one nkflow column; fix: keep one"
            )
        seen[theirs] = ours
        if ours != theirs and ours in header:
            raise ConfigError(
                f"{sh.path}: header: columns {ours!r} and {theirs!r} (mapped to {ours} by "
                f"sheet_format.{sh.key}.columns) would both be read as {ours}; expected one; "
                f"fix: remove the mapping or rename one of the two columns"
            )
    return df.rename(columns=seen)


def _text(v: Any) -> str:
    return v.isoformat() if isinstance(v, dt.date) else str(v)


def _row_label(i: int, row: dict[str, str], id_cols: tuple[str, ...]) -> str:
    ids = ", ".join(f"{c}={_text(row.get(c, ''))!r}" for c in id_cols if c in row)
    return f"row {i}" + (f" ({ids})" if ids else "")


def validate_rows(
    df: pd.DataFrame,
    schema: dict[str, Any],
    path: str | Path | Sheet,
    id_cols: tuple[str, ...],
) -> None:
    """Check the header and every row of ``df`` against ``schema``.

    Rows are numbered from 1 (the first data row after the header). ``path`` may be the
    :class:`Sheet`, so that messages name a mapped column as the file spells it.

    Raises
    ------
    ConfigError
        On the first missing column or failing cell, naming file, row, id, column, found value,
        expectation and fix.
    """
    import jsonschema

    sh = _as_sheet(path, "")
    props: dict[str, Any] = schema.get("properties", {})
    required: list[str] = schema.get("required", [])
    missing = [c for c in required if c not in df.columns]
    if missing:
        hint = ""
        if len(df.columns) == 1 and any(s in str(df.columns[0]) for s in ",;\t"):
            hint = (
                " (the header is one column holding separators: the file is not "
                f"{next(k for k, v in DELIMITERS.items() if v == sh.separator)}-separated; name "
                f"it .csv for commas, or set sheet_format.{sh.key or '<sheet>'}.delimiter)"
            )
        raise ConfigError(
            f"{sh.path}: header: required column(s) {', '.join(missing)} missing{hint}; found "
            f"columns {', '.join(map(str, df.columns))}; expected {', '.join(required)}; "
            "fix: add the column(s) to the header line, or map your own column names to them "
            f"with sheet_format.{sh.key or '<sheet>'}.columns in config.yaml"
        )
    validator = jsonschema.Draft202012Validator(schema)
    for i, rec in enumerate(df.to_dict(orient="records"), start=1):
        row = {k: v for k, v in rec.items() if k in props}
        errors = sorted(validator.iter_errors(row), key=lambda e: list(e.path))
        if not errors:
            continue
        err = errors[0]
        col = str(err.path[0]) if err.path else "?"
        spec = props.get(col, {})
        found = row.get(col, "")
        expected = spec.get("description", expected_text(err))
        if err.validator == "enum":
            expected += "; allowed: " + ", ".join(map(str, spec.get("enum", [])))
        fix = spec.get("fix", "correct the cell")
        raise ConfigError(
            f"{sh.path}: {_row_label(i, rec, id_cols)}: column {sh.column(col)}: found "
            f"{found!r}; expected {expected}; fix: {fix}"
        )


def check_unique(df: pd.DataFrame, key: tuple[str, ...], path: str | Path) -> None:
    """Refuse a duplicate ``key``, naming both rows (never last-row-wins).

    Dates are compared as dates, so ``2024-02-06`` and ``06-Feb-2024`` are the same key. Rows
    are numbered by their ``row`` column when there is one (a combined sample-sheet row expands
    into several rows with one number), else by position.

    Raises
    ------
    ConfigError
        When two data rows share the same key.
    """
    seen: dict[tuple[str, ...], int] = {}
    for i, rec in enumerate(df.to_dict(orient="records"), start=1):
        n = int(rec.get("row", i))
        k = tuple(_text(rec[c]) for c in key)
        if k in seen:
            what = ", ".join(f"{c}={v!r}" for c, v in zip(key, k, strict=True))
            rows = f"rows {seen[k]} and {n}" if seen[k] != n else f"row {n}"
            raise ConfigError(
                f"{path}: {rows}: duplicate key ({what}) in columns "
                f"{', '.join(key)}; expected each key once; fix: remove or correct one of the "
                f"two ({rows}; nothing is silently overwritten)"
            )
        seen[k] = n


def parse_date(
    value: str,
    path: str | Path,
    label: str,
    col: str,
    *,
    order: str | None = None,
    sheet_key: str = "",
) -> dt.date:
    """Parse a date as lab systems write it (:data:`DATE_FORMATS`); a time part is not used.

    ``06/02/2024`` (or ``06.02.2024``) is read only with ``order`` (``day_first`` or
    ``month_first``): without it the day and month cannot be told apart.

    Raises
    ------
    ConfigError
        Naming the cell, when it is not a real calendar date in one of those forms, or when a
        day/month date has no stated order.
    """
    where = f"{path}: {label}: column {col}: found {value!r}"
    text = value.strip()
    ymd: tuple[int, int, int] | None = None
    if m := _ISO_DATE.match(text):
        ymd = (int(m[1]), int(m[2]), int(m[3]))
    elif (m := _MON_DATE.match(text)) and m[2].lower() in _MONTHS:
        ymd = (int(m[3]), _MONTHS[m[2].lower()], int(m[1]))
    elif m := _NUM_DATE.match(text):
        if order not in DATE_ORDERS:
            raise ConfigError(
                f"{where}; expected a date whose day/month order is known: {text} could be "
                f"day {int(m[1])} of month {int(m[3])} or month {int(m[1])} day {int(m[3])}; "
                f"fix: set sheet_format.{sheet_key or '<sheet>'}.date_order to day_first "
                f"({m[1]}{m[2]}{m[3]} = day {int(m[1])}) or month_first in config.yaml, or "
                "write dates as YYYY-MM-DD"
            )
        a, b = int(m[1]), int(m[3])
        day, month = (a, b) if order == "day_first" else (b, a)
        ymd = (int(m[4]), month, day)
    try:
        if ymd is None:
            raise ValueError(text)
        return dt.date(*ymd)
    except ValueError as exc:
        raise ConfigError(
            f"{where}; expected a real calendar date: {DATE_FORMATS}; fix: correct the date"
        ) from exc


def _parse_dates(
    df: pd.DataFrame, schema: dict[str, Any], sh: Sheet, id_cols: tuple[str, ...]
) -> pd.DataFrame:
    """Replace every ``kind: date`` column present by ``datetime.date`` (empty -> None)."""
    recs = df.to_dict(orient="records")
    for col, spec in schema.get("properties", {}).items():
        if spec.get("kind") != "date" or col not in df.columns:
            continue
        for i, rec in enumerate(recs, start=1):
            v = rec[col]
            label = _row_label(int(rec.get("row", i)), rec, id_cols)
            rec[col] = (
                None
                if v == ""
                else parse_date(
                    v, sh.path, label, sh.column(col), order=sh.date_order, sheet_key=sh.key
                )
            )
        df[col] = [rec[col] for rec in recs]
    return df


def _load(
    source: Sheet | str | Path,
    sheet_key: str,
    ids: tuple[str, ...],
    fractions: FractionVocab | None = None,
    *,
    optional: tuple[str, ...] = (),
    expand: bool = False,
) -> tuple[Sheet, pd.DataFrame]:
    """Read, map and validate a sheet, number its rows, date-parse it; refuse duplicate ``ids``.

    ``optional`` columns the file lacks are added empty. With ``fractions``, the ``fraction``
    column is canonicalised; with ``expand``, combined rows become one per tube
    (:func:`expand_combined`, sample sheet).
    """
    sh = _as_sheet(source, sheet_key)
    schema = sheet_schema(sheet_key)
    df = read_table(sh)
    validate_rows(df, schema, sh, ids)
    df.insert(0, "row", range(1, len(df) + 1))
    for col in optional:
        if col not in df.columns:
            df[col] = ""
    df = _parse_dates(df, schema, sh, ids)
    if fractions is not None:
        df = _canonical_fractions(df, fractions, sh, ids)
    if expand:
        df = expand_combined(df, sh.path)
    check_unique(df, ids, sh.path)
    return sh, df


def _to_float(value: str) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out and out not in (float("inf"), float("-inf")) else None


def _drop_unknown_patients(
    df: pd.DataFrame,
    patients: Iterable[str] | None,
    path: Path,
    id_cols: tuple[str, ...],
) -> tuple[pd.DataFrame, list[str]]:
    """``df`` without the rows of patients not in ``patients``, and one warning per row dropped.

    ``patients`` None keeps every row.
    """
    warnings: list[str] = []
    if patients is None:
        return df, warnings
    known = set(patients)
    keep = []
    for rec in df.to_dict(orient="records"):
        ok = rec["patient_id"] in known
        keep.append(ok)
        if not ok:
            warnings.append(
                f"{path}: {_row_label(rec['row'], rec, id_cols)}: unknown_patient: "
                f"patient is not in infusions.tsv; row ignored (no fuzzy matching); fix: correct "
                "the patient id or add the patient's infusions"
            )
    return df[keep].reset_index(drop=True), warnings


def _split(value: str) -> list[str]:
    return [x.strip() for x in str(value).split(";")]


def expand_combined(df: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """One row per tube: a row whose ``tube`` lists several (``nk;treg``) becomes one per tube.

    Such a row is one FCS file holding several stains: ``gating`` lists one gate tree per tube
    in the same order, and ``panel`` either one panel per tube or one panel for all. The new
    rows keep the sheet's ``row`` number and file, so messages still cite the row as written.

    Raises
    ------
    ConfigError
        A tube listed twice, or a ``gating``/``panel`` list whose length does not match.
    """
    import pandas as pd

    out: list[dict[str, Any]] = []
    for rec in df.to_dict(orient="records"):
        tubes = _split(rec["tube"])
        if len(tubes) == 1:
            out.append(rec)
            continue
        label = _row_label(rec["row"], rec, ("sample_id", "tube"))
        if len(set(tubes)) != len(tubes):
            raise ConfigError(
                f"{path}: {label}: column 'tube': found {rec['tube']!r}, a tube listed twice; "
                "expected each tube of a combined file once (e.g. nk;treg); fix: remove the repeat"
            )
        parts: dict[str, list[str]] = {}
        for col in ("gating", "panel"):
            vals = _split(rec[col])
            if col == "panel" and len(vals) == 1:
                vals = vals * len(tubes)
            if len(vals) != len(tubes):
                one = " (or one panel for all)" if col == "panel" else ""
                raise ConfigError(
                    f"{path}: {label}: column '{col}': found {rec[col]!r} ({len(vals)} "
                    f"name(s)) for tubes {rec['tube']!r}; expected one {col} per tube{one}, in "
                    f"the same order, separated by ';'; fix: e.g. {col} = "
                    + ";".join(f"<{col} of {t}>" for t in tubes)
                )
            parts[col] = vals
        for j, tube in enumerate(tubes):
            out.append(
                {**rec, "tube": tube, "gating": parts["gating"][j], "panel": parts["panel"][j]}
            )
    return pd.DataFrame(out, columns=df.columns).reset_index(drop=True)


def load_samples(
    path: Sheet | str | Path, panels: Iterable[str], gatings: Iterable[str]
) -> pd.DataFrame:
    """Load and validate the sample sheet (one row per tube; key (sample_id, tube)).

    A row may stand for one FCS file holding several stains (``tube`` ``nk;treg``, ``gating``
    ``nk_v1;treg_v1``): it is expanded into one row per tube (:func:`expand_combined`), each
    keeping the sheet's row number.

    Parameters
    ----------
    path
        ``samples.tsv`` (or a :class:`Sheet` with its ``sheet_format``).
    panels, gatings
        Names defined in config.yaml; every row must use one of them.

    Returns
    -------
    DataFrame
        Columns of the sheet (``collection_date`` as ``datetime.date``, ``beads_per_test`` and
        ``sample_volume_ul`` as float or None) plus ``row`` (1-based, the sheet's row),
        ``fcs_path`` (absolute, resolved against the sheet's directory) and ``fmo_paths``
        (marker -> absolute path of the FMO control tube, from the optional ``fmo`` column).

    Raises
    ------
    ConfigError
        Bad id (``;``, ``/``, ``..``, spaces, quotes...), bad date, unknown tube/panel/gating,
        duplicate (sample_id, tube), a sample whose tubes disagree on patient or date.
    """
    import pandas as pd

    ids = ("sample_id", "tube")
    sh, df = _load(path, "samples", ids, expand=True)
    p = sh.path
    panels_s, gatings_s = sorted(set(panels)), sorted(set(gatings))
    tube_spec = sheet_schema("samples")["properties"]["tube"]
    for rec in df.to_dict(orient="records"):
        label = _row_label(rec["row"], rec, ids)
        if rec["tube"] not in tube_spec["roles"]:
            raise ConfigError(
                f"{p}: {label}: column {sh.column('tube')}: found {rec['tube']!r}; expected "
                f"{tube_spec['description']}; allowed: {', '.join(tube_spec['roles'])}; fix: "
                f"{tube_spec['fix']}"
            )
        for col, known in (("panel", panels_s), ("gating", gatings_s)):
            if rec[col] not in known:
                raise ConfigError(
                    f"{p}: {label}: column {sh.column(col)}: found {rec[col]!r}; expected one "
                    f"of {', '.join(known) or '(none defined)'}; fix: use a name defined under "
                    f"'{'panels' if col == 'panel' else 'gating'}:' in config.yaml or add it there"
                )
    first: dict[str, dict[str, Any]] = {}
    for rec in df.to_dict(orient="records"):
        f = first.setdefault(rec["sample_id"], rec)
        for col in ("patient_id", "collection_date"):
            if rec[col] != f[col]:
                raise ConfigError(
                    f"{p}: rows {f['row']} and {rec['row']} (sample_id={rec['sample_id']!r}): "
                    f"column {sh.column(col)}: found {_text(f[col])!r} and {_text(rec[col])!r}; "
                    f"expected the same {col} on every tube of a sample; fix: correct one of the "
                    "two rows"
                )
    for col in ("beads_per_test", "sample_volume_ul"):
        if col not in df.columns:
            df[col] = None
        else:
            # object dtype: an empty cell stays None (a float column would make it NaN)
            df[col] = pd.Series(
                [None if v == "" else float(v) for v in df[col]], index=df.index, dtype=object
            )
    base = p.resolve().parent
    df["fcs_path"] = [str((base / f).resolve()) for f in df["fcs_file"]]
    fmo_col = df["fmo"] if "fmo" in df.columns else [""] * len(df)
    df["fmo_paths"] = [
        {m: str((base / f).resolve()) for m, f in (pair.split("=", 1) for pair in v.split(";"))}
        if v
        else {}
        for v in fmo_col
    ]
    return df


def _dose_columns(rec: dict[str, Any], sh: Sheet, label: str) -> tuple[float, float]:
    """(cells_infused, cells_per_kg) of one infusion row from whichever of the two it gives."""
    weight = float(rec["body_weight_kg"])
    where = f"{sh.path}: {label}"
    if weight <= 0:
        raise ConfigError(
            f"{where}: column {sh.column('body_weight_kg')}: found {rec['body_weight_kg']!r}; "
            "expected a positive weight in kg; fix: enter the patient's weight"
        )
    total_text, per_kg_text = rec.get("cells_infused", ""), rec.get("cells_per_kg", "")
    if not total_text and not per_kg_text:
        raise ConfigError(
            f"{where}: columns {sh.column('cells_infused')}/{sh.column('cells_per_kg')}: both "
            "empty; expected the NK cells infused, as a total (cells_infused) or per kg body "
            "weight (cells_per_kg); fix: fill one of the two"
        )
    if total_text and per_kg_text:
        total, per_kg = float(total_text), float(per_kg_text)
        if abs(total / weight - per_kg) > 0.005 * per_kg:
            raise ConfigError(
                f"{where}: columns {sh.column('cells_infused')} and {sh.column('cells_per_kg')}:"
                f" found {total_text} cells and {per_kg_text} cells/kg, but {total_text} / "
                f"{rec['body_weight_kg']} kg = {total / weight:.4g} cells/kg; expected the two to "
                "agree within 0.5 %; fix: keep the one the infusion record states, empty the other"
            )
        return total, per_kg
    if per_kg_text:
        per_kg = float(per_kg_text)
        return per_kg * weight, per_kg
    total = float(total_text)
    return total, total / weight


def _check_plausible_dose(
    rec: dict[str, Any], sh: Sheet, label: str, per_kg: float, plausible: tuple[float, float]
) -> None:
    lo, hi = plausible
    if lo <= per_kg <= hi:
        return
    given_total = bool(rec.get("cells_infused", ""))
    col = "cells_infused" if given_total else "cells_per_kg"
    cell = rec[col]
    if given_total and per_kg < lo:
        why = (
            f"{cell} cells / {rec['body_weight_kg']} kg = {per_kg:.3g} cells/kg, below the "
            f"plausible {lo:.3g}; {cell} looks like a dose per kg written in the total column; "
            "fix: move it to a cells_per_kg column (or map the lab's per-kg column to "
            "cells_per_kg), or correct the total"
        )
    elif not given_total and per_kg > hi:
        why = (
            f"{cell} cells/kg is above the plausible {hi:.3g}; it looks like a total number of "
            "cells written in the per-kg column; fix: move it to cells_infused, or correct it"
        )
    else:
        side = "below" if per_kg < lo else "above"
        why = (
            f"{per_kg:.3g} cells/kg is {side} the plausible range; fix: check the value and its "
            "unit (cells_infused is the total number of NK cells, cells_per_kg per kg body weight)"
        )
    raise ConfigError(
        f"{sh.path}: {label}: column {sh.column(col)}: found {cell!r}; expected a dose within "
        f"the plausible {lo:.3g}-{hi:.3g} NK cells/kg (endpoints.dose_plausible_per_kg; the "
        f"protocol range is endpoints.dose_range_per_kg); {why}"
    )


def load_infusions(
    path: Sheet | str | Path,
    plausible_per_kg: tuple[float, float] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Load infusions (key (patient_id, infusion_number)); ``cells_per_kg`` per infusion.

    The dose is given either as ``cells_infused`` (total NK cells) or ``cells_per_kg`` (per kg
    of ``body_weight_kg``), or both when they agree within 0.5 %. Donor ids are optional: an
    empty ``nk_donor_id`` or ``hsct_donor_id`` is kept as ``""`` (unknown, never "different").

    Parameters
    ----------
    path
        ``infusions.tsv`` (or a :class:`Sheet`).
    plausible_per_kg
        ``endpoints.dose_plausible_per_kg`` (None: its default): a dose outside it is refused as
        a data-entry error (a per-kg value in the total column, or a total in the per-kg column).

    Returns
    -------
    (DataFrame, warnings)
        ``infusion_number`` int, ``infusion_date`` date, ``cells_infused``, ``body_weight_kg``,
        ``cells_per_kg`` floats, ``dose_given_as`` (``total`` | ``per_kg`` | ``both``);
        warnings is empty (protocol dose flags are computed in endpoints).

    Raises
    ------
    ConfigError
        Schema failure, duplicate key, zero body weight, no dose or two that disagree, an
        implausible dose.
    """
    lo, hi = plausible_per_kg or EndpointSettings.from_config(None).dose_plausible_per_kg
    ids = ("patient_id", "infusion_number")
    optional = ("cells_infused", "cells_per_kg", "nk_donor_id", "hsct_donor_id")
    sh, df = _load(path, "infusions", ids, optional=optional)
    totals, per_kgs, given = [], [], []
    for rec in df.to_dict(orient="records"):
        label = _row_label(rec["row"], rec, ids)
        total, per_kg = _dose_columns(rec, sh, label)
        _check_plausible_dose(rec, sh, label, per_kg, (float(lo), float(hi)))
        totals.append(total)
        per_kgs.append(per_kg)
        both = rec["cells_infused"] and rec["cells_per_kg"]
        given.append("both" if both else "total" if rec["cells_infused"] else "per_kg")
    df["infusion_number"] = df["infusion_number"].astype(int)
    df["body_weight_kg"] = df["body_weight_kg"].astype(float)
    df["cells_infused"] = totals
    df["cells_per_kg"] = per_kgs
    df["dose_given_as"] = given
    return df, []


def load_cbc(
    path: Sheet | str | Path, patients: Iterable[str] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Load the CBC table and normalise ALC to cells/uL (key (patient_id, date)).

    Parameters
    ----------
    path
        ``cbc.tsv``.
    patients
        Known patient ids; rows for other patients are reported and dropped. None keeps all rows.

    Returns
    -------
    (DataFrame, warnings)
        Adds ``alc_per_ul`` (float or None), ``alc_status`` (``ok`` | ``missing`` | ``invalid``),
        ``alc_source_value`` and ``alc_source_unit`` (verbatim). QNS/empty -> ``missing`` with a
        warning; negative -> ``invalid`` with a warning; never 0.
    """
    df, vals, stats, warnings = _load_results(path, "cbc", patients, None, "alc_value", _alc)
    df["alc_source_value"] = df["alc_value"]
    df["alc_source_unit"] = df["alc_unit"]
    df["alc_per_ul"] = vals
    df["alc_status"] = stats
    return df, warnings


def _alc(rec: dict[str, Any]) -> tuple[float | None, str, str]:
    alc = parse_alc(rec["alc_value"], rec["alc_unit"])
    return alc.per_ul, alc.status, f"{alc.status}_alc: {alc.message}"


def _donor_pct(rec: dict[str, Any]) -> tuple[float | None, str, str]:
    # '93%' and '93 %' as lab systems print them; anything else that is not a number is missing
    v = _to_float(re.sub(r"\s*%$", "", rec["donor_pct"].strip()))
    status = "missing" if v is None else "ok" if 0.0 <= v <= 100.0 else "invalid"
    message = f"{status}_chimerism: expected a number 0-100; row not used"
    return (v if status == "ok" else None), status, message


def _load_results(
    path: Sheet | str | Path,
    sheet_key: str,
    patients: Iterable[str] | None,
    fractions: FractionVocab | None,
    col: str,
    read: Callable[[dict[str, Any]], tuple[float | None, str, str]],
) -> tuple[pd.DataFrame, pd.Series, list[str], list[str]]:
    """(rows of known patients, values, statuses, warnings) of a sheet of dated results.

    ``read(row)`` gives (the value, None unless usable; its status; the warning unless ``ok``).
    """
    import pandas as pd

    ids = ("patient_id", "date", "fraction") if fractions else ("patient_id", "date")
    sh, df = _load(path, sheet_key, ids, fractions)
    df, warnings = _drop_unknown_patients(df, patients, sh.path, ids)
    vals, stats = [], []
    for rec in df.to_dict(orient="records"):
        value, status, message = read(rec)
        vals.append(value)
        stats.append(status)
        if status != "ok":
            warnings.append(
                f"{sh.path}: {_row_label(rec['row'], rec, ids)}: column {sh.column(col)}: "
                f"found {rec[col]!r}; {message}"
            )
    return df, pd.Series(vals, index=df.index, dtype=object), stats, warnings


def load_fraction_vocab(path: str | Path) -> FractionVocab:
    """Load the chimerism fraction vocabulary (``endpoints.chimerism_fractions``).

    Raises
    ------
    ConfigError
        File missing or not YAML, a schema failure (field named), or one spelling listed under
        two fractions (both named).
    """
    import yaml

    from nkflow.clinical.chimerism import FractionVocab, fraction_key

    vp = Path(path)
    if not vp.is_file():
        raise ConfigError(
            f"{vp}: chimerism fraction vocabulary not found; fix: check "
            "endpoints.chimerism_fractions in config.yaml (default "
            "config/vocab/chimerism_fractions.yaml)"
        )
    try:
        data = yaml.safe_load(vp.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{vp}: not valid YAML: {exc}") from None
    check_against_schema(data, load_schema("chimerism_fractions"), source=str(vp))
    spellings: dict[str, str] = {}
    aliases: dict[str, tuple[str, ...]] = {}
    for name, entry in data["fractions"].items():
        aliases[name] = tuple(entry.get("aliases") or ())
        for spelling in (name, *aliases[name]):
            other = spellings.setdefault(fraction_key(spelling), name)
            if other != name:
                raise ConfigError(
                    f"{vp}: field 'fractions.{name}.aliases': spelling {spelling!r} already "
                    f"stands for fraction {other!r} (matching ignores case and whitespace); "
                    f"expected each spelling under one fraction; fix: keep it under the "
                    f"fraction it means"
                )
    return FractionVocab(str(vp), tuple(data["fractions"]), spellings, aliases)


def check_preference(preference: Iterable[str], vocab: FractionVocab) -> None:
    """Refuse an ``endpoints.chimerism_preference`` entry that is not a canonical fraction.

    Raises
    ------
    ConfigError
        Naming the field, the entry, and the canonical names (or the canonical name of an alias).
    """
    for i, frac in enumerate(preference):
        canon = vocab.canonical(frac)
        if canon == frac:
            continue
        where = f"config: field 'endpoints.chimerism_preference[{i}]': found {frac!r}"
        if canon is not None:
            raise ConfigError(
                f"{where}, an alias of {canon!r} in {vocab.source}; expected a canonical "
                f"fraction name; fix: write {canon}"
            )
        raise ConfigError(
            f"{where}; expected a fraction of {vocab.source}: {', '.join(vocab.names)}; fix: "
            "use one of these names, or add the fraction to the vocabulary"
        )


def _canonical_fractions(
    df: pd.DataFrame, vocab: FractionVocab, sh: Sheet, id_cols: tuple[str, ...], empty: str = ""
) -> pd.DataFrame:
    """Replace ``fraction`` by its canonical name; keep the cell in ``fraction_as_written``.

    An empty cell becomes ``empty`` when given (str_samples.tsv: empty = PB).

    Raises
    ------
    ConfigError
        Naming every row whose fraction matches nothing, grouped by the value found.
    """
    unknown: dict[str, list[str]] = {}
    out: list[str] = []
    for i, rec in enumerate(df.to_dict(orient="records"), start=1):
        raw = rec["fraction"]
        canon = vocab.canonical(raw or empty)
        if canon is None:
            unknown.setdefault(raw, []).append(_row_label(i, rec, id_cols))
        out.append(canon or "")
    if unknown:
        found = "; ".join(
            f"found {raw!r} in {len(rows)} row(s): {', '.join(rows[:5])}"
            + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
            for raw, rows in unknown.items()
        )
        raise ConfigError(
            f"{sh.path}: column {sh.column('fraction')}: {found}; expected a fraction of {vocab.source} "
            f"(case and whitespace ignored): {vocab.allowed()}; fix: correct the cell, or add "
            "the lab's spelling as an alias of the fraction it means in that file (named by "
            "endpoints.chimerism_fractions in config.yaml)"
        )
    df["fraction_as_written"] = df["fraction"]
    df["fraction"] = out
    spelled: dict[tuple[str, str], list[str]] = {}
    for i, (raw, canon) in enumerate(zip(df["fraction_as_written"], out, strict=True), start=1):
        if raw != canon:
            spelled.setdefault((raw, canon), []).append(str(i))
    for (raw, canon), rows in spelled.items():
        logger.info(
            "%s: column 'fraction': %r read as %s (%s) in row(s) %s",
            sh.path,
            raw,
            canon,
            vocab.source,
            ", ".join(rows),
        )
    return df


def load_chimerism(
    path: Sheet | str | Path, patients: Iterable[str] | None = None, *, fractions: FractionVocab
) -> tuple[pd.DataFrame, list[str]]:
    """Load laboratory STR results (key (patient_id, date, fraction), fraction canonical).

    Parameters
    ----------
    path
        ``chimerism.tsv``.
    patients
        Known patient ids; rows for other patients are reported and dropped. None keeps all rows.
    fractions
        The fraction vocabulary (:func:`load_fraction_vocab`).

    Returns
    -------
    (DataFrame, warnings)
        ``fraction`` canonical, ``fraction_as_written`` verbatim; adds ``donor_pct_value`` (float
        or None) and ``chimerism_status`` (``ok`` | ``missing`` | ``invalid``: not a number /
        outside 0-100).

    Raises
    ------
    ConfigError
        Schema failure, a fraction outside the vocabulary (every such row named), a duplicate key
        after canonicalisation (``CD56`` and ``CD56+`` on one date are the same fraction).
    """
    df, vals, stats, warnings = _load_results(
        path, "chimerism", patients, fractions, "donor_pct", _donor_pct
    )
    df["donor_pct_value"] = vals
    df["chimerism_status"] = stats
    return df, warnings


def preference_warnings(
    preference: Iterable[str], occurring: dict[str, set[str]], sources: str
) -> list[str]:
    """One warning per preferred fraction that no chimerism row of any source has.

    Parameters
    ----------
    preference
        ``endpoints.chimerism_preference`` (canonical names).
    occurring
        Canonical fraction -> the spellings found for it (chimerism.tsv, str_samples.tsv).
    sources
        The files searched, for the message.
    """
    pref = list(preference)
    found = ", ".join(
        f"{f} (as {', '.join(sorted(sp))})" if sp != {f} else f
        for f, sp in sorted(occurring.items())
    )
    out = []
    for i, frac in enumerate(pref):
        if frac in occurring:
            continue
        rest = [f for f in pref[i + 1 :] if f in occurring]
        then = f"visits use {rest[0]} instead" if rest else "no visit has chimerism"
        out.append(
            f"{sources}: column 'fraction': preferred fraction {frac!r} "
            f"(endpoints.chimerism_preference) never occurs; fractions found: {found or 'none'}; "
            f"{then}; fix: if the lab names {frac} differently, add that spelling as an alias "
            f"of {frac} in the fraction vocabulary (endpoints.chimerism_fractions), otherwise "
            f"remove {frac} from endpoints.chimerism_preference"
        )
    return out


def load_chimerism_sources(
    config: dict[str, Any], base_dir: str | Path, patients: Iterable[str]
) -> tuple[pd.DataFrame, pd.DataFrame | None, list[str]]:
    """Load the fraction vocabulary, chimerism.tsv and (when configured) the STR peaks.

    The one place the configured preference meets the data: ``endpoints.chimerism_preference``
    must name canonical fractions (error), and a preferred fraction that no row has is a
    warning, given on every run.

    Returns
    -------
    (chimerism, peaks or None, warnings)
    """
    base = Path(base_dir)
    ep = EndpointSettings.from_config(config)
    vocab = load_fraction_vocab(base / ep.chimerism_fractions)
    preference = list(ep.chimerism_preference)
    check_preference(preference, vocab)
    chim_sheet = required_sheet(config, "chimerism", base)
    chim_p = chim_sheet.path
    chim, warnings = load_chimerism(chim_sheet, patients, fractions=vocab)
    occurring: dict[str, set[str]] = {}
    for canon, raw in zip(chim["fraction"], chim["fraction_as_written"], strict=True):
        occurring.setdefault(canon, set()).add(raw)
    sources = str(chim_p)
    peaks = None
    peaks_sheet, map_sheet = sheet(config, "str_peaks", base), sheet(config, "str_samples", base)
    if peaks_sheet is not None and map_sheet is not None:
        map_p = map_sheet.path
        peaks, w = load_str_peaks(peaks_sheet, map_sheet, patients, fractions=vocab)
        warnings += w
        post = peaks[peaks["role"] == "post"]
        for canon, raw in zip(post["fraction"], post["fraction_as_written"], strict=True):
            occurring.setdefault(canon, set()).add(raw)
        sources += f" and {map_p}"
    return chim, peaks, warnings + preference_warnings(preference, occurring, sources)


def load_str_peaks(
    path: Sheet | str | Path,
    samples_path: Sheet | str | Path,
    patients: Iterable[str] | None = None,
    *,
    fractions: FractionVocab,
) -> tuple[pd.DataFrame, list[str]]:
    """Load a GeneMapper-style long peak table joined with ``str_samples.tsv``.

    Parameters
    ----------
    path
        Peak table: ``Sample File Name, Marker, Allele, Size, Height, Area``.
    samples_path
        ``str_samples.tsv``: ``sample_file, patient_id, role, date, fraction``.
    patients
        Known patient ids; mapping rows for others are reported and ignored.
    fractions
        The fraction vocabulary; ``fraction`` is canonicalised as in :func:`load_chimerism`.

    Returns
    -------
    (DataFrame, warnings)
        One row per peak: ``sample_file, patient_id, role, date, fraction, marker, allele,
        height, area, fraction_as_written``. ``fraction`` is canonical (an empty cell is
        ``PB``); ``fraction_as_written`` is the str_samples.tsv cell.

    Raises
    ------
    ConfigError
        Schema failure, duplicate mapping or peak, a peak file missing from the mapping, a post
        sample without a date, a fraction outside the vocabulary, a patient without exactly one
        donor and one recipient profile.
    """
    import pandas as pd

    ssh = _as_sheet(samples_path, "str_samples")
    sp = ssh.path
    smap = read_table(ssh)
    known_files = set(smap["sample_file"])  # every listed file, before unknown patients drop
    sschema = sheet_schema("str_samples")
    validate_rows(smap, sschema, ssh, ("sample_file",))
    check_unique(smap, ("sample_file",), sp)
    smap.insert(0, "row", range(1, len(smap) + 1))
    for col in ("date", "fraction"):
        if col not in smap.columns:
            smap[col] = ""
    for rec in smap.to_dict(orient="records"):
        if rec["role"] == "post" and rec["date"] == "":
            raise ConfigError(
                f"{sp}: row {rec['row']} (sample_file={rec['sample_file']!r}): column 'date': "
                "found ''; expected the collection date of a post-transplant sample; fix: add it"
            )
    smap = _parse_dates(smap, sschema, ssh, ("sample_file",))
    smap = _canonical_fractions(smap, fractions, ssh, ("sample_file",), empty="PB")
    smap, warnings = _drop_unknown_patients(smap, patients, sp, ("sample_file", "patient_id"))
    for pid, grp in smap.groupby("patient_id", sort=True):
        for role in ("donor", "recipient"):
            n = int((grp["role"] == role).sum())
            if n != 1:
                raise ConfigError(
                    f"{sp}: patient_id={pid!r}: column 'role': found {n} '{role}' profiles; "
                    f"expected exactly 1 pre-transplant {role} profile; fix: list one {role} "
                    "sample file for the patient"
                )
    ids = ("Sample File Name", "Marker", "Allele")
    psh, peaks = _load(path, "str_peaks", ids)
    p = psh.path
    for rec in peaks.to_dict(orient="records"):
        if rec["Sample File Name"] not in known_files:
            raise ConfigError(
                f"{p}: {_row_label(rec['row'], rec, ids)}: column 'Sample File Name': found "
                f"{rec['Sample File Name']!r}; expected a file listed in {sp}; fix: add it to "
                "str_samples.tsv with its patient, role and date"
            )
    lower = {c: c.lower() for c in ("Marker", "Allele", "Height", "Area")}
    peaks = peaks.rename(columns={"Sample File Name": "sample_file", **lower})
    peaks = peaks.astype({"height": float, "area": float})
    out = peaks.merge(
        smap[["sample_file", "patient_id", "role", "date", "fraction", "fraction_as_written"]],
        on="sample_file",
        how="inner",
    )
    cols = ["sample_file", "patient_id", "role", "date", "fraction", "marker", "allele"]
    out = out[[*cols, "height", "area", "fraction_as_written"]]
    return pd.DataFrame(out).reset_index(drop=True), warnings


def load_vocab(vocab_path: str | Path) -> dict[tuple[str, str], list[str]]:
    """Load the response vocabulary: ``{(criteria, version): [categories]}``.

    Raises
    ------
    ConfigError
        When the file is missing or not shaped ``criteria: {name: {version: {categories: []}}}``.
    """
    import yaml

    vp = Path(vocab_path)
    if not vp.is_file():
        raise ConfigError(
            f"{vp}: response vocabulary not found; fix: check endpoints.response_vocab"
        )
    data = yaml.safe_load(vp.read_text(encoding="utf-8")) or {}
    out: dict[tuple[str, str], list[str]] = {}
    try:
        for name, versions in data["criteria"].items():
            for version, entry in versions.items():
                out[(str(name), str(version))] = [str(c) for c in entry["categories"]]
    except (KeyError, AttributeError, TypeError) as exc:
        raise ConfigError(
            f"{vp}: field 'criteria': expected criteria: {{name: {{version: {{categories: [...]}}}}}}"
            f"; fix: follow config/vocab/response_categories.yaml ({exc!r})"
        ) from exc
    return out


def load_response(
    path: Sheet | str | Path, vocab_path: str | Path, patients: Iterable[str] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Load response assessments checked against the versioned vocabulary.

    Raises
    ------
    ConfigError
        Unknown criteria set/version, or a category not in its list (the allowed list is named).
    """
    ids = ("patient_id", "assessment_date", "criteria")
    sh, df = _load(path, "response", ids, optional=("mrd_status",))
    p = sh.path
    vocab = load_vocab(vocab_path)
    for rec in df.to_dict(orient="records"):
        label = _row_label(rec["row"], rec, ("patient_id", "assessment_date"))
        key = (rec["criteria"], rec["criteria_version"])
        if key not in vocab:
            known = ", ".join(f"{a} {b}" for a, b in sorted(vocab))
            raise ConfigError(
                f"{p}: {label}: columns 'criteria'/'criteria_version': found {key[0]!r} "
                f"{key[1]!r}; expected one of: {known}; fix: use a listed criteria set and "
                f"version or add a new versioned entry to {vocab_path}"
            )
        if rec["category"] not in vocab[key]:
            raise ConfigError(
                f"{p}: {label}: column 'category': found {rec['category']!r}; expected one of "
                f"{key[0]} {key[1]}: {', '.join(vocab[key])}; fix: use an allowed category"
            )
    return _drop_unknown_patients(df, patients, p, ids)


def load_adverse_events(
    path: Sheet | str | Path, patients: Iterable[str] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Load adverse events (CTCAE term, grade 1-5, relation to the NK infusion)."""
    ids = ("patient_id", "onset_date", "term")
    sh, df = _load(path, "adverse_events", ids)
    p = sh.path
    df["ctcae_grade"] = df["ctcae_grade"].astype(int)
    return _drop_unknown_patients(df, patients, p, ids)


#: why a column labs often add is not used, for the warning
_UNUSED_COLUMN_HINTS = {
    "cytometer": "the instrument is taken from each FCS file's $CYT keyword (per-instrument "
    "channels are pinned in the panel file: channel: {<$CYT>: <$PnN>}), never from the sheet",
    "instrument": "the instrument is taken from each FCS file's $CYT keyword, never from the sheet",
    "method": "every row is read as a % donor result whatever its method (STR, qPCR, NGS); "
    "methods are not told apart",
    "chimerism_method": "every row is read as a % donor result whatever its method",
    "unit": "the unit is fixed by the column (see config/README.md)",
}


def unused_column_warnings(config: dict[str, Any], base_dir: str | Path) -> list[str]:
    """One warning per column of a configured sheet that nkflow does not read.

    A column nkflow ignores (a lab's ``cytometer`` or chimerism ``method``) would otherwise look
    as if it had been taken into account. Columns are compared after ``sheet_format.columns``.
    """
    out = []
    for key in config.get("sheets") or {}:
        sh = sheet(config, key, base_dir)
        if key not in SHEET_SCHEMAS or sh is None:
            continue
        props = set(sheet_schema(key).get("properties", {}))
        unused = [c for c in read_table(sh, header_only=True).columns if c not in props]
        n_rows = len(read_table(sh)) if unused else 0  # the whole sheet only to count its rows
        for col in unused:
            why = _UNUSED_COLUMN_HINTS.get(str(col).strip().lower(), "")
            out.append(
                f"{sh.path}: header: column {col!r} is not read by nkflow; its value in all "
                f"{n_rows} row(s) is ignored{'; ' + why if why else ''}; columns read: "
                f"{', '.join(sorted(props))}; fix: remove the column, rename it, or map it "
                f"with sheet_format.{key}.columns if it was meant to be one of those"
            )
    return out


def load_configured_infusions(
    config: dict[str, Any], base_dir: str | Path = "."
) -> tuple[pd.DataFrame, list[str]]:
    """:func:`load_infusions` of ``sheets.infusions`` with the configured plausible dose range."""
    lo, hi = (float(x) for x in EndpointSettings.from_config(config).dose_plausible_per_kg)
    return load_infusions(required_sheet(config, "infusions", base_dir), (lo, hi))


def load_configured_samples(config: dict[str, Any], base_dir: str | Path = ".") -> pd.DataFrame:
    """:func:`load_samples` of ``sheets.samples`` with the configured panels and gate trees."""
    return load_samples(
        required_sheet(config, "samples", base_dir),
        config.get("panels") or {},
        config.get("gating") or {},
    )


def validate_all(
    config: dict[str, Any],
    base_dir: str | Path,
    *,
    samples: pd.DataFrame | None = None,
    infusions: tuple[pd.DataFrame, list[str]] | None = None,
) -> list[str]:
    """Validate every sheet named in ``config['sheets']`` and the cross-sheet rules.

    Parameters
    ----------
    config
        The parsed config.yaml (``sheets``, ``sheet_format``, ``panels``, ``gating``,
        ``endpoints``).
    base_dir
        Directory the sheet paths in config are relative to (the run directory).
    samples, infusions
        The sample sheet and the infusions (with their warnings) when the caller has loaded
        them already (:class:`nkflow.config.Study`); read here otherwise.

    Returns
    -------
    list[str]
        Row-level warnings (QNS ALC, unknown patients, FCS files not found...).

    Raises
    ------
    ConfigError
        On the first hard error: schema, duplicate key, hostile id, a sample whose patient has no
        infusion, an unknown response category...
    """
    base = Path(base_dir)
    ep = EndpointSettings.from_config(config)
    if samples is None:
        samples = load_configured_samples(config, base)
    inf, inf_warnings = load_configured_infusions(config, base) if infusions is None else infusions
    warnings = list(inf_warnings)
    patients = sorted(set(inf["patient_id"]))
    sp = required_sheet(config, "samples", base)
    for rec in samples.to_dict(orient="records"):
        if rec["patient_id"] not in patients:
            raise ConfigError(
                f"{sp.path}: {_row_label(rec['row'], rec, ('sample_id', 'tube'))}: column "
                f"{sp.column('patient_id')}: found {rec['patient_id']!r}; expected a patient "
                f"listed in {required_sheet(config, 'infusions', base).path}; fix: add the "
                "patient's infusions or correct the id"
            )
        where = (
            f"{sp.path}: row {rec['row']} (sample_id={rec['sample_id']!r}, tube={rec['tube']!r})"
        )
        if not Path(rec["fcs_path"]).is_file():
            warnings.append(
                f"{where}: column {sp.column('fcs_file')}: file {rec['fcs_path']} not found"
            )
        for marker, fmo in rec["fmo_paths"].items():
            if not Path(fmo).is_file():
                warnings.append(
                    f"{where}: column 'fmo': {marker} FMO file {fmo} not found; that boundary "
                    "is fitted on the tube itself"
                )
    warnings += load_cbc(required_sheet(config, "cbc", base), patients)[1]
    warnings += load_chimerism_sources(config, base, patients)[2]
    warnings += unused_column_warnings(config, base)
    resp = sheet(config, "response", base)
    if resp is not None:
        warnings += load_response(resp, base / ep.response_vocab, patients)[1]
    ae = sheet(config, "adverse_events", base)
    if ae is not None:
        warnings += load_adverse_events(ae, patients)[1]
    for w in warnings:
        logger.warning(w)
    return warnings
