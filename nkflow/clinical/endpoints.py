"""Per-patient day-14 endpoints, with uncertainty.

Contract
--------
* :func:`build_endpoints` picks each patient's day-14 visit (window, then closest day, then the
  earlier day, then sample_id; chosen on the day alone, never on the result) and gives PASS
  (donor NK/uL strictly > threshold), FAIL or NOT_EVALUABLE with reason codes. One row per patient
  of the infusion table, sorted by patient_id; columns :data:`ENDPOINT_COLUMNS`. It is pure: the
  visits come from :func:`nkflow.clinical.visits.build_visits` (or visits.tsv read back).
* Given the cohort ``perturbation.tsv``, each PASS/FAIL also says how sure it is
  (:mod:`nkflow.clinical.uncertainty`, docs/uncertainty.md); the verdict itself never depends on it.
* A missing number is None (an empty cell), never 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nkflow import tables
from nkflow.clinical import uncertainty as unc_mod
from nkflow.clinical.endpoint_settings import EndpointSettings
from nkflow.clinical.visits import VISIT_DEFINITIONS, day0_dates, group_rows, visit_records
from nkflow.columns import Definition

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


VERDICTS = ("PASS", "FAIL", "NOT_EVALUABLE")

#: the columns of endpoints.tsv in order, each with (unit, definition[, allowed values]) for the
#: data dictionary; None: the chosen visit's cell, defined as in visits.tsv
_DEFINITIONS: dict[str, Definition | None] = {
    "patient_id": None,
    "sample_id": ("", "the day-14 visit chosen (empty: none in the window)"),
    "study_day": ("day", "study day of the chosen visit"),
    "alc_per_ul": None,
    "nk_pct_of_lymphocytes": None,
    "chimerism_fraction": None,
    "donor_chimerism_pct": None,
    "donor_nk_per_ul": ("cells/uL", "the chosen visit's donor NK/uL; empty when NOT_EVALUABLE"),
    "verdict": ("", "day-14 expansion endpoint: PASS when donor NK/uL > threshold", VERDICTS),
    "reason": ("", "';'-joined reason codes of the verdict (config/README.md)"),
    "donor_nk_per_ul_lo95": None,
    "donor_nk_per_ul_hi95": None,
    "borderline": ("", "the 95 % interval contains the threshold (empty: not computed)"),
    # how sure the verdict is (docs/uncertainty.md)
    "borderline_basis": (
        "",
        "what borderline rests on: all_sources, or counting when the uncertainty is not computed",
        ("all_sources", "counting"),
    ),
    "p_above_threshold": ("", "share of the donor NK/uL draws above the threshold, 0-1"),
    "donor_nk_per_ul_all_lo95": (
        "cells/uL",
        "2.5 % quantile of donor NK/uL under gate placement, counting and chimerism error",
    ),
    "donor_nk_per_ul_all_hi95": (
        "cells/uL",
        "97.5 % quantile of donor NK/uL under gate placement, counting and chimerism error",
    ),
    "verdict_unstable": (
        "",
        "moving a fitted boundary within its plausible range flips the verdict (flags name it)",
    ),
    "dominant_spread_source": (
        "",
        "the largest share of the variance of donor NK/uL",
        ("gate", "counting", "chimerism"),
    ),
    "gate_variance_frac": ("", "gate placement's share of the variance, 0-1"),
    "counting_variance_frac": ("", "counting error's share of the variance, 0-1"),
    "chimerism_variance_frac": ("", "chimerism error's share of the variance, 0-1"),
    "uncertainty_status": ("", "computed, or not_computed:<reason> (config/README.md)"),
    "verdict_basis": ("", "the comparison in words, e.g. 'donor_nk_per_ul 123.12 > 100'"),
    "flags": ("", "visit flags plus patient flags (config/README.md)"),
    "qc_status": None,
    "collection_date": None,
    "day0_date": None,
    "window_days": ("day", "the day-14 visit window, '<first>-<last>'"),
    "n_samples_in_window": ("samples", "candidates in the window"),
    "count_method": None,
    "alc_source_value": None,
    "alc_source_unit": None,
    "alc_date": None,
    "nk_events": None,
    "lymphocyte_events": None,
    "lymphocyte_population": None,
    "chimerism_date": None,
    "chimerism_source": None,
    "donor_chimerism_sd": None,
    "nk_tube_fcs": None,
    "nk_cd56bright_pct_of_nk": None,
    "nk_cd56dim_pct_of_nk": None,
    "n_visits": ("visits", "samples of the patient"),
    "peak_donor_nk_per_ul": ("cells/uL", "highest donor NK/uL of the evaluable visits >= day 0"),
    "peak_study_day": ("day", "study day of the peak (ties: earlier day)"),
    "donor_nk_kinetics": ("day:cells/uL", "'d<day>:<donor NK/uL>' of every evaluable visit"),
    "treg_study_day7": ("day", "study day of the visit chosen in the day-7 window"),
    "treg_pct_of_cd4_day7": ("%", "Treg % of CD4 at that visit"),
    "treg_ki67_pct_of_cd4_day7": ("%", "Ki-67+ Treg % of CD4 at that visit"),
    "treg_below_5pct_day7": ("", "treg_pct_of_cd4_day7 < endpoints.treg_low_pct_of_cd4"),
    "n_infusions": ("infusions", "NK infusions of the patient"),
    "cells_per_kg_infusions": ("cells/kg", "dose per infusion, ','-joined by infusion number"),
    "cells_per_kg_total": ("cells/kg", "sum of the doses"),
    "nk_donor_is_hsct_donor": (
        "",
        "an infusion's NK donor is the stem-cell donor (unknown: donor ids missing)",
        ("true", "false", "unknown"),
    ),
    "response_summary": ("", "'<date> <criteria> <version>: <category>[ MRD <status>]', '; '"),
    "last_response": ("", "category of the latest response assessment"),
    "last_mrd_status": ("", "MRD status of the latest assessment"),
    "n_adverse_events": ("events", "adverse events of the patient"),
    "max_ctcae_grade": ("grade", "highest CTCAE grade (1-5)"),
    "n_related_adverse_events": (
        "events",
        "adverse events possibly, probably or definitely related",
    ),
    "adverse_event_summary": ("", "'<date> <term> G<grade> (<relation>)', '; '-joined"),
    # review and sign-off (docs/review.md)
    "review_status": (
        "",
        "the signatures in the review audit log against this run",
        ("approved", "reviewed", "void", "not_reviewed"),
    ),
    "review_note": ("", "the signatures that hold, or for void what changed since"),
}
ENDPOINT_DEFINITIONS: dict[str, Definition] = {
    k: d or VISIT_DEFINITIONS[k] for k, d in _DEFINITIONS.items()
}
ENDPOINT_COLUMNS: tuple[str, ...] = tuple(ENDPOINT_DEFINITIONS)
#: endpoint columns that describe the signatures on a row (nkflow.review), not what is signed
REVIEW_COLUMNS: tuple[str, ...] = ("review_status", "review_note")

#: a yes/no column's value when the inputs cannot say (``nk_donor_is_hsct_donor`` without ids)
UNKNOWN = "unknown"
RELATED = ("possible", "probable", "definite")


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
    """The visit inside ``[target - before, target + after]`` and the number of visits in it.

    The visit is the closest day, then the earlier (or the later with ``closest_then_later``), then
    by sample_id; None when the window holds none.
    """
    pool = window_candidates(visits, target, before, after)
    if not pool:
        return None, 0
    sign = 1 if tie_rule == "closest_then_earlier" else -1
    pool.sort(key=lambda r: (abs(r["study_day"] - target), sign * r["study_day"], r["sample_id"]))
    return pool[0], len(pool)


def _num(x: float) -> str:
    """A number inside a text cell, in the one table float format."""
    return tables.FLOAT_FORMAT % x


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

    s = EndpointSettings.from_config(config)
    us = unc_mod.UncertaintySettings.from_config(config)  # read once, not per patient
    target, before, after = s.target_day, s.window_before, s.window_after
    thr = s.threshold_per_ul
    lo_dose, hi_dose = (float(x) for x in s.dose_range_per_kg)
    by_pat: dict[str, list[dict[str, Any]]] = {}
    for r in visit_records(visits):
        by_pat.setdefault(str(r["patient_id"]), []).append(r)
    inf_by = group_rows(infusions, "patient_id")
    resp_by = group_rows(response, "patient_id")
    ae_by = group_rows(adverse, "patient_id")
    day0 = day0_dates(infusions, s.day0_infusion)
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
        visit, n_in = choose_visit(pv, target, before, after, s.tie_rule)
        e["n_samples_in_window"] = n_in
        if visit is None:
            e["verdict"], e["reason"] = "NOT_EVALUABLE", "no_sample_in_window"
            e["count_method"] = s.absolute_count_method
            e["lymphocyte_population"] = s.denominator_population
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
                ci = f" (95% {_num(lo)}-{_num(hi)})" if lo is not None and hi is not None else ""
                e["verdict_basis"] = (
                    f"donor_nk_per_ul {_num(donor)} {'>' if above else '<='} {_num(thr)}{ci}"
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
            e["donor_nk_kinetics"] = ";".join(f"d{d}:{_num(x)}" for d, x in kin)
        tv, _ = choose_visit(
            pv,
            s.treg_day,
            s.treg_window_before,
            s.treg_window_after,
            s.tie_rule,
        )
        if tv is not None:
            e["treg_study_day7"] = tv["study_day"]
            e["treg_pct_of_cd4_day7"] = tv["treg_pct_of_cd4"]
            e["treg_ki67_pct_of_cd4_day7"] = tv["treg_ki67_pct_of_cd4"]
            if tv["treg_pct_of_cd4"] is not None:
                e["treg_below_5pct_day7"] = float(tv["treg_pct_of_cd4"]) < s.treg_low_pct_of_cd4
        infs = sorted(inf_by[pid], key=lambda r: int(r["infusion_number"]))
        e["n_infusions"] = len(infs)
        e["cells_per_kg_infusions"] = ",".join(_num(float(r["cells_per_kg"])) for r in infs)
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
    s: EndpointSettings,
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
    if s.absolute_count_method != "dual_platform":
        return not_computed("single_platform_beads")
    rows = pert_by.get((str(visit["sample_id"]), str(s.tubes["nk"])))
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
    """Whether an infusion's NK donor is the HSCT donor: True, False or :data:`UNKNOWN`.

    True when an infusion's NK donor is the HSCT donor, False when every infusion names two
    different donors, :data:`UNKNOWN` when a donor id is missing and none is known to match.
    """
    pairs = [
        (str(r.get("nk_donor_id") or ""), str(r.get("hsct_donor_id") or "")) for r in infusions
    ]
    if any(a and a == b for a, b in pairs):
        return True
    if all(a and b for a, b in pairs):
        return False
    return UNKNOWN


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
