"""Loading and validating every side table: sample sheet, infusions, CBC, chimerism, STR peaks,
response and adverse events.

Contract
--------
* Every sheet is a tab-separated file read entirely as text (no type guessing, empty cell = ``""``)
  and checked row by row against its JSON schema in ``workflow/schemas/<sheet>.schema.yaml`` (``nkflow/schemas`` links there).
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
* ``load_samples`` returns a DataFrame; every other ``load_*`` returns ``(DataFrame, warnings)``.
* Loaders are pure apart from reading the named files; nothing here runs a command.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nkflow.counts import parse_alc
from nkflow.errors import ConfigError
from nkflow.schemas import check_against_schema, load_schema

if TYPE_CHECKING:
    import pandas as pd

    from nkflow.chimerism import FractionVocab

logger = logging.getLogger(__name__)

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SEX_MARKERS_DEFAULT = ("AMEL", "DYS391", "Yindel")


def is_safe_id(value: str) -> bool:
    """Return True when ``value`` is a valid id (restricted characters, no ``..``)."""
    return bool(ID_RE.match(value)) and ".." not in value


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a TSV as text: every cell a ``str``, empty cells ``""``, surrounding spaces kept.

    Raises
    ------
    ConfigError
        When the file does not exist or is not a readable TSV.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found; fix: check the path in config.yaml 'sheets:'")
    try:
        df = pd.read_csv(
            p,
            sep="\t",
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8-sig",  # spreadsheet exports often start with a byte-order mark
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ConfigError(
            f"{p}: cannot be read as a tab-separated table ({exc}); "
            "fix: save the sheet as UTF-8 text with tab separators and one header line"
        ) from exc
    return df


def _text(v: Any) -> str:
    return v.isoformat() if isinstance(v, dt.date) else str(v)


def _row_label(i: int, row: dict[str, str], id_cols: tuple[str, ...]) -> str:
    ids = ", ".join(f"{c}={_text(row.get(c, ''))!r}" for c in id_cols if c in row)
    return f"row {i}" + (f" ({ids})" if ids else "")


def validate_rows(
    df: pd.DataFrame, schema: dict[str, Any], path: str | Path, id_cols: tuple[str, ...]
) -> None:
    """Check the header and every row of ``df`` against ``schema``.

    Rows are numbered from 1 (the first data row after the header).

    Raises
    ------
    ConfigError
        On the first missing column or failing cell, naming file, row, id, column, found value,
        expectation and fix.
    """
    import jsonschema

    props: dict[str, Any] = schema.get("properties", {})
    required: list[str] = schema.get("required", [])
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ConfigError(
            f"{path}: header: required column(s) {', '.join(missing)} missing; found columns "
            f"{', '.join(map(str, df.columns))}; expected {', '.join(required)}; "
            "fix: add the column(s) to the header line (tab-separated)"
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
        expected = spec.get("description", err.message)
        if err.validator == "enum":
            expected += "; allowed: " + ", ".join(map(str, spec.get("enum", [])))
        fix = spec.get("fix", "correct the cell")
        raise ConfigError(
            f"{path}: {_row_label(i, rec, id_cols)}: column '{col}': found {found!r}; "
            f"expected {expected}; fix: {fix}"
        )


def check_unique(
    df: pd.DataFrame, key: tuple[str, ...], path: str | Path, id_cols: tuple[str, ...]
) -> None:
    """Refuse a duplicate ``key``, naming both rows (never last-row-wins).

    Raises
    ------
    ConfigError
        When two data rows share the same key.
    """
    seen: dict[tuple[str, ...], int] = {}
    for i, rec in enumerate(df.to_dict(orient="records"), start=1):
        k = tuple(str(rec[c]) for c in key)
        if k in seen:
            what = ", ".join(f"{c}={v!r}" for c, v in zip(key, k, strict=True))
            raise ConfigError(
                f"{path}: rows {seen[k]} and {i}: duplicate key ({what}) in columns "
                f"{', '.join(key)}; expected each key once; fix: remove or correct one of the "
                f"two rows (rows {seen[k]} and {i}; nothing is silently overwritten)"
            )
        seen[k] = i
    _ = id_cols


def parse_date(value: str, path: str | Path, i: int, label: str, col: str) -> dt.date:
    """Parse ``YYYY-MM-DD``; raise ConfigError naming the cell when it is not a real date."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(
            f"{path}: {label}: column '{col}': found {value!r}; expected a real calendar date "
            f"YYYY-MM-DD; fix: correct the date"
        ) from exc


