"""`nkflow plan`: what a run will use, checked against expectations written by hand from the
rules, and against what the merge and endpoint steps then do with the same sheets.

The hand-built cohort (``_write_cohort``), day 0 = infusion 1, window 12-16,
``cbc_tolerance_days: 1``, chimerism CD56 then PB within 3 days:

* A, normal: day 0 2024-01-01 (infusion 2 on 01-03 is not day 0); A-D00 has no chimerism; A-D14
  takes CBC row 2 (0.45 10^3/uL = 450/uL) and the CD56 row written ``CD56+`` over the PB row.
* B, two candidates: B-D13 and B-D15 are both 1 day from day 14; the earlier wins
  (closest_then_earlier). B-D15's CBC is row 4 (1 day after; row 3 is 2 days before); its CD56
  result is the one of 02-14 (2 days, within 3). Its treg FCS file does not exist.
* C, no CBC within 1 day of C-D14 (rows 5 and 6 are 2 and 3 days away): missing_alc. C-D16
  takes row 6 (1 day after).
* D, only PB in tolerance while CD56 is preferred: the CD56 result is 5 days before D-D14, the
  PB one (written ``whole blood``) 1 day after. CBC rows 7 and 8 are 1 day before and after:
  the earlier, row 7.
* E, no sample in the window: one day-7 visit, no chimerism.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from nkflow import plan as planmod
from nkflow.cli import main
from nkflow.clinical import endpoints as ep
from nkflow.clinical import visits as vis
from nkflow.config import Study

ROOT = Path(__file__).resolve().parents[2]
VOCAB = ROOT / "config" / "vocab" / "chimerism_fractions.yaml"
FIX = Path(__file__).parent / "clinical_fixtures"


def _documented_columns() -> list[str]:
    """The columns of the plan.tsv table in config/README.md, in order."""
    text = (ROOT / "config" / "README.md").read_text()
    section = text.split("### plan.tsv", 1)[1].split("\n### ", 1)[0]
    cols: list[str] = []
    for line in section.splitlines():
        if line.startswith("| `"):
            cols += re.findall(r"`([a-z0-9_]+)`", line.split("|")[1])
    return cols


def _tsv(path: Path, text: str) -> None:
    path.write_text("\n".join("\t".join(ln.split("|")) for ln in text.strip().splitlines()) + "\n")


def _write_cohort(d: Path, endpoints: dict | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    _tsv(
        d / "infusions.tsv",
        """
patient_id|infusion_number|infusion_date|cells_infused|body_weight_kg|nk_donor_id|hsct_donor_id
A|1|2024-01-01|2.1e8|70|DA|HA
A|2|2024-01-03|2.1e8|70|DA|HA
B|1|2024-02-01|2.1e8|70|DB|HB
C|1|2024-03-01|2.1e8|70|DC|HC
D|1|2024-04-01|2.1e8|70|DD|HD
E|1|2024-05-01|2.1e8|70|DE|HE
""",
    )
    _tsv(
        d / "samples.tsv",
        """
sample_id|patient_id|collection_date|tube|panel|gating|fcs_file
A-D00|A|2024-01-01|nk|nk_v1|nk_v1|fcs/A-D00_nk.fcs
A-D00|A|2024-01-01|treg|treg_v1|treg_v1|fcs/A-D00_treg.fcs
A-D14|A|2024-01-15|nk|nk_v1|nk_v1|fcs/A-D14_nk.fcs
A-D14|A|2024-01-15|treg|treg_v1|treg_v1|fcs/A-D14_treg.fcs
B-D15|B|2024-02-16|nk|nk_v1|nk_v1|fcs/B-D15_nk.fcs
B-D15|B|2024-02-16|treg|treg_v1|treg_v1|fcs/B-D15_treg.fcs
B-D13|B|2024-02-14|nk|nk_v1|nk_v1|fcs/B-D13_nk.fcs
C-D14|C|2024-03-15|nk|nk_v1|nk_v1|fcs/C-D14_nk.fcs
C-D16|C|2024-03-17|nk|nk_v1|nk_v1|fcs/C-D16_nk.fcs
D-D14|D|2024-04-15|nk|nk_v1|nk_v1|fcs/D-D14_nk.fcs
E-D07|E|2024-05-08|nk|nk_v1|nk_v1|fcs/E-D07_nk.fcs
""",
    )
    _tsv(
        d / "cbc.tsv",
        """
