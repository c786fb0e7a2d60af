"""Cellular kinetics per patient: Cmax, Tmax, AUC, Clast, Tlast, fold expansion, persistence.

Contract
--------
* :func:`build_kinetics` takes the visits of ``visits.tsv`` (typed, as
  :func:`nkflow.clinical.visits.read_visits` returns them) and the ``endpoints`` settings, and returns
  one record per patient and measure (:data:`MEASURES`, in that order), sorted by patient_id,
  with the columns of :data:`KINETICS` (``cohort/kinetics.tsv``). Pure: nothing is read or
  written here.
* A visit enters a measure when it has a study day and the measure's value is usable there
  (:func:`measure_value`): donor NK/uL only on an evaluable visit (status ``ok``); total and
  subset NK/uL whenever the nk tube and the ALC gave a number (a visit that is not evaluable only
  for want of chimerism, such as the pre-infusion draw, still counts its NK cells); Treg/uL
  whenever visits.tsv has one (the treg tube's QC FAIL leaves it empty). A visit that does not
  enter is listed in ``unusable_visits`` with its reasons; nothing is interpolated or imputed.
* **Baseline** = the last usable visit on or before day 0 (a day-0 draw is taken before the
  infusion, as protocols require; the sheets carry dates, not times). **Post-infusion** = study
  day > 0: Cmax (highest value; ties: the earlier day) and Tmax, Clast/Tlast (the last value
  > 0: a visit where no cell was counted is not a last measurable value), persistence (the last
  day strictly above the measure's threshold) use the post-infusion visits, whatever their day.
* **AUC** over ``kinetics_auc_window_days`` (default 0-28), on the usable visits inside it:
  the linear trapezoid where the value rises or stays, the log trapezoid
  ``(C1 - C2)(t2 - t1) / ln(C1 / C2)`` where it falls with both values > 0, linear again when it
  falls to 0 (the log form is undefined there). Never extrapolated: when the first or last
  usable visit is not on the window's edge the AUC is over ``auc_from_day``-``auc_to_day`` and is
  flagged ``auc_partial_window``. An AUC that passes over an unusable visit, or over a planned
  visit (``visit_schedule_days``) with no sample within ``visit_schedule_tolerance_days``, is
  flagged ``auc_over_gap`` and names them in ``auc_gaps``.
* A parameter that cannot be computed is empty, with ``<parameter>:<reason>`` in
  ``not_computed``. Every value keeps its provenance: the sample of each value
  (``*_sample``), the visits used (``series``) and the tubes (``provenance``, ``sample/tube``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nkflow.clinical.endpoint_settings import EndpointSettings
from nkflow.clinical.visits import visit_records
from nkflow.columns import Column, Table
from nkflow.reasons import CODES
from nkflow.tables import FLOAT_FORMAT

logger = logging.getLogger(__name__)

#: reason codes of visits.tsv that concern only the chimerism (the NK count itself stands)
CHIMERISM_ONLY_REASONS = frozenset({"missing_chimerism"})


@dataclass(frozen=True)
class Measure:
    """A kinetic measure: its column, the tube role it comes from and how it is obtained.

    The column is the one in the kinetics table; how it is obtained from a visits.tsv row is said in
    words, for the dictionary and the exports.
    """

    name: str
    tube_role: str
    method: str


MEASURES: tuple[Measure, ...] = (
    Measure("donor_nk_per_ul", "nk", "donor_nk_per_ul of visits.tsv (evaluable visits only)"),
    Measure("total_nk_per_ul", "nk", "total_nk_per_ul of visits.tsv"),
    Measure(
        "nk_cd56bright_per_ul",
        "nk",
        "total_nk_per_ul x nk_cd56bright_pct_of_nk / 100 (visits.tsv)",
    ),
    Measure("nk_cd56dim_per_ul", "nk", "total_nk_per_ul x nk_cd56dim_pct_of_nk / 100 (visits.tsv)"),
    Measure("treg_per_ul", "treg", "treg_per_ul of visits.tsv"),
)
MEASURE_NAMES = tuple(m.name for m in MEASURES)
#: the NK-subset counts: total_nk_per_ul x the subset's % of NK (this visits.tsv column) / 100
SUBSET_PCT = {
    "nk_cd56bright_per_ul": "nk_cd56bright_pct_of_nk",
    "nk_cd56dim_per_ul": "nk_cd56dim_pct_of_nk",
}

PARAMETERS = ("baseline", "cmax", "clast", "fold_expansion", "persistence", "auc")
REASONS = {
    "baseline": ("no_visit_on_or_before_day0", "baseline_not_evaluable"),
    "cmax": ("no_evaluable_visit_after_day0",),
    "clast": ("no_evaluable_visit_after_day0", "no_positive_value_after_day0"),
    "fold_expansion": ("no_baseline", "baseline_zero", "no_cmax"),
    "persistence": ("no_threshold", "no_evaluable_visit_after_day0", "never_above_threshold"),
    "auc": ("fewer_than_two_visits_in_window",),
}
FLAGS = tuple(c for c, e in CODES.items() if "kinetics.flags" in e.written_in)

KINETICS = Table(
    "kinetics",
    "cohort/kinetics.tsv",
    "one per patient of visits.tsv and kinetic measure, sorted by patient_id then measure order",
    (
        Column("patient_id", "id", "", "patient"),
        Column(
            "measure",
            "text",
            "cells/uL",
            "what is followed over the visits: "
            + "; ".join(f"{m.name} = {m.method}" for m in MEASURES),
            MEASURE_NAMES,
        ),
        Column("n_visits", "integer", "visits", "visits with a usable value of the measure"),
        Column(
            "series",
            "text",
            "day:cells/uL",
            "every usable visit as '<study day>:<value>', ';'-joined by day (the inputs of every "
            "parameter below)",
        ),
        Column(
            "baseline_per_ul",
            "number",
            "cells/uL",
            "value at the last usable visit on or before day 0 (pre-infusion)",
        ),
        Column("baseline_day", "integer", "day", "study day of the baseline visit"),
        Column("baseline_sample", "id", "", "sample_id of the baseline visit"),
        Column("cmax_per_ul", "number", "cells/uL", "highest value after day 0 (Cmax)"),
        Column("tmax_day", "integer", "day", "study day of Cmax (Tmax; ties: the earlier day)"),
        Column("cmax_sample", "id", "", "sample_id of Cmax"),
        Column("clast_per_ul", "number", "cells/uL", "last value > 0 after day 0 (Clast)"),
        Column("tlast_day", "integer", "day", "study day of Clast (Tlast)"),
        Column("clast_sample", "id", "", "sample_id of Clast"),
        Column(
            "fold_expansion",
            "number",
            "ratio",
            "cmax_per_ul / baseline_per_ul (fold expansion over the pre-infusion baseline)",
        ),
        Column(
            "persistence_threshold_per_ul",
            "number",
            "cells/uL",
            "threshold of persistence: endpoints.threshold_per_ul for donor NK/uL, "
            "endpoints.kinetics_persistence_per_ul for the other measures",
        ),
        Column(
            "persistence_day",
            "integer",
            "day",
            "last study day after day 0 with a value strictly above the threshold",
        ),
        Column("persistence_sample", "id", "", "sample_id of persistence_day"),
        Column(
            "auc_per_ul_x_day",
            "number",
            "cells/uL x day",
            "area under the curve over auc_from_day-auc_to_day, linear-up/log-down trapezoid",
        ),
        Column(
            "auc_window_days", "text", "day", "the configured window, '<first>-<last>' study day"
        ),
        Column("auc_from_day", "integer", "day", "first usable visit inside the window"),
        Column("auc_to_day", "integer", "day", "last usable visit inside the window"),
        Column(
            "auc_segments",
            "text",
            "",
            "each trapezoid '<t1>-<t2>:lin|log', ';'-joined (lin = linear, log = log-down)",
        ),
        Column(
            "auc_gaps",
            "text",
            "",
            "what the AUC passes over without a value: 'd<day> <sample> <reasons>' for an "
            "unusable visit, 'd<day> not sampled' for a planned visit without a sample; '; '-joined",
        ),
        Column("flags", "codes", "", "flags of the record", FLAGS),
        Column(
            "not_computed",
            "codes",
            "",
            "'<parameter>:<reason>' for every parameter left empty",
            tuple(f"{p}:{r}" for p in PARAMETERS for r in REASONS[p]),
        ),
        Column(
            "unusable_visits",
            "text",
            "",
            "visits of the patient without a usable value of the measure: '<sample> d<day> "
            "<reasons>', '; '-joined (reasons as in visits.tsv)",
        ),
        Column(
            "provenance",
            "text",
            "",
            "the tubes of the usable visits, '<sample_id>/<tube>', ';'-joined by day",
        ),
    ),
)


# --------------------------------------------------------------------------- formulas


def segment_auc(t1: float, c1: float, t2: float, c2: float) -> tuple[float, str]:
    """Area of one interval, linear-up/log-down, and the method used (``lin`` or ``log``).

    The log trapezoid ``(c1 - c2)(t2 - t1) / ln(c1 / c2)`` applies where the value falls and both
    ends are > 0; everywhere else (rising, flat, falling to 0) the linear one
    ``(c1 + c2)(t2 - t1) / 2``.
    """
    if c2 < c1 and c2 > 0:
        return (c1 - c2) * (t2 - t1) / math.log(c1 / c2), "log"
    return (c1 + c2) * (t2 - t1) / 2.0, "lin"


def auc(points: Sequence[tuple[float, float]]) -> tuple[float, list[str]]:
    """Linear-up/log-down AUC over ``(day, value)`` points in day order, with the segments."""
    total, segs = 0.0, []
    for (t1, c1), (t2, c2) in zip(points, points[1:], strict=False):
        a, how = segment_auc(t1, c1, t2, c2)
        total += a
        segs.append(f"{t1:g}-{t2:g}:{how}")
    return total, segs


# --------------------------------------------------------------------------- visit values


def _codes(text: Any) -> list[str]:
    return [c for c in str(text or "").split(";") if c]


def measure_value(measure: str, visit: Mapping[str, Any], dual_platform: bool) -> tuple[Any, str]:
    """The value of ``measure`` at one visit (a visits.tsv row), or (None, reasons)."""
    reasons = _codes(visit.get("reason"))
    if measure == "donor_nk_per_ul":
        if visit.get("status") != "ok":
            return None, ",".join(reasons) or "not_evaluable"
        v = visit.get("donor_nk_per_ul")
        return (None, "not_computed") if v is None else (float(v), "")
    if measure == "treg_per_ul":
        v = visit.get("treg_per_ul")
        if v is not None:
            return float(v), ""
        flags = [f for f in _codes(visit.get("flags")) if f.startswith("treg_")]
        if flags:
            return None, ",".join(flags)
        if dual_platform and visit.get("alc_status") not in (None, "ok"):
            return None, f"{visit['alc_status']}_alc"
        if visit.get("treg_qc_status") is None and visit.get("cd4_events") is None:
            return None, "no_treg_tube"
        return None, "not_computed"
    nk_reasons = [r for r in reasons if r not in CHIMERISM_ONLY_REASONS]
    if nk_reasons:
        return None, ",".join(nk_reasons)
    total = visit.get("total_nk_per_ul")
    if total is None:
        return None, "not_computed"
    if measure == "total_nk_per_ul":
        return float(total), ""
    pct_col = SUBSET_PCT[measure]
    pct = visit.get(pct_col)
    if pct is None:
        return None, f"not_computed:{pct_col}"
    return float(total) * float(pct) / 100.0, ""


# --------------------------------------------------------------------------- per patient


def kinetic_record(
    patient_id: str,
    measure: Measure,
    visits: Sequence[Mapping[str, Any]],
    s: EndpointSettings,
) -> dict[str, Any]:
    """The kinetics record of one patient and measure (columns of :data:`KINETICS`)."""
    dual = s.absolute_count_method == "dual_platform"
    tube = s.tubes[measure.tube_role]
    rec: dict[str, Any] = dict.fromkeys(KINETICS.names())
    rec.update(patient_id=patient_id, measure=measure.name)
    pts: list[tuple[int, float, str]] = []
    bad: list[tuple[int, str, str]] = []
    for v in visits:
        if v.get("study_day") is None:
            continue
        value, why = measure_value(measure.name, v, dual)
        day = int(v["study_day"])
        if value is None:
            bad.append((day, str(v["sample_id"]), why))
        else:
            pts.append((day, value, str(v["sample_id"])))
    pts.sort(key=lambda p: (p[0], p[2]))
    bad.sort(key=lambda b: (b[0], b[1]))
    not_computed: list[str] = []
    flags: list[str] = []
    rec["n_visits"] = len(pts)
    rec["series"] = ";".join(f"{d}:{FLOAT_FORMAT % x}" for d, x, _ in pts)
    rec["provenance"] = ";".join(f"{sid}/{tube}" for _, _, sid in pts)
    rec["unusable_visits"] = "; ".join(f"{sid} d{d} {why}" for d, sid, why in bad)

    pre = [p for p in pts if p[0] <= 0]
    if pre:
        rec["baseline_day"], rec["baseline_per_ul"], rec["baseline_sample"] = pre[-1]
    else:
        any_pre = any(d <= 0 for d, _, _ in bad)
        not_computed.append(
            "baseline:" + ("baseline_not_evaluable" if any_pre else "no_visit_on_or_before_day0")
        )

    post = [p for p in pts if p[0] > 0]
    if post:
        top = max(post, key=lambda p: (p[1], -p[0]))
        rec["tmax_day"], rec["cmax_per_ul"], rec["cmax_sample"] = top
        measurable = [p for p in post if p[1] > 0]
        if measurable:
            rec["tlast_day"], rec["clast_per_ul"], rec["clast_sample"] = measurable[-1]
        else:
            not_computed.append("clast:no_positive_value_after_day0")
    else:
        not_computed += [
            "cmax:no_evaluable_visit_after_day0",
            "clast:no_evaluable_visit_after_day0",
        ]

    if rec["cmax_per_ul"] is None:
        not_computed.append("fold_expansion:no_cmax")
    elif rec["baseline_per_ul"] is None:
        not_computed.append("fold_expansion:no_baseline")
    elif rec["baseline_per_ul"] == 0:
        not_computed.append("fold_expansion:baseline_zero")
    else:
        rec["fold_expansion"] = rec["cmax_per_ul"] / rec["baseline_per_ul"]

    thr = (
        s.threshold_per_ul
        if measure.name == "donor_nk_per_ul"
        else s.kinetics_persistence_per_ul.get(measure.name)
    )
    if thr is None:
        not_computed.append("persistence:no_threshold")
    else:
        rec["persistence_threshold_per_ul"] = float(thr)
        above = [p for p in post if p[1] > float(thr)]
        if not post:
            not_computed.append("persistence:no_evaluable_visit_after_day0")
        elif not above:
            not_computed.append("persistence:never_above_threshold")
        else:
            rec["persistence_day"], _, rec["persistence_sample"] = above[-1]
            if above[-1] == post[-1]:
                flags.append("persistence_to_last_visit")

    first, last = (int(x) for x in s.kinetics_auc_window_days)
    rec["auc_window_days"] = f"{first}-{last}"
    inside = [p for p in pts if first <= p[0] <= last]
    if len(inside) < 2:
        not_computed.append("auc:fewer_than_two_visits_in_window")
    else:
        area, segs = auc([(float(d), x) for d, x, _ in inside])
        rec["auc_per_ul_x_day"], rec["auc_segments"] = area, ";".join(segs)
        lo, hi = inside[0][0], inside[-1][0]
        rec["auc_from_day"], rec["auc_to_day"] = lo, hi
        if lo > first or hi < last:
            flags.append("auc_partial_window")
        gaps = _gaps(lo, hi, bad, visits, s)
        if gaps:
            flags.append("auc_over_gap")
            rec["auc_gaps"] = "; ".join(g for _, g in sorted(gaps))
    rec["flags"] = ";".join(f for f in FLAGS if f in flags)
    rec["not_computed"] = ";".join(not_computed)
    return rec


def _gaps(
    lo: int,
    hi: int,
    bad: Sequence[tuple[int, str, str]],
    visits: Sequence[Mapping[str, Any]],
    s: EndpointSettings,
) -> list[tuple[int, str]]:
    """Unusable visits strictly inside (lo, hi), and planned days there with no sample."""
    out = [(d, f"d{d} {sid} {why}") for d, sid, why in bad if lo < d < hi]
    tol = s.visit_schedule_tolerance_days
    days = [int(v["study_day"]) for v in visits if v.get("study_day") is not None]
    for planned in s.visit_schedule_days:
        p = int(planned)
        if lo < p < hi and not any(abs(d - p) <= tol for d in days):
            out.append((p, f"d{p} not sampled"))
    return out


def build_kinetics(config: dict[str, Any], visits: Any) -> list[dict[str, Any]]:
    """Kinetics records of every patient of ``visits`` (a DataFrame or a list of row dicts)."""
    s = EndpointSettings.from_config(config)
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for r in visit_records(visits):
        by_patient.setdefault(str(r["patient_id"]), []).append(r)
    return [
        kinetic_record(pid, m, by_patient[pid], s) for pid in sorted(by_patient) for m in MEASURES
    ]


# --------------------------------------------------------------------------- cohort summary

#: the kinetic parameters summarised per group (columns of :data:`KINETICS`)
SUMMARY_PARAMETERS = (
    "baseline_per_ul",
    "cmax_per_ul",
    "tmax_day",
    "clast_per_ul",
    "tlast_day",
    "fold_expansion",
    "persistence_day",
    "auc_per_ul_x_day",
)
NOT_ASSESSED = "not assessed"

KINETICS_SUMMARY = Table(
    "kinetics_summary",
    "cohort/kinetics_summary.tsv",
    "one per grouping, group, measure and parameter: all patients, then by day-14 verdict "
    "(PASS, FAIL, NOT_EVALUABLE), then by last response category (alphabetical, 'not assessed' "
    "last)",
    (
        Column("grouping", "text", "", "how patients are grouped", ("all", "verdict", "response")),
        Column(
            "group",
            "text",
            "",
            "the group: 'all patients', a verdict of endpoints.tsv, or its last_response "
            f"('{NOT_ASSESSED}' when empty)",
        ),
        Column("measure", "text", "", "the kinetic measure (kinetics.tsv)", MEASURE_NAMES),
        Column(
            "parameter",
            "text",
            "",
            "the kinetics.tsv column summarised (its unit is in its name)",
            SUMMARY_PARAMETERS,
        ),
        Column("n_patients", "integer", "patients", "patients in the group"),
        Column(
            "n", "integer", "patients", "patients of the group with a value (the others: empty)"
        ),
        Column("median", "number", "as the parameter", "median of the n values"),
        Column(
            "q1",
            "number",
            "as the parameter",
            "first quartile (linear interpolation between order statistics: R type 7, numpy's "
            "default; with n = 1 the value itself)",
        ),
        Column("q3", "number", "as the parameter", "third quartile (same method)"),
    ),
)


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(q1, median, q3) by linear interpolation between order statistics (R type 7)."""
    xs = sorted(values)

    def q(p: float) -> float:
        h = (len(xs) - 1) * p
        lo = math.floor(h)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (h - lo) * (xs[hi] - xs[lo])

    return q(0.25), q(0.5), q(0.75)


