"""Visits merge and day-14 endpoints on the hand-built fixture cohort (expected values by hand).

Fixture design (tests/unit/clinical_fixtures/make_fixtures.py): day 0 = 2024-01-01 for everyone,
3 infusions of 2.1e8 cells at 70 kg (3e6/kg each) except P009 (7e7 -> 1e6/kg, same NK and HSCT
donor). Z = 1.96 (two-sided 95 %).
"""

import datetime as dt
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from nkflow import stages, tables
from nkflow.clinical import endpoints as ep
from nkflow.clinical import visits as vis
from nkflow.clinical.endpoint_settings import EndpointSettings
from nkflow.config import load_study
from nkflow.errors import ConfigError
from nkflow.qc import QC_COLUMNS
from nkflow.tube import COUNT_COLUMNS
from tests.conftest import columns

FIX = Path(__file__).parent / "clinical_fixtures"
Z = 1.96


def patient_rows(path):
    """Map patient_id -> the serialised line of an endpoints.tsv (for byte comparisons)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return {ln.split("\t", 1)[0]: ln for ln in lines[1:]}


def run_cohort(d: Path, monkeypatch) -> None:
    """Run the two commands the workflow's merge and endpoints rules run, in-process."""
    from nkflow.cli import main

    monkeypatch.chdir(d)
    merge = ["merge", "--config", "config.yaml", "--counts", "counts.tsv", "--qc", "qc.tsv"]
    assert main([*merge, "--out", "out/visits.tsv"]) == 0
    assert (
        main(
            [
                "endpoints",
                "--config",
                "config.yaml",
                "--visits",
                "out/visits.tsv",
                "--outdir",
                "out",
            ]
        )
        == 0
    )


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    d = tmp_path_factory.mktemp("clean") / "cohort"
    shutil.copytree(FIX, d)
    mp = pytest.MonkeyPatch()
    run_cohort(d, mp)
    mp.undo()
    endpoints = pd.read_csv(d / "out" / "endpoints.tsv", sep="\t", dtype=str, keep_default_na=False)
    visits = pd.read_csv(d / "out" / "visits.tsv", sep="\t", dtype=str, keep_default_na=False)
    return d, endpoints.set_index("patient_id"), visits.set_index("sample_id")


def ci(value: float, cv: float, extra: float = 0.0) -> tuple[str, str]:
    t = math.sqrt(cv * cv + extra * extra)
    return f"{value * math.exp(-Z * t):.10g}", f"{value * math.exp(Z * t):.10g}"


def test_endpoint_columns_start_as_contracted(clean):
    d, _, _ = clean
    header = (d / "out" / "endpoints.tsv").read_text().splitlines()[0].split("\t")
    assert header[:10] == [
        "patient_id", "sample_id", "study_day", "alc_per_ul", "nk_pct_of_lymphocytes",
        "chimerism_fraction", "donor_chimerism_pct", "donor_nk_per_ul", "verdict", "reason",
    ]  # fmt: skip


def test_domain_worked_example_pass_with_interval(clean):
    _, e, _ = clean
    r = e.loc["P001"]
    # DOMAIN.md: 450 x 0.38 x 0.72 = 123.12; CD56 preferred over the PB result of the same day
    assert (r.sample_id, r.study_day, r.alc_per_ul, r.nk_pct_of_lymphocytes) == (
        "P001-D14",
        "14",
        "450",
        "38",
    )
    assert (r.chimerism_fraction, r.donor_chimerism_pct, r.donor_nk_per_ul) == (
        "CD56",
        "72",
        "123.12",
    )
    assert (r.verdict, r.reason, r.borderline) == ("PASS", "above_threshold", "false")
    assert (r.donor_nk_per_ul_lo95, r.donor_nk_per_ul_hi95) == ci(
        123.12, math.sqrt(1 / 3800 + 1 / 10000)
    )
    assert r["flags"] == "date_mismatch"  # QC WARN date_mismatch is carried, the number kept
    lo, hi = ci(123.12, math.sqrt(1 / 3800 + 1 / 10000))
    assert r.verdict_basis == f"donor_nk_per_ul 123.12 > 100 (95% {lo}-{hi})"


