"""What a patient's endpoint rests on: its row, and the sha256 of every input and output.

Contract
--------
:func:`patient_basis` returns a :class:`Basis`: the patient's endpoints.tsv row as text (the
review columns excluded: they describe the signatures, they are not what is signed) and
``items``, a mapping from a named item to a sha256:

==============================  ============================================================
``endpoint``                    the endpoint row (text, tab-joined in column order)
``visit:<sample>``              each of the patient's visits.tsv rows (ALC, chimerism, counts
                                and QC of that visit, as the merge step joined them)
``fcs:<sample>/<tube>``         the FCS file, as read by the tube job (its provenance.json)
``panel:``/``gating:``          the panel and gate-tree files that tube used
``settings:<sample>/<tube>``    the digest of the settings the tube ran with
``fmo:<sample>/<tube>:<m>``     an FMO control tube used for marker ``m``
``override:<s>/<t>:<gate>``     a gate override applied to the tube
``counts:``/``qc:``             the tube's counts.tsv and qc.tsv
==============================  ============================================================

Sheets enter through the visit and endpoint rows (a CBC value, a chimerism result, a dose): a
change to another patient's rows does not touch this patient's basis. Every function takes text
cells exactly as the tables are written, so the endpoints step (formatting rows in memory) and
a signer (reading the written files) compute the same basis.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nkflow.clinical.endpoints import ENDPOINT_COLUMNS, REVIEW_COLUMNS
from nkflow.clinical.visits import VISIT_COLUMNS
from nkflow.errors import ReviewError

SIGNED_COLUMNS = tuple(c for c in ENDPOINT_COLUMNS if c not in REVIEW_COLUMNS)
#: endpoint cells copied into a signature as its readable summary
SUMMARY_COLUMNS = ("sample_id", "study_day", "donor_nk_per_ul", "verdict", "reason", "borderline")

_WHAT = {
    "fcs": "FCS file",
    "panel": "panel file",
    "gating": "gate tree",
    "settings": "tube settings",
    "fmo": "FMO control tube",
    "override": "gate override",
    "counts": "counts.tsv",
    "qc": "qc.tsv",
}


def sha256_text(text: str) -> str:
    """sha256 (hex) of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def endpoint_text(cells: Mapping[str, str]) -> str:
    """The signed text of an endpoint row: the non-review columns, tab-joined."""
    return "\t".join(str(cells.get(c, "")) for c in SIGNED_COLUMNS)


def visit_text(cells: Mapping[str, str]) -> str:
    """A visits.tsv row as written, tab-joined."""
    return "\t".join(str(cells.get(c, "")) for c in VISIT_COLUMNS)


@dataclass(frozen=True)
class TubeRecord:
    """One tube of the patient: its ids, its provenance.json and its output directory."""

    sample_id: str
    tube: str
    provenance: dict[str, Any]
    directory: Path


@dataclass(frozen=True)
class Basis:
    """What a signature of one patient rests on (see the module docstring)."""

    patient_id: str
    endpoint: dict[str, str]
    items: dict[str, str]
    #: ``override:<s>/<t>:<gate>`` -> the user id that wrote the override
    override_authors: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, str]:
        """The endpoint cells a signature shows (verdict, donor NK/uL, ...)."""
        return {c: self.endpoint.get(c, "") for c in SUMMARY_COLUMNS}


def _file_sha(path: Path) -> str:
    from nkflow.provenance import sha256_file

    return sha256_file(path) if path.is_file() else "absent"


def tube_items(t: TubeRecord) -> tuple[dict[str, str], dict[str, str]]:
    """The basis items of one tube, and the authors of its overrides."""
    key = f"{t.sample_id}/{t.tube}"
    p = t.provenance
    items = {
        f"fcs:{key}": str(p.get("fcs_sha256") or "absent"),
        f"panel:{key}": str(p.get("panel_sha256") or "absent"),
        f"gating:{key}": str(p.get("gating_sha256") or "absent"),
        f"settings:{key}": str(p.get("settings_sha256") or "absent"),
        f"counts:{key}": _file_sha(t.directory / "counts.tsv"),
        f"qc:{key}": _file_sha(t.directory / "qc.tsv"),
    }
    for marker, rec in sorted((p.get("fmo") or {}).items()):
        items[f"fmo:{key}:{marker}"] = str(rec.get("sha256") or "absent")
    authors = {}
    for ov in p.get("overrides") or []:
        name = f"override:{key}:{ov['gate']}"
        items[name] = str(ov["sha256"])
        authors[name] = str(ov.get("author", ""))
    return items, authors


