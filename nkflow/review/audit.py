"""The audit trail: an append-only JSONL file whose entries form a hash chain.

Contract
--------
Each line is one event, canonical JSON (sorted keys, no spaces)::

    {"data": {...}, "event": "signature", "patient_id": "P01", "prev_sha256": "<64 hex>",
     "seq": 7, "sha256": "<64 hex>", "time_utc": "2025-03-20T09:12:03Z", "user": "jdoe"}

* ``seq`` counts from 1 in file order; ``prev_sha256`` is the ``sha256`` of the entry before
  (64 zeros for the first); ``sha256`` is the sha256 of the entry's canonical JSON without the
  ``sha256`` key. Editing an entry breaks its own hash (and, if the hash is recomputed, the next
  entry's ``prev_sha256``); deleting or reordering entries breaks ``seq`` and the chain.
  :func:`verify` names the first entry where the chain breaks.
* Events (:data:`EVENTS`): ``run`` (a run's results opened for review), ``override`` (a gate
  correction saved), ``signature``, ``void`` (a signature found void because what it rests on
  changed), ``user`` (a user added or changed).
* :func:`append` takes an exclusive lock on the file while it reads the last entry and writes
  the new one, so two writers (the review app and ``nkflow sign``) never fork the chain. It
  refuses to append to a log whose chain is broken.
* The chain proves the order and integrity of what is in the file; removing entries from the
  *end* leaves a shorter valid chain. :func:`head` (seq and sha256 of the last entry) is printed
  by ``nkflow audit show`` and stated in each report, so a later, shorter log is detectable
  against them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nkflow.errors import AuditError

EVENTS = ("run", "override", "signature", "void", "user")
GENESIS = "0" * 64
_KEYS = {"seq", "prev_sha256", "sha256", "time_utc", "event", "user", "patient_id", "data"}


def canonical(doc: dict[str, Any]) -> str:
    """The canonical JSON text of ``doc`` (sorted keys, no whitespace, UTF-8 kept)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_sha256(entry: dict[str, Any]) -> str:
    """sha256 of an entry's canonical JSON without its own ``sha256`` key."""
    body = {k: v for k, v in entry.items() if k != "sha256"}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second with a ``Z``."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_time(utc_text: str) -> str:
    """A ``...Z`` UTC time shown in this machine's local time zone (with its offset)."""
    when = dt.datetime.strptime(utc_text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z (UTC%z)")


@dataclass(frozen=True)
class Finding:
    """One break of the chain: the line (1-based), the entry's seq if readable, and why."""

    line: int
    seq: int | None
    message: str


def _parse(path: Path) -> tuple[list[dict[str, Any]], list[Finding]]:
    """Entries in file order, and lines that are not JSON objects of the expected shape."""
    entries: list[dict[str, Any]] = []
    bad: list[Finding] = []
    if not path.is_file():
        return entries, bad
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            bad.append(Finding(i, None, f"{path} line {i}: empty line inside the log"))
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(Finding(i, None, f"{path} line {i}: not JSON ({exc.msg})"))
            continue
        if not isinstance(doc, dict) or set(doc) != _KEYS:
            got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
            bad.append(Finding(i, None, f"{path} line {i}: keys {got}; expected {sorted(_KEYS)}"))
            continue
        doc["_line"] = i
        entries.append(doc)
    return entries, bad


def verify(path: Path) -> list[Finding]:
    """Every break of the hash chain in the log at ``path`` (empty: the log is intact).

    An absent file is an empty, intact log. Findings name the line and the entry (``seq``) and
    say what is wrong: edited (its content does not match its sha256), deleted or reordered
    (``seq`` out of order, ``prev_sha256`` not the entry before).
    """
    entries, findings = _parse(Path(path))
    prev = GENESIS
    expected_seq = 1
    for e in entries:
        line, seq = e.pop("_line"), e.get("seq")
        wrong = []  # each: what is wrong with this entry, after "entry seq <seq>"
        if entry_sha256(e) != e["sha256"]:
            wrong.append(
                f"({e.get('event')}) was edited: its content does not match its sha256 "
                f"{str(e['sha256'])[:12]}..."
            )
        if seq != expected_seq:
            what = (
                "deleted (or moved) before it"
                if isinstance(seq, int) and seq > expected_seq
                else "reordered: it was moved after a later entry"
            )
            wrong.append(f"found where seq {expected_seq} was expected: entries were {what}")
        if e["prev_sha256"] != prev:
            wrong.append(
                "does not chain to the entry before it (its prev_sha256 is not that entry's "
                "sha256): an entry before it was edited, deleted, inserted or moved"
            )
        findings += [Finding(line, seq, f"{path} line {line}: entry seq {seq} {w}") for w in wrong]
        prev = str(e["sha256"])
        if isinstance(seq, int):
            expected_seq = max(expected_seq, seq + 1)
    findings.sort(key=lambda f: f.line)
    return findings


def read(path: Path) -> list[dict[str, Any]]:
    """The entries of an intact log, in order (an absent file: none).

    Raises
    ------
    AuditError
        When the chain is broken (the first finding is named; run ``nkflow audit verify``).
    """
    findings = verify(path)
    if findings:
        raise AuditError(
            f"{findings[0].message}; the audit log cannot be trusted ({len(findings)} "
            f"finding(s)); run 'nkflow audit verify' and restore the log from a backup"
        )
    entries, _ = _parse(Path(path))
    for e in entries:
        e.pop("_line", None)
    return entries


def head(path: Path) -> tuple[int, str]:
    """``(seq, sha256)`` of the last entry (``(0, GENESIS)`` for an empty log)."""
    entries = read(path)
    if not entries:
        return 0, GENESIS
    return int(entries[-1]["seq"]), str(entries[-1]["sha256"])


@contextmanager
def _locked(path: Path) -> Iterator[Any]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield fh
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def append(
    path: Path,
    event: str,
    *,
    user: str,
    patient_id: str = "",
    data: dict[str, Any] | None = None,
    time_utc: str | None = None,
) -> dict[str, Any]:
    """Append one event and return the entry as written.

    Raises
    ------
    AuditError
        ``event`` is not one of :data:`EVENTS`, or the log's chain is already broken.
    """
    if event not in EVENTS:
        raise AuditError(f"audit event {event!r} is not one of {', '.join(EVENTS)}")
    path = Path(path)
    with _locked(path) as fh:
        entries = read(path)
        last = entries[-1] if entries else None
        entry: dict[str, Any] = {
            "data": json.loads(json.dumps(data or {}, default=str)),
            "event": event,
            "patient_id": patient_id,
            "prev_sha256": GENESIS if last is None else last["sha256"],
            "seq": 1 if last is None else int(last["seq"]) + 1,
            "time_utc": time_utc or utc_now(),
            "user": user,
        }
        entry["sha256"] = entry_sha256(entry)
        fh.seek(0, os.SEEK_END)
        fh.write(canonical(entry) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return entry


def show(path: Path, users: dict[str, str] | None = None, patient: str | None = None) -> str:
    """The trail as readable text, grouped per patient (cohort-wide events first).

    ``users`` maps user id -> printed name. Times are shown in UTC and local time.
    """
    entries = read(path)
    names = users or {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault(str(e["patient_id"]), []).append(e)
    n, sha = (int(entries[-1]["seq"]), str(entries[-1]["sha256"])) if entries else (0, GENESIS)
    out = [f"audit log {path}: {len(entries)} entries, chain intact, head seq {n} sha256 {sha}"]
    for pid in sorted(groups):
        if patient is not None and pid not in (patient, ""):
            continue
        out.append("")
        out.append(f"== patient {pid} ==" if pid else "== cohort-wide ==")
        for e in groups[pid]:
            who = e["user"]
            if who in names:
                who = f"{names[who]} ({who})"
            out.append(
                f"  #{e['seq']} {e['time_utc']} [local {local_time(e['time_utc'])}] "
                f"{e['event']} by {who}: {describe(e)}"
            )
    return "\n".join(out) + "\n"


def describe(e: dict[str, Any]) -> str:
    """One line saying what an entry records."""
    d = e["data"]
    kind = e["event"]
    if kind == "override":
        return (
            f"tube {d.get('sample_id')}/{d.get('tube')} gate {d.get('gate')}: "
            f"{d.get('change', '')} reason: {d.get('reason', '')!r}"
        )
    if kind == "signature":
        row = d.get("endpoint", {})
        return (
            f"signed '{d.get('meaning')}' ({d.get('name')}): verdict {row.get('verdict', '')}, "
            f"donor NK/uL {row.get('donor_nk_per_ul', '') or 'n/a'}, resting on "
            f"{len(d.get('basis', {}))} sha256s"
        )
    if kind == "void":
        return f"signature #{d.get('signature_seq')} void: {d.get('changed', '')}"
    if kind == "user":
        return f"user {d.get('id')} {d.get('action')}: {d.get('name')} ({d.get('role')})"
    if kind == "run":
        return (
            f"results {d.get('results')} opened (endpoints.tsv sha256 "
            f"{str(d.get('endpoints_sha256', ''))[:12]}..., nkflow {d.get('nkflow_version')})"
        )
    return canonical(d)