def test_exactly_100_is_fail_and_borderline_pb_only_recorded(clean):
    d, e, _ = clean
    r = e.loc["P002"]
    # 0.5 10^9/L = 500/uL; 500 x 0.2 x 1.00 = 100.0 exactly -> not strictly > 100
    assert (r.alc_per_ul, r.alc_source_value, r.alc_source_unit) == ("500", "0.5", "10^9/L")
    assert (r.chimerism_fraction, r.donor_nk_per_ul, r.verdict, r.borderline) == (
        "PB",
        "100",
        "FAIL",
        "true",
    )
    visits = vis.read_visits(d / "out" / "visits.tsv")
    assert visits.set_index("sample_id").loc["P002-D14", "above_threshold"] is False


def test_unit_conversion_fail_and_small_count_borderline_pass(clean):
    _, e, _ = clean
    r = e.loc["P003"]  # 0.2 10^3/uL = 200; 200 x 0.1 x 0.9 = 18
    assert (r.alc_per_ul, r.donor_nk_per_ul, r.verdict, r.borderline) == (
        "200",
        "18",
        "FAIL",
        "false",
    )
    r = e.loc["P004"]  # 1000 x 110/1000 x 1.0 = 110, but only 110 NK events
    assert (r.donor_nk_per_ul, r.verdict, r.borderline) == ("110", "PASS", "true")
    assert (r.donor_nk_per_ul_lo95, r.donor_nk_per_ul_hi95) == ci(
        110.0, math.sqrt(1 / 110 + 1 / 1000)
    )


@pytest.mark.parametrize(
    ("pid", "reason"),
    [
        ("P005", "no_sample_in_window"),
        ("P006", "missing_alc"),
        ("P007", "invalid_alc"),
        ("P008", "qc_fail:flow_rate_unstable"),
        ("P010", "missing_chimerism"),
        ("P011", "missing_marker:CD56"),
        ("P013", "qc_fail:fcs_unreadable;fcs_unreadable"),
    ],
)
def test_not_evaluable_reasons(clean, pid, reason):
    _, e, _ = clean
    r = e.loc[pid]
    assert (r.verdict, r.reason, r.borderline) == ("NOT_EVALUABLE", reason, "")


def test_missing_values_are_empty_never_zero(clean):
    _, e, v = clean
    assert e.loc["P006", "alc_per_ul"] == "" and e.loc["P006", "alc_source_value"] == "QNS"
    assert e.loc["P006", "donor_nk_per_ul"] == ""
    assert (
        e.loc["P007", "alc_source_value"] == "-300" and v.loc["P007-D14", "alc_status"] == "invalid"
    )
    assert e.loc["P011", "nk_pct_of_lymphocytes"] == ""
    # P008: QC FAIL -> the endpoint shows no number; the visit keeps it for audit
    assert e.loc["P008", "donor_nk_per_ul"] == "" and v.loc["P008-D14", "donor_nk_per_ul"] == "120"
    assert e.loc["P008", "peak_donor_nk_per_ul"] == ""  # a failed tube never feeds the kinetics


def test_no_sample_in_window_still_reports_kinetics(clean):
    _, e, _ = clean
    r = e.loc["P005"]
    assert (r.sample_id, r.study_day, r.n_samples_in_window) == ("", "", "0")
    assert (r.peak_donor_nk_per_ul, r.peak_study_day) == ("120", "20")  # 500 x 0.3 x 0.8


def test_window_tie_earlier_day_wins_and_safety_flags(clean):
    _, e, _ = clean
    r = e.loc["P009"]  # days 13 and 15 are both 1 day off: the earlier (13) is chosen
    assert (r.sample_id, r.study_day, r.n_samples_in_window, r.verdict) == (
        "P009-D13",
        "13",
        "2",
        "PASS",
    )
    assert r["flags"] == "dose_out_of_range:1,2,3;nk_donor_is_hsct_donor"
    assert (r.cells_per_kg_infusions, r.cells_per_kg_total, r.nk_donor_is_hsct_donor) == (
        "1000000,1000000,1000000",
        "3000000",
        "true",
    )
    assert e.loc["P001", "cells_per_kg_total"] == "9000000" and e.loc["P001", "n_infusions"] == "3"


