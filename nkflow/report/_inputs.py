"""Reading everything a report shows, once, into a :class:`ReportInputs` bundle.

Contract: this is the only part of :mod:`nkflow.report` that touches the file system on the
input side, and it reads only the paths it is given (:class:`ReportPaths`, the report rule's
inputs) and those the config and the tube index name. The per-patient JSON
(``cohort/patients/<id>.json``) holds the same endpoint and visit rows as the two cohort tables,
so the pages read the tables and the sheets (infusions, response, adverse events) instead; only
its donor NK/uL histogram (``donor_nk_per_ul_distribution``) and its ``review`` record are read
from it, each file once. Tables are read as text (``dtype=str``, empty cell -> ``""``) so that every number
reaches the page exactly as the producing step wrote it. A missing endpoints table is a setup
error (:class:`~nkflow.errors.ConfigError`); any other missing or unreadable input becomes a
note on the page (and a log warning), never a crash, so a partial run still gets a report.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nkflow.clinical.endpoint_settings import EndpointSettings
from nkflow.errors import ConfigError, NkflowError
from nkflow.provenance import sha256_file
from nkflow.tables import SAFE_ID, read_tsv

logger = logging.getLogger(__name__)


Row = dict[str, str]
#: sheets whose rows are shown (as sources) on the patient pages
SHOWN_SHEETS = ("samples", "cbc", "infusions", "response", "adverse_events")


@dataclass
class ReportInputs:
    """Everything the pages show. Tables are lists of text rows (column -> cell text).

    Attributes
    ----------
    config
        The validated configuration dict.
    endpoints, visits, qc, counts
        Rows of ``cohort/endpoints.tsv``, ``cohort/visits.tsv``, ``qc/tubes.tsv`` and
        ``cohort/counts.tsv`` (empty list when the file is absent).
    samples
        Rows of the sample sheet named in ``config['sheets']['samples']`` (may be empty).
    sheets
        Sheet role (``samples``, ``cbc``, ``infusions``, ``response``, ``adverse_events``) ->
        its rows as text, for the source rows shown on the patient pages.
    str_results, str_loci
        Rows of ``cohort/str_results.tsv`` and ``cohort/str_loci.tsv`` (written only when raw
        STR peaks are configured; empty otherwise).
    kinetics, kinetics_summary
        Rows of ``cohort/kinetics.tsv`` and ``cohort/kinetics_summary.tsv`` (the readout rule;
        empty, with a note, when absent).
    tube_provenance
        ``(sample_id, tube)`` -> the tube's ``provenance.json`` document.
    gating_png
        ``(sample_id, tube)`` -> path of the tube's ``gating.png``.
    input_hashes
        ``(role, path, sha256)`` for every side table, panel, gate tree and cohort table read.
    gate_trees
        gate tree name -> (path, parsed YAML document or None).
    distributions
        patient_id -> ``donor_nk_per_ul_distribution`` of ``cohort/patients/<id>.json``, the
        histogram of the day-14 donor NK/uL draws (absent when not computed).
    review
        patient_id -> the ``review`` record of the per-patient JSON (status, note, signatures
        with their standing; :mod:`nkflow.review.signing`).
    missing
        Human-readable notes about inputs that were absent or unreadable.
    """

    config: dict[str, Any]
    endpoints: list[Row]
    endpoints_columns: list[str]
    visits: list[Row] = field(default_factory=list)
    visits_columns: list[str] = field(default_factory=list)
    qc: list[Row] = field(default_factory=list)
    counts: list[Row] = field(default_factory=list)
    samples: list[Row] = field(default_factory=list)
    sheets: dict[str, list[Row]] = field(default_factory=dict)
    str_results: list[Row] = field(default_factory=list)
    str_loci: list[Row] = field(default_factory=list)
    kinetics: list[Row] = field(default_factory=list)
    kinetics_summary: list[Row] = field(default_factory=list)
    tube_provenance: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    gating_png: dict[tuple[str, str], Path] = field(default_factory=dict)
    input_hashes: list[tuple[str, str, str]] = field(default_factory=list)
    gate_trees: dict[str, tuple[str, Any]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    distributions: dict[str, dict[str, Any]] = field(default_factory=dict)
    review: dict[str, dict[str, Any]] = field(default_factory=dict)

    @functools.cached_property
    def endpoint_settings(self) -> EndpointSettings:
        """The ``endpoints`` settings of :attr:`config`, built once for every page."""
        return EndpointSettings.from_config(self.config)


def read_text_table(path: Path) -> tuple[list[Row], list[str]]:
    """Read a TSV as text rows; returns (rows, columns). Raises ``OSError``/``ValueError``."""
    df = read_tsv(path, text=True)
    return df.to_dict(orient="records"), [str(c) for c in df.columns]


def _sheet_rows(config: dict[str, Any], role: str, base: Path, missing: list[str]) -> list[Row]:
    """A sheet's rows as written, under nkflow's column names (``sheet_format.columns``).

    A combined sample-sheet row is shown once per tube, as the workflow gates it.
    """
    from nkflow.clinical import sheets

    sh = sheets.sheet(config, role, base)
    if sh is None:
        return []
    try:
        df = sheets.read_table(sh)
        if role == "samples":
            df.insert(0, "row", range(1, len(df) + 1))
            df = sheets.expand_combined(df, sh.path).drop(columns="row")
    except NkflowError as exc:
        missing.append(f"sheet '{role}' at {sh.path} could not be read: {exc}")
        logger.warning("report: sheet %s at %s unreadable: %s", role, sh.path, exc)
        return []
    return [{str(k): str(v) for k, v in rec.items()} for rec in df.to_dict(orient="records")]


@dataclass(frozen=True)
class ReportPaths:
    """Every table and directory the report reads, as the report rule names them.

    ``patients``: the directory of per-patient JSON (``cohort/patients``); ``tubes_index``:
    ``cohort/tubes.tsv``, whose figure and provenance paths are relative to the run directory;
    ``str_results``/``str_loci``: None when raw STR peaks are not configured.
    """

    endpoints: Path
    visits: Path
    qc: Path
    counts: Path
    kinetics: Path
    kinetics_summary: Path
    patients: Path
    tubes_index: Path
    str_results: Path | None = None
    str_loci: Path | None = None


def _read_endpoints(path: Path) -> tuple[list[Row], list[str]]:
    """The endpoints table, which the report cannot do without; every patient_id checked."""
    if not path.is_file():
        raise ConfigError(
            f"{path}: endpoints table not found; expected the output of the endpoints step "
            "(run the workflow up to 'nkflow endpoints' first, or pass --endpoints of a run)"
        )
    try:
        endpoints, cols = read_text_table(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path}: cannot be read as a TSV table ({exc}); rerun the endpoints step"
        ) from None
    for i, row in enumerate(endpoints, start=1):
        pid = row.get("patient_id", "")
        if not SAFE_ID.match(pid):
            raise ConfigError(
                f"{path} row {i}: patient_id {pid!r} is not a safe identifier; expected letters, "
                "digits, '.', '_' or '-' (no '..'); fix the sheets and rerun the endpoints step"
            )
    return endpoints, cols


def _table(inp: ReportInputs, path: Path, what: str) -> tuple[list[Row], list[str]]:
    """An optional cohort table, its digest recorded when it exists (else a note, no rows)."""
    if not path.is_file():
        inp.missing.append(f"{what} not found at {path}")
        logger.warning("report: %s not found at %s; its sections will say so", what, path)
        return [], []
    inp.input_hashes.append(("cohort table", str(path), sha256_file(path)))
    try:
        return read_text_table(path)
    except (OSError, ValueError) as exc:
        inp.missing.append(f"{what} at {path} could not be read: {exc}")
        logger.warning("report: %s at %s unreadable: %s", what, path, exc)
        return [], []


def _load_sheets(inp: ReportInputs, base: Path) -> None:
    """The digest of every configured sheet, and the rows of those the pages show."""
    for role, rel in sorted((inp.config.get("sheets") or {}).items()):
        if not rel:
            continue
        path = base / str(rel)
        if not path.is_file():
            inp.missing.append(f"sheet '{role}' not found at {path}")
            continue
        inp.input_hashes.append((f"sheet: {role}", str(rel), sha256_file(path)))
        if role in SHOWN_SHEETS:
            inp.sheets[role] = _sheet_rows(inp.config, role, base, inp.missing)
            if role == "samples":
                inp.samples = inp.sheets[role]


def _load_config_files(inp: ReportInputs, base: Path) -> None:
    """The digest of every panel and gate tree, and each gate tree's document."""
    for kind, label in (("panels", "panel"), ("gating", "gate tree")):
        for name, rel in sorted((inp.config.get(kind) or {}).items()):
            path = base / str(rel)
            if not path.is_file():
                inp.missing.append(f"{kind} '{name}' not found at {path}")
                continue
            inp.input_hashes.append((f"{label}: {name}", str(rel), sha256_file(path)))
            if kind == "gating":
                inp.gate_trees[name] = (str(rel), _read_yaml(path, inp.missing))


