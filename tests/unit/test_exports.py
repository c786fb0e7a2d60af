"""The exports (long table, SDTM-style CP, data dictionary) and every exported table checked
against the dictionary generated from the writers' own declarations."""

from __future__ import annotations

import csv
import datetime as dt
import re
import shutil
from pathlib import Path

import pytest

from nkflow import stages
from nkflow.clinical import exports as ex
from nkflow.columns import check_rows, declare_from_writer
from nkflow.config import load_study
from nkflow.errors import ConfigError
from tests.unit.test_endpoints import FIX, run_cohort

REPO = Path(__file__).resolve().parents[2]
CONFIG: dict = {"endpoints": {}}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """The clinical fixture cohort through merge, endpoints and readout (the CLI, in-process)."""
    from nkflow.cli import main

    d = tmp_path_factory.mktemp("readout") / "cohort"
    shutil.copytree(FIX, d)
    mp = pytest.MonkeyPatch()
    run_cohort(d, mp)
    args = ["readout", "--config", "config.yaml", "--visits", "out/visits.tsv"]
    args += ["--endpoints", "out/endpoints.tsv"]
    assert main([*args, "--kinetics", "out/kinetics.tsv", "--exports", "out/exports"]) == 0
    mp.undo()
    return d / "out"


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    delimiter = "," if path.suffix == ".csv" else "\t"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter=delimiter))
    return rows[0], rows[1:]


def test_every_exported_table_matches_the_data_dictionary(cohort):
    _, dictionary = _read(cohort / "exports" / "data_dictionary.tsv")
    declared: dict[str, list[list[str]]] = {}
    for row in dictionary:
        declared.setdefault(row[1], []).append(row)
    assert sorted(declared) == sorted(t.path for t in ex.TABLES)
    for table in ex.TABLES:
        rel = table.path.removeprefix("cohort/")
        for path in (cohort / rel, (cohort / rel).with_suffix(".csv")):
            if path.suffix == ".csv" and not path.exists() and "exports" not in rel:
                continue  # visits, endpoints and kinetics are TSV only
            header, rows = _read(path)
            # the header is the dictionary's column list, in its order
            assert header == [r[2] for r in declared[table.path]], path
            assert rows, path
            assert check_rows(table, header, rows) == [], path


def test_csv_and_tsv_exports_hold_the_same_cells(cohort):
    for stem in ("measurements", "cp", "data_dictionary"):
        tsv = _read(cohort / "exports" / f"{stem}.tsv")
        assert _read(cohort / "exports" / f"{stem}.csv") == tsv, stem


def test_a_wrong_cell_is_named_by_the_check():
    header = list(ex.MEASUREMENTS.names())
    row = ["P1", "P1-D07", "2024-01-08", "7.5", "DAY 7", "nk_events", "x"]
    row += ["", "", "parsec", "", "nk", "", "ok", ""]
    problems = check_rows(ex.MEASUREMENTS, header, [row])
    assert any("row 1: column 'study_day': '7.5' is not whole number" in p for p in problems)
    assert any("column 'value': 'x' is not decimal number" in p for p in problems)
    assert any("column 'unit': 'parsec' not among the allowed values" in p for p in problems)
    assert check_rows(ex.MEASUREMENTS, header[::-1], [row])[0].startswith(
        "cohort/exports/measurements.tsv: header"
    )


def test_the_dictionary_doc_is_generated_from_the_declarations():
    doc = (REPO / "docs" / "data-dictionary.md").read_text(encoding="utf-8")
    assert doc == ex.dictionary_markdown(), "regenerate docs/data-dictionary.md (see its header)"


def test_a_writer_column_without_a_definition_stops_the_declaration():
    with pytest.raises(ConfigError, match=r"visits.tsv: .*no definition for new_col.*fix: add"):
        declare_from_writer("visits", "visits.tsv", "row", ("a", "new_col"), {}, {"a": ("", "x")})
    # an interval of a defined column is declared from its name
    t = declare_from_writer(
        "v", "v.tsv", "row", ("a_per_ul", "a_per_ul_lo95"), {}, {"a_per_ul": ("cells/uL", "A")}
    )
    assert (t.column("a_per_ul_lo95").unit, t.column("a_per_ul_lo95").definition) == (
        "cells/uL",
        "lower bound of the 95 % interval of a_per_ul",
    )


def visit(sid: str, day: int | None, **kw) -> dict:
    row = dict.fromkeys(ex.VISITS.names())
    row.update(
        patient_id="P1",
        sample_id=sid,
        collection_date=dt.date(2024, 1, 1) + dt.timedelta(days=day or 0),
        study_day=day,
        status="ok",
        reason="",
        count_method="dual_platform",
        alc_status="ok",
        lymphocyte_population="live",
        nk_tube_fcs=f"fcs/{sid}_nk.fcs",
    )
    row.update(kw)
    return row


VISITS = [
    visit(
        "P1-D00",
        0,
        status="not_evaluable",
        reason="missing_chimerism",
        total_nk_per_ul=50.0,
        nk_cd56bright_pct_of_nk=60.0,
        alc_per_ul=450.0,
        alc_source_value="0.45",
        alc_source_unit="10^3/uL",
        alc_date=dt.date(2024, 1, 1),
    ),
    visit("P1-D07", 7, total_nk_per_ul=120.0, donor_nk_per_ul=96.0, donor_chimerism_pct=80.0),
    visit("P1-D10", 10, total_nk_per_ul=130.0, donor_nk_per_ul=104.0),
    visit(
        "P1-D15",
        15,
        status="not_evaluable",
        reason="missing_alc",
        alc_status="missing",
        treg_pct_of_cd4=4.5,
    ),
]