def test_chimerism_from_raw_peaks_feeds_the_interval(clean):
    d, e, _ = clean
    r = e.loc["P012"]
    sd = math.sqrt(((60 - 60) ** 2 + (62 - 60) ** 2 + (58 - 60) ** 2 + 0) / 3)
    assert (r.chimerism_fraction, r.chimerism_source, r.donor_chimerism_pct) == (
        "CD56",
        "str_peaks",
        "60",
    )
    assert (r.donor_chimerism_sd, r.donor_nk_per_ul, r.verdict) == (f"{sd:.10g}", "60", "FAIL")
    assert (r.donor_nk_per_ul_lo95, r.donor_nk_per_ul_hi95) == ci(
        60.0, math.sqrt(1 / 500 + 1 / 5000), sd / 60
    )
    loci = pd.read_csv(d / "out" / "str_loci.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert dict(zip(loci.marker, loci.status, strict=True)) == {
        "D21S11": "ok", "D3S1358": "stutter_conflict", "D8S1179": "ok", "FGA": "ok",
        "TH01": "ok", "VWA": "non_informative",
    }  # fmt: skip


def test_kinetics_nk_subsets_treg_day7(clean):
    _, e, v = clean
    r = e.loc["P001"]
    assert (r.peak_donor_nk_per_ul, r.peak_study_day, r.donor_nk_kinetics) == (
        "123.12",
        "14",
        "d7:18;d14:123.12",
    )
    assert (r.nk_cd56bright_pct_of_nk, r.nk_cd56dim_pct_of_nk) == ("50", "50")
    assert (r.treg_study_day7, r.treg_pct_of_cd4_day7, r.treg_ki67_pct_of_cd4_day7) == (
        "7",
        "4",
        "1",
    )
    assert r.treg_below_5pct_day7 == "true"
    d7 = v.loc["P001-D07"]  # ALC 300 x 80/10000 Treg and 20/10000 Ki-67+ Treg
    assert (d7.treg_per_ul, d7.treg_ki67_per_ul, d7.treg_ki67_pct_of_treg) == ("2.4", "0.6", "25")
    assert d7.nk_cd56bright_pct_of_nk == "60"


def test_response_and_adverse_events_joined(clean):
    _, e, _ = clean
    r = e.loc["P001"]
    assert r.response_summary == "2024-01-29 IWG-AML 2003: CR MRD negative"
    assert (r.last_response, r.last_mrd_status) == ("CR", "negative")
    assert (r.n_adverse_events, r.max_ctcae_grade, r.n_related_adverse_events) == ("2", "2", "2")
    assert e.loc["P003", "n_related_adverse_events"] == "0"
    assert e.loc["P002", "n_adverse_events"] == "0" and e.loc["P002", "response_summary"] == ""


def test_outputs_deterministic_and_json_excel(clean, tmp_path, monkeypatch):
    d, _, _ = clean
    d2 = tmp_path / "again"
    shutil.copytree(FIX, d2)
    run_cohort(d2, monkeypatch)
    for name in (
        "endpoints.tsv",
        "visits.tsv",
        "patients/P001.json",
        "str_loci.tsv",
        "endpoints.xlsx",
    ):
        assert (d / "out" / name).read_bytes() == (d2 / "out" / name).read_bytes(), name
    import json

    import openpyxl

    doc = json.loads((d / "out" / "patients" / "P012.json").read_text())
    assert (doc["endpoint"]["verdict"], doc["endpoint"]["donor_nk_per_ul"]) == ("FAIL", 60.0)
    assert [x["sample_id"] for x in doc["visits"]] == ["P012-D14"]
    wb = openpyxl.load_workbook(d / "out" / "endpoints.xlsx")
    assert wb.sheetnames == ["endpoints", "visits"]
    assert [c.value for c in wb["endpoints"][2][:9]] == [
        "P001", "P001-D14", 14, 450, 38, "CD56", 72, 123.12, "PASS",
    ]  # fmt: skip
    assert wb["endpoints"]["D7"].value is None  # P006 ALC missing: blank, not 0


