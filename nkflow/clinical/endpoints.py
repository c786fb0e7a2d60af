"""Visits merge and per-patient day-14 endpoints, with uncertainty, and their writers.

Contract
--------
* :func:`build_visits` joins, per sample (visit), the per-tube counts and QC with the sample sheet,
  infusions (study day), CBC (ALC) and chimerism (preferred fraction) and computes total and donor
  NK/uL with 95 % intervals, NK subsets and Treg numbers. One row per sample, sorted by
  (patient_id, collection_date, sample_id); columns :data:`VISIT_COLUMNS`.
* :func:`build_endpoints` picks each patient's day-14 visit (window, then closest day, then the
  earlier day, then sample_id; chosen on the day alone, never on the result) and gives PASS
  (donor NK/uL strictly > threshold), FAIL or NOT_EVALUABLE with reason codes. One row per patient
  of the infusion table, sorted by patient_id; columns :data:`ENDPOINT_COLUMNS`.
* Given the cohort ``perturbation.tsv``, each PASS/FAIL also says how sure it is
  (:mod:`nkflow.clinical.uncertainty`, docs/uncertainty.md); the verdict itself never depends on it.
* A missing number is None (an empty cell), never 0. The threshold test is done on the unrounded
  value in :func:`build_visits` (``above_threshold``) so that reading visits.tsv back cannot flip a
  verdict through rounding.
* Writers are deterministic: fixed columns and rows, floats ``%.6g``, booleans ``true``/``false``,
  dates ``YYYY-MM-DD``, no timestamps; a file whose bytes would not change is not rewritten.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nkflow.clinical import chimerism as chim
from nkflow.clinical import counts as cnt
from nkflow.clinical import uncertainty as unc_mod
from nkflow.clinical.endpoint_settings import settings
from nkflow.errors import ConfigError
from nkflow.reasons import Reason

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


VISIT_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "sample_id",
    "collection_date",
    "study_day",
    "day0_date",
    "status",
    "reason",
    "flags",
    "qc_status",
    "nk_tube_fcs",
    "count_method",
    "lymphocyte_population",
    "alc_date",
    "alc_source_value",
    "alc_source_unit",
    "alc_per_ul",
    "alc_status",
    "lymphocyte_events",
    "nk_events",
    "nk_pct_of_lymphocytes",
    "nk_cd56bright_pct_of_nk",
    "nk_cd56dim_pct_of_nk",
    "bead_events",
    "beads_per_test",
    "sample_volume_ul",
    "total_nk_per_ul",
    "total_nk_per_ul_lo95",
    "total_nk_per_ul_hi95",
    "chimerism_fraction",
    "chimerism_date",
    "chimerism_source",
    "donor_chimerism_pct",
    "donor_chimerism_sd",
    "donor_nk_per_ul",
    "donor_nk_per_ul_lo95",
    "donor_nk_per_ul_hi95",
    "above_threshold",
    "interval_contains_threshold",
    "treg_qc_status",
    "cd4_events",
    "treg_events",
    "treg_ki67_events",
    "treg_pct_of_cd4",
    "treg_ki67_pct_of_cd4",
    "treg_ki67_pct_of_treg",
    "treg_per_ul",
    "treg_ki67_per_ul",
)

ENDPOINT_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "sample_id",
    "study_day",
    "alc_per_ul",
    "nk_pct_of_lymphocytes",
    "chimerism_fraction",
    "donor_chimerism_pct",
    "donor_nk_per_ul",
    "verdict",
    "reason",
    "donor_nk_per_ul_lo95",
    "donor_nk_per_ul_hi95",
    "borderline",
    "borderline_basis",
    "p_above_threshold",
    "donor_nk_per_ul_all_lo95",
    "donor_nk_per_ul_all_hi95",
    "verdict_unstable",
    "dominant_spread_source",
    "gate_variance_frac",
    "counting_variance_frac",
    "chimerism_variance_frac",
    "uncertainty_status",
    "verdict_basis",
    "flags",
    "qc_status",
    "collection_date",
    "day0_date",
    "window_days",
    "n_samples_in_window",
    "count_method",
    "alc_source_value",
    "alc_source_unit",
    "alc_date",
    "nk_events",
    "lymphocyte_events",
    "lymphocyte_population",
    "chimerism_date",
    "chimerism_source",
    "donor_chimerism_sd",
    "nk_tube_fcs",
    "nk_cd56bright_pct_of_nk",
    "nk_cd56dim_pct_of_nk",
    "n_visits",
    "peak_donor_nk_per_ul",
    "peak_study_day",
    "donor_nk_kinetics",
    "treg_study_day7",
    "treg_pct_of_cd4_day7",
    "treg_ki67_pct_of_cd4_day7",
    "treg_below_5pct_day7",
    "n_infusions",
    "cells_per_kg_infusions",
    "cells_per_kg_total",
    "nk_donor_is_hsct_donor",
    "response_summary",
    "last_response",
    "last_mrd_status",
    "n_adverse_events",
    "max_ctcae_grade",
    "n_related_adverse_events",
    "adverse_event_summary",
    "review_status",
    "review_note",
)
#: endpoint columns that describe the signatures on a row (nkflow.review), not what is signed
REVIEW_COLUMNS: tuple[str, ...] = ("review_status", "review_note")

INT_COLUMNS = {
    "study_day",
    "lymphocyte_events",
    "nk_events",
    "bead_events",
    "cd4_events",
    "treg_events",
    "treg_ki67_events",
    "n_samples_in_window",
    "n_visits",
    "peak_study_day",
    "treg_study_day7",
    "n_infusions",
    "n_adverse_events",
    "max_ctcae_grade",
    "n_related_adverse_events",
}
#: a yes/no column's value when the inputs cannot say (``nk_donor_is_hsct_donor`` without ids)
UNKNOWN = "unknown"
BOOL_COLUMNS = {
    "above_threshold",
    "interval_contains_threshold",
    "borderline",
    "verdict_unstable",
    "treg_below_5pct_day7",
    "nk_donor_is_hsct_donor",
}
DATE_COLUMNS = {"collection_date", "day0_date", "alc_date", "chimerism_date"}
TEXT_COLUMNS = {"alc_source_value", "alc_source_unit"}
FLOAT_COLUMNS = {
    "alc_per_ul",
    "nk_pct_of_lymphocytes",
    "nk_cd56bright_pct_of_nk",
    "nk_cd56dim_pct_of_nk",
    "beads_per_test",
    "sample_volume_ul",
    "total_nk_per_ul",
    "total_nk_per_ul_lo95",
    "total_nk_per_ul_hi95",
    "donor_chimerism_pct",
    "donor_chimerism_sd",
    "donor_nk_per_ul",
    "donor_nk_per_ul_lo95",
    "donor_nk_per_ul_hi95",
    "treg_pct_of_cd4",
    "treg_ki67_pct_of_cd4",
    "treg_ki67_pct_of_treg",
    "treg_per_ul",
    "treg_ki67_per_ul",
    "p_above_threshold",
    "donor_nk_per_ul_all_lo95",
    "donor_nk_per_ul_all_hi95",
    "gate_variance_frac",
    "counting_variance_frac",
    "chimerism_variance_frac",
}
RELATED = ("possible", "probable", "definite")


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


def _mul(*vals: float | None) -> float | None:
    out = 1.0
    for v in vals:
        if v is None:
            return None
        out *= v
    return out


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
    dates: dict[str, list[dt.date]] = {
        str(r["patient_id"]): [] for r in samples.to_dict(orient="records")
    }
    for r in samples.to_dict(orient="records"):
        dates[str(r["patient_id"])].append(r["collection_date"])
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
    peaks: pd.DataFrame, s: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`nkflow.clinical.chimerism.compute_from_peaks` with the ``endpoints`` settings ``s``."""
    return chim.compute_from_peaks(
        peaks,
        min_loci=int(s["min_str_loci"]),
        outlier_sd=float(s["str_outlier_sd"]),
        ref_min_frac=float(s["str_reference_min_height_frac"]),
        exclude_markers=s["str_exclude_markers"],
        stutter_exclusion=bool(s["str_stutter_exclusion"]),
    )