def patient_basis(
    patient_id: str,
    endpoint: Mapping[str, str],
    visits: Iterable[Mapping[str, str]],
    tubes: Iterable[TubeRecord],
) -> Basis:
    """The basis of one patient from text rows and the patient's tubes."""
    cells = {c: str(endpoint.get(c, "")) for c in SIGNED_COLUMNS}
    items = {"endpoint": sha256_text(endpoint_text(cells))}
    samples = []
    for v in visits:
        if v.get("patient_id") == patient_id:
            items[f"visit:{v['sample_id']}"] = sha256_text(visit_text(v))
            samples.append(v["sample_id"])
    authors: dict[str, str] = {}
    for t in tubes:
        if t.sample_id in samples:
            ti, ta = tube_items(t)
            items.update(ti)
            authors.update(ta)
    return Basis(patient_id, cells, dict(sorted(items.items())), authors)


def describe_item(name: str) -> str:
    """An item name in words: ``fcs:P01-D14/nk`` -> ``FCS file of tube P01-D14/nk``."""
    if name == "endpoint":
        return "the endpoint row"
    kind, _, rest = name.partition(":")
    if kind == "visit":
        return f"visit row {rest}"
    tube, _, extra = rest.partition(":")
    what = _WHAT.get(kind, kind)
    if kind == "override":
        return f"gate override {extra} of tube {tube}"
    if kind == "fmo":
        return f"FMO control ({extra}) of tube {tube}"
    return f"{what} of tube {tube}"


def differences(
    signed: Mapping[str, str],
    current: Mapping[str, str],
    signed_endpoint: Mapping[str, str] | None = None,
    current_endpoint: Mapping[str, str] | None = None,
) -> list[str]:
    """What changed between a signed basis and the current one, in words (sorted)."""
    out = []
    for name in sorted(set(signed) | set(current)):
        a, b = signed.get(name), current.get(name)
        if a == b:
            continue
        what = describe_item(name)
        if a is None:
            out.append(f"{what} added")
        elif b is None:
            out.append(f"{what} removed")
        elif name == "endpoint" and signed_endpoint is not None and current_endpoint is not None:
            cols = [
                f"{c} {signed_endpoint.get(c, '')!r}->{current_endpoint.get(c, '')!r}"
                for c in SIGNED_COLUMNS
                if signed_endpoint.get(c, "") != current_endpoint.get(c, "")
            ]
            out.append(f"{what} changed ({', '.join(cols[:4])}{', ...' if len(cols) > 4 else ''})")
        else:
            out.append(f"{what} changed (sha256 {a[:12]}... -> {b[:12]}...)")
    return out


# ----------------------------------------------------------------------------- from a run


def read_rows(path: Path) -> list[dict[str, str]]:
    """A TSV table as text rows (every cell as written)."""
    with Path(path).open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def tube_records(index_rows: Sequence[Mapping[str, str]], base_dir: Path) -> list[TubeRecord]:
    """The tubes of a run's tube index (``cohort/tubes.tsv``) with their provenance.

    Raises
    ------
    ReviewError
        A tube's provenance.json named by the index is missing or unreadable (rerun the
        workflow).
    """
    out = []
    for r in index_rows:
        prov_path = Path(r["provenance"])
        if not prov_path.is_absolute():
            prov_path = base_dir / prov_path
        try:
            prov = json.loads(prov_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReviewError(
                f"{prov_path}: provenance of tube {r['sample_id']}/{r['tube']} unreadable "
                f"({exc}); rerun the workflow before reviewing"
            ) from None
        out.append(TubeRecord(r["sample_id"], r["tube"], prov, prov_path.parent))
    return out


def run_bases(results_dir: Path, base_dir: Path) -> dict[str, Basis]:
    """The basis of every patient of a finished run, from its written tables.

    Raises
    ------
    ReviewError
        When the run's endpoints, visits or tube index are missing (the run is not finished).
    """
    results_dir = Path(results_dir)
    paths = {
        "endpoints": results_dir / "cohort" / "endpoints.tsv",
        "visits": results_dir / "cohort" / "visits.tsv",
        "index": results_dir / "cohort" / "tubes.tsv",
    }
    for what, p in paths.items():
        if not p.is_file():
            raise ReviewError(
                f"{p}: {what} table not found; the run is not finished (run snakemake first)"
            )
    endpoints = read_rows(paths["endpoints"])
    visits = read_rows(paths["visits"])
    tubes = tube_records(read_rows(paths["index"]), base_dir)
    return {r["patient_id"]: patient_basis(r["patient_id"], r, visits, tubes) for r in endpoints}
