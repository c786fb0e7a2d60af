"""Interrupting and re-running the workflow (issue 8).

Contract
--------
Runs the real workflow (``snakemake --workflow-profile workflow/profiles/default --cores 2``;
that profile sets ``rerun-incomplete``) on a copy of the repository holding a subset of the sample cohort (the
tubes of patients P01 and P02, both panels), to keep the test to about a minute.

- ``test_kill_mid_run_then_rerun_gives_identical_tables``: a run is SIGKILLed (the whole
  snakemake process group) after some tubes finished and before the cohort tables exist; the
  next run stops on the left-over lock, ``--unlock`` clears it and a rerun completes; every table (``*.tsv`` under ``results/`` except logs and benchmarks) is
  byte-identical to an uninterrupted run; the result file set is the same (no stray or partial
  files); snakemake has no incomplete-job markers left and a dry run finds nothing to do.
- ``test_gate_file_change_reruns_only_its_tubes_and_downstream``: after a complete run, one gate
  file (``treg_v1``) is changed; the dry run's job list is exactly the tubes whose sample-sheet
  row uses that gate tree (computed from the sheet, independently of the workflow) plus the
  cohort-level jobs downstream of them.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import copy_workflow, workflow_env

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
PATIENTS = ("P01", "P02")
SHEET = Path("data/sample/samples.tsv")
# Results that are not tables of the cohort: run logs and timings differ between runs.
VOLATILE_DIRS = ("logs", "benchmarks")
# A local run as documented: the default profile (cores 2, rerun-incomplete, ...). Named
# explicitly: snakemake looks for profiles/default next to the Snakefile, not workflow/profiles.
LOCAL_RUN = [SNAKEMAKE, "--workflow-profile", "workflow/profiles/default", "--cores", "2"]


def copy_subset(dest: Path) -> Path:
    """A runnable copy of the workflow with the sample sheet cut to ``PATIENTS``."""
    copy_workflow(dest)
    lines = (dest / SHEET).read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split("\t")
    pid = header.index("patient_id")
    kept = [ln for ln in lines[1:] if ln.split("\t")[pid] in PATIENTS]
    (dest / SHEET).write_text(lines[0] + "".join(kept))
    return dest


def snakemake(workdir: Path, *args: str, kill_after: int = 900) -> subprocess.CompletedProcess[str]:
    cmd = ["timeout", "-s", "KILL", str(kill_after), *LOCAL_RUN, *args]
    return subprocess.run(
        cmd, cwd=workdir, env=workflow_env(), capture_output=True, text=True, check=False
    )


def result_files(workdir: Path) -> dict[str, Path]:
    root = workdir / "results"
    return {
        str(p.relative_to(root)): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in VOLATILE_DIRS
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted, complete run of the subset."""
    work = copy_subset(tmp_path_factory.mktemp("resume") / "work")
    proc = snakemake(work)
    assert proc.returncode == 0, f"reference run failed:\n{proc.stderr[-4000:]}"
    return work


def test_kill_mid_run_then_rerun_gives_identical_tables(reference: Path) -> None:
    # The killed run uses the reference's own path (tables such as cohort/tubes.tsv record
    # absolute FCS paths), with the reference parked beside it meanwhile.
    parked = reference.with_name("reference-parked")
    reference.rename(parked)
    try:
        work = copy_subset(reference)
        _kill_rerun_and_compare(work, parked)
    finally:
        if reference.exists():
            reference.rename(reference.with_name("killed"))
        parked.rename(reference)


def _kill_rerun_and_compare(work: Path, reference: Path) -> None:
    proc = subprocess.Popen(
        LOCAL_RUN,
        cwd=work,
        env=workflow_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: we kill snakemake and every job
    )
    tubes_dir = work / "results" / "tubes"
    endpoints = work / "results" / "cohort" / "endpoints.tsv"
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            if len(list(tubes_dir.rglob("counts.tsv"))) >= 2 or proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not endpoints.exists(), "killed too late: the cohort tables were already written"

    # A SIGKILL leaves snakemake's directory lock behind: the documented recovery is
    # `snakemake --unlock`, then the same command again (rerun-incomplete redoes cut jobs).
    locked = snakemake(work)
    assert locked.returncode == 1 and "LockException" in locked.stderr
    unlock = snakemake(work, "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    rerun = snakemake(work)
    assert rerun.returncode == 0, f"rerun after SIGKILL failed:\n{rerun.stderr[-4000:]}"

    ref_files, got_files = result_files(reference), result_files(work)
    assert sorted(got_files) == sorted(ref_files)
    tables = [name for name in ref_files if name.endswith(".tsv")]
    assert "cohort/endpoints.tsv" in tables and "qc/tubes.tsv" in tables
    differing = [n for n in tables if got_files[n].read_bytes() != ref_files[n].read_bytes()]
    assert differing == []
    incomplete = work / ".snakemake" / "incomplete"
    assert not incomplete.exists() or not any(incomplete.iterdir())
    again = snakemake(work, "--dry-run")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def _dry_run_jobs(text: str) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """Job counts per rule (the "Job stats" table) and the (sample, tube) pairs of the tube jobs.

    The pairs come from the printed shell commands: ``--tube SAMPLE TUBE FCS`` per tube of a
    batch job.
    """
    counts: dict[str, int] = {}
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "Job stats:")
    for ln in lines[start + 3 :]:
        parts = ln.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    tubes = set(
        re.findall(
            r"--tube '?([A-Za-z0-9][A-Za-z0-9._-]*)'? '?([A-Za-z0-9][A-Za-z0-9._-]*)'? ", text
        )
    )
    return counts, tubes


