"""A fixed gate template on instruments it was not drawn for, end to end.

The NK tree of the first build (fixed coordinates on a 2^18 BD scale, with the shipped plausible
ranges) is given for every NK tube of the four-instrument sample cohort. On the BD patients it
is the template the lab validated: their verdicts stand. On the 2^20 and 2^22 instruments its
singlet or lymphocyte gate misses the cells: each of those day-14 endpoints must be
NOT_EVALUABLE with the gate named, never a PASS or FAIL.
"""

from __future__ import annotations

import csv
import shutil

import pytest

from tests.conftest import ROOT, copy_workflow, run_snakemake

pytestmark = pytest.mark.workflow


def _rows(path):
    with path.open(newline="", encoding="utf-8") as fh:
        return {r["patient_id"]: r for r in csv.DictReader(fh, delimiter="\t")}


def test_a_wrong_template_gives_not_evaluable_with_the_gate_named(tmp_path):
    workdir = copy_workflow(tmp_path / "run")
    shutil.copy(
        ROOT / "tests/data/gating/nk_v1_fixed_bd.yaml", workdir / "config/gating/nk_v1.yaml"
    )
    run_snakemake(workdir)
    got = _rows(workdir / "results/cohort/endpoints.tsv")
    truth = _rows(ROOT / "data/sample/truth/endpoints.tsv")
    styles = {
        r["sample_id"]: r["instrument_style"]
        for r in csv.DictReader(
            (ROOT / "data/sample/truth/tubes.tsv").open(encoding="utf-8"), delimiter="\t"
        )
    }
    judged = 0
    for pid, t in truth.items():
        if t["verdict"] == "NOT_EVALUABLE":
            assert got[pid]["verdict"] == "NOT_EVALUABLE"
            continue
        style = styles[t["sample_id"]]
        if style == "bd_fortessa":
            assert got[pid]["verdict"] == t["verdict"], (pid, got[pid])
        else:
            judged += 1
            reason = got[pid]["reason"]
            assert got[pid]["verdict"] == "NOT_EVALUABLE", (pid, style, got[pid])
            assert "qc_fail:" in reason and "gate_implausible:" in reason, (pid, reason)
            assert got[pid]["donor_nk_per_ul"] == "", (pid, got[pid])
    assert judged >= 5  # every non-BD patient with a verdict in truth


def test_a_lab_validated_template_per_instrument_is_chosen_by_cyt(tmp_path):
    """The same fixed BD template, declared for the instrument it was drawn on
    (``gating_by_instrument``): BD tubes are gated with it, every other instrument with the
    fitted tree, and every verdict matches truth."""
    import json

    workdir = copy_workflow(tmp_path / "run")
    shutil.copy(
        ROOT / "tests/data/gating/nk_v1_fixed_bd.yaml",
        workdir / "config/gating/nk_v1_fortessa.yaml",
    )
    with (workdir / "config/config.yaml").open("a", encoding="utf-8") as fh:
        fh.write(
            "\ngating_by_instrument:\n"
            "  nk_v1:\n"
            "    - {cytometer: lsrfortessa, tree: config/gating/nk_v1_fortessa.yaml}\n"
        )
    run_snakemake(workdir)
    got = _rows(workdir / "results/cohort/endpoints.tsv")
    truth = _rows(ROOT / "data/sample/truth/endpoints.tsv")
    for pid, t in truth.items():
        assert (got[pid]["verdict"], got[pid]["borderline"]) == (t["verdict"], t["borderline"])
    index = {
        (r["sample_id"], r["tube"]): r
        for r in csv.DictReader(
            (workdir / "results/cohort/tubes.tsv").open(encoding="utf-8"), delimiter="\t"
        )
    }
    bd = json.loads((workdir / index[("P01-D14", "nk")]["provenance"]).read_text())
    other = json.loads((workdir / index[("P02-D14", "nk")]["provenance"]).read_text())
    assert bd["gating_selected_by"] == "$CYT 'LSRFortessa' (gating_by_instrument)"
    assert bd["gating_file"] == "config/gating/nk_v1_fortessa.yaml" and not bd["fitted_gates"]
    assert other["gating_selected_by"] == "default" and other["fitted_gates"]
    page = (workdir / "results/reports/P01.html").read_text(encoding="utf-8")
    assert "(same)" in page and "DIFFERS from this report" not in page