def _parse_dates(df: pd.DataFrame, cols: Iterable[str], path: Path, id_cols: tuple[str, ...]):
    for col in cols:
        if col not in df.columns:
            continue
        out = []
        for i, rec in enumerate(df.to_dict(orient="records"), start=1):
            v = rec[col]
            out.append(
                None if v == "" else parse_date(v, path, i, _row_label(i, rec, id_cols), col)
            )
        df[col] = out
    return df


def _load(path: str | Path, schema_name: str, key: tuple[str, ...], id_cols: tuple[str, ...]):
    p = Path(path)
    df = read_table(p)
    validate_rows(df, load_schema(schema_name), p, id_cols)
    check_unique(df, key, p, id_cols)
    df.insert(0, "row", range(1, len(df) + 1))
    return p, df


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
    warnings: list[str],
    id_cols: tuple[str, ...] = ("patient_id",),
) -> pd.DataFrame:
    if patients is None:
        return df
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
    return df[keep].reset_index(drop=True)


def load_samples(path: str | Path, panels: Iterable[str], gatings: Iterable[str]) -> pd.DataFrame:
    """Load and validate the sample sheet (one row per tube; key (sample_id, tube)).

    Parameters
    ----------
    path
        ``samples.tsv``.
    panels, gatings
        Names defined in config.yaml; every row must use one of them.

    Returns
    -------
    DataFrame
        Columns of the sheet (``collection_date`` as ``datetime.date``, ``beads_per_test`` and
        ``sample_volume_ul`` as float or None) plus ``row`` (1-based), ``fcs_path`` (absolute,
        resolved against the sheet's directory) and ``fmo_paths`` (marker -> absolute path of
        the FMO control tube, from the optional ``fmo`` column).

    Raises
    ------
    ConfigError
        Bad id (``;``, ``/``, ``..``, spaces, quotes...), bad date, unknown tube/panel/gating,
        duplicate (sample_id, tube), a sample whose tubes disagree on patient or date.
    """
    ids = ("sample_id", "tube")
    p, df = _load(path, "samples", ("sample_id", "tube"), ids)
    panels_s, gatings_s = sorted(set(panels)), sorted(set(gatings))
    for rec in df.to_dict(orient="records"):
        label = _row_label(rec["row"], rec, ids)
        for col, known in (("panel", panels_s), ("gating", gatings_s)):
            if rec[col] not in known:
                raise ConfigError(
                    f"{p}: {label}: column '{col}': found {rec[col]!r}; expected one of "
                    f"{', '.join(known) or '(none defined)'}; fix: use a name defined under "
                    f"'{'panels' if col == 'panel' else 'gating'}:' in config.yaml or add it there"
                )
    df = _parse_dates(df, ["collection_date"], p, ids)
    first: dict[str, dict[str, Any]] = {}
    for rec in df.to_dict(orient="records"):
        f = first.setdefault(rec["sample_id"], rec)
        for col in ("patient_id", "collection_date"):
            if rec[col] != f[col]:
                raise ConfigError(
                    f"{p}: rows {f['row']} and {rec['row']} (sample_id={rec['sample_id']!r}): "
                    f"column '{col}': found {str(f[col])!r} and {str(rec[col])!r}; expected the "
                    f"same {col} on every tube of a sample; fix: correct one of the two rows"
                )
    for col in ("beads_per_test", "sample_volume_ul"):
        if col not in df.columns:
            df[col] = None
        else:
            df[col] = [None if v == "" else float(v) for v in df[col]]
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


