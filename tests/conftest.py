"""Shared fixtures: the repository root, a copy of the workflow in a temporary directory, and one
run of the whole workflow on data/sample shared by the end-to-end tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW_TIMEOUT_S = 900


def pytest_sessionstart(session: pytest.Session) -> None:
    """Generate data/sample's FCS files and labels (not committed) when missing or stale.

    ``make test`` does this first (``make sample-ensure``); here it covers a bare ``pytest``.
    """
    script = ROOT / "scripts" / "make_sample_data.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--out", str(ROOT / "data" / "sample"), "--ensure"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.exit(f"data/sample could not be generated:\n{proc.stdout}{proc.stderr}", 1)


def columns(table: Sequence[str], *names: str) -> list[str]:
    """A fixture's header: ``names`` (in the fixture's own order), each a column of the production
    table ``table`` (e.g. ``nkflow.tube.COUNT_COLUMNS``), so that a renamed or dropped column
    breaks the fixture instead of leaving it describing a format nkflow no longer writes."""
    unknown = [n for n in names if n not in table]
    assert not unknown, f"fixture columns {unknown} are not in the table ({', '.join(table)})"
    return list(names)


def public_data_root() -> str | None:
    """``$NKFLOW_PUBLIC_DATA`` when it names an existing directory, else None.

    CI sets it to ../shared/data/public; without it (or when it points nowhere) the tests that
    read public files skip with :data:`PUBLIC_DATA_SKIP` as the reason.
    """
    root = os.environ.get("NKFLOW_PUBLIC_DATA")
    return root if root and Path(root).is_dir() else None


_ROOT_ENV = os.environ.get("NKFLOW_PUBLIC_DATA")
PUBLIC_DATA_SKIP = (
    f"NKFLOW_PUBLIC_DATA={_ROOT_ENV} is not a directory (CI sets it to ../shared/data/public)"
    if _ROOT_ENV
    else "NKFLOW_PUBLIC_DATA is not set (CI sets it to ../shared/data/public)"
)


def copy_workflow(dest: Path, data: tuple[str, ...] = ("data/sample",)) -> Path:
    """Copy what a run needs (Snakefile, workflow/, config/ and the ``data`` folders) into
    ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "Snakefile", dest / "Snakefile")
    for sub in ("workflow", "config", *data):
        shutil.copytree(
            ROOT / sub, dest / sub, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    return dest


def workflow_env() -> dict[str, str]:
    """The environment for a workflow run: the venv's tools (``nkflow``) first on PATH.

    SLURM jobs inherit it too (sbatch --export=ALL).
    """
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_snakemake(workdir: Path, *args: str, timeout: int = WORKFLOW_TIMEOUT_S, check: bool = True):
    """Run snakemake in ``workdir`` with the venv's tools first on PATH."""
    cmd = [str(BIN / "snakemake"), "--cores", "2", *args]
    proc = subprocess.run(
        cmd, cwd=workdir, env=workflow_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        logs = "".join(
            f"\n---- {log.relative_to(workdir)} (last lines) ----\n"
            + "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            for log in sorted((workdir / "results" / "logs").rglob("*.log"))
            if "Traceback" in log.read_text(errors="replace")
            or "error" in log.read_text(errors="replace")
        )
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-8000:]}{logs}"
        )
    return proc


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> Path:
    """One complete workflow run on data/sample; returns its working directory."""
    workdir = copy_workflow(tmp_path_factory.mktemp("sample_run"))
    run_snakemake(workdir)
    return workdir
