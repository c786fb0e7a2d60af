"""Running the real workflow for a qualification.

A copy of the workflow, a generated cohort, ``snakemake`` with the shipped local profile, and the
package it actually used.

Contract: :func:`prepare` copies ``Snakefile``, ``workflow/`` and ``config/`` of the workflow
directory into a fresh work directory and writes a generated cohort into its ``data/sample``
(where the shipped config expects it); :func:`run` runs snakemake there on the table targets,
with this interpreter's tools first on ``PATH`` and this package first on ``PYTHONPATH``, so
the workflow runs the package being qualified (:func:`workflow_package` says which it found).
Nothing here judges a result.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nkflow.qualify._install import package_dir

#: the workflow outputs a qualification reads (tables; the HTML report is not judged here)
TABLE_TARGETS = (
    "results/validated/config.json",
    "results/qc/tubes.tsv",
    "results/cohort/visits.tsv",
    "results/cohort/endpoints.tsv",
)
WORKFLOW_TIMEOUT_S = 1200


@dataclass(frozen=True)
class Run:
    """One snakemake run: where, its exit status, wall seconds and the log file."""

    workdir: Path
    returncode: int
    seconds: float
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failure(self) -> str:
        """The last lines of the log, for a failed criterion's reason."""
        lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        errs = [ln for ln in lines if "rror" in ln]
        tail = errs[-3:] or lines[-3:]
        return f"snakemake exited {self.returncode} ({self.log.name}): " + " | ".join(tail)


def environment() -> dict[str, str]:
    """The environment of a workflow run.

    This interpreter's scripts come first on PATH and the qualified package first on PYTHONPATH.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    paths = [str(package_dir().parent), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def prepare(
    workflow_dir: Path,
    workdir: Path,
    variant: str,
    seed: int | None = None,
    damage: Callable[[Path], None] | None = None,
) -> dict[str, str]:
    """Copy the workflow into ``workdir`` and generate the cohort; return its file digests.

    ``damage`` (given ``workdir/data/sample``) alters the cohort after it is generated.
    """
    from nkflow import synthetic

    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    shutil.copy2(workflow_dir / "Snakefile", workdir / "Snakefile")
    for sub in ("workflow", "config"):
        shutil.copytree(
            workflow_dir / sub, workdir / sub, ignore=shutil.ignore_patterns("__pycache__")
        )
    data = workdir / "data" / "sample"
    seed = synthetic.SEED_OF_VARIANT[variant] if seed is None else seed
    digests = synthetic.generate(data, seed, variant)
    synthetic.write_manifest(data, digests)
    if damage is not None:
        damage(data)
    return digests


def run(workdir: Path, cores: int, targets: tuple[str, ...] = TABLE_TARGETS) -> Run:
    """Run snakemake in ``workdir`` (the shipped local profile, ``cores`` cores)."""
    log = workdir / "snakemake.log"
    cmd = [
        sys.executable, "-m", "snakemake", *targets, "--cores", str(cores),
        "--profile", "workflow/profiles/default", "--quiet", "all",
    ]  # fmt: skip
    t0 = time.perf_counter()
    with log.open("w", encoding="utf-8") as fh:
        try:
            proc = subprocess.run(
                cmd,
                cwd=workdir,
                env=environment(),
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=WORKFLOW_TIMEOUT_S,
                check=False,
            )
            code = proc.returncode
        except subprocess.TimeoutExpired:
            fh.write(f"\nqualify: error: snakemake did not finish in {WORKFLOW_TIMEOUT_S} s\n")
            code = -1
    return Run(workdir, code, time.perf_counter() - t0, log)


def workflow_package() -> tuple[str, str]:
    """(the ``nkflow`` command the workflow's rules find, the package directory it imports)."""
    env = environment()
    exe = shutil.which("nkflow", path=env["PATH"])
    if exe is None:
        return "", ""
    first = Path(exe).read_bytes()[:300].split(b"\n", 1)[0].decode(errors="replace")
    python = first[2:].strip() if first.startswith("#!") else sys.executable
    proc = subprocess.run(
        [*python.split(), "-c", "import nkflow, pathlib; print(pathlib.Path(nkflow.__file__).resolve().parent)"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    return exe, proc.stdout.strip()


def remove_events(workdir: Path) -> None:
    """Delete a finished run's generated FCS files and per-event labels, keeping sheets and results.

    They are regenerable from the seed and their sha256 are in the evidence; sheets, truth tables
    and results are kept.
    """
    data = workdir / "data" / "sample"
    for sub in ("fcs", "truth/labels"):
        shutil.rmtree(data / sub, ignore_errors=True)