def test_long_table_values_units_and_provenance():
    recs = ex.build_measurements(CONFIG, VISITS)
    by = {(r["sample_id"], r["parameter"]): r for r in recs}
    assert not any(r["parameter"] == "bead_events" for r in recs)  # dual platform: no beads
    r = by[("P1-D00", "nk_cd56bright_per_ul")]
    assert r["value"] == 30.0  # 50 x 60 / 100
    assert (r["unit"], r["source"], r["provenance"]) == (
        "cells/uL",
        "nk",
        "P1-D00/nk fcs/P1-D00_nk.fcs",
    )
    r = by[("P1-D00", "alc_per_ul")]
    assert (r["value"], r["method"]) == (450.0, "CBC absolute lymphocyte count (0.45 10^3/uL)")
    assert r["provenance"] == "cbc P1 2024-01-01"
    assert (r["visit_status"], r["visit_reason"], r["visit"]) == (
        "not_evaluable",
        "missing_chimerism",
        "DAY 0",
    )
    r = by[("P1-D15", "treg_pct_of_cd4")]
    assert (r["value"], r["source"], r["provenance"], r["visit"]) == (
        4.5,
        "treg",
        "P1-D15/treg",
        "DAY 14",
    )
    assert by[("P1-D10", "donor_nk_per_ul")]["visit"] == "UNSCHEDULED"
    assert by[("P1-D15", "donor_nk_per_ul")]["value"] is None  # an empty cell, never 0
    assert len(recs) == 4 * (len(ex.PARAMETERS) - 1)


def test_cp_follows_the_sdtm_conventions():
    recs = ex.build_cp(CONFIG, VISITS)
    by = {(r["CPREFID"], r["CPTESTCD"]): r for r in recs}
    # SDTM days: the infusion day is day 1 (there is no day 0); VISITDY is the planned one
    d0, d15 = by[("P1-D00", "NK")], by[("P1-D15", "NK")]
    assert (d0["CPDY"], d0["VISITDY"], d0["VISIT"], d0["VISITNUM"]) == (1, 1, "DAY 0", 1.0)
    assert (d15["CPDY"], d15["VISITDY"], d15["VISIT"], d15["VISITNUM"]) == (16, 15, "DAY 14", 3.0)
    un = by[("P1-D10", "NK")]
    assert (un["VISIT"], un["VISITNUM"], un["VISITDY"]) == ("UNSCHEDULED", 2.1, None)
    # a result: original and standard units (1/uL = 10^6/L, same number)
    assert (d0["CPORRES"], d0["CPORRESU"], d0["CPSTRESN"], d0["CPSTRESU"]) == (
        "50",
        "/uL",
        50.0,
        "10^6/L",
    )
    assert (d0["CPRESTYP"], d0["CPBLFL"], d0["CPANMETH"]) == (
        "NUMBER CONCENTRATION",
        "Y",
        "DUAL PLATFORM",
    )
    # no result: NOT DONE with the reason; donor NK has no baseline (day 0 has no chimerism)
    don0 = by[("P1-D00", "NKDON")]
    assert (don0["CPORRES"], don0["CPSTAT"], don0["CPREASND"], don0["CPBLFL"]) == (
        None,
        "NOT DONE",
        "missing_chimerism",
        None,
    )
    assert by[("P1-D07", "NKDON")]["CPDRVFL"] == "Y" and by[("P1-D07", "NK")]["CPDRVFL"] is None
    assert by[("P1-D15", "NK")]["CPREASND"] == "missing_alc"
    assert [r["CPSEQ"] for r in recs] == list(range(1, len(recs) + 1))
    assert {r["USUBJID"] for r in recs} == {"NKFLOW-P1"}


def test_cp_test_definitions_obey_the_sdtmig_rules():
    codes = [p.cp for p in ex.PARAMETERS if p.cp]
    assert len({c[0] for c in codes}) == len(codes)
    for code, test, sub, state, state_markers, markers in codes:
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]{0,7}", code), code  # <= 8, no leading digit
        assert len(test) <= 40, test
        assert bool(state) == bool(state_markers), code  # CPCELSTA with CPCSMRKS (assumption 4)
        numerator = test.split("/")[0]
        assert numerator.endswith("Sub") == bool(sub or state), code  # 'Sub' (assumption 5)
        assert " " not in markers and "," not in markers, code  # marker strings (assumption 8)
        assert ("/" in test) == ("/" in markers), code


def test_readout_bytes_are_identical_on_a_second_run(cohort, tmp_path):
    study = load_study(config=cohort.parent / "config.yaml")
    stages.run_readout(
        study, cohort / "visits.tsv", cohort / "endpoints.tsv", tmp_path / "k.tsv", tmp_path / "x"
    )
    assert (tmp_path / "k.tsv").read_bytes() == (cohort / "kinetics.tsv").read_bytes()
    summary = tmp_path / "kinetics_summary.tsv"
    assert summary.read_bytes() == (cohort / "kinetics_summary.tsv").read_bytes()
    for f in sorted((cohort / "exports").iterdir()):
        assert (tmp_path / "x" / f.name).read_bytes() == f.read_bytes(), f.name
