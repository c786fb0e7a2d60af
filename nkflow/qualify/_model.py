"""The records a qualification is made of: criteria, evidence, checks, the whole pack.

Contract: plain frozen dataclasses and pure functions. A criterion's status is one of
:data:`STATUSES`; ``not_run`` means its data were absent and is never counted as passed. The
dict forms (:func:`check_to_dict`, :func:`summary`) are JSON-ready, with fixed key and row order,
and carry nothing that changes from run to run (no dates, durations or absolute paths).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PASS = "pass"
FAIL = "fail"
NOT_RUN = "not_run"
STATUSES = (PASS, FAIL, NOT_RUN)


@dataclass(frozen=True)
class Criterion:
    """One acceptance criterion and its outcome.

    Attributes
    ----------
    id : str
        Dotted, stable identifier (``gatingml.per_event``), named in failures.
    criterion : str
        What must hold, in words.
    limit : str
        The declared acceptance limit (``51/51 files, 0 events differ``).
    measured : str
        What was found ('' when not run).
    status : str
        ``pass``, ``fail`` or ``not_run``.
    reason : str
        Why it failed or was not run ('' when passed).
    """

    id: str
    criterion: str
    limit: str
    measured: str
    status: str
    reason: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"criterion {self.id}: status {self.status!r} not in {STATUSES}")


def judged(
    id: str, criterion: str, limit: str, measured: str, ok: bool, reason: str = ""
) -> Criterion:
    """A criterion that was evaluated: pass when ``ok``, else fail with ``reason``."""
    return Criterion(id, criterion, limit, measured, PASS if ok else FAIL, "" if ok else reason)


def not_run(id: str, criterion: str, limit: str, reason: str) -> Criterion:
    """A criterion whose data are absent: reported as not run, never as passed."""
    return Criterion(id, criterion, limit, "", NOT_RUN, reason)


@dataclass(frozen=True)
class Evidence:
    """A table of evidence (file hashes, counts, per-case results) under a title."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


def evidence(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], note: str = ""
) -> Evidence:
    """Build :class:`Evidence`, every cell as text (floats ``%.6g``, None as '')."""

    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v)

    return Evidence(title, tuple(columns), tuple(tuple(cell(v) for v in r) for r in rows), note)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: its criteria and evidence."""

    id: str
    title: str
    description: str
    criteria: tuple[Criterion, ...]
    evidence: tuple[Evidence, ...] = ()
    seconds: float = field(default=0.0, compare=False)

    @property
    def status(self) -> str:
        """``fail`` if any criterion failed, ``not_run`` if none ran, else ``pass``.

        A check with some criteria passed and others not run is ``pass`` here; the summary
        lists every criterion not run.
        """
        statuses = {c.status for c in self.criteria}
        if FAIL in statuses or not statuses:
            return FAIL
        if statuses == {NOT_RUN}:
            return NOT_RUN
        return PASS


def check_to_dict(check: CheckResult) -> dict[str, Any]:
    """JSON-ready form of a check (no duration: that belongs to the run block)."""
    return {
        "id": check.id,
        "title": check.title,
        "description": check.description,
        "status": check.status,
        "criteria": [asdict(c) for c in check.criteria],
        "evidence": [
            {"title": e.title, "note": e.note, "columns": list(e.columns), "rows": list(e.rows)}
            for e in check.evidence
        ],
    }


def summary(checks: Sequence[CheckResult]) -> dict[str, Any]:
    """Counts of criteria by status, the ids that failed or were not run, the overall status.

    Overall ``FAIL`` when any criterion failed, ``INCOMPLETE`` when none failed but some were
    not run, ``PASS`` when every criterion passed.
    """
    crits = [c for ch in checks for c in ch.criteria]
    failed = [c.id for c in crits if c.status == FAIL]
    skipped = [c.id for c in crits if c.status == NOT_RUN]
    overall = "FAIL" if failed else ("INCOMPLETE" if skipped else "PASS")
    return {
        "status": overall,
        "criteria": len(crits),
        "passed": sum(c.status == PASS for c in crits),
        "failed": len(failed),
        "not_run": len(skipped),
        "failed_criteria": failed,
        "not_run_criteria": skipped,
        "checks": {ch.id: ch.status for ch in checks},
    }
