"""Kinetic parameters on hand-built visits, every expected number worked out by hand.

Each visit is a visits.tsv row reduced to what the kinetics read. Default settings: AUC window
0-28, success threshold 100/uL, planned visits 0, 7, 14, 28 (+/- 2 days).
"""

from __future__ import annotations

import math

import pytest

from nkflow.clinical import kinetics as kin
from nkflow.columns import check_rows, table_text

CONFIG: dict = {"endpoints": {}}


def visit(day: int | None, donor: float | None = None, **kw) -> dict:
    """An evaluable visit of patient P1 with donor (and, by default, total) NK/uL ``donor``."""
    row = {
        "patient_id": "P1",
        "sample_id": f"P1-D{day:02d}" if day is not None else "P1-DX",
        "study_day": day,
        "status": "ok",
        "reason": "",
        "flags": "",
        "alc_status": "ok",
        "donor_nk_per_ul": donor,
        "total_nk_per_ul": donor,
        "nk_cd56bright_pct_of_nk": None,
        "nk_cd56dim_pct_of_nk": None,
        "treg_per_ul": None,
        "treg_qc_status": "PASS",
        "cd4_events": 1000,
    }
    row.update(kw)
    return row


def record(visits: list[dict], measure: str = "donor_nk_per_ul", config: dict = CONFIG) -> dict:
    recs = {r["measure"]: r for r in kin.build_kinetics(config, visits)}
    return recs[measure]


def test_log_down_segment_and_every_parameter():
    # d0 50, d7 200, d14 400, d28 100:
    #   0-7 rising: (50 + 200) / 2 x 7 = 875
    #   7-14 rising: (200 + 400) / 2 x 7 = 2100
    #   14-28 falling: (400 - 100) x 14 / ln(400 / 100) = 4200 / 1.3862944 = 3029.6596
    #   AUC = 6004.6596
    r = record([visit(0, 50.0), visit(7, 200.0), visit(14, 400.0), visit(28, 100.0)])
    assert r["auc_segments"] == "0-7:lin;7-14:lin;14-28:log"
    assert r["auc_per_ul_x_day"] == pytest.approx(6004.6596, abs=1e-3)
    assert (r["auc_from_day"], r["auc_to_day"], r["auc_window_days"]) == (0, 28, "0-28")
    assert (r["baseline_per_ul"], r["baseline_day"], r["baseline_sample"]) == (50.0, 0, "P1-D00")
    assert (r["cmax_per_ul"], r["tmax_day"], r["cmax_sample"]) == (400.0, 14, "P1-D14")
    assert (r["clast_per_ul"], r["tlast_day"]) == (100.0, 28)
    assert r["fold_expansion"] == 8.0  # 400 / 50
    # 100.0 at day 28 is not above 100: persistence ends at day 14, before the last visit
    assert (r["persistence_threshold_per_ul"], r["persistence_day"]) == (100.0, 14)
    assert r["flags"] == "" and r["not_computed"] == ""
    assert r["series"] == "0:50;7:200;14:400;28:100"
    assert r["provenance"] == "P1-D00/nk;P1-D07/nk;P1-D14/nk;P1-D28/nk"


def test_segment_formulas_by_hand():
    assert kin.segment_auc(0, 10, 4, 30) == (80.0, "lin")  # (10 + 30) / 2 x 4
    assert kin.segment_auc(0, 20, 5, 20) == (100.0, "lin")  # flat: 20 x 5
    area, how = kin.segment_auc(2, 8, 4, 2)  # (8 - 2) x 2 / ln 4 = 12 / 1.3862944 = 8.65617
    assert how == "log" and area == pytest.approx(8.65617, abs=1e-5)
    assert kin.segment_auc(0, 8, 4, 0) == (16.0, "lin")  # to zero: (8 + 0) / 2 x 4


def test_a_missing_visit_is_a_named_gap_never_interpolated():
    # day 14 drawn but its ALC was QNS: the AUC runs 7 -> 28 in one segment and says so
    # 0-7: (40 + 120) / 2 x 7 = 560; 7-28: (120 - 90) x 21 / ln(120 / 90) = 630 / 0.2876821
    #   = 2189.9175; AUC = 2749.9175
    visits = [
        visit(0, 40.0),
        visit(7, 120.0),
        visit(14, None, status="not_evaluable", reason="missing_alc", alc_status="missing"),
        visit(28, 90.0),
    ]
    r = record(visits, "total_nk_per_ul")
    assert r["auc_segments"] == "0-7:lin;7-28:log"
    assert r["auc_per_ul_x_day"] == pytest.approx(2749.9175, abs=1e-3)
    assert r["flags"] == "auc_over_gap"
    assert r["auc_gaps"] == "d14 P1-D14 missing_alc"
    assert r["unusable_visits"] == "P1-D14 d14 missing_alc"
    assert r["n_visits"] == 3 and "14:" not in r["series"]
    # the same visit never drawn: the planned day-14 visit is the gap
    r = record([visits[0], visits[1], visits[3]], "total_nk_per_ul")
    assert (r["flags"], r["auc_gaps"], r["unusable_visits"]) == (
        "auc_over_gap",
        "d14 not sampled",
        "",
    )