def summarize(
    records: Sequence[Mapping[str, Any]], endpoints: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """n, median and quartiles of each kinetic parameter, for all patients and by group.

    The groups are each verdict and each last response category, from the ``endpoints`` rows
    (patient_id, verdict, last_response).
    """
    verdict = {str(e["patient_id"]): str(e.get("verdict") or "NOT_EVALUABLE") for e in endpoints}
    response = {
        str(e["patient_id"]): str(e.get("last_response") or "") or NOT_ASSESSED for e in endpoints
    }
    patients = sorted({str(r["patient_id"]) for r in records} | set(verdict))
    responses = sorted({response.get(p, NOT_ASSESSED) for p in patients} - {NOT_ASSESSED})
    groups: list[tuple[str, str, list[str]]] = [("all", "all patients", patients)]
    for v in ("PASS", "FAIL", "NOT_EVALUABLE"):
        groups.append(("verdict", v, [p for p in patients if verdict.get(p) == v]))
    for c in [*responses, NOT_ASSESSED]:
        members = [p for p in patients if response.get(p, NOT_ASSESSED) == c]
        if members or c != NOT_ASSESSED:
            groups.append(("response", c, members))
    by = {(str(r["patient_id"]), str(r["measure"])): r for r in records}
    out = []
    for grouping, group, members in groups:
        for m in MEASURE_NAMES:
            for param in SUMMARY_PARAMETERS:
                vals = [
                    float(by[(p, m)][param])
                    for p in members
                    if (p, m) in by and by[(p, m)].get(param) is not None
                ]
                row: dict[str, Any] = {
                    "grouping": grouping,
                    "group": group,
                    "measure": m,
                    "parameter": param,
                    "n_patients": len(members),
                    "n": len(vals),
                }
                if vals:
                    row["q1"], row["median"], row["q3"] = quartiles(vals)
                out.append(row)
    return out