# --------------------------------------------------------------------------------------------
# visits
# --------------------------------------------------------------------------------------------


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
        Parsed config.yaml; ``endpoints:`` settings overlay :data:`nkflow.clinical.endpoint_settings.DEFAULTS`.
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

    s = settings(config)
    pops, tubes = s["populations"], s["tubes"]
    cidx, qidx = _Counts(counts), _Qc(qc)
    day0 = day0_dates(infusions, s["day0_infusion"])
    cbc_by: dict[str, list[dict[str, Any]]] = {}
    for rec in cbc.to_dict(orient="records"):
        cbc_by.setdefault(str(rec["patient_id"]), []).append(rec)
    chim_by = chimerism_candidates(chimerism, str_results)
    str_failed = str_not_computable(samples, str_results, int(s["chimerism_tolerance_days"]))
    z, thr = float(s["ci_z"]), float(s["threshold_per_ul"])
    beads_method = s["absolute_count_method"] == "single_platform_beads"
    lymph_pop = s["denominator_population"]

    by_sample: dict[str, dict[str, dict[str, Any]]] = {}
    for rec in samples.to_dict(orient="records"):
        by_sample.setdefault(str(rec["sample_id"]), {})[str(rec["tube"])] = rec

    rows = []
    for sid, tube_rows in by_sample.items():
        first = next(iter(tube_rows.values()))
        pid, cdate = str(first["patient_id"]), first["collection_date"]
        reasons: list[str] = []
        flags: list[str] = []
        v: dict[str, Any] = dict.fromkeys(VISIT_COLUMNS)
        v.update(patient_id=pid, sample_id=sid, collection_date=cdate)
        v["count_method"] = s["absolute_count_method"]
        v["lymphocyte_population"] = lymph_pop
        d0 = day0.get(pid)
        v["day0_date"] = d0
        if d0 is None:
            reasons.append("no_infusion")
        else:
            v["study_day"] = (cdate - d0).days

        # ALC: same day, or the closest within the tolerance (then the earlier)
        alc_row = _closest(cbc_by.get(pid, []), "date", cdate, int(s["cbc_tolerance_days"]))
        alc = None
        if alc_row is not None:
            v["alc_date"] = alc_row["date"]
            v["alc_source_value"] = alc_row["alc_source_value"]
            v["alc_source_unit"] = alc_row["alc_source_unit"]
            v["alc_status"] = alc_row["alc_status"]
            alc = alc_row["alc_per_ul"] if alc_row["alc_status"] == "ok" else None
            v["alc_per_ul"] = alc
        else:
            v["alc_status"] = "missing"

        # NK tube
        nk_row = tube_rows.get(tubes["nk"])
        nk_cv = None
        if nk_row is None:
            reasons.append("no_nk_tube")
        else:
            v["nk_tube_fcs"] = nk_row.get("fcs_file")
            qstat, qfail, qwarn = qidx.get(sid, tubes["nk"])
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
            nk_ev, nk_r = cidx.events(sid, tubes["nk"], pops["nk"])
            ly_ev, ly_r = cidx.events(sid, tubes["nk"], lymph_pop)
            for r in (nk_r, ly_r):
                if r and r not in reasons:
                    reasons.append(r)
            v["nk_events"], v["lymphocyte_events"] = nk_ev, ly_ev
            v["nk_pct_of_lymphocytes"] = _pct(nk_ev, ly_ev)
            if nk_ev is not None and nk_ev < int(s["low_event_count"]):
                flags.append("low_nk_events")
            br_ev, _ = cidx.events(sid, tubes["nk"], pops["nk_cd56bright"])
            dim_ev, _ = cidx.events(sid, tubes["nk"], pops["nk_cd56dim"])
            v["nk_cd56bright_pct_of_nk"] = _pct(br_ev, nk_ev)
            v["nk_cd56dim_pct_of_nk"] = _pct(dim_ev, nk_ev)
            if beads_method:
                bead_ev, _ = cidx.events(sid, tubes["nk"], pops["beads"])
                v["bead_events"] = bead_ev
                v["beads_per_test"] = nk_row.get("beads_per_test")
                v["sample_volume_ul"] = nk_row.get("sample_volume_ul")
                total = cnt.single_platform(
                    nk_ev, bead_ev, v["beads_per_test"], v["sample_volume_ul"]
                )
                nk_cv = cnt.single_platform_cv(nk_ev, bead_ev)
                if total is None and nk_ev is not None:
                    reasons.append("missing_beads")
            else:
                total = cnt.dual_platform(alc, nk_ev, ly_ev)
                nk_cv = cnt.dual_platform_cv(nk_ev, ly_ev)
            v["total_nk_per_ul"] = total
            lo, hi = cnt.interval(total, nk_cv, 0.0, z)
            v["total_nk_per_ul_lo95"], v["total_nk_per_ul_hi95"] = lo, hi
        if not beads_method and v["alc_status"] != "ok":
            reasons.append("invalid_alc" if v["alc_status"] == "invalid" else "missing_alc")

        sel = chim.select_result(
            chim_by.get(pid, []),
            cdate,
            list(s["chimerism_preference"]),
            int(s["chimerism_tolerance_days"]),
        )
        if sel.reason:
            reasons.append(sel.reason)
        v["chimerism_fraction"], v["chimerism_date"] = sel.fraction, sel.date
        v["chimerism_source"], v["donor_chimerism_pct"] = sel.source, sel.donor_pct
        v["donor_chimerism_sd"] = sel.sd
        for frac in str_failed.get(pid, {}).get(cdate, []):
            if frac in s["chimerism_preference"]:
                flags.append(f"str_not_computable:{frac}")
        if sel.donor_pct is not None and sel.donor_pct < float(s["chimerism_assay_limit_pct"]):
            flags.append("chimerism_near_assay_limit")

        donor = None if sel.donor_pct is None else _mul(v["total_nk_per_ul"], sel.donor_pct / 100)
        v["donor_nk_per_ul"] = donor
        extra = 0.0
        if sel.sd is not None and sel.donor_pct:
            extra = sel.sd / sel.donor_pct
        lo, hi = cnt.interval(donor, nk_cv, extra, z)
        v["donor_nk_per_ul_lo95"], v["donor_nk_per_ul_hi95"] = lo, hi
        if donor is not None:
            v["above_threshold"] = donor > thr
        if lo is not None and hi is not None:
            v["interval_contains_threshold"] = lo <= thr <= hi

        # Treg tube (secondary; its problems are flags, never NK endpoint reasons)
        tr_row = tube_rows.get(tubes["treg"])
        if tr_row is not None:
            tstat, tfail, _ = qidx.get(sid, tubes["treg"])
            v["treg_qc_status"] = tstat
            if tstat == "FAIL":
                flags.append("treg_qc_fail:" + ",".join(tfail or ["unspecified"]))
            else:
                t = tubes["treg"]
                cd4, _ = cidx.events(sid, t, pops["cd4"])
                treg, _ = cidx.events(sid, t, pops["treg"])
                tki, _ = cidx.events(sid, t, pops["treg_ki67"])
                tly, _ = cidx.events(sid, t, lymph_pop)
                v["cd4_events"], v["treg_events"], v["treg_ki67_events"] = cd4, treg, tki
                v["treg_pct_of_cd4"] = _pct(treg, cd4)
                v["treg_ki67_pct_of_cd4"] = _pct(tki, cd4)
                v["treg_ki67_pct_of_treg"] = _pct(tki, treg)
                if not cd4:
                    # no CD4 cells to take Tregs from: Treg/uL is not computed, not 0
                    flags.append("treg_not_computed:no_cd4_events")
                elif beads_method:
                    tb, _ = cidx.events(sid, t, pops["beads"])
                    bpt, vol = tr_row.get("beads_per_test"), tr_row.get("sample_volume_ul")
                    v["treg_per_ul"] = cnt.single_platform(treg, tb, bpt, vol)
                    v["treg_ki67_per_ul"] = cnt.single_platform(tki, tb, bpt, vol)
                else:
                    v["treg_per_ul"] = cnt.dual_platform(alc, treg, tly)
                    v["treg_ki67_per_ul"] = cnt.dual_platform(alc, tki, tly)

        v["status"] = "not_evaluable" if reasons else "ok"
        v["reason"] = ";".join(reasons)
        v["flags"] = ";".join(flags)
        rows.append(v)
    rows.sort(key=lambda r: (r["patient_id"], r["collection_date"], r["sample_id"]))
    return pd.DataFrame(rows, columns=list(VISIT_COLUMNS), dtype=object)


