"""Stage drivers: each reads the paths its workflow rule declares, calls the pure functions and
writes its outputs. The CLI adapts them; the rules call the CLI.

Contract: a driver is the one place a stage reads and writes; it sits above the computing
modules (:mod:`nkflow.clinical.visits`, :mod:`nkflow.clinical.endpoints`,
:mod:`nkflow.review.status`), which never import it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nkflow import tables
from nkflow.clinical.endpoint_settings import settings
from nkflow.clinical.endpoints import ENDPOINT_COLUMNS, build_endpoints
from nkflow.clinical.visits import KINDS, VISIT_COLUMNS, read_visits, table_bytes
from nkflow.review.status import review_columns

if TYPE_CHECKING:
    import pandas as pd


def run_endpoints(
    config: dict[str, Any],
    visits_path: str | Path,
    outdir: str | Path,
    perturbation_path: str | Path | None = None,
    *,
    tubes_index: str | Path | None = None,
    audit_log: str | Path | None = None,
    base_dir: Path | None = None,
) -> pd.DataFrame:
    """Read visits.tsv, the infusion/response/AE sheets and (when given) the cohort
    perturbation.tsv; write every cohort output.

    With ``audit_log`` (the review trail, :mod:`nkflow.review.audit`) and ``tubes_index``
    (``cohort/tubes.tsv``), each patient's ``review_status`` and ``review_note`` say whether
    the signatures in the log still rest on the current results (:func:`review_columns`);
    without them every patient is ``not_reviewed``. The log is read, never written.
    """
    from nkflow.clinical import sheets

    s = settings(config)
    visits = read_visits(visits_path)
    infusions, _ = sheets.load_configured_infusions(config)
    patients = sorted(set(infusions["patient_id"]))
    response = adverse = None
    rp = sheets.sheet(config, "response")
    if rp is not None:
        response, _ = sheets.load_response(rp, Path(str(s["response_vocab"])), patients)
    ap = sheets.sheet(config, "adverse_events")
    if ap is not None:
        adverse, _ = sheets.load_adverse_events(ap, patients)
    perturbation = None
    if perturbation_path is not None:
        from nkflow.tables import read_tsv

        perturbation = read_tsv(Path(perturbation_path))
    endpoints = build_endpoints(config, visits, infusions, response, adverse, perturbation)
    reviews = review_columns(
        endpoints,
        visits,
        tubes_index=tubes_index,
        audit_log=audit_log,
        base_dir=Path.cwd() if base_dir is None else Path(base_dir),
    )
    write_outputs(visits, endpoints, outdir, reviews=reviews)
    return endpoints


def write_outputs(
    visits: pd.DataFrame,
    endpoints: pd.DataFrame,
    outdir: str | Path,
    reviews: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Write ``endpoints.tsv``, ``endpoints.xlsx`` and ``patients/<id>.json``.

    ``visits`` (the merge step's visits.tsv, this step's input) is read, never rewritten. Files
    whose bytes would not change are left untouched.
    """
    out = Path(outdir)
    tables.write_bytes(out / "endpoints.tsv", table_bytes(endpoints, ENDPOINT_COLUMNS))
    tables.write_xlsx(
        out / "endpoints.xlsx",
        [("endpoints", endpoints, ENDPOINT_COLUMNS), ("visits", visits, VISIT_COLUMNS)],
        KINDS,
    )
    vis = visits.to_dict(orient="records")
    distributions = endpoints.attrs.get("distributions", {})
    for rec in endpoints.to_dict(orient="records"):
        pid = str(rec["patient_id"])
        doc: dict[str, Any] = {
            "patient_id": pid,
            "endpoint": {
                c: tables.json_value(rec.get(c), KINDS.get(c, "")) for c in ENDPOINT_COLUMNS
            },
            # the signatures on this row and whether they still hold (nkflow.review)
            "review": (reviews or {}).get(pid),
            "visits": [
                {c: tables.json_value(v.get(c), KINDS.get(c, "")) for c in VISIT_COLUMNS}
                for v in vis
                if str(v["patient_id"]) == pid
            ],
        }
        if pid in distributions:
            # the day-14 donor NK/uL draws (docs/uncertainty.md), as a histogram
            doc["donor_nk_per_ul_distribution"] = distributions[pid]
        data = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        tables.write_bytes(out / "patients" / f"{pid}.json", data)
