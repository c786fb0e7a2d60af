"""Installation and operational qualification: ``nkflow qualify`` (issue #16).

Contract
--------
:func:`run_qualification` runs the built-in checks (:data:`CHECKS`, in this order), and the
lab's reference set when one is given, on the installed package, and returns the pack as a
dict; :func:`write_qualification` writes it as ``qualification.json`` and the self-contained
``qualification.html``. Every check returns criteria, each with its declared limit, the measured
value and a status, ``pass``, ``fail`` or ``not_run``: a check whose data are absent (no public
suite, ``--quick``, no workflow directory) is *not run*, never passed. A check that raises is a
failed criterion ``<check>.completed`` naming the exception; the other checks still run.

The pack is deterministic for the same installation, configuration and inputs except its
``run`` block (date, duration per check, absolute directories, command line): everything else
(criteria, evidence, provenance) is byte-identical from run to run.

Overall status: ``FAIL`` when any criterion failed (``nkflow qualify`` exits 1), ``INCOMPLETE``
when none failed but some were not run, ``PASS`` when every criterion passed (both exit 0).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import logging
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nkflow.provenance import sha256_file
from nkflow.qualify._context import Context, find_workflow_dir, public_root_from_env
from nkflow.qualify._model import CheckResult, check_to_dict, judged, not_run, summary

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "nkflow-qualification/1"


def _lazy(module: str, name: str) -> Callable[[Context], CheckResult]:
    """``nkflow.qualify.<module>.<name>``, imported when the check runs (the CLI stays fast)."""

    def run(ctx: Context) -> CheckResult:
        return getattr(importlib.import_module(f"nkflow.qualify.{module}"), name)(ctx)

    run.__name__ = name
    return run


#: (id, title, function) of every check, in report order
CHECKS: tuple[tuple[str, str, Callable[[Context], CheckResult]], ...] = (
    ("installation", "Installation", _lazy("_install", "check_installation")),
    ("gatingml", "Gating-ML 2.0 compliance", _lazy("_public", "check_gatingml")),
    ("flowjo", "FlowJo concordance", _lazy("_public", "check_flowjo")),
    ("truth_cohort", "Synthetic truth cohort", _lazy("_cohort", "check_truth_cohort")),
    ("determinism", "Determinism", _lazy("_cohort", "check_determinism")),
    ("bad_inputs", "Bad-input matrix", _lazy("_badinputs", "check_bad_inputs")),
    ("precision", "Counting precision", _lazy("_precision", "check_precision")),
    ("reference", "Lab reference set (PQ)", _lazy("_reference", "check_reference")),
)
CHECK_IDS = tuple(c[0] for c in CHECKS)


def _guarded(check_id: str, title: str, func: Callable[[Context], CheckResult], ctx: Context):
    t0 = time.perf_counter()
    try:
        result = func(ctx)
    except Exception as exc:  # noqa: BLE001 -- a crashed check is a failure that names itself
        logger.error("check %s raised:\n%s", check_id, traceback.format_exc())
        result = CheckResult(
            check_id,
            title,
            "The check did not run to completion.",
            (
                judged(
                    f"{check_id}.completed",
                    "the check runs to completion",
                    "no exception",
                    type(exc).__name__,
                    False,
                    f"{type(exc).__name__}: {exc}",
                ),
            ),
        )
    seconds = time.perf_counter() - t0
    logger.info("check %s: %s (%.0f s)", check_id, result.status, seconds)
    return result, seconds


def _inputs(ctx: Context) -> list[dict[str, str]]:
    files = [("configuration", ctx.config_path), ("reference set", ctx.reference_path)]
    return [
        {"role": role, "path": str(p), "sha256": sha256_file(p) if p.is_file() else "missing"}
        for role, p in files
        if p is not None
    ]


def run_qualification(
    out: Path,
    *,
    config: Path | None = None,
    reference: Path | None = None,
    quick: bool = False,
    workflow_dir: Path | None = None,
    cores: int = 2,
    only: Sequence[str] | None = None,
    keep_events: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Run the qualification and return the pack (the content of qualification.json).

    Parameters
    ----------
    out
        The pack's directory; workflow runs go under ``out/work``.
    config
        The lab's configuration (default: ``config/config.yaml`` of the workflow directory).
    reference
        The lab's reference set (PQ); without it that check is not run.
    quick
        The CI subset: the validation cohort is not run.
    workflow_dir
        Where ``Snakefile``, ``workflow/`` and ``config/`` are (default: the checkout beside
        the package, if it has them).
    cores
        Cores for snakemake.
    only
        Check ids to run (default: all); the others are recorded as not run.
    keep_events
        Keep the generated FCS files of the workflow runs (default: deleted at the end; they
        are regenerable from the seed and their sha256 are in the evidence).
    command
        The command line, recorded in the run block.
    """
    from nkflow import __version__
    from nkflow.qualify._install import package_dir
    from nkflow.qualify._limits import LIMITS

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wdir = workflow_dir if workflow_dir is not None else find_workflow_dir(package_dir())
    if config is None:
        config = (wdir / "config" / "config.yaml") if wdir else Path("config/config.yaml")
    ctx = Context(
        out=out,
        quick=quick,
        cores=cores,
        config_path=Path(config),
        base_dir=wdir if (wdir and config == wdir / "config" / "config.yaml") else Path.cwd(),
        reference_path=Path(reference) if reference else None,
        workflow_dir=wdir,
        public_root=public_root_from_env(),
    )
    unknown = sorted(set(only or ()) - set(CHECK_IDS))
    if unknown:
        from nkflow.errors import ConfigError

        raise ConfigError(
            f"--only: unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECK_IDS)}"
        )
    t0 = time.perf_counter()
    checks, seconds = [], {}
    for check_id, title, func in CHECKS:
        if only and check_id not in only:
            result = CheckResult(check_id, title, "Not selected for this run.",
                                 (not_run(f"{check_id}.selected", "the check is run", "",
                                          f"not selected (--only {','.join(only)})"),))  # fmt: skip
        else:
            result, seconds[check_id] = _guarded(check_id, title, func, ctx)
        checks.append(result)
    if not keep_events:
        from nkflow.qualify._workflow import remove_events

        for run, _ in ctx.runs.values():
            remove_events(run.workdir)
    from nkflow.config import config_digest, load_config
    from nkflow.errors import NkflowError
    from nkflow.provenance import software_versions

    try:
        digest = config_digest(load_config(ctx.config_path))
    except NkflowError:
        digest = ""
    return {
        "schema": SCHEMA_VERSION,
        "nkflow_version": __version__,
        "mode": "quick" if quick else "full",
        "inputs": {
            "config": str(config),
            "reference": str(reference) if reference else "",
            "only": list(only or []),
        },
        "summary": summary(checks),
        "acceptance_limits": [dataclasses.asdict(x) for x in LIMITS],
        "checks": [check_to_dict(c) for c in checks],
        "provenance": {
            "inputs": _inputs(ctx),
            "software_versions": software_versions(),
            "config_digest": digest,
        },
        "run": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "seconds": round(time.perf_counter() - t0, 1),
            "check_seconds": {k: round(v, 1) for k, v in seconds.items()},
            "out_dir": str(out.resolve()),
            "workflow_dir": str(wdir) if wdir else "",
            "command": command,
            "environment": {
                "python": f"{platform.python_implementation()} {platform.python_version()}",
                "platform": platform.platform(),
                "host": platform.node(),
                "cores": cores,
                "public_data": str(ctx.public_root or ""),
                "git": shutil.which("git") or "",
                "executable": sys.executable,
            },
        },
    }


def write_qualification(doc: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``out/qualification.json`` and ``out/qualification.html``; return both paths."""
    from nkflow.provenance import write_json
    from nkflow.qualify._html import render

    out = Path(out)
    js, page = out / "qualification.json", out / "qualification.html"
    write_json(doc, js)
    page.write_text(render(doc), encoding="utf-8")
    return js, page


def deterministic_part(doc: dict[str, Any]) -> dict[str, Any]:
    """The pack without its ``run`` block: what must not change between runs."""
    return {k: v for k, v in doc.items() if k != "run"}
