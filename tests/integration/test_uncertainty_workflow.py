"""How sure each verdict is, end to end on data/sample (docs/uncertainty.md).

Every day-14 NK tube writes its re-gatings, the cohort table collects them, every PASS/FAIL gets
p_above_threshold and the all-sources interval, the borderline patient (P05, ~102/uL) is
borderline on that basis with the boundary that flips it named, clear verdicts are not, the
patient page draws the distribution, and re-running the endpoint step gives the same bytes.
"""

from __future__ import annotations

import csv
import json

import pytest

from nkflow.cli import main
from nkflow.report._format import fixed

pytestmark = pytest.mark.workflow


def _rows(path):
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_every_day14_verdict_says_how_sure_it_is(sample_run):
    ends = {r["patient_id"]: r for r in _rows(sample_run / "results/cohort/endpoints.tsv")}
    pert = _rows(sample_run / "results/cohort/perturbation.tsv")
    nk_tubes = {(r["sample_id"], r["tube"]) for r in pert}
    samples = _rows(sample_run / "data/sample/samples.tsv")
    assert nk_tubes == {(r["sample_id"], "nk") for r in samples if r["tube"] == "nk"}
    for pid, e in ends.items():
        if e["verdict"] == "NOT_EVALUABLE":
            assert e["p_above_threshold"] == e["uncertainty_status"] == "", pid
            continue
        assert (e["uncertainty_status"], e["borderline_basis"]) == ("computed", "all_sources")
        p = float(e["p_above_threshold"])
        lo, hi = float(e["donor_nk_per_ul_all_lo95"]), float(e["donor_nk_per_ul_all_hi95"])
        value = float(e["donor_nk_per_ul"])
        assert lo < value < hi, pid
        # the all-sources interval is at least as wide as counting alone would suggest
        assert hi - lo > 0.9 * (float(e["donor_nk_per_ul_hi95"]) - float(e["donor_nk_per_ul_lo95"]))
        if abs(value - 100) > 20:
            assert (e["borderline"], e["verdict_unstable"]) == ("false", "false"), pid
            assert p == (1.0 if value > 100 else 0.0), pid
    p05 = ends["P05"]
    assert (p05["verdict"], p05["borderline"], p05["verdict_unstable"]) == ("PASS", "true", "true")
    assert 0.2 < float(p05["p_above_threshold"]) < 0.8
    unstable = [f for f in p05["flags"].split(";") if f.startswith("verdict_unstable:")]
    assert unstable and all(f.split(":")[1] in ("nk.CD3", "nk.CD56", "live.Viability",
                                                "lymphocytes", "singlets") for f in unstable)  # fmt: skip
    doc = json.loads((sample_run / "results/cohort/patients/P05.json").read_text())
    assert sum(doc["donor_nk_per_ul_distribution"]["counts"]) == 4000
    page = (sample_run / "results/reports/P05.html").read_text(encoding="utf-8")
    section = page[page.index('id="uncertainty"') :]
    section = section[: section.index("</section>")]
    # the page rounds p as a lab reports it (3 decimals); the table keeps full precision
    shown = f">{fixed(p05['p_above_threshold'], 3)}</td>"
    assert "data:image/png;base64," in section and shown in section, shown
    assert "nk.CD56.min" in section  # the boundary ranges from the tube's provenance


def test_endpoint_step_again_gives_the_same_bytes(sample_run, tmp_path, monkeypatch):
    monkeypatch.chdir(sample_run)
    cfg = ["--config", "config/config.yaml", "--visits", "results/cohort/visits.tsv"]
    pert = ["--perturbation", "results/cohort/perturbation.tsv"]
    assert main(["endpoints", *cfg, "--outdir", str(tmp_path), *pert]) == 0
    for name in ("endpoints.tsv", "patients/P05.json", "patients/P01.json"):
        assert (tmp_path / name).read_bytes() == (
            sample_run / "results/cohort" / name
        ).read_bytes(), name
