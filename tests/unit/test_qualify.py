"""nkflow.qualify's framework and pure parts on tiny hand-made data: statuses, a crashing check,
the truth comparisons, counting precision, the report's order, and a deterministic JSON."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nkflow import qualify
from nkflow.clinical.endpoints import ENDPOINT_COLUMNS
from nkflow.clinical.visits import VISIT_COLUMNS
from nkflow.qualify import _cohort, _html, _precision
from nkflow.qualify._model import FAIL, NOT_RUN, PASS, CheckResult, judged, not_run, summary
from tests.conftest import columns

ROOT = Path(__file__).resolve().parents[2]


def test_not_run_is_never_passed():
    checks = [
        CheckResult("a", "A", "", (judged("a.x", "x", "", "1", True),)),
        CheckResult("b", "B", "", (not_run("b.y", "y", "", "no data"),)),
    ]
    s = summary(checks)
    assert (s["passed"], s["failed"], s["not_run"]) == (1, 0, 1)
    assert s["status"] == "INCOMPLETE" and s["not_run_criteria"] == ["b.y"]
    assert checks[1].status == NOT_RUN
    failing = [*checks, CheckResult("c", "C", "", (judged("c.z", "z", "", "0", False, "why"),))]
    s = summary(failing)
    assert s["status"] == "FAIL" and s["failed_criteria"] == ["c.z"]
    assert failing[2].status == FAIL and checks[0].status == PASS
    assert CheckResult("d", "D", "", ()).status == FAIL  # a check that judged nothing
    with pytest.raises(ValueError, match="status 'ok'"):
        judged("e", "", "", "", True).__class__("e", "", "", "", "ok")


def test_a_crashing_check_is_a_named_failure(tmp_path, monkeypatch):
    def boom(ctx):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(qualify, "CHECKS", (("precision", "Counting precision", boom),))
    doc = qualify.run_qualification(tmp_path, only=["precision"])
    assert doc["summary"]["failed_criteria"] == ["precision.completed"]
    crit = doc["checks"][0]["criteria"][0]
    assert crit["reason"] == "RuntimeError: disk on fire"


def test_unknown_check_in_only_is_refused(tmp_path):
    from nkflow.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--only: unknown check\(s\) nope; known: installation"):
        qualify.run_qualification(tmp_path, only=["nope"])


def test_json_is_deterministic_apart_from_the_run_block(tmp_path):
    only = ["installation", "precision", "reference"]
    a = qualify.run_qualification(tmp_path / "a", only=only)
    b = qualify.run_qualification(tmp_path / "b", only=only)
    assert qualify.deterministic_part(a) == qualify.deterministic_part(b)
    assert a["run"]["out_dir"] != b["run"]["out_dir"]
    js, page = qualify.write_qualification(a, tmp_path / "a")
    assert js.read_text().endswith("}\n") and page.is_file()


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def _mini_cohort(tmp_path: Path, got_nk: list[str], got_verdict: str) -> tuple[Path, Path]:
    data, results = tmp_path / "data", tmp_path / "results"
    _write(
        data / "truth/tubes.tsv",
        ["sample_id", "tube", "instrument_style"],
        [["S1", "nk", "bd"], ["S2", "nk", "bd"], ["S3", "nk", "cyto"]],
    )
    cols = columns(
        VISIT_COLUMNS, "sample_id", "nk_pct_of_lymphocytes", "donor_nk_per_ul", "treg_pct_of_cd4"
    )
    _write(
        data / "truth/visits.tsv", cols, [["S1", 10, 100, 5], ["S2", 20, "", 5], ["S3", 10, 50, 4]]
    )
    _write(
        results / "cohort/visits.tsv",
        cols,
        [["S1", got_nk[0], 100, 5], ["S2", got_nk[1], "", 5], ["S3", got_nk[2], 50, 4]],
    )
    ecols = columns(ENDPOINT_COLUMNS, "patient_id", "sample_id", "verdict", "reason")
    _write(data / "truth/endpoints.tsv", ecols, [["P1", "S1", "PASS", "above_threshold"]])
    _write(results / "cohort/endpoints.tsv", ecols, [["P1", "S1", got_verdict, "above_threshold"]])
    return data, results  # fmt: skip


def test_truth_comparison_names_the_worst_and_the_missing(tmp_path):
    data, results = _mini_cohort(tmp_path, ["10.1", "20", ""], "PASS")
    errors = _cohort.truth_errors(data, results)
    crits = {c.id: c for c in _cohort._style_criteria("default", errors)}
    bd = crits["truth.default.bd.nk_pct_of_lymphocytes"]
    assert bd.status == PASS and bd.measured == "worst 1.00% (S1) over 2 visits"
    cyto = crits["truth.default.cyto.nk_pct_of_lymphocytes"]
    assert cyto.status == FAIL and cyto.reason.endswith("missing: S3")
    # one visit 3 % off: over the 2 % limit
    data, results = _mini_cohort(tmp_path / "b", ["10.3", "20", "10"], "FAIL")
    crits = {
        c.id: c for c in _cohort._style_criteria("default", _cohort.truth_errors(data, results))
    }
    assert crits["truth.default.bd.nk_pct_of_lymphocytes"].status == FAIL
    assert crits["truth.default.bd.donor_nk_per_ul"].status == PASS
    rows = _cohort.verdict_rows(data, results)
    assert rows == [("P1", "PASS (above_threshold)", "FAIL (above_threshold)", "S1", "S1", False)]


def test_compare_trees_lists_files_of_either_run():
    rows = _cohort.compare_trees({"a.tsv": "1", "b.tsv": "2"}, {"a.tsv": "1", "c.tsv": "3"})
    assert rows == [("a.tsv", "1", "1", True), ("b.tsv", "2", "", False), ("c.tsv", "", "3", False)]


def test_lloq_is_the_fewest_events_with_cv_within_the_limit():
    n = _precision.min_nk_events(500, 0.20)
    assert n == 27
    assert math.sqrt(1 / n + 1 / 500) <= 0.20 < math.sqrt(1 / (n - 1) + 1 / 500)
    assert _precision.lloq_per_ul(1000, 500, 0.20) == pytest.approx(54.0)
    assert _precision.min_nk_events(25, 0.20) is None  # 1/25 = 0.04: no room left
    assert _precision.poisson_cv(100) == pytest.approx(0.1)


def test_report_reads_summary_first_then_environment_checks_provenance(tmp_path):
    doc = qualify.run_qualification(tmp_path, only=["precision"])
    page = _html.render(doc)
    order = ["Summary", "Environment and date", "Acceptance limits", "Counting precision",
             "Provenance", "Sign-off"]  # fmt: skip
    pos = [page.index(f"<h2>{t}</h2>") for t in order]
    assert pos == sorted(pos)
    assert "not selected (--only precision)" in page


def test_a_zero_truth_is_met_only_exactly(tmp_path):
    """A truth of 0 donor NK/uL (no donor cells) has no relative error: exact is 0, else 1."""
    from nkflow.qualify._cohort import truth_errors

    data, res = tmp_path / "data", tmp_path / "res"
    (data / "truth").mkdir(parents=True)
    (res / "cohort").mkdir(parents=True)
    (data / "truth/tubes.tsv").write_text(
        "sample_id\ttube\tinstrument_style\nS1\tnk\tbd\nS2\tnk\tbd\n"
    )
    (data / "truth/visits.tsv").write_text("sample_id\tdonor_nk_per_ul\nS1\t0\nS2\t0\n")
    header = "\t".join(columns(VISIT_COLUMNS, "sample_id", "donor_nk_per_ul"))
    (res / "cohort/visits.tsv").write_text(f"{header}\nS1\t0\nS2\t1.5\n")
    got = {r["sample_id"]: r["rel_err"] for r in truth_errors(data, res)}
    assert got == {"S1": 0.0, "S2": 1.0}


def test_precision_uses_the_default_floors_when_the_config_sets_none(tmp_path):
    """A lab config without qc.floors / qc.time runs with the schema's floors, so the precision
    check must judge those, not an empty list and a lymphocyte floor of 0 ("no LLOQ")."""
    import yaml

    from nkflow.qc import QcConfig
    from nkflow.qualify._context import Context

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    del cfg["qc"]["floors"], cfg["qc"]["time"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ctx = Context(out=tmp_path, quick=True, cores=1, config_path=path, base_dir=ROOT,
                  reference_path=None, workflow_dir=None, public_root=None)  # fmt: skip
    result = _precision.check_precision(ctx)
    crits = {c.id: c for c in result.criteria}
    default = QcConfig.from_dict(None).floors.min_lymphocyte_events
    assert default > 0
    assert crits["precision.lloq_at_threshold"].measured.startswith(f"{default} lymphocytes: LLOQ")
    assert crits["precision.lloq_at_threshold"].status == PASS
