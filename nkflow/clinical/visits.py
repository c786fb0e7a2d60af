"""Visits merge: one row per sample with its counts, ALC, chimerism and donor NK/uL.

Contract
--------
* :func:`build_visits` joins, per sample (visit), the per-tube counts and QC with the sample sheet,
  infusions (study day), CBC (ALC) and chimerism (preferred fraction) and computes total and donor
  NK/uL with 95 % intervals, NK subsets and Treg numbers. One row per sample, sorted by
  (patient_id, collection_date, sample_id); columns :data:`VISIT_COLUMNS`. It is pure: the
  caller reads the tables and writes the result.
* A missing number is None (an empty cell), never 0. The threshold test is done on the unrounded
  value (``above_threshold``) so that reading visits.tsv back cannot flip a verdict through
  rounding.
* :data:`KINDS` says how a cell of visits.tsv, endpoints.tsv and plan.tsv is written and read
  (:func:`nkflow.tables.tsv_bytes`, :func:`nkflow.tables.parse_cell`); :func:`write_visits` and
  :func:`read_visits` are the visits.tsv edges.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nkflow import tables
from nkflow.clinical import chimerism as chim
from nkflow.clinical import counts as cnt
from nkflow.clinical.endpoint_settings import EndpointSettings
from nkflow.columns import Definition
from nkflow.errors import ConfigError
from nkflow.reasons import Reason

if TYPE_CHECKING:
    import pandas as pd


STATUS = ("ok", "not_evaluable")

#: the columns of visits.tsv in order, each with (unit, definition[, allowed values]) for the
#: data dictionary (:mod:`nkflow.clinical.exports`)
VISIT_DEFINITIONS: dict[str, Definition] = {
    "patient_id": ("", "patient, from the sample sheet"),
    "sample_id": ("", "visit (blood draw) id, the same for every tube of the draw"),
    "collection_date": ("", "date of the draw (sample sheet; authoritative)"),
    "study_day": ("day", "collection_date - day0_date"),
    "day0_date": ("", "date of infusion number endpoints.day0_infusion (study day 0)"),
    "status": ("", "ok, or not_evaluable: donor NK/uL cannot be computed here", STATUS),
    "reason": ("", "';'-joined reason codes of a not_evaluable visit (config/README.md)"),
    "flags": ("", "';'-joined flags: the number is kept but qualified (config/README.md)"),
    "qc_status": ("", "tube_status of the nk tube (empty: not assessed)", ("PASS", "WARN", "FAIL")),
    "nk_tube_fcs": ("", "FCS file of the nk tube, as in the sample sheet"),
    "count_method": ("", "absolute-count method", ("dual_platform", "single_platform_beads")),
    "lymphocyte_population": ("", "gate whose events are the NK denominator"),
    "alc_date": ("", "date of the CBC row used"),
    "alc_source_value": ("", "ALC as written in the CBC sheet"),
    "alc_source_unit": ("", "ALC unit as written in the CBC sheet"),
    "alc_per_ul": ("cells/uL", "absolute lymphocyte count, normalised"),
    "alc_status": ("", "usability of the ALC", ("ok", "missing", "invalid")),
    "lymphocyte_events": ("events", "events of the denominator gate in the nk tube"),
    "nk_events": ("events", "CD3- CD56+ NK events in the nk tube"),
    "nk_pct_of_lymphocytes": ("%", "100 x nk_events / lymphocyte_events"),
    "nk_cd56bright_pct_of_nk": ("%", "CD56bright CD16- NK, % of NK"),
    "nk_cd56dim_pct_of_nk": ("%", "CD56dim CD16+ NK, % of NK"),
    "bead_events": ("events", "counting-bead events (single-platform method)"),
    "beads_per_test": ("beads", "counting beads per test (sample sheet)"),
    "sample_volume_ul": ("uL", "blood volume in the bead tube (sample sheet)"),
    "total_nk_per_ul": ("cells/uL", "NK cells per uL of blood, all donors"),
    "total_nk_per_ul_lo95": ("cells/uL", "lower bound of the 95 % interval of total_nk_per_ul"),
    "total_nk_per_ul_hi95": ("cells/uL", "upper bound of the 95 % interval of total_nk_per_ul"),
    "chimerism_fraction": ("", "canonical chimerism fraction used (CD56, PB, ...)"),
    "chimerism_date": ("", "date of the chimerism result used"),
    "chimerism_source": ("", "where % donor came from", ("table", "str_peaks")),
    "donor_chimerism_pct": ("%", "% donor chimerism of that fraction"),
    "donor_chimerism_sd": ("%", "SD of % donor across STR loci (from peaks only)"),
    "donor_nk_per_ul": ("cells/uL", "total_nk_per_ul x donor_chimerism_pct / 100"),
    "donor_nk_per_ul_lo95": ("cells/uL", "lower bound of the 95 % interval of donor_nk_per_ul"),
    "donor_nk_per_ul_hi95": ("cells/uL", "upper bound of the 95 % interval of donor_nk_per_ul"),
    "above_threshold": ("", "donor_nk_per_ul > endpoints.threshold_per_ul (unrounded)"),
    "interval_contains_threshold": ("", "donor_nk_per_ul_lo95 <= threshold <= _hi95"),
    "treg_qc_status": ("", "tube_status of the treg tube", ("PASS", "WARN", "FAIL")),
    "cd4_events": ("events", "CD4+ T events in the treg tube"),
    "treg_events": ("events", "CD25hi CD127lo FoxP3+ Treg events"),
    "treg_ki67_events": ("events", "Ki-67+ Treg events"),
    "treg_pct_of_cd4": ("%", "100 x treg_events / cd4_events"),
    "treg_ki67_pct_of_cd4": ("%", "100 x treg_ki67_events / cd4_events"),
    "treg_ki67_pct_of_treg": ("%", "100 x treg_ki67_events / treg_events"),
    "treg_per_ul": ("cells/uL", "Treg per uL (same count method, treg-tube denominator)"),
    "treg_ki67_per_ul": ("cells/uL", "Ki-67+ Treg per uL"),
}
VISIT_COLUMNS: tuple[str, ...] = tuple(VISIT_DEFINITIONS)


#: the kind of every typed cell of visits.tsv, endpoints.tsv and plan.tsv (nkflow.tables);
#: a column not listed is text
KINDS: dict[str, str] = {
    "collection_date": "date",
    "study_day": "integer",
    "day0_date": "date",
    "alc_date": "date",
    "alc_source_value": "text",
    "alc_source_unit": "text",
    "alc_per_ul": "number",
    "lymphocyte_events": "integer",
    "nk_events": "integer",
    "nk_pct_of_lymphocytes": "number",
    "nk_cd56bright_pct_of_nk": "number",
    "nk_cd56dim_pct_of_nk": "number",
    "bead_events": "integer",
    "beads_per_test": "number",
    "sample_volume_ul": "number",
    "total_nk_per_ul": "number",
    "total_nk_per_ul_lo95": "number",
    "total_nk_per_ul_hi95": "number",
    "chimerism_date": "date",
    "donor_chimerism_pct": "number",
    "donor_chimerism_sd": "number",
    "donor_nk_per_ul": "number",
    "donor_nk_per_ul_lo95": "number",
    "donor_nk_per_ul_hi95": "number",
    "above_threshold": "boolean",
    "interval_contains_threshold": "boolean",
    "cd4_events": "integer",
    "treg_events": "integer",
    "treg_ki67_events": "integer",
    "treg_pct_of_cd4": "number",
    "treg_ki67_pct_of_cd4": "number",
    "treg_ki67_pct_of_treg": "number",
    "treg_per_ul": "number",
    "treg_ki67_per_ul": "number",
    "borderline": "boolean",
    "p_above_threshold": "number",
    "donor_nk_per_ul_all_lo95": "number",
    "donor_nk_per_ul_all_hi95": "number",
    "verdict_unstable": "boolean",
    "gate_variance_frac": "number",
    "counting_variance_frac": "number",
    "chimerism_variance_frac": "number",
    "n_samples_in_window": "integer",
    "n_visits": "integer",
    "peak_donor_nk_per_ul": "number",
    "peak_study_day": "integer",
    "treg_study_day7": "integer",
    "treg_pct_of_cd4_day7": "number",
    "treg_ki67_pct_of_cd4_day7": "number",
    "treg_below_5pct_day7": "boolean",
    "n_infusions": "integer",
    "cells_per_kg_total": "number",
    "nk_donor_is_hsct_donor": "boolean",
    "n_adverse_events": "integer",
    "max_ctcae_grade": "integer",
    "n_related_adverse_events": "integer",
}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _int_or_none(v: Any) -> int | None:
    if v is None or (isinstance(v, float) and v != v) or v == "":
        return None
    return int(float(v))


def _pct(num: int | None, den: int | None) -> float | None:
    f = cnt.fraction(num, den)
    return None if f is None else 100.0 * f


class _Counts:
    """Index over the concatenated counts table: (sample, tube, population) -> row."""

    def __init__(self, counts: pd.DataFrame) -> None:
        self.rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.tubes: set[tuple[str, str]] = set()
        for rec in counts.to_dict(orient="records"):
            key = (str(rec["sample_id"]), str(rec["tube"]), str(rec["population"]))
            self.rows[key] = rec
            self.tubes.add(key[:2])

    def events(self, sample: str, tube: str, pop: str) -> tuple[int | None, str]:
        """Events of ``pop`` and '' or a reason code when not available."""
        if (sample, tube) not in self.tubes:
            return None, f"no_counts:{tube}"
        rec = self.rows.get((sample, tube, pop))
        if rec is None:
            return None, f"missing_population:{pop}"
        if str(rec.get("status", "ok")) != "ok":
            reason = Reason.parse(str(rec.get("reason", "") or ""))
            if reason.code == "fcs_unreadable":
                return None, reason.code
            if reason.code == "missing_marker":
                return None, str(reason)
            return None, f"not_computed:{pop}"
        return _int_or_none(rec.get("events")), ""


class _Qc:
    """Index over the concatenated QC table: (sample, tube) -> (tube_status, FAIL codes, WARN codes)."""

    def __init__(self, qc: pd.DataFrame) -> None:
        self.by: dict[tuple[str, str], dict[str, Any]] = {}
        for rec in qc.to_dict(orient="records"):
            key = (str(rec["sample_id"]), str(rec["tube"]))
            d = self.by.setdefault(key, {"status": str(rec["tube_status"]), "FAIL": [], "WARN": []})
            st, code = str(rec.get("status", "")), str(rec.get("reason_code", "") or "")
            if st in ("FAIL", "WARN") and code and code not in d[st]:
                d[st].append(code)

    def get(self, sample: str, tube: str) -> tuple[str | None, list[str], list[str]]:
        d = self.by.get((sample, tube))
        if d is None:
            return None, [], []
        return d["status"], d["FAIL"], d["WARN"]


def group_rows(df: pd.DataFrame | None, key: str) -> dict[str, list[dict[str, Any]]]:
    """The records of ``df`` by the text of their ``key`` column, in table order ({} for None)."""
    out: dict[str, list[dict[str, Any]]] = {}
    if df is not None:
        for rec in df.to_dict(orient="records"):
            out.setdefault(str(rec[key]), []).append(rec)
    return out


def visit_records(visits: Any) -> list[dict[str, Any]]:
    """The rows of ``visits`` (a DataFrame or a list of row dicts) as dicts, NaN as None."""
    rows = visits.to_dict(orient="records") if hasattr(visits, "to_dict") else list(visits)
    return [
        {k: (None if isinstance(x, float) and x != x else x) for k, x in r.items()} for r in rows
    ]


def _closest(
    rows: Sequence[dict[str, Any]], date_key: str, target: dt.date, tol: int
) -> dict[str, Any] | None:
    pool = [r for r in rows if r[date_key] is not None and abs((r[date_key] - target).days) <= tol]
    if not pool:
        return None
    return min(pool, key=lambda r: (abs((r[date_key] - target).days), r[date_key]))


def day0_dates(infusions: pd.DataFrame, day0_infusion: int) -> dict[str, dt.date]:
    """Patient -> date of infusion number ``day0_infusion`` (day 0)."""
    out: dict[str, dt.date] = {}
    for rec in infusions.to_dict(orient="records"):
        if int(rec["infusion_number"]) == int(day0_infusion):
            out[str(rec["patient_id"])] = rec["infusion_date"]
    return out


def chimerism_candidates(
    chimerism: pd.DataFrame | None, str_results: pd.DataFrame | None
) -> dict[str, list[dict[str, Any]]]:
    """Usable chimerism results per patient from the table and from peaks (peaks first).

    Each candidate: ``fraction`` (canonical), ``date``, ``donor_pct``, ``sd``, ``source``
    (``str_peaks`` | ``table``), ``row`` (chimerism.tsv data row; None for peaks) and
    ``fraction_as_written``.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    if str_results is not None:
        for rec in str_results.to_dict(orient="records"):
            if rec["status"] == "ok" and rec["donor_pct"] is not None:
                out.setdefault(str(rec["patient_id"]), []).append(
                    {
                        "fraction": rec["fraction"],
                        "date": rec["date"],
                        "donor_pct": float(rec["donor_pct"]),
                        "sd": None if rec["donor_pct_sd"] is None else float(rec["donor_pct_sd"]),
                        "source": "str_peaks",
                        "row": None,
                        "fraction_as_written": rec["fraction"],
                    }
                )
    if chimerism is not None:
        for rec in chimerism.to_dict(orient="records"):
            if rec["chimerism_status"] == "ok":
                out.setdefault(str(rec["patient_id"]), []).append(
                    {
                        "fraction": rec["fraction"],
                        "date": rec["date"],
                        "donor_pct": float(rec["donor_pct_value"]),
                        "sd": None,
                        "source": "table",
                        "row": rec.get("row"),
                        "fraction_as_written": rec.get("fraction_as_written", rec["fraction"]),
                    }
                )
    return out


