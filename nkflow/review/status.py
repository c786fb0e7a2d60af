"""Each patient's review state against the run: ``review_status`` / ``review_note``.

Contract: :func:`review_columns` reads the review audit log (never writes it) and fills the two
columns of an endpoints table in place; it sits above :mod:`nkflow.clinical.endpoints` and
:mod:`nkflow.review.signing`, so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nkflow.clinical.endpoints import ENDPOINT_COLUMNS
from nkflow.clinical.visits import VISIT_COLUMNS, format_cell

if TYPE_CHECKING:
    import pandas as pd


def review_columns(
    endpoints: pd.DataFrame,
    visits: pd.DataFrame,
    *,
    tubes_index: str | Path | None,
    audit_log: str | Path | None,
    base_dir: Path,
) -> dict[str, dict[str, Any]]:
    """Fill ``review_status`` / ``review_note`` of ``endpoints`` (in place) from the audit log.

    Returns patient_id -> the review state as JSON (status, note, every signature with its
    standing), for the per-patient JSON and the report.
    """
    from nkflow.review import audit, basis, signing

    if audit_log is None or tubes_index is None or not Path(audit_log).is_file():
        endpoints["review_status"], endpoints["review_note"] = "not_reviewed", None
        return {
            str(pid): signing.ReviewState("not_reviewed", "").to_json()
            for pid in endpoints["patient_id"]
        }
    entries = audit.read(Path(audit_log))
    vtext = [
        {c: format_cell(c, r.get(c)) for c in VISIT_COLUMNS}
        for r in visits.to_dict(orient="records")
    ]
    tubes = basis.tube_records(basis.read_rows(Path(tubes_index)), base_dir)
    out: dict[str, dict[str, Any]] = {}
    status, note = [], []
    for rec in endpoints.to_dict(orient="records"):
        pid = str(rec["patient_id"])
        cells = {c: format_cell(c, rec.get(c)) for c in ENDPOINT_COLUMNS}
        state = signing.review_state(entries, pid, basis.patient_basis(pid, cells, vtext, tubes))
        status.append(state.status)
        note.append(state.note or None)
        out[pid] = state.to_json()
    endpoints["review_status"], endpoints["review_note"] = status, note
    return out
