"""Bad tubes in the cohort: the affected patient becomes NOT_EVALUABLE with a reason, the run
completes, and every other patient's endpoint row is byte-identical to the clean run."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import ROOT, copy_workflow, run_snakemake

pytestmark = pytest.mark.workflow


def _read(path):
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""], dtype=str)


def _day14_nk_fcs(workdir, patient_id):
    truth = _read(ROOT / "data/sample/truth/endpoints.tsv").set_index("patient_id")
    sample_id = truth.loc[patient_id, "sample_id"]
    sheet = _read(workdir / "data/sample/samples.tsv")
    row = sheet[(sheet["sample_id"] == sample_id) & (sheet["tube"] == "nk")].iloc[0]
    return sample_id, workdir / "data/sample" / row["fcs_file"]


def _rows_by_patient(path):
    lines = path.read_text().splitlines()
    return {ln.split("\t", 1)[0]: ln for ln in lines[1:]}


@pytest.fixture(scope="module")
def damaged_run(tmp_path_factory):
    """One run with two damaged day-14 NK tubes in two evaluable patients."""
    truth = _read(ROOT / "data/sample/truth/endpoints.tsv")
    evaluable = list(truth.loc[truth["verdict"] != "NOT_EVALUABLE", "patient_id"])
    truncated_pid, renamed_pid = evaluable[0], evaluable[1]
    workdir = copy_workflow(tmp_path_factory.mktemp("damaged"))

    # 1. a truncated file: the last 1000 bytes of DATA are gone
    _, path = _day14_nk_fcs(workdir, truncated_pid)
    data = path.read_bytes()
    path.write_bytes(data[:-1000])

    # 2. CD56 is missing: the marker's name is overwritten in TEXT (same length, offsets intact)
    _, path = _day14_nk_fcs(workdir, renamed_pid)
    data = path.read_bytes()
    text_end = int(data[18:26])
    head, rest = data[: text_end + 1], data[text_end + 1 :]
    assert b"CD56" in head
    path.write_bytes(head.replace(b"CD56", b"CDxx") + rest)

    run_snakemake(workdir)
    return workdir, truncated_pid, renamed_pid


def test_damaged_patients_are_not_evaluable_with_reasons(damaged_run):
    workdir, truncated_pid, renamed_pid = damaged_run
    got = _read(workdir / "results/cohort/endpoints.tsv").set_index("patient_id")
    assert got.loc[truncated_pid, "verdict"] == "NOT_EVALUABLE"
    assert "fcs_unreadable" in got.loc[truncated_pid, "reason"]
    assert got.loc[renamed_pid, "verdict"] == "NOT_EVALUABLE"
    assert "missing_marker" in got.loc[renamed_pid, "reason"]
    for pid in (truncated_pid, renamed_pid):
        assert pd.isna(got.loc[pid, "donor_nk_per_ul"])


def test_truncation_is_named_in_the_qc_table(damaged_run):
    workdir, truncated_pid, _ = damaged_run
    qc = _read(workdir / "results/qc/tubes.tsv")
    rows = qc[qc["reason_code"] == "fcs_unreadable"]
    assert len(rows) == 1
    assert rows.iloc[0]["tube_status"] == "FAIL"
    assert "truncated" in rows.iloc[0]["message"] or "expected" in rows.iloc[0]["message"]


def test_every_other_patient_is_byte_identical(damaged_run, sample_run):
    workdir, truncated_pid, renamed_pid = damaged_run
    clean = _rows_by_patient(sample_run / "results/cohort/endpoints.tsv")
    damaged = _rows_by_patient(workdir / "results/cohort/endpoints.tsv")
    assert sorted(clean) == sorted(damaged)
    for pid, line in clean.items():
        if pid not in (truncated_pid, renamed_pid):
            assert damaged[pid] == line, pid