patient_id|date|alc_value|alc_unit
A|2024-01-01|300|cells/uL
A|2024-01-15|0.45|10^3/uL
B|2024-02-14|0.5|10^9/L
B|2024-02-17|600|cells/uL
C|2024-03-13|700|cells/uL
C|2024-03-18|800|cells/uL
D|2024-04-14|900|cells/uL
D|2024-04-16|950|cells/uL
E|2024-05-08|400|cells/uL
""",
    )
    _tsv(
        d / "chimerism.tsv",
        """
patient_id|date|fraction|donor_pct
A|2024-01-15|CD56+|72
A|2024-01-15|PB|50
B|2024-02-14|PB|40
B|2024-02-14|CD56|85
C|2024-03-15|CD56|90
D|2024-04-16|whole blood|66
D|2024-04-10|CD56|95
""",
    )
    (d / "fcs").mkdir(exist_ok=True)
    for f in pd.read_csv(d / "samples.tsv", sep="\t")["fcs_file"]:
        if f != "fcs/B-D15_treg.fcs":  # the one file that does not exist
            (d / f).write_bytes(b"")
    ep_cfg = {"cbc_tolerance_days": 1, "chimerism_fractions": str(VOCAB), **(endpoints or {})}
    cfg = {
        "sheets": {k: f"{k}.tsv" for k in ("samples", "infusions", "cbc", "chimerism")},
        "panels": {"nk_v1": "panels/nk_v1.yaml", "treg_v1": "panels/treg_v1.yaml"},
        "gating": {"nk_v1": "gating/nk_v1.yaml", "treg_v1": "gating/treg_v1.yaml"},
        "endpoints": ep_cfg,
    }
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return d


def _plan_cli(d: Path, monkeypatch, capsys) -> tuple[pd.DataFrame, str, bytes]:
    monkeypatch.chdir(d)
    assert main(["plan", "--config", "config.yaml", "--tsv", "out/plan.tsv"]) == 0
    text = capsys.readouterr().out
    raw = (d / "out" / "plan.tsv").read_bytes()
    df = pd.read_csv(d / "out" / "plan.tsv", sep="\t", dtype=str, keep_default_na=False)
    return df, text, raw


# hand-written from the rules (module docstring); '' = empty cell
EXPECTED = """
patient_id|sample_id|study_day|role|nk_tube_fcs|treg_tube_fcs|cbc_row|alc_date|alc_per_ul|alc_status|chimerism_source|chimerism_row|chimerism_fraction|chimerism_fraction_as_written|chimerism_date|donor_chimerism_pct|missing
A|A-D00|0|other|fcs/A-D00_nk.fcs|fcs/A-D00_treg.fcs|1|2024-01-01|300|ok||||||| missing_chimerism
A|A-D14|14|day14_endpoint|fcs/A-D14_nk.fcs|fcs/A-D14_treg.fcs|2|2024-01-15|450|ok|table|1|CD56|CD56+|2024-01-15|72|
B|B-D13|13|day14_endpoint|fcs/B-D13_nk.fcs||3|2024-02-14|500|ok|table|4|CD56|CD56|2024-02-14|85|
B|B-D15|15|day14_candidate|fcs/B-D15_nk.fcs|fcs/B-D15_treg.fcs|4|2024-02-17|600|ok|table|4|CD56|CD56|2024-02-14|85|fcs_not_found:treg
C|C-D14|14|day14_endpoint|fcs/C-D14_nk.fcs|||||missing|table|5|CD56|CD56|2024-03-15|90|missing_alc
C|C-D16|16|day14_candidate|fcs/C-D16_nk.fcs||6|2024-03-18|800|ok|table|5|CD56|CD56|2024-03-15|90|
D|D-D14|14|day14_endpoint|fcs/D-D14_nk.fcs||7|2024-04-14|900|ok|table|6|PB|whole blood|2024-04-16|66|
E|E-D07|7|other|fcs/E-D07_nk.fcs||9|2024-05-08|400|ok|||||||missing_chimerism
E|||day14_endpoint||||||||||||| no_sample_in_window
"""


def _expected() -> tuple[list[str], list[dict[str, str]]]:
    header, *lines = EXPECTED.strip().splitlines()
    cols = header.split("|")
    rows = []
    for ln in lines:
        cells = [c.strip() for c in ln.split("|")]
        assert len(cells) == len(cols), ln
        rows.append(dict(zip(cols, cells, strict=True)))
    return cols, rows


def test_plan_tsv_matches_the_hand_checked_table(tmp_path, monkeypatch, capsys):
    d = _write_cohort(tmp_path / "cohort")
    df, _, raw = _plan_cli(d, monkeypatch, capsys)
    assert list(df.columns) == list(planmod.PLAN_COLUMNS) == _documented_columns()
    cols, expected = _expected()
    assert df[cols].to_dict(orient="records") == expected
    # the tree and panel named for each tube, and day 0 from infusion 1 only
    nk = df[df["nk_tube_fcs"] != ""]
    assert set(zip(nk["nk_gating"], nk["nk_gating_file"], nk["nk_panel"], strict=True)) == {
        ("nk_v1", "gating/nk_v1.yaml", "nk_v1")
    }
    assert df.set_index("sample_id").loc["A-D14", "day0_date"] == "2024-01-01"
    assert set(df["day0_infusion"]) == {"1"}
    # deterministic bytes
    _, _, raw2 = _plan_cli(d, monkeypatch, capsys)
    assert raw2 == raw


def test_plan_text_says_the_choices_and_what_is_missing(tmp_path, monkeypatch, capsys):
    d = _write_cohort(tmp_path / "cohort")
    _, text, _ = _plan_cli(d, monkeypatch, capsys)
    lines = text.splitlines()
    assert lines[0] == (
        "nkflow plan: 5 patient(s), 8 visit(s); day 0 = infusion 1; day-14 visit in days 12-16 "
        "(closest_then_earlier); CBC within 1 d of the draw; chimerism CD56, then PB within 3 d; "
        "count method dual_platform"
    )
    assert "A: day 0 2024-01-01 (infusion 1 of 2)" in lines
    assert (
        "  day-14 endpoint: B-D13 day 13 (2 samples in days 12-16: B-D13 day 13, B-D15 day 15; "
        "closest_then_earlier)"
    ) in lines
    i = lines.index(
        "  day-14 endpoint: C-D14 day 14 (2 samples in days 12-16: C-D14 day 14, C-D16 day 16; "
        "closest_then_earlier)"
    )
    assert lines[i + 1] == (
        "    nk tube fcs/C-D14_nk.fcs, gate tree nk_v1 (gating/nk_v1.yaml), panel nk_v1"
    )
    assert lines[i + 2] == "    treg tube: none in the sample sheet"
    assert lines[i + 3] == "    -> NOT_EVALUABLE missing_alc"
    c14 = next(ln for ln in lines if ln.startswith("  C-D14"))
    assert "CBC: none within 1 d" in c14 and c14.endswith("MISSING missing_alc")
    d14 = next(ln for ln in lines if ln.startswith("  D-D14"))
    assert d14.endswith(
        "CBC row 7 (2024-04-14): 900 cells/uL = 900/uL; chimerism table row 6: PB 2024-04-16, "
        "66 % donor (written 'whole blood'; no CD56 within 3 d)"
    )
    assert (
        "  day-14 endpoint: no sample in days 12-16 (visits on day(s) 7) -> NOT_EVALUABLE "
        "no_sample_in_window"
    ) in lines
    b15 = next(ln for ln in lines if ln.startswith("  B-D15"))
    assert " candidate " in b15 and b15.endswith("MISSING fcs_not_found:treg")


def test_later_tie_rule_and_preference_order_change_the_plan(tmp_path, monkeypatch, capsys):
    d = _write_cohort(
        tmp_path / "cohort",
        {"tie_rule": "closest_then_later", "chimerism_preference": ["PB", "CD56"]},
    )
    df, _, _ = _plan_cli(d, monkeypatch, capsys)
    by = df.set_index("sample_id")
    assert (by.loc["B-D15", "role"], by.loc["B-D13", "role"]) == (
        "day14_endpoint",
        "day14_candidate",
    )
    # PB first: A-D14 takes the PB row 2; C has no PB, so CD56 stays
    assert tuple(by.loc["A-D14", ["chimerism_fraction", "chimerism_row"]]) == ("PB", "2")
    assert tuple(by.loc["C-D14", ["chimerism_fraction", "chimerism_row"]]) == ("CD56", "5")


# --------------------------------------------------------------------------------------------
# the plan against what the merge and endpoint steps do with the same sheets
# --------------------------------------------------------------------------------------------


def _synthetic_counts(samples: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every tube gated fine (1000 events in each population, QC PASS): the reasons left are
    the ones the sheets alone give."""
    from nkflow.clinical.endpoint_settings import EndpointSettings

    s = EndpointSettings.from_config(config)
    pops = [*s.populations.values(), s.denominator_population]
    counts, qc = [], []
    for rec in samples.to_dict(orient="records"):
        for pop in pops:
            counts.append(
                {
                    "sample_id": rec["sample_id"],
                    "tube": rec["tube"],
                    "population": pop,
                    "events": "1000",
                    "status": "ok",
                    "reason": "",
                }
            )
        qc.append(
            {
                "sample_id": rec["sample_id"],
                "tube": rec["tube"],
                "tube_status": "PASS",
                "status": "PASS",
                "reason_code": "",
            }
        )
    return pd.DataFrame(counts), pd.DataFrame(qc)


