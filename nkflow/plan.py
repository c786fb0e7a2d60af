"""What a run will use, said before it runs (``nkflow plan``, ``nkflow validate --explain``).

Every patient's day 0, visits, day-14 visit and the CBC and chimerism rows each visit will take.

Contract
--------
* :func:`build_plan` turns the loaded sheets into one record per (patient, visit), columns
  :data:`PLAN_COLUMNS`, sorted by (patient_id, collection_date, sample_id) as visits.tsv is. A
  patient of infusions.tsv with no sample in the day-14 window gets one more record, role
  ``day14_endpoint`` with an empty sample_id and ``missing`` = ``no_sample_in_window``, so that
  the ``day14_endpoint`` records are one per patient of endpoints.tsv.
* Every choice is made by the function the merge and endpoint steps make it with: day 0 by
  :func:`nkflow.clinical.visits.day0_dates`, the CBC row by :func:`nkflow.clinical.visits.fill_alc`, the chimerism
  result by :func:`nkflow.clinical.visits.chimerism_candidates` and
  :func:`nkflow.clinical.chimerism.select_result`, the day-14 visit by
  :func:`nkflow.clinical.endpoints.choose_visit` (its window by ``window_candidates``), the settings by
  :meth:`nkflow.clinical.endpoint_settings.EndpointSettings.from_config`. Nothing here chooses on its own.
* Gating and QC results are not known before the tubes run: the plan names the FCS file, gate
  tree and panel that will be read, never a count. % donor from raw STR peaks *is* computed (it
  is cheap, and it decides the choice: a result with too few informative loci is no candidate).
* ``missing`` holds the reason codes the endpoint step will give from the sheets alone, in its
  order (``no_infusion``, ``no_nk_tube``, ``missing_beads``, ``missing_alc``/``invalid_alc``,
  ``missing_chimerism``; ``no_sample_in_window``), then ``fcs_not_found:<tube>`` for a file
  that does not exist (the workflow stops on missing input rather than give a reason). Reasons
  that only the tubes can give (``qc_fail``, ``missing_marker``...) are never predicted.
* Pure apart from :func:`run_plan` and :func:`write_plan_tsv` at the bottom; the same inputs
  give the same text and byte-identical TSV.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nkflow import tables
from nkflow.clinical import chimerism as chim
from nkflow.clinical import counts as cnt
from nkflow.clinical import endpoints as ep
from nkflow.clinical import visits as vis
from nkflow.clinical.endpoint_settings import EndpointSettings
from nkflow.config import Study

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

PLAN_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "sample_id",
    "collection_date",
    "study_day",
    "day0_date",
    "day0_infusion",
    "role",
    "nk_tube_fcs",
    "nk_gating",
    "nk_gating_file",
    "nk_panel",
    "treg_tube_fcs",
    "treg_gating",
    "treg_gating_file",
    "treg_panel",
    "cbc_row",
    "alc_date",
    "alc_source_value",
    "alc_source_unit",
    "alc_per_ul",
    "alc_status",
    "chimerism_source",
    "chimerism_row",
    "chimerism_fraction",
    "chimerism_fraction_as_written",
    "chimerism_date",
    "donor_chimerism_pct",
    "missing",
    "flags",
)


@dataclass(frozen=True)
class Plan:
    """The records and what the text needs besides them.

    Attributes
    ----------
    rows : list of dict
        One per (patient, visit), keys :data:`PLAN_COLUMNS`.
    patients : dict
        patient_id -> ``{"n_infusions", "day0_date", "day0_infusion", "n_in_window"}``
        (``n_infusions`` 0 for a patient of the sample sheet only).
    settings : dict
        The ``endpoints`` settings used.
    sheets : dict
        Sheet key -> path as configured, for the text.
    gating : dict
        Gate-tree name -> file configured under ``gating:``, for the text.
    warnings : list of str
        The sheet warnings of loading (logged by the caller).
    """

    rows: list[dict[str, Any]]
    patients: dict[str, dict[str, Any]]
    settings: EndpointSettings
    sheets: dict[str, str]
    gating: dict[str, str]
    warnings: list[str]


def build_plan(
    config: dict[str, Any],
    samples: pd.DataFrame,
    infusions: pd.DataFrame,
    cbc: pd.DataFrame,
    chimerism: pd.DataFrame | None,
    str_results: pd.DataFrame | None = None,
    peaks: pd.DataFrame | None = None,
    fcs_present: Collection[str] | None = None,
    gating_files: Mapping[tuple[str, str], str] | None = None,
    warnings: list[str] | None = None,
) -> Plan:
    """The plan of a cohort from its loaded sheets.

    Parameters
    ----------
    config
        Parsed config.yaml (``endpoints``, ``gating``, ``sheets``).
    samples, infusions, cbc, chimerism
        From the ``nkflow.clinical.sheets`` loaders (as :attr:`nkflow.config.Study.visit_inputs`).
    str_results, peaks
        % donor computed from STR peaks, and the peak table (for the post-sample file names).
    fcs_present
        ``fcs_path`` values that exist; None: not checked.
    gating_files
        (sample_id, tube) -> the gate-tree file that will gate the tube ('' when only the
        file's ``$CYT`` can tell); None: the file configured under ``gating:``.
    warnings
        Sheet warnings, passed through to :attr:`Plan.warnings`.
    """
    s = EndpointSettings.from_config(config)
    tubes = s.tubes
    target, before, after = s.target_day, s.window_before, s.window_after
    beads_method = s.absolute_count_method == "single_platform_beads"
    preference = list(s.chimerism_preference)
    tol_chim = s.chimerism_tolerance_days
    gating_cfg = config.get("gating") or {}

    day0 = vis.day0_dates(infusions, s.day0_infusion)
    n_inf = Counter(str(p) for p in infusions["patient_id"])
    cbc_by = vis.group_rows(cbc, "patient_id")
    chim_by = vis.chimerism_candidates(chimerism, str_results)
    str_failed = vis.str_not_computable(samples, str_results, tol_chim)
    str_files: dict[tuple[str, dt.date | None, str], list[str]] = {}
    if peaks is not None:
        for rec in peaks[peaks["role"] == "post"].to_dict(orient="records"):
            key = (str(rec["patient_id"]), rec["date"], str(rec["fraction"]))
            files = str_files.setdefault(key, [])
            if rec["sample_file"] not in files:
                files.append(rec["sample_file"])

    by_sample: dict[str, dict[str, dict[str, Any]]] = {}
    for rec in samples.to_dict(orient="records"):
        by_sample.setdefault(str(rec["sample_id"]), {})[str(rec["tube"])] = rec

    rows: list[dict[str, Any]] = []
    for sid, tube_rows in by_sample.items():
        first = next(iter(tube_rows.values()))
        pid, cdate = str(first["patient_id"]), first["collection_date"]
        r: dict[str, Any] = dict.fromkeys(PLAN_COLUMNS)
        r.update(patient_id=pid, sample_id=sid, collection_date=cdate, role="other")
        missing: list[str] = []
        flags: list[str] = []
        d0 = day0.get(pid)
        r["day0_date"] = d0
        if d0 is None:
            missing.append("no_infusion")
        else:
            r["study_day"] = (cdate - d0).days
            r["day0_infusion"] = s.day0_infusion
        not_found: list[str] = []
        for role in ("nk", "treg"):
            row = tube_rows.get(tubes[role])
            if row is None:
                continue
            r[f"{role}_tube_fcs"] = row.get("fcs_file")
            r[f"{role}_gating"] = row.get("gating")
            r[f"{role}_panel"] = row.get("panel")
            default = str(gating_cfg.get(row.get("gating"), ""))
            r[f"{role}_gating_file"] = (
                default if gating_files is None else gating_files.get((sid, tubes[role]), default)
            )
            if fcs_present is not None and row.get("fcs_path") not in fcs_present:
                not_found.append(f"fcs_not_found:{tubes[role]}")
        nk_row = tube_rows.get(tubes["nk"])
        if nk_row is None:
            missing.append("no_nk_tube")
        elif beads_method and (
            # with NK and bead events present, only these sheet cells can leave the count empty
            cnt.single_platform(1, 1, nk_row.get("beads_per_test"), nk_row.get("sample_volume_ul"))
            is None
        ):
            missing.append("missing_beads")

        alc_row = vis.fill_alc(r, cbc_by.get(pid, []), cdate, s.cbc_tolerance_days)
        if alc_row is not None:
            r["cbc_row"] = alc_row.get("row")
        if not beads_method and r["alc_status"] != "ok":
            missing.append("invalid_alc" if r["alc_status"] == "invalid" else "missing_alc")

        sel = chim.select_result(chim_by.get(pid, []), cdate, preference, tol_chim)
        if sel.reason:
            missing.append(sel.reason)
        else:
            cand = sel.candidate or {}
            r["chimerism_source"] = sel.source
            r["chimerism_fraction"] = sel.fraction
            r["chimerism_fraction_as_written"] = cand.get("fraction_as_written", sel.fraction)
            r["chimerism_date"] = sel.date
            r["donor_chimerism_pct"] = sel.donor_pct
            if sel.source == "str_peaks":
                key = (pid, sel.date, str(sel.fraction))
                r["chimerism_row"] = ",".join(str_files.get(key, []))
            else:
                r["chimerism_row"] = cand.get("row")
        flags += vis.chimerism_flags(sel, str_failed.get(pid, {}).get(cdate, []), s)
        r["missing"] = ";".join(missing + not_found)
        r["flags"] = ";".join(flags)
        rows.append(r)

    patients: dict[str, dict[str, Any]] = {}
    for pid in sorted(set(n_inf) | {str(r["patient_id"]) for r in rows}):
        patients[pid] = {
            "n_infusions": n_inf[pid],
            "day0_date": day0.get(pid),
            "day0_infusion": s.day0_infusion if pid in day0 else None,
            "n_in_window": 0,
        }
    for pid in sorted(n_inf):
        pv = [r for r in rows if r["patient_id"] == pid]
        chosen, n_in = ep.choose_visit(pv, target, before, after, s.tie_rule)
        patients[pid]["n_in_window"] = n_in
        for r in ep.window_candidates(pv, target, before, after):
            r["role"] = "day14_endpoint" if r is chosen else "day14_candidate"
        if chosen is None:
            r = dict.fromkeys(PLAN_COLUMNS)
            r.update(
                patient_id=pid,
                day0_date=day0.get(pid),
                day0_infusion=patients[pid]["day0_infusion"],
                role="day14_endpoint",
                missing="no_sample_in_window",
                flags="",
            )
            rows.append(r)
    rows.sort(
        key=lambda r: (
            r["patient_id"],
            r["sample_id"] is None,
            r["collection_date"] or dt.date.min,
            r["sample_id"] or "",
        )
    )
    sheets = {str(k): str(v) for k, v in (config.get("sheets") or {}).items()}
    trees = {str(k): str(v) for k, v in gating_cfg.items()}
    return Plan(rows, patients, s, sheets, trees, list(warnings or []))


# --------------------------------------------------------------------------------------------
# text and TSV
# --------------------------------------------------------------------------------------------


def _v(col: str, value: Any) -> str:
    return vis.format_cell(col, value)


def _cbc_text(r: dict[str, Any], s: EndpointSettings) -> str:
    if r["cbc_row"] is None and r["alc_date"] is None:
        return f"CBC: none within {s.cbc_tolerance_days} d"
    head = f"CBC row {_v('cbc_row', r['cbc_row'])} ({_v('alc_date', r['alc_date'])}): "
    if r["alc_status"] == "ok":
        return head + (
            f"{r['alc_source_value']} {r['alc_source_unit']} = {_v('alc_per_ul', r['alc_per_ul'])}/uL"
        )
    return head + f"{r['alc_source_value']!r} {r['alc_source_unit']}: {r['alc_status']}"


def _chimerism_text(r: dict[str, Any], s: EndpointSettings) -> str:
    pref = list(s.chimerism_preference)
    tol = s.chimerism_tolerance_days
    if r["chimerism_fraction"] is None:
        return f"chimerism: no {' or '.join(pref)} result within {tol} d"
    frac = str(r["chimerism_fraction"])
    notes = []
    written = r["chimerism_fraction_as_written"]
    if written and written != frac:
        notes.append(f"written {written!r}")
    skipped = pref[: pref.index(frac)] if frac in pref else []
    if skipped:
        notes.append(f"no {', '.join(skipped)} within {tol} d")
    if r["chimerism_source"] == "str_peaks":
        where = f"computed from the STR peaks of {r['chimerism_row']}"
    else:
        where = f"{r['chimerism_source']} row {_v('chimerism_row', r['chimerism_row'])}"
    return (
        f"chimerism {where}: {frac} {_v('chimerism_date', r['chimerism_date'])}, "
        f"{_v('donor_chimerism_pct', r['donor_chimerism_pct'])} % donor"
        + (f" ({'; '.join(notes)})" if notes else "")
    )


def _tube_text(r: dict[str, Any], role: str, default_file: str) -> str:
    fcs = r[f"{role}_tube_fcs"]
    if fcs is None:
        return f"{role} tube: none in the sample sheet"
    gfile = r[f"{role}_gating_file"]
    if not gfile:
        tree = f"{r[f'{role}_gating']} or its gating_by_instrument tree (the file's $CYT decides)"
    elif gfile != default_file:
        tree = f"{gfile} (gating_by_instrument, for the file's $CYT)"
    else:
        tree = f"{r[f'{role}_gating']} ({gfile})"
    return f"{role} tube {fcs}, gate tree {tree}, panel {r[f'{role}_panel']}"


def plan_text(plan: Plan) -> str:
    """The plan as short plain text, grouped per patient (deterministic)."""
    s = plan.settings
    target, before, after = s.target_day, s.window_before, s.window_after
    window = f"days {target - before}-{target + after}"
    visits = [r for r in plan.rows if r["sample_id"] is not None]
    method = s.absolute_count_method
    lines = [
        f"nkflow plan: {len(plan.patients)} patient(s), {len(visits)} visit(s); day 0 = "
        f"infusion {s.day0_infusion}; day-{target} visit in {window} ({s.tie_rule}); "
        f"CBC within {s.cbc_tolerance_days} d of the draw; chimerism "
        f"{', then '.join(s.chimerism_preference)} within "
        f"{s.chimerism_tolerance_days} d; count method {method}",
        "sheets: " + "; ".join(f"{k} {v}" for k, v in plan.sheets.items()),
        "Gating results are not known before the tubes run: the plan names what will be read.",
        f"{len(plan.warnings)} sheet warning(s) (logged).",
    ]
    for pid, info in plan.patients.items():
        prow = [r for r in plan.rows if r["patient_id"] == pid]
        lines.append("")
        if info["n_infusions"] == 0:
            lines.append(f"{pid}: not in infusions.tsv: no day 0, no endpoint (no_infusion)")
        elif info["day0_date"] is None:
            lines.append(
                f"{pid}: no infusion number {s.day0_infusion} among its "
                f"{info['n_infusions']} infusion(s): no day 0 (no_infusion)"
            )
        else:
            lines.append(
                f"{pid}: day 0 {_v('day0_date', info['day0_date'])} (infusion "
                f"{info['day0_infusion']} of {info['n_infusions']})"
            )
        end = next((r for r in prow if r["role"] == "day14_endpoint"), None)
        if end is not None and end["sample_id"] is None:
            days = ", ".join(str(r["study_day"]) for r in prow if r["study_day"] is not None)
            lines.append(
                f"  day-{target} endpoint: no sample in {window} (visits on day(s) {days or 'none'})"
                " -> NOT_EVALUABLE no_sample_in_window"
            )
        elif end is not None:
            cands = [r for r in prow if r["role"] in ("day14_endpoint", "day14_candidate")]
            why = f"the only sample in {window}"
            if len(cands) > 1:
                listed = ", ".join(f"{r['sample_id']} day {r['study_day']}" for r in cands)
                why = f"{len(cands)} samples in {window}: {listed}; {s.tie_rule}"
            lines.append(
                f"  day-{target} endpoint: {end['sample_id']} day {end['study_day']} ({why})"
            )
            for role in ("nk", "treg"):
                default = plan.gating.get(str(end[f"{role}_gating"]), "")
                lines.append("    " + _tube_text(end, role, default))
            verdict = (
                f"NOT_EVALUABLE {end['missing']}"
                if end["missing"]
                else "PASS or FAIL, decided by the gating"
            )
            lines.append(f"    -> {verdict}")
        for r in prow:
            if r["sample_id"] is None:
                continue
            tag = {"day14_endpoint": "endpoint", "day14_candidate": "candidate"}.get(r["role"], "")
            day = "day ?" if r["study_day"] is None else f"day {r['study_day']}"
            parts = [_cbc_text(r, s), _chimerism_text(r, s)]
            if r["missing"]:
                parts.append(f"MISSING {r['missing']}")
            if r["flags"]:
                parts.append(f"flags {r['flags']}")
            lines.append(
                f"  {r['sample_id']:<10} {day:>7}  {_v('collection_date', r['collection_date'])}"
                f"  {tag:<9}  " + "; ".join(parts)
            )
    return "\n".join(lines) + "\n"


def plan_tsv_bytes(plan: Plan) -> bytes:
    """The records as TSV, columns :data:`PLAN_COLUMNS`, in the visits.tsv cell formats."""
    import pandas as pd

    df = pd.DataFrame(plan.rows, columns=list(PLAN_COLUMNS), dtype=object)
    return vis.table_bytes(df, PLAN_COLUMNS)


# --------------------------------------------------------------------------------------------
# edges
# --------------------------------------------------------------------------------------------


def tube_gating_files(
    config: dict[str, Any], samples: pd.DataFrame, fcs_present: Collection[str]
) -> dict[tuple[str, str], str]:
    """(sample_id, tube) -> the gate-tree file the tube step will use.

    The ``gating:`` file, unless ``gating_by_instrument`` declares trees for that gating: then
    the file's ``$CYT`` is read (header only) and the tube step's own choice is made; '' when
    the file is missing or unreadable.
    """
    from nkflow.config import tube_settings
    from nkflow.errors import FcsError

    gating_cfg = config.get("gating") or {}
    out: dict[tuple[str, str], str] = {}
    for rec in samples.to_dict(orient="records"):
        key = (str(rec["sample_id"]), str(rec["tube"]))
        default = str(gating_cfg.get(rec["gating"], ""))
        ts = tube_settings(config, rec["panel"], rec["gating"])
        if not ts.get("instrument_trees"):
            out[key] = default
            continue
        from nkflow.fcs import io
        from nkflow.tube import instrument_tree

        out[key] = ""
        if rec["fcs_path"] not in fcs_present:
            continue
        try:
            cyt = str(io.read_fcs_metadata(rec["fcs_path"]).keywords.get("$CYT", "")).strip()
        except FcsError:
            continue
        chosen = instrument_tree(ts, cyt)
        out[key] = str(chosen) if chosen is not None else default
    return out


def run_plan(config: dict[str, Any], log_warnings: bool = True) -> Plan:
    """Load the sheets as the merge step does (paths relative to the cwd) and build the plan.

    ``log_warnings``: log each sheet warning (``validate --explain`` has logged them already).
    """
    inp = Study(config).visit_inputs
    if log_warnings:
        for msg in inp.warnings:
            logger.warning(msg)
    present = {str(p) for p in inp.samples["fcs_path"] if Path(str(p)).is_file()}
    return build_plan(
        config,
        inp.samples,
        inp.infusions,
        inp.cbc,
        inp.chimerism,
        inp.str_results,
        inp.peaks,
        fcs_present=present,
        gating_files=tube_gating_files(config, inp.samples, present),
        warnings=inp.warnings,
    )


def write_plan_tsv(plan: Plan, path: str | Path) -> None:
    """Write :func:`plan_tsv_bytes` (not rewritten when the bytes would not change)."""
    tables.write_bytes(Path(path), plan_tsv_bytes(plan))
