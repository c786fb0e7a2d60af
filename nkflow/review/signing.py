"""Electronic signatures on a patient's endpoint, the two-person rule, and voided approvals.

Contract
--------
* :func:`sign` checks the user's password, the role (``reviewed``: reviewer or approver;
  ``approved``: approver only) and, when ``review.two_person_rule`` is on, that an approval
  rests on a *current* review by another user (so an override's author cannot approve it
  alone). It then appends a ``signature`` event recording the printed name and id, the UTC
  time (and the signer's local time), the meaning, the endpoint row and the basis
  (:mod:`nkflow.review.basis`). Any refusal raises :class:`~nkflow.errors.ReviewError` and
  writes nothing.
* A signature is *current* while every item of its basis equals the run's; otherwise, or once
  a ``void`` event names it, it is void. :func:`review_states` gives each patient's
  ``review_status`` (``approved``, ``reviewed``, ``void``, ``not_reviewed``) and a note naming
  the signers or, for a void signature, what changed. :func:`void_events` lists the ``void``
  events a writer (the review app, ``nkflow sign``) appends so that the trail says so too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nkflow.errors import ReviewError
from nkflow.review import audit
from nkflow.review.basis import Basis, differences
from nkflow.review.users import MEANINGS_BY_ROLE, User, authenticate

MEANINGS = ("reviewed", "approved")
STATUSES = ("approved", "reviewed", "void", "not_reviewed")


@dataclass(frozen=True)
class SignatureRecord:
    """A signature event as read back from the log, and whether it still holds."""

    seq: int
    user: str
    name: str
    meaning: str
    time_utc: str
    time_local: str
    void: bool
    changed: tuple[str, ...] = ()

    def manifestation(self) -> str:
        """The signature as shown on a report: printed name, id, date/time, meaning."""
        return (
            f"{self.name} ({self.user}), {self.time_utc} [local {self.time_local}]: {self.meaning}"
        )


@dataclass(frozen=True)
class ReviewState:
    """One patient's review status, its note, and every signature with its standing."""

    status: str
    note: str
    signatures: tuple[SignatureRecord, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """The state as JSON (status, note, every signature with its standing)."""
        return {
            "status": self.status,
            "note": self.note,
            "signatures": [{**asdict(s), "changed": list(s.changed)} for s in self.signatures],
        }


def _signatures(
    entries: Iterable[Mapping[str, Any]], patient_id: str, current: Basis | None
) -> list[SignatureRecord]:
    entries = list(entries)
    voided = {
        int(e["data"].get("signature_seq", 0)): str(e["data"].get("changed", ""))
        for e in entries
        if e["event"] == "void" and e["patient_id"] == patient_id
    }
    out = []
    for e in entries:
        if e["event"] != "signature" or e["patient_id"] != patient_id:
            continue
        d = e["data"]
        if current is None:
            changed = ["the patient is no longer in the results"]
        else:
            changed = differences(
                d.get("basis", {}), current.items, d.get("endpoint_cells"), current.endpoint
            )
        if not changed and int(e["seq"]) in voided:
            changed = [f"voided by the audit log ({voided[int(e['seq'])]})"]
        out.append(
            SignatureRecord(
                seq=int(e["seq"]),
                user=str(e["user"]),
                name=str(d.get("name", "")),
                meaning=str(d.get("meaning", "")),
                time_utc=str(e["time_utc"]),
                time_local=str(d.get("time_local", "")),
                void=bool(changed) or int(e["seq"]) in voided,
                changed=tuple(changed),
            )
        )
    return out


def review_state(
    entries: Iterable[Mapping[str, Any]], patient_id: str, current: Basis | None
) -> ReviewState:
    """The review status of one patient against the current basis (see the module contract)."""
    sigs = _signatures(entries, patient_id, current)
    live = [s for s in sigs if not s.void]
    approvals = [s for s in live if s.meaning == "approved"]
    reviews = [s for s in live if s.meaning == "reviewed"]
    if approvals:
        status = "approved"
        note = "; ".join(f"{s.meaning} by {s.manifestation()}" for s in [*reviews, *approvals])
    elif reviews:
        status = "reviewed"
        note = "; ".join(f"reviewed by {s.manifestation()}" for s in reviews) + "; not approved"
    elif sigs:
        status = "void"
        last = sigs[-1]
        who = ", ".join(f"{s.meaning} by {s.name} ({s.user}) {s.time_utc}" for s in sigs[::-1])
        note = f"VOID: {who}; changed since the last signature: " + "; ".join(last.changed)
    else:
        status, note = "not_reviewed", ""
    return ReviewState(status, note, tuple(sigs))


def review_states(
    entries: Iterable[Mapping[str, Any]], bases: Mapping[str, Basis]
) -> dict[str, ReviewState]:
    """:func:`review_state` for every patient of ``bases``."""
    entries = list(entries)
    return {pid: review_state(entries, pid, b) for pid, b in bases.items()}


def void_events(
    entries: Iterable[Mapping[str, Any]], bases: Mapping[str, Basis]
) -> list[dict[str, Any]]:
    """``void`` events not yet in the log for signatures whose basis changed.

    Each is ``{"patient_id", "data": {"signature_seq", "meaning", "signer", "changed"}}``.
    """
    entries = list(entries)
    logged = {
        (e["patient_id"], int(e["data"].get("signature_seq", 0)))
        for e in entries
        if e["event"] == "void"
    }
    out = []
    for pid in sorted({str(e["patient_id"]) for e in entries if e["event"] == "signature"}):
        for s in _signatures(entries, pid, bases.get(pid)):
            if s.void and (pid, s.seq) not in logged:
                out.append(
                    {
                        "patient_id": pid,
                        "data": {
                            "signature_seq": s.seq,
                            "meaning": s.meaning,
                            "signer": s.user,
                            "changed": "; ".join(s.changed),
                        },
                    }
                )
    return out


def sync_voids(log_path: Path, bases: Mapping[str, Basis], by: str = "nkflow") -> int:
    """Append the missing ``void`` events to the log; returns how many were appended."""
    new = void_events(audit.read(log_path), bases)
    for v in new:
        audit.append(log_path, "void", user=by, patient_id=v["patient_id"], data=v["data"])
    return len(new)


def check_two_person_rule(entries: Iterable[Mapping[str, Any]], user: User, basis: Basis) -> None:
    """Refuse an approval by ``user`` that no other user's current review supports.

    Raises
    ------
    ReviewError
        No current review by another user; the message names the override authors when the
        approver wrote an override of this patient.
    """
    state = review_state(entries, basis.patient_id, basis)
    others = [
        s for s in state.signatures if not s.void and s.meaning == "reviewed" and s.user != user.id
    ]
    if others:
        return
    own = sorted(k for k, a in basis.override_authors.items() if a == user.id)
    if own:
        raise ReviewError(
            f"approval of patient {basis.patient_id} by {user.id} refused (two-person rule): "
            f"{user.id} wrote {', '.join(own)} and cannot approve it alone; another user must "
            "first sign 'reviewed' on the current results"
        )
    mine = [s for s in state.signatures if not s.void and s.user == user.id]
    why = (
        f"the only current review is {user.id}'s own; the approver must not be the reviewer"
        if mine
        else "there is no current review"
    )
    raise ReviewError(
        f"approval of patient {basis.patient_id} by {user.id} refused (two-person rule): {why}; "
        "another user must first sign 'reviewed' on the current results"
    )


def sign(
    log_path: Path,
    users: Mapping[str, User],
    *,
    user_id: str,
    password: str,
    meaning: str,
    basis: Basis,
    two_person_rule: bool,
    time_utc: str | None = None,
) -> dict[str, Any]:
    """Sign one patient's current endpoint; returns the ``signature`` entry as written.

    Raises
    ------
    ReviewError
        Unknown user, wrong password, a meaning the user's role may not give, a meaning not in
        :data:`MEANINGS`, the same signature already current, or the two-person rule.
    """
    if meaning not in MEANINGS:
        raise ReviewError(f"signature meaning {meaning!r} is not one of {', '.join(MEANINGS)}")
    user = authenticate(dict(users), user_id, password)
    if meaning not in MEANINGS_BY_ROLE.get(user.role, ()):
        raise ReviewError(
            f"user {user.id} has role {user.role!r}, which may sign "
            f"{', '.join(MEANINGS_BY_ROLE.get(user.role, ())) or 'nothing'}, not {meaning!r}; "
            "an administrator changes roles with 'nkflow users add'"
        )
    entries = audit.read(log_path)
    state = review_state(entries, basis.patient_id, basis)
    if any(not s.void and s.user == user.id and s.meaning == meaning for s in state.signatures):
        raise ReviewError(
            f"patient {basis.patient_id}: {user.id} has already signed {meaning!r} on the current "
            "results; nothing was signed"
        )
    if meaning == "approved" and two_person_rule:
        check_two_person_rule(entries, user, basis)
    when = time_utc or audit.utc_now()
    data = {
        "name": user.name,
        "role": user.role,
        "meaning": meaning,
        "time_local": audit.local_time(when),
        "endpoint": basis.summary(),
        "endpoint_cells": basis.endpoint,
        "basis": basis.items,
        "override_authors": basis.override_authors,
    }
    return audit.append(
        log_path, "signature", user=user.id, patient_id=basis.patient_id, data=data, time_utc=when
    )