def test_a_zero_value():
    # baseline 0 (no donor cells before the infusion): fold expansion has no denominator
    # d0 0, d7 60, d14 80, d28 0: 0-7 (0 + 60)/2 x 7 = 210; 7-14 (60 + 80)/2 x 7 = 490;
    #   14-28 falls to 0, linear: (80 + 0)/2 x 14 = 560; AUC = 1260
    r = record([visit(0, 0.0), visit(7, 60.0), visit(14, 80.0), visit(28, 0.0)])
    assert r["auc_per_ul_x_day"] == pytest.approx(1260.0)
    assert r["auc_segments"] == "0-7:lin;7-14:lin;14-28:lin"
    assert r["baseline_per_ul"] == 0.0 and r["fold_expansion"] is None
    # the last measurable value is day 14's 80, not day 28's 0
    assert (r["clast_per_ul"], r["tlast_day"], r["clast_sample"]) == (80.0, 14, "P1-D14")
    assert r["not_computed"] == "fold_expansion:baseline_zero;persistence:never_above_threshold"


def test_a_single_visit():
    r = record([visit(14, 150.0)])
    assert (r["cmax_per_ul"], r["tmax_day"], r["clast_per_ul"], r["tlast_day"]) == (
        150.0,
        14,
        150.0,
        14,
    )
    assert r["auc_per_ul_x_day"] is None and r["auc_from_day"] is None
    assert r["not_computed"] == (
        "baseline:no_visit_on_or_before_day0;fold_expansion:no_baseline;"
        "auc:fewer_than_two_visits_in_window"
    )
    assert (r["persistence_day"], r["flags"]) == (14, "persistence_to_last_visit")


def test_partial_window_baseline_before_day0_and_cmax_ties():
    # baseline = the last usable visit on or before day 0 (day -3 here; day 0 is not evaluable)
    visits = [
        visit(-3, 20.0),
        visit(0, None, status="not_evaluable", reason="qc_fail:low_total_events"),
        visit(7, 90.0),
        visit(14, 90.0),
        visit(35, 30.0),
    ]
    r = record(visits)
    assert (r["baseline_day"], r["baseline_per_ul"]) == (-3, 20.0)
    assert (r["cmax_per_ul"], r["tmax_day"]) == (90.0, 7)  # tie: the earlier day
    assert r["fold_expansion"] == 4.5  # 90 / 20
    # window 0-28 holds days 7 and 14 only (day -3 and day 35 are outside): 90 x 7 = 630
    assert (r["auc_per_ul_x_day"], r["auc_from_day"], r["auc_to_day"]) == (630.0, 7, 14)
    assert r["flags"] == "auc_partial_window"
    # Clast and persistence look past the window: day 35
    assert (r["clast_per_ul"], r["tlast_day"]) == (30.0, 35)
    assert r["not_computed"] == "persistence:never_above_threshold"
    assert r["unusable_visits"] == "P1-D00 d0 qc_fail:low_total_events"


def test_configured_window_and_persistence_threshold():
    cfg = {
        "endpoints": {
            "kinetics_auc_window_days": [7, 14],
            "kinetics_persistence_per_ul": {"total_nk_per_ul": 150.0},
        }
    }
    visits = [visit(0, 50.0), visit(7, 200.0), visit(14, 400.0), visit(28, 100.0)]
    r = record(visits, "total_nk_per_ul", cfg)
    assert (r["auc_per_ul_x_day"], r["auc_window_days"]) == (2100.0, "7-14")
    assert (r["persistence_threshold_per_ul"], r["persistence_day"]) == (150.0, 14)