def _load_tubes(inp: ReportInputs, index: Path, base: Path) -> None:
    """Each tube's figure and provenance, from the tube index ``nkflow collect`` wrote.

    The index names the current outputs of each tube; batch directories of an earlier batching are
    not read.
    """
    if not index.is_file():
        inp.missing.append(f"tube index not found at {index}; no gating figure or provenance")
        return
    for r in read_tsv(index, text=True).to_dict(orient="records"):
        key = (r["sample_id"], r["tube"])
        png, prov = base / r["figure"], base / r["provenance"]
        if png.is_file():
            inp.gating_png[key] = png
        try:
            inp.tube_provenance[key] = json.loads(prov.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            inp.missing.append(f"{prov} unreadable: {exc}")


def load_inputs(config: dict[str, Any], paths: ReportPaths, base_dir: Path) -> ReportInputs:
    """Read the cohort tables, per-patient JSON, per-tube sidecars and input hashes.

    Parameters
    ----------
    config
        Validated configuration (``sheets``, ``panels``, ``gating`` paths relative to
        ``base_dir``).
    paths
        The tables and directories to read (the report rule's inputs).
    base_dir
        The run directory: the config paths and those in the tube index are relative to it.

    Returns
    -------
    ReportInputs

    Raises
    ------
    ConfigError
        When the endpoints table is missing or unreadable, or a ``patient_id`` in it is not a
        safe identifier (it becomes a file name).
    """
    base = Path(base_dir)
    endpoints, ep_cols = _read_endpoints(paths.endpoints)
    inp = ReportInputs(config=config, endpoints=endpoints, endpoints_columns=ep_cols)
    inp.input_hashes.append(("cohort table", str(paths.endpoints), sha256_file(paths.endpoints)))
    inp.visits, inp.visits_columns = _table(inp, paths.visits, "visits table")
    inp.qc = _table(inp, paths.qc, "tube QC table")[0]
    inp.counts = _table(inp, paths.counts, "cohort counts table")[0]
    _load_sheets(inp, base)
    _load_patients(inp, paths.patients)
    if paths.str_results is not None:
        inp.str_results = _table(inp, paths.str_results, "str_results.tsv")[0]
    if paths.str_loci is not None:
        inp.str_loci = _table(inp, paths.str_loci, "str_loci.tsv")[0]
    inp.kinetics = _table(inp, paths.kinetics, "kinetics.tsv")[0]
    inp.kinetics_summary = _table(inp, paths.kinetics_summary, "kinetics_summary.tsv")[0]
    _load_config_files(inp, base)
    _load_tubes(inp, paths.tubes_index, base)
    return inp


def _load_patients(inp: ReportInputs, patients_dir: Path) -> None:
    """Each patient's ``review`` record and donor NK/uL histogram, from its per-patient JSON.

    The histogram is the only part of the JSON that the tables do not hold; it is expected for
    every patient with a ``p_above_threshold``.
    """
    for row in inp.endpoints:
        pid, path = row["patient_id"], patients_dir / f"{row['patient_id']}.json"
        if not row.get("p_above_threshold") and not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            inp.missing.append(f"{path} unreadable: {exc}")
            continue
        if isinstance(doc.get("review"), dict):
            inp.review[pid] = doc["review"]
        if not row.get("p_above_threshold"):
            continue
        dist = doc.get("donor_nk_per_ul_distribution")
        if isinstance(dist, dict):
            inp.distributions[pid] = dist
        else:
            inp.missing.append(f"{path}: no donor_nk_per_ul_distribution")


def _read_yaml(path: Path, missing: list[str]) -> Any:
    import yaml

    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        missing.append(f"{path} unreadable: {exc}")
        return None