def test_a_date_correction_or_qc_dates_change_regates_no_tube(reference: Path) -> None:
    """The $DATE check needs the sheet's collection_date, so `nkflow collect` makes it: a
    corrected date, or another `qc.dates` allowance, re-runs collect and what follows only."""
    import datetime as dt

    import yaml

    sheet = reference / SHEET
    text, stat = sheet.read_text(), sheet.stat()
    rows = text.splitlines(keepends=True)
    header = rows[0].rstrip("\n").split("\t")
    col_sid, col_date = header.index("sample_id"), header.index("collection_date")
    target = rows[-1].split("\t")[col_sid]  # the last sample, on every row of its tubes

    def corrected(line: str) -> str:
        cells = line.split("\t")
        if cells[col_sid] == target:
            drawn = dt.date.fromisoformat(cells[col_date])
            cells[col_date] = (drawn + dt.timedelta(days=1)).isoformat()
        return "\t".join(cells)

    try:
        sheet.write_text(rows[0] + "".join(corrected(r) for r in rows[1:]))
        dry = snakemake(reference, "--dry-run", "--printshellcmds")
        assert dry.returncode == 0, dry.stderr[-4000:]
        counts, tubes = _dry_run_jobs(dry.stdout + dry.stderr)
        assert tubes == set() and "tubes" not in counts, counts
        assert counts["collect"] == 1 and counts["merge"] == 1
    finally:
        sheet.write_text(text)
        os.utime(sheet, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    cfg = yaml.safe_load((reference / "config/config.yaml").read_text())
    cfg["qc"]["dates"]["max_days_after_collection"] = 2
    (reference / "config/dates.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    dry = snakemake(reference, "--dry-run", "--printshellcmds", "--configfile", "config/dates.yaml")
    assert dry.returncode == 0, dry.stderr[-4000:]
    counts, tubes = _dry_run_jobs(dry.stdout + dry.stderr)
    assert tubes == set() and "tubes" not in counts, counts
    assert counts["collect"] == 1
    after = snakemake(reference, "--dry-run")
    assert "Nothing to be done" in after.stdout + after.stderr


def test_gate_file_change_reruns_only_its_tubes_and_downstream(reference: Path) -> None:
    with (reference / SHEET).open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    expected_tubes = {(r["sample_id"], r["tube"]) for r in rows if r["gating"] == "treg_v1"}
    assert 0 < len(expected_tubes) < len(rows)

    before = snakemake(reference, "--dry-run")
    assert "Nothing to be done" in before.stdout + before.stderr
    # Every job of the workflow, to tell the per-tube rule(s) from the cohort-level ones.
    everything = snakemake(reference, "--dry-run", "--printshellcmds", "--forceall")
    all_counts, all_tubes = _dry_run_jobs(everything.stdout + everything.stderr)
    assert all_tubes == {(r["sample_id"], r["tube"]) for r in rows}
    tube_rules = {rule for rule, n in all_counts.items() if n > 1}
    cohort_rules = {rule: n for rule, n in all_counts.items() if rule not in tube_rules}

    gate = reference / "config" / "gating" / "treg_v1.yaml"
    gate.write_text(gate.read_text() + "\n# edited by test_resume: a new revision of this tree\n")
    dry = snakemake(reference, "--dry-run", "--printshellcmds")
    assert dry.returncode == 0, dry.stderr[-4000:]
    counts, tubes = _dry_run_jobs(dry.stdout + dry.stderr)

    # Only the tubes gated with treg_v1 are re-run ...
    assert tubes == expected_tubes
    assert (
        0
        < sum(counts[r] for r in tube_rules if r in counts)
        < sum(all_counts[r] for r in tube_rules)
    )
    # ... plus every cohort-level job downstream of them (each once), and nothing else.
    assert {r: n for r, n in counts.items() if r not in tube_rules} == cohort_rules