def load_infusions(path: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Load infusions (key (patient_id, infusion_number)); derive ``cells_per_kg`` per infusion.

    Returns
    -------
    (DataFrame, warnings)
        ``infusion_number`` int, ``infusion_date`` date, ``cells_infused``, ``body_weight_kg``,
        ``cells_per_kg`` floats; warnings is empty (dose flags are computed in endpoints).

    Raises
    ------
    ConfigError
        Schema failure, duplicate key, zero body weight.
    """
    ids = ("patient_id", "infusion_number")
    p, df = _load(path, "infusions", ids, ids)
    df = _parse_dates(df, ["infusion_date"], p, ids)
    df["infusion_number"] = df["infusion_number"].astype(int)
    df["cells_infused"] = df["cells_infused"].astype(float)
    df["body_weight_kg"] = df["body_weight_kg"].astype(float)
    for rec in df.to_dict(orient="records"):
        if rec["body_weight_kg"] <= 0:
            raise ConfigError(
                f"{p}: {_row_label(rec['row'], rec, ids)}: column 'body_weight_kg': found "
                f"{rec['body_weight_kg']!r}; expected a positive weight in kg; fix: enter the "
                "patient's weight"
            )
    df["cells_per_kg"] = df["cells_infused"] / df["body_weight_kg"]
    return df, []


def load_cbc(
    path: str | Path, patients: Iterable[str] | None = None
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
    import pandas as pd

    ids = ("patient_id", "date")
    p, df = _load(path, "cbc", ids, ids)
    df = _parse_dates(df, ["date"], p, ids)
    warnings: list[str] = []
    df = _drop_unknown_patients(df, patients, p, warnings, ids)
    vals, stats = [], []
    for rec in df.to_dict(orient="records"):
        alc = parse_alc(rec["alc_value"], rec["alc_unit"])
        vals.append(alc.per_ul)
        stats.append(alc.status)
        if alc.status != "ok":
            warnings.append(
                f"{p}: {_row_label(rec['row'], rec, ids)}: column 'alc_value': found "
                f"{rec['alc_value']!r}; {alc.status}_alc: {alc.message}"
            )
    df["alc_source_value"] = df["alc_value"]
    df["alc_source_unit"] = df["alc_unit"]
    df["alc_per_ul"] = pd.Series(vals, index=df.index, dtype=object)
    df["alc_status"] = stats
    return df, warnings


def load_fraction_vocab(path: str | Path) -> FractionVocab:
    """Load the chimerism fraction vocabulary (``endpoints.chimerism_fractions``).

    Raises
    ------
    ConfigError
        File missing or not YAML, a schema failure (field named), or one spelling listed under
        two fractions (both named).
    """
    import yaml

    from nkflow.chimerism import FractionVocab, fraction_key

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
    df: pd.DataFrame, vocab: FractionVocab, path: Path, id_cols: tuple[str, ...], empty: str = ""
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
            f"{path}: column 'fraction': {found}; expected a fraction of {vocab.source} "
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
            path,
            raw,
            canon,
            vocab.source,
            ", ".join(rows),
        )
    return df


def load_chimerism(
    path: str | Path, patients: Iterable[str] | None = None, *, fractions: FractionVocab
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
    import pandas as pd

    ids = ("patient_id", "date", "fraction")
    p = Path(path)
    df = read_table(p)
    validate_rows(df, load_schema("chimerism"), p, ids)
    df = _canonical_fractions(df, fractions, p, ids)
    check_unique(df, ids, p, ids)
    df.insert(0, "row", range(1, len(df) + 1))
    df = _parse_dates(df, ["date"], p, ids)
    warnings: list[str] = []
    df = _drop_unknown_patients(df, patients, p, warnings, ids)
    vals, stats = [], []
    for rec in df.to_dict(orient="records"):
        v = _to_float(rec["donor_pct"])
        if v is None:
            status = "missing"
        elif not 0.0 <= v <= 100.0:
            status, v = "invalid", None
        else:
            status = "ok"
        vals.append(v)
        stats.append(status)
        if status != "ok":
            warnings.append(
                f"{p}: {_row_label(rec['row'], rec, ids)}: column 'donor_pct': found "
                f"{rec['donor_pct']!r}; {status}_chimerism: expected a number 0-100; row not used"
            )
    df["donor_pct_value"] = pd.Series(vals, index=df.index, dtype=object)
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
    from nkflow.endpoint_settings import settings

    base = Path(base_dir)
    sheets = config.get("sheets") or {}
    ep = settings(config)
    vocab = load_fraction_vocab(base / str(ep["chimerism_fractions"]))
    preference = list(ep["chimerism_preference"])
    check_preference(preference, vocab)
    chim_p = base / str(sheets["chimerism"])
    chim, warnings = load_chimerism(chim_p, patients, fractions=vocab)
    occurring: dict[str, set[str]] = {}
    for canon, raw in zip(chim["fraction"], chim["fraction_as_written"], strict=True):
        occurring.setdefault(canon, set()).add(raw)
    sources = str(chim_p)
    peaks = None
    if sheets.get("str_peaks") and sheets.get("str_samples"):
        map_p = base / str(sheets["str_samples"])
        peaks, w = load_str_peaks(base / str(sheets["str_peaks"]), map_p, patients, fractions=vocab)
        warnings += w
        post = peaks[peaks["role"] == "post"]
        for canon, raw in zip(post["fraction"], post["fraction_as_written"], strict=True):
            occurring.setdefault(canon, set()).add(raw)
        sources += f" and {map_p}"
    return chim, peaks, warnings + preference_warnings(preference, occurring, sources)


def load_str_peaks(
    path: str | Path,
    samples_path: str | Path,
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

    schema = load_schema("str_peaks")
    sp = Path(samples_path)
    smap = read_table(sp)
    sschema = dict(schema["$defs"]["str_sample"])
    validate_rows(smap, sschema, sp, ("sample_file",))
    check_unique(smap, ("sample_file",), sp, ("sample_file",))
    smap.insert(0, "row", range(1, len(smap) + 1))
    warnings: list[str] = []
    for col in ("date", "fraction"):
        if col not in smap.columns:
            smap[col] = ""
    for rec in smap.to_dict(orient="records"):
        if rec["role"] == "post" and rec["date"] == "":
            raise ConfigError(
                f"{sp}: row {rec['row']} (sample_file={rec['sample_file']!r}): column 'date': "
                "found ''; expected the collection date of a post-transplant sample; fix: add it"
            )
    smap = _parse_dates(smap, ["date"], sp, ("sample_file",))
    smap = _canonical_fractions(smap, fractions, sp, ("sample_file",), empty="PB")
    smap = _drop_unknown_patients(smap, patients, sp, warnings, ("sample_file", "patient_id"))
    for pid, grp in smap.groupby("patient_id", sort=True):
        for role in ("donor", "recipient"):
            n = int((grp["role"] == role).sum())
            if n != 1:
                raise ConfigError(
                    f"{sp}: patient_id={pid!r}: column 'role': found {n} '{role}' profiles; "
                    f"expected exactly 1 pre-transplant {role} profile; fix: list one {role} "
                    "sample file for the patient"
                )
    p = Path(path)
    peaks = read_table(p)
    ids = ("Sample File Name", "Marker", "Allele")
    validate_rows(peaks, schema, p, ids)
    check_unique(peaks, ids, p, ids)
    peaks.insert(0, "row", range(1, len(peaks) + 1))
    known_files = set(read_table(sp)["sample_file"])
    for rec in peaks.to_dict(orient="records"):
        if rec["Sample File Name"] not in known_files:
            raise ConfigError(
                f"{p}: {_row_label(rec['row'], rec, ids)}: column 'Sample File Name': found "
                f"{rec['Sample File Name']!r}; expected a file listed in {sp}; fix: add it to "
                "str_samples.tsv with its patient, role and date"
            )
    peaks = peaks.rename(
        columns={
            "Sample File Name": "sample_file",
            "Marker": "marker",
            "Allele": "allele",
            "Height": "height",
            "Area": "area",
        }
    )
    peaks["height"] = peaks["height"].astype(float)
    peaks["area"] = peaks["area"].astype(float)
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
    path: str | Path, vocab_path: str | Path, patients: Iterable[str] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Load response assessments checked against the versioned vocabulary.

    Raises
    ------
    ConfigError
        Unknown criteria set/version, or a category not in its list (the allowed list is named).
    """
    ids = ("patient_id", "assessment_date", "criteria")
    p, df = _load(path, "response", ids, ids)
    if "mrd_status" not in df.columns:
        df["mrd_status"] = ""
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
    df = _parse_dates(df, ["assessment_date"], p, ids)
    warnings: list[str] = []
    df = _drop_unknown_patients(df, patients, p, warnings, ids)
    return df, warnings


def load_adverse_events(
    path: str | Path, patients: Iterable[str] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Load adverse events (CTCAE term, grade 1-5, relation to the NK infusion)."""
    ids = ("patient_id", "onset_date", "term")
    p, df = _load(path, "adverse_events", ids, ids)
    df = _parse_dates(df, ["onset_date"], p, ids)
    df["ctcae_grade"] = df["ctcae_grade"].astype(int)
    warnings: list[str] = []
    df = _drop_unknown_patients(df, patients, p, warnings, ids)
    return df, warnings


#: sheet key in config.yaml -> (schema, $defs entry or '')
_SHEET_SCHEMAS = {
    "samples": ("samples", ""),
    "infusions": ("infusions", ""),
    "cbc": ("cbc", ""),
    "chimerism": ("chimerism", ""),
    "str_peaks": ("str_peaks", ""),
    "str_samples": ("str_peaks", "str_sample"),
    "response": ("response", ""),
    "adverse_events": ("adverse_events", ""),
}
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
    as if it had been taken into account.
    """
    base = Path(base_dir)
    out = []
    for key, path_text in (config.get("sheets") or {}).items():
        if key not in _SHEET_SCHEMAS or not path_text:
            continue
        name, sub = _SHEET_SCHEMAS[key]
        schema = load_schema(name)
        props = set((schema["$defs"][sub] if sub else schema).get("properties", {}))
        p = base / str(path_text)
        df = read_table(p)
        for col in df.columns:
            if col in props:
                continue
            why = _UNUSED_COLUMN_HINTS.get(str(col).strip().lower(), "")
            out.append(
                f"{p}: header: column {col!r} is not read by nkflow; its value in all "
                f"{len(df)} row(s) is ignored{'; ' + why if why else ''}; columns read: "
                f"{', '.join(sorted(props))}; fix: remove the column, or rename it if it was "
                "meant to be one of those"
            )
    return out


def validate_all(config: dict[str, Any], base_dir: str | Path) -> list[str]:
    """Validate every sheet named in ``config['sheets']`` and the cross-sheet rules.

    Parameters
    ----------
    config
        The parsed config.yaml (``sheets``, ``panels``, ``gating``, ``endpoints``).
    base_dir
        Directory the sheet paths in config are relative to (the run directory).

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
    sheets = config.get("sheets") or {}
    ep = config.get("endpoints") or {}

    def optional(name: str) -> Path | None:
        v = sheets.get(name)
        return base / str(v) if v else None

    def sheet(name: str) -> Path:
        p = optional(name)
        if p is None:
            raise ConfigError(
                f"config: field 'sheets.{name}': missing; expected a path to {name}.tsv; "
                f"fix: add 'sheets: {{{name}: path/to/{name}.tsv}}'"
            )
        return p

    samples = load_samples(sheet("samples"), config.get("panels") or {}, config.get("gating") or {})
    infusions, warnings = load_infusions(sheet("infusions"))
    patients = sorted(set(infusions["patient_id"]))
    sp = sheet("samples")
    for rec in samples.to_dict(orient="records"):
        if rec["patient_id"] not in patients:
            raise ConfigError(
                f"{sp}: {_row_label(rec['row'], rec, ('sample_id', 'tube'))}: column 'patient_id':"
                f" found {rec['patient_id']!r}; expected a patient listed in "
                f"{sheet('infusions')}; fix: add the patient's infusions or correct the id"
            )
        where = f"{sp}: row {rec['row']} (sample_id={rec['sample_id']!r}, tube={rec['tube']!r})"
        if not Path(rec["fcs_path"]).is_file():
            warnings.append(f"{where}: column 'fcs_file': file {rec['fcs_path']} not found")
        for marker, fmo in rec["fmo_paths"].items():
            if not Path(fmo).is_file():
                warnings.append(
                    f"{where}: column 'fmo': {marker} FMO file {fmo} not found; that boundary "
                    "is fitted on the tube itself"
                )
    warnings += load_cbc(sheet("cbc"), patients)[1]
    warnings += load_chimerism_sources(config, base, patients)[2]
    warnings += unused_column_warnings(config, base)
    resp = optional("response")
    if resp is not None:
        vocab = base / str(ep.get("response_vocab", "config/vocab/response_categories.yaml"))
        warnings += load_response(resp, vocab, patients)[1]
    ae = optional("adverse_events")
    if ae is not None:
        warnings += load_adverse_events(ae, patients)[1]
    for w in warnings:
        logger.warning(w)
    return warnings