def test_which_visits_each_measure_uses():
    # day 0: no chimerism -> not evaluable for donor NK, but its NK count stands;
    # subsets = total x % / 100; Treg follows its own tube
    d0 = visit(
        0,
        None,
        status="not_evaluable",
        reason="missing_chimerism",
        total_nk_per_ul=50.0,
        nk_cd56bright_pct_of_nk=60.0,
        nk_cd56dim_pct_of_nk=40.0,
        treg_per_ul=12.0,
    )
    d7 = visit(
        7,
        80.0,
        total_nk_per_ul=100.0,
        nk_cd56bright_pct_of_nk=25.0,
        nk_cd56dim_pct_of_nk=75.0,
        treg_per_ul=None,
        flags="treg_qc_fail:gate_no_valley",
    )
    recs = {r["measure"]: r for r in kin.build_kinetics(CONFIG, [d0, d7])}
    assert recs["donor_nk_per_ul"]["series"] == "7:80"
    assert recs["donor_nk_per_ul"]["unusable_visits"] == "P1-D00 d0 missing_chimerism"
    assert recs["total_nk_per_ul"]["series"] == "0:50;7:100"
    assert recs["nk_cd56bright_per_ul"]["series"] == "0:30;7:25"
    assert recs["nk_cd56dim_per_ul"]["series"] == "0:20;7:75"
    assert recs["nk_cd56dim_per_ul"]["fold_expansion"] == 3.75  # 75 / 20
    assert recs["treg_per_ul"]["series"] == "0:12"
    assert recs["treg_per_ul"]["unusable_visits"] == "P1-D07 d7 treg_qc_fail:gate_no_valley"
    assert recs["treg_per_ul"]["provenance"] == "P1-D00/treg"
    assert recs["treg_per_ul"]["not_computed"].startswith("baseline:") is False
    assert "persistence:no_threshold" in recs["treg_per_ul"]["not_computed"]
    assert [r["measure"] for r in kin.build_kinetics(CONFIG, [d0, d7])] == list(kin.MEASURE_NAMES)


def test_a_qc_failure_of_the_nk_tube_removes_the_visit_from_every_nk_measure():
    d7 = visit(7, None, status="not_evaluable", reason="qc_fail:time_excess_removed")
    d7["total_nk_per_ul"] = 300.0  # visits.tsv keeps the number behind the FAIL
    for m in ("donor_nk_per_ul", "total_nk_per_ul"):
        r = record([visit(0, 10.0), d7, visit(14, 60.0)], m)
        assert "7:" not in r["series"], m
        assert r["unusable_visits"] == "P1-D07 d7 qc_fail:time_excess_removed"


def test_the_written_table_matches_its_declaration(tmp_path):
    visits = [visit(0, 0.0), visit(7, 60.0), visit(14, 80.0), visit(28, 0.0), visit(None, 5.0)]
    text = table_text(kin.KINETICS, kin.build_kinetics(CONFIG, visits))
    lines = [ln.split("\t") for ln in text.splitlines()]
    assert check_rows(kin.KINETICS, lines[0], lines[1:]) == []
    assert len(lines) == 1 + len(kin.MEASURES)
    row = dict(zip(lines[0], lines[1], strict=True))
    assert row["fold_expansion"] == "" and math.isclose(float(row["auc_per_ul_x_day"]), 1260.0)


def test_quartiles_by_hand():
    # R type 7: position (n - 1) p; [1, 2, 3, 4]: q1 at 0.75 -> 1.75, median 2.5, q3 at 2.25 -> 3.25
    assert kin.quartiles([4.0, 1.0, 3.0, 2.0]) == (1.75, 2.5, 3.25)
    assert kin.quartiles([7.0]) == (7.0, 7.0, 7.0)


def test_summary_by_verdict_and_response():
    recs = [
        {"patient_id": "A", "measure": "donor_nk_per_ul", "cmax_per_ul": 400.0},
        {"patient_id": "B", "measure": "donor_nk_per_ul", "cmax_per_ul": 200.0},
        {"patient_id": "C", "measure": "donor_nk_per_ul", "cmax_per_ul": None},
    ]
    endpoints = [
        {"patient_id": "A", "verdict": "PASS", "last_response": "CR"},
        {"patient_id": "B", "verdict": "PASS", "last_response": ""},
        {"patient_id": "C", "verdict": "NOT_EVALUABLE", "last_response": "CR"},
    ]
    rows = [
        r
        for r in kin.summarize(recs, endpoints)
        if r["measure"] == "donor_nk_per_ul" and r["parameter"] == "cmax_per_ul"
    ]
    got = {(r["grouping"], r["group"]): (r["n_patients"], r["n"], r.get("median")) for r in rows}
    assert got == {
        ("all", "all patients"): (3, 2, 300.0),
        ("verdict", "PASS"): (2, 2, 300.0),
        ("verdict", "FAIL"): (0, 0, None),
        ("verdict", "NOT_EVALUABLE"): (1, 0, None),
        ("response", "CR"): (2, 1, 400.0),
        ("response", "not assessed"): (1, 1, 200.0),
    }
    assert [r["group"] for r in rows][-1] == "not assessed"  # last, after the categories
