"""Bad tubes in the cohort, end to end: the affected patient becomes NOT_EVALUABLE with the
reason named, the run completes, and every other patient's endpoint row is byte-identical to
the clean run.

Defects are made from the sample cohort's own files: the FCS TEXT segment is re-encoded with
one keyword changed (offsets recomputed), or the bytes are cut short.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from nkflow.qualify._damage import (
    add_to_tot,
    misnamed_spillover,
    rename_marker,
    singular_spillover,
    truncate,
    with_keywords,
)
from tests.conftest import ROOT, copy_workflow, run_snakemake

pytestmark = pytest.mark.workflow


def _read(path):
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""], dtype=str)


def _fcs_of(workdir, sample_id, tube):
    sheet = _read(workdir / "data/sample/samples.tsv")
    row = sheet[(sheet["sample_id"] == sample_id) & (sheet["tube"] == tube)].iloc[0]
    return workdir / "data/sample" / row["fcs_file"]


def _day14(patient_id):
    truth = _read(ROOT / "data/sample/truth/endpoints.tsv").set_index("patient_id")
    return truth.loc[patient_id, "sample_id"]


def _late_date(kw):
    import datetime as dt

    drawn = dt.datetime.strptime(kw["$DATE"], "%d-%b-%Y").date()
    kw["$DATE"] = (drawn + dt.timedelta(days=3)).strftime("%d-%b-%Y").upper()


def _rows_by_patient(path):
    lines = path.read_text().splitlines()
    return {ln.split("\t", 1)[0]: ln for ln in lines[1:]}


DAMAGE = {
    # patient: (tube, defect, expected verdict, reason fragment)
    "P01": ("nk", "truncated", "NOT_EVALUABLE", "fcs_unreadable"),
    "P02": ("nk", "cd56_missing", "NOT_EVALUABLE", "missing_marker"),
    "P05": ("nk", "tot_too_large", "NOT_EVALUABLE", "fcs_unreadable"),
    "P06": ("nk", "duplicate_marker", "NOT_EVALUABLE", "panel_ambiguous"),
    "P07": ("nk", "singular_spillover", "NOT_EVALUABLE", "compensation_invalid"),
}


@pytest.fixture(scope="module")
def damaged_run(tmp_path_factory):
    """One run with five damaged day-14 NK tubes, a misnamed spillover in a Treg tube and a
    `$TOT` too small in a non-endpoint tube."""
    workdir = copy_workflow(tmp_path_factory.mktemp("damaged"))
    for pid, (tube, defect, _, _) in DAMAGE.items():
        path = _fcs_of(workdir, _day14(pid), tube)
        if defect == "truncated":
            truncate(path)
        elif defect == "cd56_missing":
            with_keywords(path, rename_marker("CD56", "CD99"))
        elif defect == "tot_too_large":
            with_keywords(path, add_to_tot(1))
        elif defect == "duplicate_marker":
            with_keywords(path, rename_marker("CD16", "CD56", keys="S"))
        elif defect == "singular_spillover":
            with_keywords(path, singular_spillover)
    # a Treg tube with a spillover naming a channel the file lacks: Treg numbers go, NK stays
    with_keywords(_fcs_of(workdir, _day14("P08"), "treg"), misnamed_spillover)
    # P08's day-14 NK tube acquired 3 days after the draw: a flag, the number and verdict kept
    with_keywords(_fcs_of(workdir, _day14("P08"), "nk"), _late_date)
    # $TOT one too small on a day-7 tube: refused, but not the endpoint's tube
    with_keywords(_fcs_of(workdir, "P08-D07", "nk"), add_to_tot(-1))
    run_snakemake(workdir)
    return workdir


def test_damaged_patients_are_not_evaluable_with_reasons(damaged_run):
    got = _read(damaged_run / "results/cohort/endpoints.tsv").set_index("patient_id")
    for pid, (_, defect, verdict, reason) in DAMAGE.items():
        assert got.loc[pid, "verdict"] == verdict, (pid, defect)
        assert reason in got.loc[pid, "reason"], (pid, defect, got.loc[pid, "reason"])
        assert pd.isna(got.loc[pid, "donor_nk_per_ul"]), (pid, defect)


def test_each_defect_is_named_in_the_qc_table(damaged_run):
    qc = _read(damaged_run / "results/qc/tubes.tsv")
    failed = qc[qc["tube_status"] == "FAIL"].set_index(["sample_id", "tube"])
    expected = {
        (_day14("P01"), "nk"): ("fcs_unreadable", r"truncated|expected \d+ bytes"),
        (_day14("P05"), "nk"): ("fcs_unreadable", r"\$TOT"),
        (_day14("P06"), "nk"): ("panel_ambiguous", r"CD56"),
        (_day14("P07"), "nk"): ("compensation_invalid", r"singular|invertible"),
        (_day14("P08"), "treg"): ("compensation_invalid", r"-X"),
        ("P08-D07", "nk"): ("fcs_unreadable", r"\$TOT"),
    }
    for key, (code, pattern) in expected.items():
        rows = failed.loc[[key]]
        assert code in set(rows["reason_code"]), (key, rows["reason_code"].tolist())
        msg = rows.loc[rows["reason_code"] == code, "message"].iloc[0]
        assert re.search(pattern, msg), (key, msg)
    # the renamed CD56 is a per-tube missing marker, not a refused file
    p02 = qc[(qc["sample_id"] == _day14("P02")) & (qc["tube"] == "nk")]
    assert "missing_marker" in set(p02["reason_code"])


def test_missing_marker_populations_are_not_computed_never_zero(damaged_run):
    counts = _read(damaged_run / "results/cohort/counts.tsv")
    rows = counts[(counts["sample_id"] == _day14("P02")) & (counts["tube"] == "nk")].set_index(
        "population"
    )
    assert rows.loc["nk", "status"] == "not_computed"
    assert "CD56" in rows.loc["nk", "reason"]
    assert pd.isna(rows.loc["nk", "events"])
    assert rows.loc["lymphocytes", "status"] == "ok"


def test_treg_tube_failure_leaves_the_nk_endpoint(damaged_run, sample_run):
    clean = _read(sample_run / "results/cohort/endpoints.tsv").set_index("patient_id")
    got = _read(damaged_run / "results/cohort/endpoints.tsv").set_index("patient_id")
    assert got.loc["P08", "verdict"] == clean.loc["P08", "verdict"]
    assert got.loc["P08", "donor_nk_per_ul"] == clean.loc["P08", "donor_nk_per_ul"]
    visits = _read(damaged_run / "results/cohort/visits.tsv").set_index("sample_id")
    assert pd.isna(visits.loc[_day14("P08"), "treg_pct_of_cd4"])


def test_a_late_acquisition_is_a_flag_that_keeps_the_verdict(damaged_run, sample_run):
    sid = _day14("P08")
    qc = _read(damaged_run / "results/qc/tubes.tsv")
    row = qc[(qc["sample_id"] == sid) & (qc["tube"] == "nk") & (qc["check"] == "acquisition_date")]
    assert row["reason_code"].tolist() == ["date_mismatch"]
    assert row["status"].tolist() == ["WARN"]
    assert row["message"].iloc[0].startswith(f"{sid}_nk.fcs: $DATE ")
    assert "3 day(s) after collection_date" in row["message"].iloc[0]
    visits = _read(damaged_run / "results/cohort/visits.tsv").set_index("sample_id")
    assert "date_mismatch" in visits.loc[sid, "flags"].split(";")
    clean = _read(sample_run / "results/cohort/endpoints.tsv").set_index("patient_id")
    got = _read(damaged_run / "results/cohort/endpoints.tsv").set_index("patient_id")
    assert "date_mismatch" in got.loc["P08", "flags"].split(";")
    assert "date_mismatch" not in clean.loc["P08", "flags"]
    assert got.loc["P08", "qc_status"] == "WARN"
    assert got.loc["P08", "verdict"] == clean.loc["P08", "verdict"]
    assert got.loc["P08", "reason"] == clean.loc["P08", "reason"]
    # every clean tube's $DATE is its collection date: no mismatch anywhere else
    cq = _read(sample_run / "results/qc/tubes.tsv")
    dates = cq[cq["check"] == "acquisition_date"]
    assert len(dates) == len(cq.groupby(["sample_id", "tube"])) and set(dates["reason_code"]) == {
        "ok"
    }


def test_every_other_patient_is_byte_identical(damaged_run, sample_run):
    clean = _rows_by_patient(sample_run / "results/cohort/endpoints.tsv")
    damaged = _rows_by_patient(damaged_run / "results/cohort/endpoints.tsv")
    assert sorted(clean) == sorted(damaged)
    untouched = [pid for pid in clean if pid not in DAMAGE and pid != "P08"]
    assert untouched, "no clean patient left to compare"
    for pid in untouched:
        assert damaged[pid] == clean[pid], pid


def test_rewritten_files_are_otherwise_valid(tmp_path):
    """The re-encoding helper itself round-trips: same events, same keywords."""
    from nkflow.fcs.io import read_fcs

    src = ROOT / "data/sample/fcs" / "P01-D14_nk.fcs"
    dst = tmp_path / "copy.fcs"
    dst.write_bytes(src.read_bytes())
    with_keywords(dst, lambda kw: None)
    a, b = read_fcs(src), read_fcs(dst)
    assert np.array_equal(a.events, b.events)
    assert a.channel_names == b.channel_names
