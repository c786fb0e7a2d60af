"""A lab's own export, read as it is (issue #12), end to end.

The lab variant of the sample generator (``make_sample_data.py --variant lab``) describes the
same combined NK + Treg FCS files (one file per blood draw) twice: nkflow's canonical sheets
(``canonical/*.tsv``, ``config.yaml``) and the lab's export (``lab_export/*.csv``,
``config_lab.yaml``: CSV, ``06-Feb-2024`` dates, ``CD56+`` / ``whole blood`` fractions, cells per
kg with the weight, no donor ids, one row per draw with tubes ``nk;treg``, the lab's column
names mapped through ``sheet_format: columns:``). Both runs must give the same endpoint tables,
and those tables must be right (the generator's truth), so that identical-but-wrong fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import copy_workflow, run_snakemake
from tests.generated import generator

pytestmark = pytest.mark.workflow

LAB_DIR = generator().LAB_DIR  # data/lab, where both configs expect the cohort

# Byte-identical between the two runs: every table whose rows come from the sheets.
IDENTICAL = (
    "cohort/endpoints.tsv",
    "cohort/visits.tsv",
    "cohort/counts.tsv",
    "qc/tubes.tsv",
)


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])


@pytest.fixture(scope="session")
def lab_workdir(tmp_path_factory) -> Path:
    """A copy of the workflow with the lab variant generated in its data/lab."""
    workdir = copy_workflow(tmp_path_factory.mktemp("lab_export"), data=())
    gen = generator()
    out = workdir / gen.LAB_DIR
    gen.write_manifest(out, gen.generate(out, gen.LAB_SEED, "lab"))
    return workdir


def _run(workdir: Path, config: str) -> Path:
    """Run the workflow with ``data/lab/<config>``; returns its results directory."""
    rel = f"{LAB_DIR}/{config}"
    run_snakemake(workdir, "--configfile", rel)
    return workdir / yaml.safe_load((workdir / rel).read_text())["results"]


@pytest.fixture(scope="session")
def canonical_run(lab_workdir) -> Path:
    return _run(lab_workdir, "config.yaml")


@pytest.fixture(scope="session")
def lab_run(lab_workdir) -> Path:
    return _run(lab_workdir, "config_lab.yaml")


def _assert_matches_truth(results: Path, truth: Path) -> None:
    """NK %, donor NK/uL and Treg % of CD4 per visit, and every endpoint, against truth."""
    want = _read(truth / "visits.tsv").set_index("sample_id")
    got = _read(results / "cohort/visits.tsv").set_index("sample_id")
    assert sorted(got.index) == sorted(want.index)
    style = _read(truth / "tubes.tsv").query("tube == 'nk'").set_index("sample_id")
    err: dict[str, dict[str, float]] = {}
    for sid, row in want.iterrows():
        # both trees read the draw's one file, as the sheet names it
        assert got.loc[sid, "nk_tube_fcs"] == f"../fcs/{sid}.fcs", sid
        for col, tol in (
            ("nk_pct_of_lymphocytes", 0.02),
            ("donor_nk_per_ul", 0.03),
            ("treg_pct_of_cd4", 0.05),  # a 15,000-event file holds ~300 Treg
        ):
            if pd.isna(row[col]):
                assert pd.isna(got.loc[sid, col]), (sid, col)  # day 0, QNS ALC: no number
                continue
            assert pd.notna(got.loc[sid, col]), (sid, col)
            rel = abs(got.loc[sid, col] - row[col]) / row[col]
            key = f"{col} {style.loc[sid, 'instrument_style']}"
            err.setdefault(key, {})[sid] = rel
            assert rel <= tol, (sid, col, got.loc[sid, col], row[col])
    print({k: f"{max(v.values()):.2%} worst of {len(v)}" for k, v in sorted(err.items())})
    assert len({k.split()[1] for k in err}) == 2  # both instrument styles were checked

    want_end = _read(truth / "endpoints.tsv").set_index("patient_id")
    got_end = _read(results / "cohort/endpoints.tsv").set_index("patient_id")
    assert sorted(got_end.index) == sorted(want_end.index)
    for pid, row in want_end.iterrows():
        for col in ("sample_id", "study_day", "verdict", "reason"):
            assert got_end.loc[pid, col] == row[col], (pid, col)
    assert set(got_end["verdict"]) == {"PASS", "FAIL", "NOT_EVALUABLE"}
    # the PASS that needs the CD56-sorted result ('CD56+' in the export) says it used it
    assert got_end.loc["L03", "chimerism_fraction"] == "CD56"
    # no donor ids: whether the NK donor is the HSCT donor is unknown, neither true nor false
    assert set(got_end["nk_donor_is_hsct_donor"].astype(str)) == {"unknown"}
    assert not got_end["flags"].fillna("").str.contains("nk_donor_is_hsct_donor").any()
    # the dose per kg, from the total and the weight or given as such, exactly the scenario's
    doses = {p.pid: p.dose_per_kg * len(p.infusion_days) for p in generator()._lab_cohort()}
    assert got_end["cells_per_kg_total"].to_dict() == doses


def test_canonical_sheets_give_the_truth(canonical_run, lab_workdir):
    _assert_matches_truth(canonical_run, lab_workdir / LAB_DIR / "truth")


def test_lab_export_gives_the_truth(lab_run, lab_workdir):
    _assert_matches_truth(lab_run, lab_workdir / LAB_DIR / "truth")


def test_lab_run_read_the_lab_export(lab_run):
    """The second run did read the CSV export through its mapping (not the canonical sheets)."""
    cfg = json.loads((lab_run / "validated/config.json").read_text())["config"]
    assert set(cfg["sheets"].values()) == {
        f"{LAB_DIR}/lab_export/{key}.csv" for key in ("samples", "infusions", "cbc", "chimerism")
    }
    assert cfg["sheet_format"]["cbc"]["columns"]["alc_value"] == "alc"
    # its sheet warnings name the lab's file and row: the QNS day-14 ALC of L04
    warnings = (lab_run / "cohort/sheet_warnings.tsv").read_text()
    assert "lab_export/cbc.csv" in warnings and "canonical/" not in warnings
    assert "row 15" in warnings and "QNS" in warnings


def test_lab_export_gives_byte_identical_tables(canonical_run, lab_run):
    for rel in IDENTICAL:
        assert (lab_run / rel).read_bytes() == (canonical_run / rel).read_bytes(), rel
    # cohort/tubes.tsv also names each tube's figure and provenance under the run's own results
    # directory (results/lab_canonical vs results/lab_export); every other column is identical
    tables = {}
    for results in (canonical_run, lab_run):
        df = _read(results / "cohort/tubes.tsv")
        prefix = f"{results.relative_to(results.parents[1]).as_posix()}/"  # results/lab_...
        for col in ("figure", "provenance"):
            assert df[col].str.startswith(prefix).all(), (results, col)
            df[col] = df[col].str.removeprefix(prefix)
        tables[results.name] = df
    pd.testing.assert_frame_equal(tables[lab_run.name], tables[canonical_run.name])
    got = tables[lab_run.name]
    # one file per draw, feeding both trees
    assert (got["fcs_file"] == f"{LAB_DIR}/fcs/" + got["sample_id"] + ".fcs").all()
    assert {tuple(t) for t in got.groupby("sample_id")["tube"].apply(list)} == {("nk", "treg")}