# --------------------------------------------------------------------------------------------
# endpoints
# --------------------------------------------------------------------------------------------


def window_candidates(
    visits: Sequence[dict[str, Any]], target: int, before: int, after: int
) -> list[dict[str, Any]]:
    """The visits with a study_day inside ``[target - before, target + after]``, in input order."""
    return [
        r
        for r in visits
        if r.get("study_day") is not None and target - before <= r["study_day"] <= target + after
    ]


def choose_visit(
    visits: Sequence[dict[str, Any]],
    target: int,
    before: int,
    after: int,
    tie_rule: str,
) -> tuple[dict[str, Any] | None, int]:
    """The visit inside ``[target - before, target + after]``: closest day, then earlier (or later
    with ``closest_then_later``), then sample_id. Returns (visit or None, number in window)."""
    pool = window_candidates(visits, target, before, after)
    if not pool:
        return None, 0
    sign = 1 if tie_rule == "closest_then_earlier" else -1
    pool.sort(key=lambda r: (abs(r["study_day"] - target), sign * r["study_day"], r["sample_id"]))
    return pool[0], len(pool)


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return None
    return v


def build_endpoints(
    config: dict[str, Any],
    visits: pd.DataFrame,
    infusions: pd.DataFrame,
    response: pd.DataFrame | None = None,
    adverse: pd.DataFrame | None = None,
    perturbation: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per patient of ``infusions`` (sorted by patient_id): the day-14 verdict.

    ``verdict`` is PASS (``above_threshold``: donor NK/uL strictly > threshold), FAIL or
    NOT_EVALUABLE (``no_sample_in_window`` or the chosen visit's reasons). ``borderline`` is true
    when the 95 % interval contains the threshold (empty for NOT_EVALUABLE, whose donor NK/uL and
    interval are left empty too: the visit keeps them in visits.tsv). Kinetics and the peak use
    the evaluable visits only (status ``ok``). Flags add
    ``dose_out_of_range:<infusion numbers>`` and ``nk_donor_is_hsct_donor``.

    With ``perturbation`` (the cohort ``perturbation.tsv``), a PASS or FAIL also gets how sure it
    is (:mod:`nkflow.clinical.uncertainty`, docs/uncertainty.md): ``p_above_threshold``, the 95 % interval
    of gate placement, counting and chimerism together, each source's share of the variance,
    ``verdict_unstable`` (flag ``verdict_unstable:<gate>:<range>``), and ``borderline`` then
    means that interval contains the threshold or the verdict is unstable (``borderline_basis``
    ``all_sources``). Without usable re-gatings (``uncertainty_status``
    ``not_computed:<reason>``) borderline keeps its counting-interval meaning
    (``borderline_basis`` ``counting``). The draws' histogram per patient is in
    ``df.attrs["distributions"]`` (written to the per-patient JSON).
    """
    import pandas as pd

    s = settings(config)
    us = unc_mod.UncertaintySettings.from_config(config)  # read once, not per patient
    target, before, after = int(s["target_day"]), int(s["window_before"]), int(s["window_after"])
    thr = float(s["threshold_per_ul"])
    lo_dose, hi_dose = (float(x) for x in s["dose_range_per_kg"])
    vrecs = [{k: _nan_to_none(x) for k, x in r.items()} for r in visits.to_dict(orient="records")]
    by_pat: dict[str, list[dict[str, Any]]] = {}
    for r in vrecs:
        by_pat.setdefault(str(r["patient_id"]), []).append(r)
    inf_by: dict[str, list[dict[str, Any]]] = {}
    for rec in infusions.to_dict(orient="records"):
        inf_by.setdefault(str(rec["patient_id"]), []).append(rec)
    resp_by = _group(response, "patient_id")
    ae_by = _group(adverse, "patient_id")
    day0 = day0_dates(infusions, s["day0_infusion"])
    pert_by = _perturbation_rows(perturbation)
    distributions: dict[str, dict[str, Any]] = {}

    rows = []
    for pid in sorted(inf_by):
        pv = sorted(
            by_pat.get(pid, []), key=lambda r: (r["study_day"] is None, r["study_day"] or 0)
        )
        e: dict[str, Any] = dict.fromkeys(ENDPOINT_COLUMNS)
        e["patient_id"] = pid
        e["day0_date"] = day0.get(pid)
        e["window_days"] = f"{target - before}-{target + after}"
        e["n_visits"] = len(pv)
        flags: list[str] = []
        visit, n_in = choose_visit(pv, target, before, after, s["tie_rule"])
        e["n_samples_in_window"] = n_in
        if visit is None:
            e["verdict"], e["reason"] = "NOT_EVALUABLE", "no_sample_in_window"
            e["count_method"] = s["absolute_count_method"]
            e["lymphocyte_population"] = s["denominator_population"]
        else:
            for col in ENDPOINT_COLUMNS:
                if col in visit and col not in ("flags", "reason"):
                    e[col] = visit[col]
            if visit["flags"]:
                flags.extend(str(visit["flags"]).split(";"))
            if visit["reason"]:
                e["verdict"], e["reason"] = "NOT_EVALUABLE", str(visit["reason"])
                # the visit keeps its numbers in visits.tsv; the endpoint row shows none
                e["donor_nk_per_ul"] = e["donor_nk_per_ul_lo95"] = e["donor_nk_per_ul_hi95"] = None
            else:
                above = bool(visit["above_threshold"])
                # PASS and FAIL carry reason codes too, so every verdict says why
                codes = ["above_threshold" if above else "not_above_threshold"]
                unc = _uncertainty(e, visit, pert_by, s, us, thr, above)
                contains = visit.get("interval_contains_threshold")
                if not isinstance(unc, str):
                    lo_all, hi_all = e["donor_nk_per_ul_all_lo95"], e["donor_nk_per_ul_all_hi95"]
                    inside = bool(lo_all <= thr <= hi_all)
                    e["borderline"] = inside or bool(e["verdict_unstable"])
                    e["borderline_basis"] = "all_sources"
                    if inside:
                        codes.append("interval_contains_threshold")
                    # named in the flags (verdict_unstable:<gate>:<range>), not a reason code
                    flags.extend(unc.unstable)
                    distributions[pid] = unc.histogram
                elif contains is None:
                    # no interval (0 NK events): borderline is not computed, never 'false'
                    e["borderline"] = None
                    codes.append("interval_not_computed")
                else:
                    e["borderline"] = bool(contains)
                    e["borderline_basis"] = "counting"
                    if e["borderline"]:
                        codes.append("interval_contains_threshold")
                e["verdict"], e["reason"] = ("PASS" if above else "FAIL"), ";".join(codes)
                donor = visit["donor_nk_per_ul"]
                lo, hi = visit["donor_nk_per_ul_lo95"], visit["donor_nk_per_ul_hi95"]
                # no interval when there is nothing to count (0 NK events)
                ci = f" (95% {lo:.6g}-{hi:.6g})" if lo is not None and hi is not None else ""
                e["verdict_basis"] = (
                    f"donor_nk_per_ul {donor:.6g} {'>' if above else '<='} {thr:.6g}{ci}"
                )
        # kinetics over the evaluable visits on or after day 0
        kin = [
            (r["study_day"], float(r["donor_nk_per_ul"]))
            for r in pv
            if r["status"] == "ok"
            and r["study_day"] is not None
            and r["study_day"] >= 0
            and r["donor_nk_per_ul"] is not None
        ]
        if kin:
            peak = max(kin, key=lambda t: (t[1], -t[0]))
            e["peak_donor_nk_per_ul"], e["peak_study_day"] = peak[1], peak[0]
            e["donor_nk_kinetics"] = ";".join(f"d{d}:{x:.6g}" for d, x in kin)
        tv, _ = choose_visit(
            pv,
            int(s["treg_day"]),
            int(s["treg_window_before"]),
            int(s["treg_window_after"]),
            s["tie_rule"],
        )
        if tv is not None:
            e["treg_study_day7"] = tv["study_day"]
            e["treg_pct_of_cd4_day7"] = tv["treg_pct_of_cd4"]
            e["treg_ki67_pct_of_cd4_day7"] = tv["treg_ki67_pct_of_cd4"]
            if tv["treg_pct_of_cd4"] is not None:
                e["treg_below_5pct_day7"] = float(tv["treg_pct_of_cd4"]) < float(
                    s["treg_low_pct_of_cd4"]
                )
        infs = sorted(inf_by[pid], key=lambda r: int(r["infusion_number"]))
        e["n_infusions"] = len(infs)
        e["cells_per_kg_infusions"] = ",".join(f"{float(r['cells_per_kg']):.6g}" for r in infs)
        e["cells_per_kg_total"] = sum(float(r["cells_per_kg"]) for r in infs)
        bad = [
            str(int(r["infusion_number"]))
            for r in infs
            if not lo_dose <= float(r["cells_per_kg"]) <= hi_dose
        ]
        if bad:
            flags.append("dose_out_of_range:" + ",".join(bad))
        same = nk_donor_is_hsct_donor(infs)
        e["nk_donor_is_hsct_donor"] = same
        if same is True:
            flags.append("nk_donor_is_hsct_donor")
        elif same == UNKNOWN:
            flags.append("nk_donor_relation_unknown")
        _response_summary(e, resp_by.get(pid, []))
        _ae_summary(e, ae_by.get(pid, []), adverse)
        e["flags"] = ";".join(dict.fromkeys(f for f in flags if f))
        rows.append(e)
    out = pd.DataFrame(rows, columns=list(ENDPOINT_COLUMNS), dtype=object)
    out.attrs["distributions"] = distributions
    return out


def _perturbation_rows(
    perturbation: pd.DataFrame | None,
) -> dict[tuple[str, str], list[dict[str, Any]]] | None:
    """(sample_id, tube) -> that tube's re-gating rows; None when no table was given."""
    if perturbation is None:
        return None
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in perturbation.to_dict(orient="records"):
        out.setdefault((str(rec["sample_id"]), str(rec["tube"])), []).append(rec)
    return out


def _uncertainty(
    e: dict[str, Any],
    visit: dict[str, Any],
    pert_by: dict[tuple[str, str], list[dict[str, Any]]] | None,
    s: dict[str, Any],
    us: unc_mod.UncertaintySettings,
    thr: float,
    above: bool,
) -> unc_mod.Uncertainty | str:
    """Fill the uncertainty columns of one PASS/FAIL endpoint row; the result or why not."""

    def not_computed(reason: str) -> str:
        e["uncertainty_status"] = f"not_computed:{reason}"
        return reason

    if pert_by is None:
        return not_computed("no_perturbation_table")
    if s["absolute_count_method"] != "dual_platform":
        return not_computed("single_platform_beads")
    rows = pert_by.get((str(visit["sample_id"]), str(s["tubes"]["nk"])))
    if not rows:
        return not_computed("no_perturbation")
    gate = unc_mod.gate_draws(rows)
    if isinstance(gate, str):
        return not_computed(gate)
    if gate.base != (visit["nk_events"], visit["lymphocyte_events"]):
        # the table is not from the gating the counts came from (a stale or foreign table)
        return not_computed("perturbation_mismatch")
    # an SD is recorded only for % donor computed from STR peaks (across its loci)
    sd = visit["donor_chimerism_sd"]
    if sd is None:
        sd = us.chimerism_assay_sd_pct
    res = unc_mod.combine(
        alc_per_ul=float(visit["alc_per_ul"]),
        chimerism_pct=float(visit["donor_chimerism_pct"]),
        chimerism_sd=float(sd),
        gate=gate,
        threshold=thr,
        above=above,
        settings=us,
        seed=unc_mod.endpoint_seed(str(e["patient_id"]), str(visit["sample_id"])),
    )
    if isinstance(res, str):
        return not_computed(res)
    e["uncertainty_status"] = "computed"
    e["p_above_threshold"] = res.p_above
    e["donor_nk_per_ul_all_lo95"], e["donor_nk_per_ul_all_hi95"] = res.lo95, res.hi95
    e["verdict_unstable"] = bool(res.unstable)
    e["dominant_spread_source"] = res.dominant
    for src in unc_mod.SOURCES:
        e[f"{src}_variance_frac"] = res.variance_frac[src]
    return res


def nk_donor_is_hsct_donor(infusions: Sequence[dict[str, Any]]) -> bool | str:
    """True when an infusion's NK donor is the HSCT donor, False when every infusion names two
    different donors, :data:`UNKNOWN` when a donor id is missing and none is known to match."""
    pairs = [
        (str(r.get("nk_donor_id") or ""), str(r.get("hsct_donor_id") or "")) for r in infusions
    ]
    if any(a and a == b for a, b in pairs):
        return True
    if all(a and b for a, b in pairs):
        return False
    return UNKNOWN


def _group(df: pd.DataFrame | None, key: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    if df is not None:
        for rec in df.to_dict(orient="records"):
            out.setdefault(str(rec[key]), []).append(rec)
    return out


def _response_summary(e: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    rows = sorted(rows, key=lambda r: (r["assessment_date"], r["criteria"]))
    parts = []
    for r in rows:
        mrd = f" MRD {r['mrd_status']}" if r.get("mrd_status") else ""
        parts.append(
            f"{r['assessment_date'].isoformat()} {r['criteria']} {r['criteria_version']}: "
            f"{r['category']}{mrd}"
        )
    e["response_summary"] = "; ".join(parts)
    e["last_response"] = rows[-1]["category"]
    e["last_mrd_status"] = rows[-1].get("mrd_status") or None


def _ae_summary(
    e: dict[str, Any], rows: list[dict[str, Any]], adverse: pd.DataFrame | None
) -> None:
    if adverse is None:
        return
    e["n_adverse_events"] = len(rows)
    e["n_related_adverse_events"] = sum(1 for r in rows if r["relation"] in RELATED)
    if rows:
        rows = sorted(rows, key=lambda r: (r["onset_date"], r["term"]))
        e["max_ctcae_grade"] = max(int(r["ctcae_grade"]) for r in rows)
        e["adverse_event_summary"] = "; ".join(
            f"{r['onset_date'].isoformat()} {r['term']} G{int(r['ctcae_grade'])} ({r['relation']})"
            for r in rows
        )


# --------------------------------------------------------------------------------------------
# formatting and writers
# --------------------------------------------------------------------------------------------


def format_cell(col: str, v: Any) -> str:
    """One cell as written: '' for missing, ``%.6g`` floats, ``true``/``false``, ISO dates."""
    v = _nan_to_none(v)
    if v is None:
        return ""
    if col in BOOL_COLUMNS:
        return v if v == UNKNOWN else ("true" if bool(v) else "false")
    if col in INT_COLUMNS:
        return str(int(v))
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and col not in TEXT_COLUMNS:
        return f"{v:.6g}"
    if hasattr(v, "item") and not isinstance(v, str):  # numpy scalar
        return format_cell(col, v.item())
    return str(v).replace("\t", " ").replace("\n", " ")


def table_bytes(df: pd.DataFrame, columns: Sequence[str]) -> bytes:
    """Deterministic TSV bytes of ``df[columns]`` (header + one line per row, ``\\n`` endings)."""
    lines = ["\t".join(columns)]
    for rec in df.to_dict(orient="records"):
        lines.append("\t".join(format_cell(c, rec.get(c)) for c in columns))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _write_if_changed(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _json_value(col: str, v: Any) -> Any:
    v = _nan_to_none(v)
    if v is None:
        return None
    if col in BOOL_COLUMNS:
        return v if v == UNKNOWN else bool(v)
    if col in INT_COLUMNS:
        return int(v)
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, float) and col not in TEXT_COLUMNS:
        return float(f"{v:.6g}")
    if hasattr(v, "item") and not isinstance(v, str):
        return _json_value(col, v.item())
    return v


def read_visits(path: str | Path) -> pd.DataFrame:
    """Read a visits.tsv written by :func:`write_visits` back into typed Python values."""
    import pandas as pd

    raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
    missing = [c for c in VISIT_COLUMNS if c not in raw.columns]
    if missing:
        raise ConfigError(
            f"{path}: header: column(s) {', '.join(missing)} missing; expected the visits.tsv "
            "columns of config/README.md; fix: re-run 'nkflow merge'"
        )
    rows = []
    for rec in raw.to_dict(orient="records"):
        out: dict[str, Any] = {}
        for c in VISIT_COLUMNS:
            x = rec[c]
            if x == "":
                out[c] = None
            elif c in BOOL_COLUMNS:
                out[c] = x == "true"
            elif c in INT_COLUMNS:
                out[c] = int(x)
            elif c in DATE_COLUMNS:
                out[c] = dt.date.fromisoformat(x)
            elif c in FLOAT_COLUMNS:
                out[c] = float(x)
            else:
                out[c] = x
        rows.append(out)
    return pd.DataFrame(rows, columns=list(VISIT_COLUMNS), dtype=object)


def write_visits(visits: pd.DataFrame, path: str | Path) -> None:
    """Write visits.tsv deterministically."""
    _write_if_changed(Path(path), table_bytes(visits, VISIT_COLUMNS))


def write_outputs(
    visits: pd.DataFrame,
    endpoints: pd.DataFrame,
    outdir: str | Path,
    reviews: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Write ``endpoints.tsv``, ``endpoints.xlsx`` and ``patients/<id>.json``.

    ``visits`` (the merge step's visits.tsv, this step's input) is read, never rewritten. Files
    whose bytes would not change are left untouched.
    """
    out = Path(outdir)
    _write_if_changed(out / "endpoints.tsv", table_bytes(endpoints, ENDPOINT_COLUMNS))
    write_excel(visits, endpoints, out / "endpoints.xlsx")
    vis = visits.to_dict(orient="records")
    distributions = endpoints.attrs.get("distributions", {})
    for rec in endpoints.to_dict(orient="records"):
        pid = str(rec["patient_id"])
        doc: dict[str, Any] = {
            "patient_id": pid,
            "endpoint": {c: _json_value(c, rec.get(c)) for c in ENDPOINT_COLUMNS},
            # the signatures on this row and whether they still hold (nkflow.review)
            "review": (reviews or {}).get(pid),
            "visits": [
                {c: _json_value(c, v.get(c)) for c in VISIT_COLUMNS}
                for v in vis
                if str(v["patient_id"]) == pid
            ],
        }
        if pid in distributions:
            # the day-14 donor NK/uL draws (docs/uncertainty.md), as a histogram
            doc["donor_nk_per_ul_distribution"] = distributions[pid]
        data = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        _write_if_changed(out / "patients" / f"{pid}.json", data)


def write_excel(visits: pd.DataFrame, endpoints: pd.DataFrame, path: str | Path) -> None:
    """Workbook with sheets ``endpoints`` and ``visits`` (numbers as numbers, missing blank)."""
    from openpyxl import Workbook

    wb = Workbook()
    fixed = dt.datetime(2000, 1, 1)
    wb.properties.created = fixed
    wb.properties.modified = fixed
    ws = wb.active
    ws.title = "endpoints"
    for sheet, df, cols in (
        (ws, endpoints, ENDPOINT_COLUMNS),
        (wb.create_sheet("visits"), visits, VISIT_COLUMNS),
    ):
        sheet.append(list(cols))
        for rec in df.to_dict(orient="records"):
            sheet.append([_json_value(c, rec.get(c)) for c in cols])
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


# --------------------------------------------------------------------------------------------
# reading tables as text
# --------------------------------------------------------------------------------------------


def _read_text_table(path: str | Path) -> pd.DataFrame:
    import pandas as pd

    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
