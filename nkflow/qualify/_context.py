"""What every check is given.

The output and work directories, the mode, the lab's files, and the workflow runs shared between
checks.

Contract: a :class:`Context` is built once per qualification by
:func:`nkflow.qualify.run_qualification`; checks read it and may store a workflow run in
``runs`` for a later check (the determinism check reuses the truth cohort's run).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Context:
    """Inputs of one qualification.

    Attributes
    ----------
    out : Path
        The pack's directory (qualification.json and .html).
    quick : bool
        The CI subset (see the check docstrings for what it leaves out).
    cores : int
        Cores handed to snakemake.
    config_path : Path
        The lab's configuration (default: the workflow's config/config.yaml).
    base_dir : Path
        Directory the configuration's relative paths are relative to.
    reference_path : Path or None
        The lab's reference set (PQ), if given.
    workflow_dir : Path or None
        The directory with ``Snakefile``, ``workflow/`` and ``config/`` the cohort runs copy.
    public_root : Path or None
        ``$NKFLOW_PUBLIC_DATA`` when it names a directory.
    """

    out: Path
    quick: bool
    cores: int
    config_path: Path
    base_dir: Path
    reference_path: Path | None
    workflow_dir: Path | None
    public_root: Path | None
    runs: dict[str, Any] = field(default_factory=dict)

    @property
    def work(self) -> Path:
        """Where workflow runs and generated cohorts go (``out/work``)."""
        return self.out / "work"

    def rel(self, path: Path) -> str:
        """``path`` relative to the pack's directory (evidence carries no absolute path)."""
        try:
            return str(Path(path).resolve().relative_to(self.out.resolve()))
        except ValueError:
            return str(path)


def public_root_from_env() -> Path | None:
    """``$NKFLOW_PUBLIC_DATA`` when it names an existing directory, else None."""
    root = os.environ.get("NKFLOW_PUBLIC_DATA")
    return Path(root) if root and Path(root).is_dir() else None


def find_workflow_dir(package_dir: Path) -> Path | None:
    """The checkout beside the package when it has the workflow (a development install)."""
    root = package_dir.parent
    ok = all((root / p).exists() for p in ("Snakefile", "workflow", "config"))
    return root if ok else None
