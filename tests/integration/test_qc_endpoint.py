"""QC decides reportability, end to end: a WARN keeps the number and flags it; the same
anomaly configured as FAIL makes the day-14 endpoint NOT_EVALUABLE with the QC reason, and
every other patient's row stays byte-identical."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from tests.conftest import copy_workflow, run_snakemake

pytestmark = pytest.mark.workflow

# data/sample/truth/README.md: P08's day-14 NK tube has a clog followed by a burst of junk
ANOMALOUS = "P08"


def _read(path):
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""], dtype=str)


def _lines(path):
    return {ln.split("\t", 1)[0]: ln for ln in path.read_text().splitlines()[1:]}


def test_time_qc_warn_keeps_the_number_and_flags_it(sample_run):
    got = _read(sample_run / "results/cohort/endpoints.tsv").set_index("patient_id")
    row = got.loc[ANOMALOUS]
    assert row["verdict"] == "FAIL"  # right only because time QC removed the burst
    assert row["qc_status"] == "WARN"
    assert "flow_rate_anomaly" in row["flags"]
    qc = _read(sample_run / "results/qc/tubes.tsv")
    removed = qc[(qc["sample_id"] == row["sample_id"]) & (qc["check"] == "time_removed")]
    assert float(removed["value"].iloc[0]) > 0.05, "the burst was not removed"


@pytest.fixture(scope="module")
def strict_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("strict_qc"))
    cfg_path = workdir / "config/config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["qc"]["severity"]["flow_rate_anomaly"] = "FAIL"
    strict = workdir / "config/strict.yaml"
    strict.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_snakemake(workdir, "--configfile", "config/strict.yaml")
    return workdir


def test_qc_fail_on_the_day14_tube_makes_the_endpoint_not_evaluable(strict_run):
    got = _read(strict_run / "results/cohort/endpoints.tsv").set_index("patient_id")
    row = got.loc[ANOMALOUS]
    assert row["verdict"] == "NOT_EVALUABLE"
    assert row["reason"].startswith("qc_fail")
    assert "flow_rate_anomaly" in row["reason"]
    assert pd.isna(row["donor_nk_per_ul"])
    qc = _read(strict_run / "results/qc/tubes.tsv")
    tube = qc[(qc["sample_id"] == row["sample_id"]) & (qc["tube"] == "nk")]
    assert set(tube["tube_status"]) == {"FAIL"}


def test_other_patients_unchanged_under_stricter_qc(strict_run, sample_run):
    clean = _lines(sample_run / "results/cohort/endpoints.tsv")
    strict = _lines(strict_run / "results/cohort/endpoints.tsv")
    assert sorted(clean) == sorted(strict)
    for pid in clean:
        if pid != ANOMALOUS:
            assert strict[pid] == clean[pid], pid