def str_not_computable(
    samples: pd.DataFrame, str_results: pd.DataFrame | None, tolerance_days: int
) -> dict[str, dict[dt.date, list[str]]]:
    """Patient -> collection date -> fractions whose STR result near that date is not usable.

    A peak-derived result with a status other than ``ok`` (too few informative loci) dated
    within ``tolerance_days`` of a collection date of the patient; fractions in result order.
    """
    out: dict[str, dict[dt.date, list[str]]] = {}
    if str_results is None:
        return out
    dates: dict[str, list[dt.date]] = {}
    for r in samples.to_dict(orient="records"):
        dates.setdefault(str(r["patient_id"]), []).append(r["collection_date"])
    for rec in str_results.to_dict(orient="records"):
        if rec["status"] == "ok":
            continue
        pid_ = str(rec["patient_id"])
        for cd in dates.get(pid_, []):
            if abs((rec["date"] - cd).days) <= tolerance_days:
                lst = out.setdefault(pid_, {}).setdefault(cd, [])
                if rec["fraction"] not in lst:
                    lst.append(rec["fraction"])
    return out


def compute_str_results(
    peaks: pd.DataFrame, s: EndpointSettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`nkflow.clinical.chimerism.compute_from_peaks` with the ``endpoints`` settings ``s``."""
    return chim.compute_from_peaks(
        peaks,
        min_loci=s.min_str_loci,
        outlier_sd=s.str_outlier_sd,
        ref_min_frac=s.str_reference_min_height_frac,
        exclude_markers=s.str_exclude_markers,
        stutter_exclusion=s.str_stutter_exclusion,
    )


# --------------------------------------------------------------------------------------------
# visits
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Merge:
    """What every visit of one merge reads: the settings and the indexed input tables."""

    s: EndpointSettings
    counts: _Counts
    qc: _Qc
    day0: dict[str, dt.date]
    cbc_by: dict[str, list[dict[str, Any]]]
    chim_by: dict[str, list[dict[str, Any]]]
    str_failed: dict[str, dict[dt.date, list[str]]]
    beads: bool  # single-platform bead counting (else dual-platform, from the ALC)


def build_visits(
    config: dict[str, Any],
    samples: pd.DataFrame,
    counts: pd.DataFrame,
    qc: pd.DataFrame,
    infusions: pd.DataFrame,
    cbc: pd.DataFrame,
    chimerism: pd.DataFrame | None,
    str_results: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per sample with the visit-level numbers (columns :data:`VISIT_COLUMNS`).

    Parameters
    ----------
    config
        Parsed config.yaml; its ``endpoints:`` block read as :class:`~nkflow.clinical.endpoint_settings.EndpointSettings`.
    samples
        From :func:`nkflow.clinical.sheets.load_samples`.
    counts, qc
        Concatenated per-tube ``counts.tsv`` and ``qc.tsv`` (any dtypes; events parsed here).
    infusions, cbc, chimerism
        From the ``nkflow.clinical.sheets`` loaders.
    str_results
        Optional results of :func:`nkflow.clinical.chimerism.compute_from_peaks`.

    Returns
    -------
    DataFrame
        ``status`` is ``ok`` or ``not_evaluable``; ``reason`` holds the ``;``-joined codes
        (``missing_alc``, ``invalid_alc``, ``missing_chimerism``, ``missing_marker:<m>``,
        ``qc_fail:<codes>``, ``fcs_unreadable``, ``no_nk_tube``, ``no_infusion``...).
    """
    import pandas as pd

    s = EndpointSettings.from_config(config)
    m = _Merge(
        s,
        _Counts(counts),
        _Qc(qc),
        day0_dates(infusions, s.day0_infusion),
        group_rows(cbc, "patient_id"),
        chimerism_candidates(chimerism, str_results),
        str_not_computable(samples, str_results, s.chimerism_tolerance_days),
        s.absolute_count_method == "single_platform_beads",
    )
    by_sample: dict[str, dict[str, dict[str, Any]]] = {}
    for rec in samples.to_dict(orient="records"):
        by_sample.setdefault(str(rec["sample_id"]), {})[str(rec["tube"])] = rec
    rows = [_visit(m, sid, tube_rows) for sid, tube_rows in by_sample.items()]
    rows.sort(key=lambda r: (r["patient_id"], r["collection_date"], r["sample_id"]))
    return pd.DataFrame(rows, columns=list(VISIT_COLUMNS), dtype=object)


def _visit(m: _Merge, sid: str, tube_rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The visits.tsv row of sample ``sid`` (its sample-sheet rows by tube)."""
    s = m.s
    first = next(iter(tube_rows.values()))
    pid, cdate = str(first["patient_id"]), first["collection_date"]
    reasons: list[str] = []
    flags: list[str] = []
    v: dict[str, Any] = dict.fromkeys(VISIT_COLUMNS)
    v.update(patient_id=pid, sample_id=sid, collection_date=cdate)
    v["count_method"] = s.absolute_count_method
    v["lymphocyte_population"] = s.denominator_population
    d0 = m.day0.get(pid)
    v["day0_date"] = d0
    if d0 is None:
        reasons.append("no_infusion")
    else:
        v["study_day"] = (cdate - d0).days
    fill_alc(v, m.cbc_by.get(pid, []), cdate, s.cbc_tolerance_days)
    alc = v["alc_per_ul"]
    nk_cv = _nk_tube(v, m, tube_rows.get(s.tubes["nk"]), alc, reasons, flags)
    if not m.beads and v["alc_status"] != "ok":
        reasons.append("invalid_alc" if v["alc_status"] == "invalid" else "missing_alc")
    _donor(v, m, nk_cv, reasons, flags)
    tr_row = tube_rows.get(s.tubes["treg"])
    if tr_row is not None:
        _treg_tube(v, m, tr_row, alc, flags)
    v["status"] = "not_evaluable" if reasons else "ok"
    v["reason"] = ";".join(reasons)
    v["flags"] = ";".join(flags)
    return v


def fill_alc(
    v: dict[str, Any], cbc_rows: Sequence[dict[str, Any]], cdate: dt.date, tolerance_days: int
) -> dict[str, Any] | None:
    """Fill the ALC columns of ``v`` from the patient's CBC row; the row chosen, or None.

    The row is the same day's, or else the closest within the tolerance (then the earlier).
    """
    alc_row = _closest(cbc_rows, "date", cdate, tolerance_days)
    if alc_row is None:
        v["alc_status"] = "missing"
        return None
    v["alc_date"] = alc_row["date"]
    v["alc_source_value"] = alc_row["alc_source_value"]
    v["alc_source_unit"] = alc_row["alc_source_unit"]
    v["alc_status"] = alc_row["alc_status"]
    v["alc_per_ul"] = alc_row["alc_per_ul"] if alc_row["alc_status"] == "ok" else None
    return alc_row


def chimerism_flags(
    sel: chim.Selected, not_computable: Sequence[str], s: EndpointSettings
) -> list[str]:
    """The flags of a visit's chimerism.

    Each preferred fraction whose STR result near the date is not usable, and a % donor below the
    assay limit.
    """
    out = [f"str_not_computable:{f}" for f in not_computable if f in s.chimerism_preference]
    if sel.donor_pct is not None and sel.donor_pct < s.chimerism_assay_limit_pct:
        out.append("chimerism_near_assay_limit")
    return out


def _nk_qc(v: dict[str, Any], m: _Merge, reasons: list[str], flags: list[str]) -> None:
    """The NK tube's QC status: a FAIL is a reason, a WARN or no assessment a flag."""
    qstat, qfail, qwarn = m.qc.get(v["sample_id"], m.s.tubes["nk"])
    v["qc_status"] = qstat
    if qstat == "FAIL":
        reasons.append("qc_fail:" + ",".join(qfail or ["unspecified"]))
    elif qstat == "WARN":
        other = [c for c in qwarn if c != "date_mismatch"]
        if other or not qwarn:
            flags.append("qc_warn:" + ",".join(other or ["unspecified"]))
    elif qstat is None:
        flags.append("qc_not_assessed")
    if "date_mismatch" in qwarn or "date_mismatch" in qfail:
        flags.append("date_mismatch")


def _nk_tube(
    v: dict[str, Any],
    m: _Merge,
    nk_row: dict[str, Any] | None,
    alc: float | None,
    reasons: list[str],
    flags: list[str],
) -> float | None:
    """Fill the NK tube's columns; the counting CV of total NK/uL, or None.

    The columns are QC, events, subsets, total NK/uL and its interval.
    """
    if nk_row is None:
        reasons.append("no_nk_tube")
        return None
    s, sid = m.s, v["sample_id"]
    pops, tube = s.populations, s.tubes["nk"]
    v["nk_tube_fcs"] = nk_row.get("fcs_file")
    _nk_qc(v, m, reasons, flags)
    nk_ev, nk_r = m.counts.events(sid, tube, pops["nk"])
    ly_ev, ly_r = m.counts.events(sid, tube, s.denominator_population)
    for r in (nk_r, ly_r):
        if r and r not in reasons:
            reasons.append(r)
    v["nk_events"], v["lymphocyte_events"] = nk_ev, ly_ev
    v["nk_pct_of_lymphocytes"] = _pct(nk_ev, ly_ev)
    if nk_ev is not None and nk_ev < s.low_event_count:
        flags.append("low_nk_events")
    br_ev, _ = m.counts.events(sid, tube, pops["nk_cd56bright"])
    dim_ev, _ = m.counts.events(sid, tube, pops["nk_cd56dim"])
    v["nk_cd56bright_pct_of_nk"] = _pct(br_ev, nk_ev)
    v["nk_cd56dim_pct_of_nk"] = _pct(dim_ev, nk_ev)
    if m.beads:
        bead_ev, _ = m.counts.events(sid, tube, pops["beads"])
        v["bead_events"] = bead_ev
        v["beads_per_test"] = nk_row.get("beads_per_test")
        v["sample_volume_ul"] = nk_row.get("sample_volume_ul")
        total = cnt.single_platform(nk_ev, bead_ev, v["beads_per_test"], v["sample_volume_ul"])
        nk_cv = cnt.single_platform_cv(nk_ev, bead_ev)
        if total is None and nk_ev is not None:
            reasons.append("missing_beads")
    else:
        total = cnt.dual_platform(alc, nk_ev, ly_ev)
        nk_cv = cnt.dual_platform_cv(nk_ev, ly_ev)
    v["total_nk_per_ul"] = total
    lo, hi = cnt.interval(total, nk_cv, 0.0, s.ci_z)
    v["total_nk_per_ul_lo95"], v["total_nk_per_ul_hi95"] = lo, hi
    return nk_cv


def _donor(
    v: dict[str, Any], m: _Merge, nk_cv: float | None, reasons: list[str], flags: list[str]
) -> None:
    """Fill the chimerism columns, donor NK/uL with its interval, and the unrounded threshold test.

    The chimerism columns hold the preferred fraction's result.
    """
    s, pid, cdate = m.s, v["patient_id"], v["collection_date"]
    sel = chim.select_result(
        m.chim_by.get(pid, []),
        cdate,
        list(s.chimerism_preference),
        s.chimerism_tolerance_days,
    )
    if sel.reason:
        reasons.append(sel.reason)
    v["chimerism_fraction"], v["chimerism_date"] = sel.fraction, sel.date
    v["chimerism_source"], v["donor_chimerism_pct"] = sel.source, sel.donor_pct
    v["donor_chimerism_sd"] = sel.sd
    flags += chimerism_flags(sel, m.str_failed.get(pid, {}).get(cdate, []), s)
    total = v["total_nk_per_ul"]
    donor = None if sel.donor_pct is None or total is None else total * (sel.donor_pct / 100)
    v["donor_nk_per_ul"] = donor
    extra = 0.0
    if sel.sd is not None and sel.donor_pct:
        extra = sel.sd / sel.donor_pct
    lo, hi = cnt.interval(donor, nk_cv, extra, s.ci_z)
    v["donor_nk_per_ul_lo95"], v["donor_nk_per_ul_hi95"] = lo, hi
    thr = s.threshold_per_ul
    if donor is not None:
        v["above_threshold"] = donor > thr
    if lo is not None and hi is not None:
        v["interval_contains_threshold"] = lo <= thr <= hi


def _treg_tube(
    v: dict[str, Any], m: _Merge, tr_row: dict[str, Any], alc: float | None, flags: list[str]
) -> None:
    """Fill the Treg tube's columns.

    The Treg tube is secondary: its problems are flags, never NK endpoint reasons.
    """
    s, sid, t = m.s, v["sample_id"], m.s.tubes["treg"]
    pops = s.populations
    tstat, tfail, _ = m.qc.get(sid, t)
    v["treg_qc_status"] = tstat
    if tstat == "FAIL":
        flags.append("treg_qc_fail:" + ",".join(tfail or ["unspecified"]))
        return
    cd4, _ = m.counts.events(sid, t, pops["cd4"])
    treg, _ = m.counts.events(sid, t, pops["treg"])
    tki, _ = m.counts.events(sid, t, pops["treg_ki67"])
    tly, _ = m.counts.events(sid, t, s.denominator_population)
    v["cd4_events"], v["treg_events"], v["treg_ki67_events"] = cd4, treg, tki
    v["treg_pct_of_cd4"] = _pct(treg, cd4)
    v["treg_ki67_pct_of_cd4"] = _pct(tki, cd4)
    v["treg_ki67_pct_of_treg"] = _pct(tki, treg)
    if not cd4:
        # no CD4 cells to take Tregs from: Treg/uL is not computed, not 0
        flags.append("treg_not_computed:no_cd4_events")
    elif m.beads:
        tb, _ = m.counts.events(sid, t, pops["beads"])
        bpt, vol = tr_row.get("beads_per_test"), tr_row.get("sample_volume_ul")
        v["treg_per_ul"] = cnt.single_platform(treg, tb, bpt, vol)
        v["treg_ki67_per_ul"] = cnt.single_platform(tki, tb, bpt, vol)
    else:
        v["treg_per_ul"] = cnt.dual_platform(alc, treg, tly)
        v["treg_ki67_per_ul"] = cnt.dual_platform(alc, tki, tly)


# --------------------------------------------------------------------------------------------
# visits.tsv
# --------------------------------------------------------------------------------------------


def read_visits(path: Any) -> pd.DataFrame:
    """Read a visits.tsv written by :func:`write_visits` back into typed Python values."""
    import pandas as pd

    raw = tables.read_tsv(path, text=True)
    missing = [c for c in VISIT_COLUMNS if c not in raw.columns]
    if missing:
        raise ConfigError(
            f"{path}: header: column(s) {', '.join(missing)} missing; expected the visits.tsv "
            "columns of config/README.md; fix: re-run 'nkflow merge'"
        )
    rows = [
        {c: tables.parse_cell(rec[c], KINDS.get(c, "")) for c in VISIT_COLUMNS}
        for rec in raw.to_dict(orient="records")
    ]
    return pd.DataFrame(rows, columns=list(VISIT_COLUMNS), dtype=object)


def format_cell(col: str, v: Any) -> str:
    """One cell of column ``col`` of visits.tsv, endpoints.tsv or plan.tsv as written."""
    return tables.format_cell(v, KINDS.get(col, ""))


def table_bytes(df: pd.DataFrame, columns: Sequence[str]) -> bytes:
    """The TSV bytes of ``df[columns]`` with the cells of :func:`format_cell`."""
    return tables.tsv_bytes(df, columns, KINDS)


def write_visits(visits: pd.DataFrame, path: str | Path) -> None:
    """Write visits.tsv deterministically."""
    tables.write_bytes(Path(path), table_bytes(visits, VISIT_COLUMNS))
