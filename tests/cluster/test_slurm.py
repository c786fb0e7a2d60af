"""The sample workflow on a real SLURM (issue 8).

Contract
--------
Needs the single-node SLURM of ``tests/cluster/local-slurm.sh`` (the ``slurm_cluster`` fixture
runs ``local-slurm.sh up``, which is idempotent, and FAILS the test with the script's reason when
SLURM cannot be installed or started: these tests are never skipped). ``.ci/run`` brings the
daemons up before and down after.

- ``test_sample_workflow_under_slurm_matches_local``: the sample cohort is run locally
  (``--cores 2``) and with ``--executor slurm`` through ``tests/cluster/profile`` in two copies of
  the repository; the per-tube jobs went through ``sbatch`` (SLURM job logs exist under
  ``.snakemake/slurm_logs`` and ``sacct`` knows each job id as COMPLETED), and
  ``results/cohort/endpoints.tsv`` is byte-identical to the local run.
- ``test_rule_failing_under_slurm_fails_the_run_naming_it``: a rule that exits 3 under SLURM
  makes snakemake exit non-zero with "Error in rule forced_failure" and SLURM's FAILED status.

Every snakemake call is wrapped in ``timeout -s KILL`` (a lost SLURM job can hang the plugin,
see ../shared/docs/SLURM.md).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_workflow, workflow_env

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "cluster" / "local-slurm.sh"
CI_PROFILE = REPO / "tests" / "cluster" / "profile"
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
KILL_AFTER_S = 900
# Cohort-level rules, too light for a cluster job (issue 8: they must be localrules).
LOCAL_RULES = (
    "validate",
    "collect",
    "merge",
    "endpoints",
    "report",
)


def run_snakemake(
    workdir: Path, *args: str, kill_after: int = KILL_AFTER_S
) -> subprocess.CompletedProcess[str]:
    cmd = ["timeout", "-s", "KILL", str(kill_after), SNAKEMAKE, *args]
    return subprocess.run(
        cmd, cwd=workdir, env=workflow_env(), capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    """Bring the local SLURM up (idempotent); fail, never skip, when that is impossible."""
    if shutil.which("bash") is None:
        pytest.fail("bash is needed to run tests/cluster/local-slurm.sh")
    proc = subprocess.run(
        ["timeout", "-s", "KILL", "300", "bash", str(SCRIPT), "up"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            "SLURM is not available: `bash tests/cluster/local-slurm.sh up` exited "
            f"{proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )


def _slurm_job_ids(workdir: Path) -> dict[str, list[int]]:
    """SLURM job ids by top log directory (``rule_<rule>``, ``group_<group>``).

    The plugin writes ``.snakemake/slurm_logs/rule_<rule>[/<wildcards>]/<jobid>.log``.
    """
    found: dict[str, list[int]] = {}
    logdir = workdir / ".snakemake" / "slurm_logs"
    for log in sorted(logdir.rglob("*.log")):
        if log.stem.isdigit():
            top = log.relative_to(logdir).parts[0]
            found.setdefault(top, []).append(int(log.stem))
    return found


def _sacct_states(job_ids: list[int]) -> dict[int, str]:
    proc = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(map(str, job_ids))],
        capture_output=True,
        text=True,
        check=True,
    )
    states = {}
    for line in proc.stdout.splitlines():
        jid, state = line.split("|")
        states[int(jid)] = state
    return states


def test_sample_workflow_under_slurm_matches_local(slurm_cluster: None, tmp_path: Path) -> None:
    local = copy_workflow(tmp_path / "local")
    proc = run_snakemake(local, "--workflow-profile", "workflow/profiles/default", "--cores", "2")
    assert proc.returncode == 0, f"local run failed:\n{proc.stderr[-4000:]}"
    local_endpoints = (local / "results" / "cohort" / "endpoints.tsv").read_bytes()

    cluster = copy_workflow(tmp_path / "slurm")
    proc = run_snakemake(cluster, "--workflow-profile", str(CI_PROFILE))
    assert proc.returncode == 0, f"SLURM run failed:\n{proc.stderr[-6000:]}"
    assert "submitted with SLURM jobid" in proc.stderr

    jobs = _slurm_job_ids(cluster)
    # The per-tube work went through sbatch: SLURM job logs exist and sacct knows every job.
    job_ids = [j for ids in jobs.values() for j in ids]
    assert job_ids, "no SLURM job logs under .snakemake/slurm_logs"
    assert _sacct_states(job_ids) == dict.fromkeys(job_ids, "COMPLETED")
    # The light cohort rules are localrules: they never became SLURM jobs.
    assert not set(jobs) & {f"rule_{r}" for r in LOCAL_RULES}, jobs
    n_tubes = sum(1 for _ in (cluster / "results" / "tubes").rglob("counts.tsv"))
    n_rows = len((local / "data/sample/samples.tsv").read_text().splitlines()) - 1
    assert n_tubes == n_rows

    assert (cluster / "results" / "cohort" / "endpoints.tsv").read_bytes() == local_endpoints


FAILING_SNAKEFILE = """\
include: "Snakefile"


rule forced_failure:
    output:
        "results/forced_failure.txt",
    shell:
        "echo 'nkflow SLURM test: this rule fails on purpose' >&2; exit 3"
"""


def test_rule_failing_under_slurm_fails_the_run_naming_it(
    slurm_cluster: None, tmp_path: Path
) -> None:
    work = copy_workflow(tmp_path / "fail")
    (work / "Snakefile.fail").write_text(FAILING_SNAKEFILE)
    proc = run_snakemake(
        work,
        "--snakefile",
        "Snakefile.fail",
        "--workflow-profile",
        str(CI_PROFILE),
        "results/forced_failure.txt",
        kill_after=300,
    )
    assert proc.returncode == 1, proc.stderr[-4000:]
    assert "Error in rule forced_failure:" in proc.stderr
    assert re.search(r"SLURM-job '\d+' failed, SLURM status is: 'FAILED'", proc.stderr)
    assert not (work / "results" / "forced_failure.txt").exists()
    assert list((work / ".snakemake" / "slurm_logs" / "rule_forced_failure").glob("*.log"))