PLAN_FLAGS = ("str_not_computable:", "chimerism_near_assay_limit")


def _check_agreement(config: dict) -> int:
    """Assert plan == merge + endpoints on synthetic counts; returns the visits compared."""
    inp = Study(config).visit_inputs
    counts, qc = _synthetic_counts(inp.samples, config)
    sam, inf, cbc, chim, str_res = (
        inp.samples,
        inp.infusions,
        inp.cbc,
        inp.chimerism,
        inp.str_results,
    )
    visits = vis.build_visits(config, sam, counts, qc, inf, cbc, chim, str_res)
    endpoints = ep.build_endpoints(config, visits, inp.infusions)
    plan = planmod.run_plan(config, log_warnings=False)
    rows = {r["sample_id"]: r for r in plan.rows if r["sample_id"] is not None}
    assert set(rows) == set(visits["sample_id"])
    for v in vis.visit_records(visits):
        r = rows[v["sample_id"]]
        sid = v["sample_id"]
        sheet_only = [m for m in r["missing"].split(";") if m and not m.startswith("fcs_not")]
        assert ";".join(sheet_only) == v["reason"], sid
        vflags = [f for f in v["flags"].split(";") if f.startswith(PLAN_FLAGS)]
        assert r["flags"] == ";".join(vflags), sid
        for col in (
            "study_day",
            "day0_date",
            "nk_tube_fcs",
            "alc_date",
            "alc_source_value",
            "alc_per_ul",
            "chimerism_fraction",
            "chimerism_date",
            "chimerism_source",
            "donor_chimerism_pct",
        ):
            assert r[col] == v[col], (sid, col)
        assert r["alc_status"] == v["alc_status"], sid
    ends = [r for r in plan.rows if r["role"] == "day14_endpoint"]
    assert [r["patient_id"] for r in ends] == list(endpoints["patient_id"])
    for r, e in zip(ends, endpoints.to_dict(orient="records"), strict=True):
        assert r["sample_id"] == e["sample_id"], r["patient_id"]
        assert plan.patients[r["patient_id"]]["n_in_window"] == e["n_samples_in_window"]
        sheet_only = [m for m in r["missing"].split(";") if m and not m.startswith("fcs_not")]
        if sheet_only:
            assert (e["verdict"], e["reason"]) == ("NOT_EVALUABLE", ";".join(sheet_only))
        else:
            assert e["verdict"] in ("PASS", "FAIL"), r["patient_id"]
    return len(visits)


