"""Gate overrides as workflow inputs, end to end (issue 14).

A finished run of a two-patient subset (P01, P02; 4 tubes per batch, so each patient's tubes of
one panel are one batch) gets an override on P01's day-14 NK gate. The dry run then lists only
the batch holding that tube (and the cohort steps after it); the rerun changes the NK count, the
visit's inputs to the verdict and the endpoint, records the override in provenance.json and
qc.tsv, exports the gates used as Gating-ML with the new boundary, and the report shows the
override (old, new, who, when, why) beside the gate figure. Approving P01 before the override
and rerunning after it makes endpoints.tsv say the approval is void and why.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from nkflow.gating import override_files as ovmod
from nkflow.review import users
from tests.conftest import run_snakemake
from tests.integration.test_resume import copy_subset

pytestmark = pytest.mark.workflow

TUBE = ("P01-D14", "nk")


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def batch_of(work: Path, sample_id: str, tube: str) -> str:
    hit = [
        r
        for r in rows(work / "results/cohort/tubes.tsv")
        if (r["sample_id"], r["tube"]) == (sample_id, tube)
    ]
    return hit[0]["batch"]


def finished_subset(dest: Path) -> Path:
    """A finished run of P01 and P02 with 4 tubes per batch (one batch per patient and panel)."""
    w = copy_subset(dest)
    cfg = w / "config/config.yaml"
    cfg.write_text(cfg.read_text().replace("tubes_per_job: 16", "tubes_per_job: 4"))
    run_snakemake(w)
    return w


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_subset(tmp_path_factory.mktemp("review_ov") / "work")


def test_an_override_reruns_only_its_batch_and_changes_the_count_and_the_verdict_input(
    work, capsys
):
    from nkflow import cli
    from nkflow.gating import from_gatingml

    batch = batch_of(work, *TUBE)
    tube_dir = work / "results/tubes" / batch / TUBE[0] / TUBE[1]
    prov = json.loads((tube_dir / "provenance.json").read_text())
    fitted = next(
        f["value"] for f in prov["fitted_gates"] if f["gate"] == "nk" and f["markers"] == ["CD56"]
    )
    before = {r["population"]: r for r in rows(tube_dir / "counts.tsv")}
    visit0 = next(r for r in rows(work / "results/cohort/visits.tsv") if r["sample_id"] == TUBE[0])
    ep0 = next(r for r in rows(work / "results/cohort/endpoints.tsv") if r["patient_id"] == "P01")

    # P01 signed off on the first run
    for uid, role in (("alice", "reviewer"), ("bob", "approver")):
        users.add_user(work / "review/users.yaml", work / "review/audit.jsonl", user_id=uid,
                       name=uid.title(), role=role, password=uid + "-password")  # fmt: skip
    import io
    import os
    import sys

    cwd = os.getcwd()
    os.chdir(work)
    try:
        for uid, meaning in (("alice", "reviewed"), ("bob", "approved")):
            sys.stdin = io.StringIO(uid + "-password\n")
            argv = ["sign", "--config", "config/config.yaml", "--patient", "P01", "--user", uid]
            assert cli.main([*argv, "--meaning", meaning, "--password-stdin"]) == 0
            assert f"signed: patient P01, '{meaning}' by {uid.title()} ({uid})" in (
                capsys.readouterr().out
            )
        # nkflow sign refuses a wrong password and a signature already current
        argv = ["sign", "--config", "config/config.yaml", "--patient", "P01", "--user", "alice"]
        for password, refusal in (
            ("wrong-password", "wrong password for user 'alice'"),
            ("alice-password", "has already signed 'reviewed'"),
        ):
            sys.stdin = io.StringIO(password + "\n")
            assert cli.main([*argv, "--meaning", "reviewed", "--password-stdin"]) == 1
            assert refusal in capsys.readouterr().err
    finally:
        sys.stdin = sys.__stdin__
        os.chdir(cwd)
    run_snakemake(work)
    assert (
        next(r for r in rows(work / "results/cohort/endpoints.tsv") if r["patient_id"] == "P01")[
            "review_status"
        ]
        == "approved"
    )

    new = round(fitted + 0.05, 4)
    ovmod.write_override(
        work / "review/overrides",
        {
            "sample_id": TUBE[0],
            "tube": TUBE[1],
            "gate": "nk",
            "bounds": [{"marker": "CD56", "side": "min", "old": fitted, "new": new}],
            "author": "alice",
            "time_utc": "2025-03-20T09:00:00Z",
            "reason": "CD56 cut sits in the CD56-dim tail",
        },
        expected_sha256=None,
    )
    dry = run_snakemake(work, "-n", "--quiet", "rules")
    jobs = re.findall(r"^(\w+)\s+(\d+)$", dry.stdout, flags=re.M)
    assert dict(jobs) == {"tubes": "1", "collect": "1", "merge": "1", "endpoints": "1",
                          "readout": "1", "report": "1", "all": "1", "total": "7"}, dry.stdout  # fmt: skip
    dry_jobs = run_snakemake(work, "-n")
    assert re.findall(r"output: (results/tubes/\S+)", dry_jobs.stdout) == [f"results/tubes/{batch}"]

    run_snakemake(work)
    after = {r["population"]: r for r in rows(tube_dir / "counts.tsv")}
    assert int(after["nk"]["events"]) < int(before["nk"]["events"])
    assert after["nk"]["boundary"].endswith(f"CD56 min {new:.4g} (override)")
    assert after["live"] == before["live"]  # the parent is untouched
    visit = next(r for r in rows(work / "results/cohort/visits.tsv") if r["sample_id"] == TUBE[0])
    assert int(visit["nk_events"]) == int(after["nk"]["events"]) < int(visit0["nk_events"])
    assert float(visit["donor_nk_per_ul"]) < float(visit0["donor_nk_per_ul"])
    ep = next(r for r in rows(work / "results/cohort/endpoints.tsv") if r["patient_id"] == "P01")
    assert float(ep["donor_nk_per_ul"]) < float(ep0["donor_nk_per_ul"])
    assert ep["review_status"] == "void"
    assert f"gate override nk of tube {TUBE[0]}/{TUBE[1]} added" in ep["review_note"]

    prov = json.loads((tube_dir / "provenance.json").read_text())
    (rec,) = prov["overrides"]
    assert (rec["author"], rec["reason"]) == ("alice", "CD56 cut sits in the CD56-dim tail")
    assert rec["bounds"] == [{"marker": "CD56", "side": "min", "old": fitted, "new": new}]
    qc_rows = [r for r in rows(tube_dir / "qc.tsv") if r["reason_code"] == "gate_override"]
    assert len(qc_rows) == 1 and "set by alice" in qc_rows[0]["message"]
    used = from_gatingml(tube_dir / "gates.xml")
    assert used.gate("nk").dims[1].min == pytest.approx(new)
    page = (work / "results/reports/P01.html").read_text()
    assert "Gate overrides applied to P01-D14/nk" in page
    assert "CD56 min:" in page and "CD56 cut sits in the CD56-dim tail" in page
    assert "approval VOID" in page