def test_done_when_pass_fail_not_evaluable_borderline_all_present(clean):
    _, e, _ = clean
    assert {"PASS", "FAIL", "NOT_EVALUABLE"} <= set(e.verdict)
    assert (e.borderline == "true").sum() == 2


# --- bad inputs end to end: the affected patient gets its reason, the others stay byte-identical


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _counts_unreadable(d: Path, reason: str) -> None:
    lines = (d / "counts.tsv").read_text().splitlines()
    col = {
        c: COUNT_COLUMNS.index(c) for c in ("sample_id", "population", "events", "status", "reason")
    }
    out = []
    for ln in lines:
        f = ln.split("\t")
        pops = (
            ("nk", "live", "nk_cd56bright", "nk_cd56dim") if reason.startswith("fcs") else ("nk",)
        )
        if f[col["sample_id"]] == "P003-D14" and f[col["population"]] in pops:
            f[col["events"]], f[col["status"]], f[col["reason"]] = "", "not_computed", reason
        out.append("\t".join(f))
    (d / "counts.tsv").write_text("\n".join(out) + "\n")


BAD = {
    "alc_qns": (
        lambda d: _edit(d / "cbc.tsv", "P003\t2024-01-15\t0.2", "P003\t2024-01-15\tQNS"),
        "missing_alc",
    ),
    "alc_empty": (
        lambda d: _edit(d / "cbc.tsv", "P003\t2024-01-15\t0.2", "P003\t2024-01-15\t"),
        "missing_alc",
    ),
    "alc_negative": (
        lambda d: _edit(d / "cbc.tsv", "P003\t2024-01-15\t0.2", "P003\t2024-01-15\t-0.2"),
        "invalid_alc",
    ),
    "alc_row_absent": (
        lambda d: _edit(d / "cbc.tsv", "P003\t2024-01-15\t0.2\t10^3/uL\n", ""),
        "missing_alc",
    ),
    "chimerism_absent": (
        lambda d: _edit(d / "chimerism.tsv", "P003\t2024-01-15\tCD56\t90\n", ""),
        "missing_chimerism",
    ),
    "chimerism_other_fraction": (
        lambda d: _edit(d / "chimerism.tsv", "P003\t2024-01-15\tCD56", "P003\t2024-01-15\tCD33"),
        "missing_chimerism",
    ),
    "chimerism_qns": (
        lambda d: _edit(
            d / "chimerism.tsv", "P003\t2024-01-15\tCD56\t90", "P003\t2024-01-15\tCD56\tQNS"
        ),
        "missing_chimerism",
    ),
    "qc_fail": (
        lambda d: _edit(
            d / "qc.tsv",
            "P003-D14\tnk\tPASS\tevents\tPASS\t",
            "P003-D14\tnk\tFAIL\tevents\tFAIL\ttoo_few_events",
        ),
        "qc_fail:too_few_events",
    ),
    "no_sample_in_window": (
        lambda d: _edit(
            d / "samples.tsv", "P003-D14\tP003\t2024-01-15", "P003-D14\tP003\t2024-01-25"
        ),
        "no_sample_in_window",
    ),
    "missing_marker": (
        lambda d: _counts_unreadable(d, "missing_marker:CD56"),
        "missing_marker:CD56",
    ),
    "fcs_unreadable": (
        lambda d: _counts_unreadable(d, "fcs_unreadable"),
        "fcs_unreadable",
    ),
    "unknown_patient_rows": (
        lambda d: (
            _edit(
                d / "cbc.tsv",
                "patient_id\tdate\talc_value\talc_unit\n",
                "patient_id\tdate\talc_value\talc_unit\nP0O3\t2024-01-15\t9\tcells/uL\n",
            ),
            _edit(d / "chimerism.tsv", "donor_pct\n", "donor_pct\nP03\t2024-01-15\tCD56\t1\n"),
        ),
        None,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_affects_only_its_patient(clean, tmp_path, monkeypatch, case):
    d0, e0, _ = clean
    d = tmp_path / "bad"
    shutil.copytree(FIX, d)
    edit, reason = BAD[case]
    edit(d)
    run_cohort(d, monkeypatch)
    before = patient_rows(d0 / "out" / "endpoints.tsv")
    after = patient_rows(d / "out" / "endpoints.tsv")
    assert sorted(after) == sorted(before)
    for pid in before:
        if pid != "P003" or reason is None:
            assert after[pid] == before[pid], pid
    if reason is not None:
        r = after["P003"].split("\t")
        assert (r[8], r[9]) == ("NOT_EVALUABLE", reason)
        assert after["P003"] != before["P003"]
    if case == "unknown_patient_rows":
        warn = (d / "out" / "sheet_warnings.tsv").read_text()
        assert "cbc.tsv: row 1 (patient_id='P0O3', date='2024-01-15'): unknown_patient" in warn
        assert (
            "chimerism.tsv: row 1 (patient_id='P03', date='2024-01-15', fraction='CD56'): unknown_patient"
            in warn
        )


# --- pure pieces


@pytest.mark.parametrize(
    ("days", "rule", "chosen"),
    [
        ([12, 16], "closest_then_earlier", 12),
        ([12, 16], "closest_then_later", 16),
        ([16, 13], "closest_then_earlier", 13),
        ([15, 12], "closest_then_earlier", 15),
        ([11, 17], "closest_then_earlier", None),
        ([14, 14], "closest_then_earlier", 14),
    ],
)
def test_choose_visit_window_and_ties(days, rule, chosen):
    visits = [{"study_day": x, "sample_id": f"S{i}"} for i, x in enumerate(days)]
    v, n = ep.choose_visit(visits, 14, 2, 2, rule)
    assert (None if v is None else v["study_day"]) == chosen
    assert n == sum(12 <= x <= 16 for x in days)
    if days == [14, 14]:
        assert v["sample_id"] == "S0"


def _mini(
    method: str,
    chim_pct: str,
    beads: tuple[str, str] = ("50000", "50"),
    nk_events: str = "2000",
    treg: dict[str, str] | None = None,
):
    """One patient, one day-14 sample; ``treg`` adds a treg tube with these population events."""
    tubes = ["nk"] + (["treg"] if treg is not None else [])
    samples = pd.DataFrame(
        [{"sample_id": "S1", "patient_id": "P1", "collection_date": dt.date(2024, 1, 15), "tube": t,
          "fcs_file": f"s1_{t}.fcs", "beads_per_test": float(beads[0]) if beads[0] else None,
          "sample_volume_ul": float(beads[1]) if beads[1] else None} for t in tubes]
    )  # fmt: skip
    counts = pd.DataFrame(
        [
            ["S1", "nk", p, e, "ok", ""]
            for p, e in (("live", "10000"), ("nk", nk_events), ("beads", "10000"))
        ]
        + [["S1", "treg", p, e, "ok", ""] for p, e in (treg or {}).items()],
        columns=columns(
            COUNT_COLUMNS, "sample_id", "tube", "population", "events", "status", "reason"
        ),
    )
    qc = pd.DataFrame(
        [["S1", t, "PASS", "PASS", ""] for t in tubes],
        columns=columns(QC_COLUMNS, "sample_id", "tube", "tube_status", "status", "reason_code"),
    )
    inf = pd.DataFrame([{"patient_id": "P1", "infusion_number": 1, "infusion_date": dt.date(2024, 1, 1),
                         "cells_per_kg": 3e6, "nk_donor_id": "D", "hsct_donor_id": "H"}])  # fmt: skip
    cbc = pd.DataFrame([{"patient_id": "P1", "date": dt.date(2024, 1, 15), "alc_source_value": "1000",
                         "alc_source_unit": "cells/uL", "alc_per_ul": 1000.0, "alc_status": "ok"}])  # fmt: skip
    chim = pd.DataFrame([{"patient_id": "P1", "date": dt.date(2024, 1, 15), "fraction": "PB",
                          "donor_pct_value": float(chim_pct), "chimerism_status": "ok"}])  # fmt: skip
    cfg = {"endpoints": {"absolute_count_method": method}}
    visits = vis.build_visits(cfg, samples, counts, qc, inf, cbc, chim)
    return visits.iloc[0], ep.build_endpoints(cfg, visits, inf).iloc[0]


def test_single_platform_beads_method_recorded():
    v, e = _mini("single_platform_beads", "60")
    # 2000/10000 x 50000/50 = 200 NK/uL; x 0.6 = 120; cv = sqrt(1/2000 + 1/10000)
    assert (v["count_method"], v["total_nk_per_ul"], v["donor_nk_per_ul"]) == (
        "single_platform_beads", pytest.approx(200.0), pytest.approx(120.0))  # fmt: skip
    lo, hi = ci(120.0, math.sqrt(1 / 2000 + 1 / 10000))
    assert (f"{v['donor_nk_per_ul_lo95']:.10g}", f"{v['donor_nk_per_ul_hi95']:.10g}") == (lo, hi)
    assert (e["verdict"], e["count_method"]) == ("PASS", "single_platform_beads")
    v, e = _mini("single_platform_beads", "60", ("", ""))
    assert (e["verdict"], e["reason"]) == ("NOT_EVALUABLE", "missing_beads")


def test_dual_platform_strict_boundary_in_memory():
    v, e = _mini("dual_platform", "50")  # 1000 x 0.2 x 0.5 = 100.0
    assert v["donor_nk_per_ul"] == 100.0 and (e["verdict"], e["borderline"]) == ("FAIL", True)
    v, e = _mini("dual_platform", "50.000001")
    assert e["verdict"] == "PASS"


def test_settings_refuse_unknown_keys_and_methods():
    with pytest.raises(
        ConfigError, match=r"config: field 'endpoints': .*'windw' was unexpected.*allowed keys: "
    ):
        EndpointSettings.from_config({"endpoints": {"windw": 3}})
    with pytest.raises(
        ConfigError,
        match=r"'endpoints.absolute_count_method': found \"trucount\"; expected one of "
        r"dual_platform, single_platform_beads",
    ):
        EndpointSettings.from_config({"endpoints": {"absolute_count_method": "trucount"}})


def test_a_dose_range_upside_down_is_refused_not_a_flag_on_every_infusion():
    with pytest.raises(
        ConfigError,
        match=r"field 'endpoints.dose_range_per_kg': found \[5e\+06, 2e\+06\]; expected "
        r"\[low, high\] NK cells/kg per infusion with low <= high",
    ):
        EndpointSettings.from_config({"endpoints": {"dose_range_per_kg": [5e6, 2e6]}})
    assert EndpointSettings.from_config(
        {"endpoints": {"dose_range_per_kg": [3e6, 3e6]}}
    ).dose_range_per_kg


def test_a_partial_nested_block_takes_the_schema_defaults_of_the_rest():
    s = EndpointSettings.from_config(
        {"endpoints": {"populations": {"nk": "NK"}, "kinetics_persistence_per_ul": {}}}
    )
    assert s.populations["nk"] == "NK" and s.populations["cd4"] == "cd4"
    assert s.tubes == {"nk": "nk", "treg": "treg"}
    assert dict(s.kinetics_persistence_per_ul) == {
        "total_nk_per_ul": 100.0,
        "nk_cd56bright_per_ul": None,
        "nk_cd56dim_per_ul": None,
        "treg_per_ul": None,
    }


# --- the synthetic sample cohort: truth counts in, truth endpoints out

REPO = Path(__file__).parents[2]
TRUTH = REPO / "data" / "sample" / "truth"


def test_sample_cohort_truth_counts_reproduce_truth_endpoints(tmp_path, monkeypatch):
    """data/sample/truth (written by scripts/make_sample_data.py from its own event labels and
    its own formula) against the merge fed with the true population counts and an all-PASS QC."""
    pop = pd.read_csv(TRUTH / "populations.tsv", sep="\t", dtype=str)
    pop = pop[~pop.population.isin(["events_in_file", "junk"])]
    pop.assign(status="ok", reason="").to_csv(tmp_path / "counts.tsv", sep="\t", index=False)
    tubes = pd.read_csv(TRUTH / "tubes.tsv", sep="\t", dtype=str)
    qc = tubes[["sample_id", "tube"]].assign(tube_status="PASS", status="PASS", reason_code="")
    qc.to_csv(tmp_path / "qc.tsv", sep="\t", index=False)
    monkeypatch.chdir(REPO)
    study = load_study(config=REPO / "config" / "config.yaml")
    stages.run_merge(
        study, tmp_path / "counts.tsv", tmp_path / "qc.tsv", tmp_path / "out" / "visits.tsv"
    )
    stages.run_endpoints(study, tmp_path / "out" / "visits.tsv", tmp_path / "out")
    got = pd.read_csv(
        tmp_path / "out" / "endpoints.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    want = pd.read_csv(TRUTH / "endpoints.tsv", sep="\t", dtype=str, keep_default_na=False)
    for col in ("donor_nk_per_ul", "donor_nk_per_ul_lo95", "donor_nk_per_ul_hi95"):
        # the truth tables carry 6 significant digits, endpoints.tsv 10 (tables.FLOAT_FORMAT)
        got[col] = [f"{float(x):.6g}" if x else "" for x in got[col]]
    assert got[list(want.columns)].to_dict(orient="records") == want.to_dict(orient="records")
    assert set(got.verdict) == {"PASS", "FAIL", "NOT_EVALUABLE"} and "true" in set(got.borderline)
    p06 = got.set_index("patient_id").loc["P06"]  # off-day sample, CD56 preferred over PB
    assert (p06.study_day, p06.chimerism_fraction) == ("13", "CD56")


def test_config_yaml_writes_the_endpoint_defaults():
    from nkflow.schemas import fill_defaults, load_schema

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    defaults: dict = {}
    fill_defaults(defaults, load_schema("endpoints"))
    assert cfg["endpoints"] == defaults


def test_visits_round_trip_keeps_bytes_and_numeric_looking_ids(tmp_path):
    d = tmp_path / "c"
    shutil.copytree(FIX, d)
    for name in ("samples.tsv", "counts.tsv", "qc.tsv"):
        _edit(d / name, "P004-D14", "0004")  # an id that looks like a number stays text
    mp = pytest.MonkeyPatch()
    try:
        run_cohort(d, mp)
    finally:
        mp.undo()
    data = (d / "out" / "visits.tsv").read_bytes()
    visits = vis.read_visits(d / "out" / "visits.tsv")
    assert "0004" in set(visits["sample_id"])
    assert vis.table_bytes(visits, vis.VISIT_COLUMNS) == data


def test_too_few_str_loci_is_missing_chimerism_and_flagged(tmp_path, monkeypatch):
    d = tmp_path / "c"
    shutil.copytree(FIX, d)
    _edit(
        d / "config.yaml",
        "  chimerism_preference: [CD56, PB]\n",
        "  chimerism_preference: [CD56, PB]\n  min_str_loci: 5\n",
    )
    run_cohort(d, monkeypatch)
    rows = patient_rows(d / "out" / "endpoints.tsv")
    r = dict(zip(ENDPOINT_HEADER, rows["P012"].split("\t"), strict=True))
    assert (r["verdict"], r["reason"], r["flags"]) == (
        "NOT_EVALUABLE",
        "missing_chimerism",
        "str_not_computable:CD56",
    )
    res = (d / "out" / "str_results.tsv").read_text().splitlines()[1].split("\t")
    assert res[3:] == ["", "", "", "4", "0", "not_computable"]


ENDPOINT_HEADER = list(ep.ENDPOINT_COLUMNS)


def test_zero_nk_events_is_a_fail_without_an_interval_not_a_crash():
    v, e = _mini("dual_platform", "90", nk_events="0")
    assert v["donor_nk_per_ul"] == 0
    # no interval: borderline is not computed (empty), never derived as 'false'
    assert (e["verdict"], e["reason"]) == ("FAIL", "not_above_threshold;interval_not_computed")
    assert e["borderline"] is None
    assert e["verdict_basis"] == "donor_nk_per_ul 0 <= 100"
    assert "low_nk_events" in e["flags"]


def test_treg_per_ul_is_empty_not_zero_without_cd4_events():
    no_cd4 = {"live": "9000", "cd4": "0", "treg": "0", "treg_ki67": "0"}
    v, _ = _mini("dual_platform", "90", treg=no_cd4)
    assert v["treg_per_ul"] is None and v["treg_ki67_per_ul"] is None
    assert v["treg_pct_of_cd4"] is None
    assert "treg_not_computed:no_cd4_events" in v["flags"].split(";")
    some = {"live": "9000", "cd4": "4500", "treg": "0", "treg_ki67": "0"}
    v, _ = _mini("dual_platform", "90", treg=some)
    # CD4 cells but no Treg among them: a real 0
    assert (v["treg_per_ul"], v["treg_pct_of_cd4"]) == (0.0, 0.0)
    assert "treg_not_computed" not in v["flags"]


def test_fraction_aliases_give_identical_tables_and_an_absent_preference_is_warned(
    tmp_path, monkeypatch, clean
):
    """CD56 written as 'CD56+' / 'NK' changes no byte of visits or endpoints; a preferred
    fraction the tables never have reaches sheet_warnings.tsv on every merge."""
    d = tmp_path / "c"
    shutil.copytree(FIX, d)
    chim = (d / "chimerism.tsv").read_text()
    (d / "chimerism.tsv").write_text(
        chim.replace("\tCD56\t", "\tCD56+\t").replace("\tPB\t", "\twhole blood\t")
    )
    _edit(d / "str_samples.tsv", "\tCD56\n", "\tNK\n")
    _edit(
        d / "config.yaml",
        "  chimerism_preference: [CD56, PB]\n",
        "  chimerism_preference: [CD19, CD56, PB]\n",
    )
    run_cohort(d, monkeypatch)
    for name in ("visits.tsv", "endpoints.tsv", "str_results.tsv"):
        assert (d / "out" / name).read_bytes() == (clean[0] / "out" / name).read_bytes(), name
    warnings = (d / "out" / "sheet_warnings.tsv").read_text().splitlines()
    assert [w for w in warnings if "never occurs" in w] == [
        "chimerism.tsv and str_samples.tsv: column 'fraction': preferred fraction 'CD19' "
        "(endpoints.chimerism_preference) never occurs; fractions found: CD3, CD56 (as CD56+, "
        "NK), PB (as whole blood); visits use CD56 instead; fix: if the lab names CD19 "
        "differently, add that spelling as an alias of CD19 in the fraction vocabulary "
        "(endpoints.chimerism_fractions), otherwise remove CD19 from "
        "endpoints.chimerism_preference"
    ]


def test_excel_workbook_carries_no_clock(tmp_path):
    """Two writes more than a zip time step (2 s) apart give the same bytes."""
    import time

    import pandas as pd

    e = pd.DataFrame([{"patient_id": "P001", "verdict": "PASS", "donor_nk_per_ul": 123.12}])
    v = pd.DataFrame([{"patient_id": "P001", "sample_id": "P001-D14"}])
    sheets = [("endpoints", e, list(e.columns)), ("visits", v, list(v.columns))]
    tables.write_xlsx(tmp_path / "a.xlsx", sheets, vis.KINDS)
    time.sleep(2.1)
    tables.write_xlsx(tmp_path / "b.xlsx", sheets, vis.KINDS)
    assert (tmp_path / "a.xlsx").read_bytes() == (tmp_path / "b.xlsx").read_bytes()