@pytest.mark.parametrize(
    "endpoints",
    [
        {},
        {"tie_rule": "closest_then_later", "chimerism_preference": ["PB", "CD56"]},
        {"cbc_tolerance_days": 0, "chimerism_tolerance_days": 0},
    ],
)
def test_plan_agrees_with_merge_and_endpoints_on_the_small_cohort(tmp_path, monkeypatch, endpoints):
    d = _write_cohort(tmp_path / "cohort", endpoints)
    monkeypatch.chdir(d)
    assert _check_agreement(yaml.safe_load((d / "config.yaml").read_text())) == 8


BEADS = {"absolute_count_method": "single_platform_beads", "cbc_tolerance_days": 2}


@pytest.mark.parametrize(
    ("endpoints", "beads_for"),
    [
        ({}, ()),
        (BEADS, ()),
        (BEADS, "all"),
        ({"chimerism_tolerance_days": 0, "tie_rule": "closest_then_later", "min_str_loci": 6}, ()),
        (BEADS, ("P001", "P002")),  # beads on some rows only: the others are missing_beads
    ],
)
def test_plan_agrees_with_merge_and_endpoints_on_the_fixture_cohort(
    tmp_path, monkeypatch, endpoints, beads_for
):
    """tests/unit/clinical_fixtures: STR peaks, QNS and negative ALC, a CD3-only patient..."""
    d = tmp_path / "fix"
    shutil.copytree(FIX, d, symlinks=False)
    monkeypatch.chdir(d)
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    cfg["endpoints"].update(endpoints)
    if beads_for:
        samples = pd.read_csv(d / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
        rows = samples["patient_id"].isin(beads_for) if beads_for != "all" else samples.index >= 0
        samples.loc[rows, "beads_per_test"] = "50000"
        samples.loc[rows, "sample_volume_ul"] = "50"
        samples.to_csv(d / "samples.tsv", sep="\t", index=False)
    assert _check_agreement(cfg) > 10
    plan = planmod.run_plan(cfg, log_warnings=False)
    n_beads = sum("missing_beads" in r["missing"] for r in plan.rows)
    if endpoints is BEADS:
        # the fixture sheet has no bead counts: every visit lacks them unless given here
        if beads_for == "all":
            assert n_beads == 0
        elif not beads_for:
            assert n_beads == len(plan.rows) - 1
        else:
            with_beads = sum(
                bool(r["sample_id"]) and r["patient_id"] in beads_for for r in plan.rows
            )
            assert 0 < with_beads < len(plan.rows) - 1
            assert n_beads == len(plan.rows) - 1 - with_beads
    if not endpoints:
        assert n_beads == 0
        p12 = next(r for r in plan.rows if r["sample_id"] == "P012-D14")
        # % donor computed from the peaks of the post sample named in str_samples.tsv
        assert (p12["chimerism_source"], p12["chimerism_row"]) == ("str_peaks", "P012_d14_cd56.fsa")


# --------------------------------------------------------------------------------------------
# the sample cohort: the plan against the generator's truth
# --------------------------------------------------------------------------------------------


def _truth(name: str) -> pd.DataFrame:
    return pd.read_csv(
        ROOT / "data/sample/truth" / name, sep="\t", dtype=str, keep_default_na=False
    )


def test_plan_of_the_sample_cohort_matches_its_truth(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "plan.tsv"
    assert main(["plan", "--config", "config/config.yaml", "--tsv", str(out)]) == 0
    assert capsys.readouterr().out.startswith("nkflow plan: 8 patient(s), 32 visit(s);")
    plan = pd.read_csv(out, sep="\t", dtype=str, keep_default_na=False)
    ends = plan[plan["role"] == "day14_endpoint"].set_index("patient_id")
    truth_e = _truth("endpoints.tsv").set_index("patient_id")
    assert list(ends.index) == list(truth_e.index)
    for pid, t in truth_e.iterrows():
        assert ends.loc[pid, "sample_id"] == t["sample_id"], pid
        if t["verdict"] == "NOT_EVALUABLE":
            assert ends.loc[pid, "missing"] == t["reason"], pid
        else:
            assert ends.loc[pid, "missing"] == "", pid
    truth_v = _truth("visits.tsv").set_index("sample_id")
    visits = plan[plan["sample_id"] != ""].set_index("sample_id")
    assert set(visits.index) == set(truth_v.index)
    for sid, t in truth_v.iterrows():
        got = visits.loc[sid]
        assert (got["study_day"], got["chimerism_fraction"]) == (
            t["study_day"],
            t["chimerism_fraction"],
        ), sid
        if t["donor_chimerism_pct"]:
            assert float(got["donor_chimerism_pct"]) == float(t["donor_chimerism_pct"]), sid
        if t["alc_per_ul"]:
            assert float(got["alc_per_ul"]) == float(t["alc_per_ul"]), sid
        else:
            assert got["alc_per_ul"] == "", sid
    # every FCS file exists (data/sample is generated at session start)
    assert not plan["missing"].str.contains("fcs_not_found").any()


def test_plan_agrees_with_merge_and_endpoints_on_the_sample_cohort(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert _check_agreement(yaml.safe_load((ROOT / "config/config.yaml").read_text())) == 32


def test_gating_by_instrument_names_the_tree_the_files_cytometer_selects(monkeypatch):
    """P01 and P03 are acquired on an LSRFortessa (truth/tubes.tsv), the others not."""
    monkeypatch.chdir(ROOT)
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    alt = "config/gating/nk_v1_fortessa.yaml"
    cfg["gating_by_instrument"] = {"nk_v1": [{"cytometer": "lsrfortessa", "tree": alt}]}
    plan = planmod.run_plan(cfg, log_warnings=False)
    style = _truth("tubes.tsv").query("tube == 'nk'").set_index("sample_id")["cytometer"]
    rows = [r for r in plan.rows if r["sample_id"] is not None]
    for r in rows:
        want = alt if style[r["sample_id"]] == "LSRFortessa" else "config/gating/nk_v1.yaml"
        assert r["nk_gating_file"] == want, r["sample_id"]
        assert r["treg_gating_file"] == "config/gating/treg_v1.yaml"
    assert sum(r["nk_gating_file"] == alt for r in rows) == 8
    text = planmod.plan_text(plan)
    assert (
        f"    nk tube fcs/P01-D14_nk.fcs, gate tree {alt} (gating_by_instrument, for the " in text
    )


def test_validate_explain_prints_the_plan_after_validating(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["validate", "--config", "config/config.yaml", "--explain"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("configuration OK (")
    assert out[2].startswith("nkflow plan: 8 patient(s), 32 visit(s);")
    assert "  day-14 endpoint: P06-D13 day 13 (the only sample in days 12-16)" in out


def test_build_plan_without_file_checks_reports_no_missing_file():
    """fcs_present=None: files not checked, so nothing is said about them."""
    samples = pd.DataFrame(
        [
            {
                "sample_id": "X-D14",
                "patient_id": "X",
                "collection_date": dt.date(2024, 1, 15),
                "tube": "nk",
                "panel": "nk_v1",
                "gating": "nk_v1",
                "fcs_file": "nowhere.fcs",
                "fcs_path": "/nowhere.fcs",
                "row": 1,
            }
        ]
    )
    infusions = pd.DataFrame(
        [{"patient_id": "X", "infusion_number": 1, "infusion_date": dt.date(2024, 1, 1)}]
    )
    cbc = pd.DataFrame(
        [
            {
                "patient_id": "X",
                "date": dt.date(2024, 1, 15),
                "row": 1,
                "alc_source_value": "500",
                "alc_source_unit": "cells/uL",
                "alc_per_ul": 500.0,
                "alc_status": "ok",
            }
        ]
    )
    plan = planmod.build_plan({}, samples, infusions, cbc, None)
    (r,) = plan.rows
    assert (r["role"], r["missing"], r["cbc_row"]) == ("day14_endpoint", "missing_chimerism", 1)
