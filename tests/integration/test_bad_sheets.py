"""Bad side-table rows, end to end in the workflow: the affected patient gets the documented
verdict and reason, nothing is read as 0, and every other patient's endpoint row is
byte-identical to the clean run. Bad sheet *structure* (a duplicate sample id) stops the run
before any job starts, naming both rows."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import copy_workflow, run_snakemake

pytestmark = pytest.mark.workflow


def _read(path):
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""], dtype=str)


def _write(df, path):
    df.to_csv(path, sep="\t", index=False, lineterminator="\n")


def _lines(path):
    return {ln.split("\t", 1)[0]: ln for ln in path.read_text().splitlines()[1:]}


def _day14_date(workdir, pid):
    ends = _read(workdir / "data/sample/truth/endpoints.tsv").set_index("patient_id")
    sheet = _read(workdir / "data/sample/samples.tsv")
    sid = ends.loc[pid, "sample_id"]
    return sheet.loc[sheet["sample_id"] == sid, "collection_date"].iloc[0]


AFFECTED = {
    "P01": ("NOT_EVALUABLE", "missing_alc"),  # ALC 'QNS'
    "P02": ("NOT_EVALUABLE", "invalid_alc"),  # negative ALC
    "P06": ("FAIL", "not_above_threshold"),  # CD56 chimerism gone: PB (55 %) is used
    "P07": ("NOT_EVALUABLE", "missing_chimerism"),  # only a CD33 result that day
}


@pytest.fixture(scope="module")
def bad_sheet_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("bad_sheets"))
    cbc_path = workdir / "data/sample/cbc.tsv"
    cbc = _read(cbc_path)
    for pid, value in (("P01", "QNS"), ("P02", "-0.60")):
        hit = (cbc["patient_id"] == pid) & (cbc["date"] == _day14_date(workdir, pid))
        assert hit.sum() == 1
        cbc.loc[hit, "alc_value"] = value
    # the same count in another unit changes nothing but the recorded source unit
    hit = (cbc["patient_id"] == "P05") & (cbc["date"] == _day14_date(workdir, "P05"))
    cbc.loc[hit, ["alc_value", "alc_unit"]] = ["1.5", "10^9/L"]
    _write(cbc, cbc_path)

    chim_path = workdir / "data/sample/chimerism.tsv"
    chim = _read(chim_path)
    d06, d07 = _day14_date(workdir, "P06"), _day14_date(workdir, "P07")
    chim = chim[
        ~((chim["patient_id"] == "P06") & (chim["date"] == d06) & (chim["fraction"] == "CD56"))
    ]
    chim.loc[(chim["patient_id"] == "P07") & (chim["date"] == d07), "fraction"] = "CD33"
    unknown = pd.DataFrame(
        [{"patient_id": "P99", "date": d07, "fraction": "PB", "donor_pct": "50"}]
    )
    _write(pd.concat([chim, unknown], ignore_index=True), chim_path)
    run_snakemake(workdir)
    return workdir


def test_affected_patients_get_the_documented_verdicts(bad_sheet_run):
    got = _read(bad_sheet_run / "results/cohort/endpoints.tsv").set_index("patient_id")
    for pid, (verdict, reason) in AFFECTED.items():
        assert got.loc[pid, "verdict"] == verdict, pid
        assert reason in got.loc[pid, "reason"], (pid, got.loc[pid, "reason"])
    for pid in ("P01", "P02", "P07"):
        assert pd.isna(got.loc[pid, "donor_nk_per_ul"]), pid
    assert got.loc["P06", "chimerism_fraction"] == "PB"
    assert got.loc["P06", "donor_chimerism_pct"] == "55"


def test_missing_alc_is_never_zero_and_the_source_is_kept(bad_sheet_run):
    visits = _read(bad_sheet_run / "results/cohort/visits.tsv").set_index("sample_id")
    p01 = visits.loc["P01-D14"]
    assert pd.isna(p01["alc_per_ul"])
    assert p01["alc_source_value"] == "QNS"
    p05 = _read(bad_sheet_run / "results/cohort/endpoints.tsv").set_index("patient_id").loc["P05"]
    assert p05["alc_per_ul"] == "1500"
    assert p05["alc_source_unit"] == "10^9/L"


def test_unknown_patient_row_is_reported_and_ignored(bad_sheet_run):
    warnings = (bad_sheet_run / "results/cohort/sheet_warnings.tsv").read_text()
    assert "P99" in warnings
    got = _read(bad_sheet_run / "results/cohort/endpoints.tsv")
    assert "P99" not in set(got["patient_id"])


def test_untouched_patients_are_byte_identical(bad_sheet_run, sample_run):
    clean = _lines(sample_run / "results/cohort/endpoints.tsv")
    bad = _lines(bad_sheet_run / "results/cohort/endpoints.tsv")
    for pid in ("P03", "P04", "P08"):
        assert bad[pid] == clean[pid], pid
    clean_p05 = (
        _read(sample_run / "results/cohort/endpoints.tsv").set_index("patient_id").loc["P05"]
    )
    bad_p05 = (
        _read(bad_sheet_run / "results/cohort/endpoints.tsv").set_index("patient_id").loc["P05"]
    )
    for col in ("verdict", "donor_nk_per_ul", "donor_nk_per_ul_lo95", "donor_nk_per_ul_hi95"):
        assert bad_p05[col] == clean_p05[col], col


def test_duplicate_sample_id_stops_before_any_job_naming_both_rows(tmp_path):
    workdir = copy_workflow(tmp_path / "dup")
    sheet_path = workdir / "data/sample/samples.tsv"
    sheet = _read(sheet_path)
    dup = sheet.iloc[[2]].copy()
    _write(pd.concat([sheet, dup], ignore_index=True), sheet_path)
    proc = run_snakemake(workdir, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    n = len(sheet)
    assert "samples.tsv" in out and "duplicate" in out.lower()
    assert f"rows 3 and {n + 1}: duplicate key (sample_id='{dup.iloc[0]['sample_id']}'" in out
    assert not (workdir / "results").exists(), "a job ran despite the invalid sheet"
