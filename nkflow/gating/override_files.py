"""Gate override files: one YAML file per tube and gate, written by a reviewer, read by the run.

Contract
--------
* Layout: ``<review.overrides>/<sample_id>/<tube>/<gate>.yaml`` (schema
  ``workflow/schemas/override.schema.yaml``): the old and new boundary, the author, the UTC
  time and a mandatory reason. Ids are checked against ``[A-Za-z0-9][A-Za-z0-9._-]*`` before
  any path is built, so no id can leave the directory.
* :func:`tube_files` lists a tube's override files (sorted); the workflow hands them to the tube
  job, so adding or changing one re-gates only its batch.
* :func:`read_override` validates a file (schema, and that its ids match its place) and returns
  the engine's :class:`~nkflow.gating.override.GateOverride`, carrying the file's sha256, author,
  time and reason into provenance. Errors are :class:`~nkflow.errors.ConfigError` naming the
  file and the field.
* :func:`write_override` writes atomically and refuses (``ReviewError``) when the file on disk
  is not the one the writer started from (``expected_sha256``): a second browser tab saving the
  same gate is told, and nothing is overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nkflow.errors import ConfigError, ReviewError
from nkflow.gating.override import GateOverride
from nkflow.provenance import sha256_file
from nkflow.tables import SAFE_ID

SUFFIX = ".yaml"


def check_id(kind: str, value: str) -> str:
    """``value`` if it is a safe identifier (no path separators, no ``..``), else ReviewError."""
    if not isinstance(value, str) or not SAFE_ID.match(value):
        raise ReviewError(
            f"{kind} {value!r} is not a valid identifier: expected letters, digits, '.', '_' or "
            "'-' (no '/', no '..')"
        )
    return value


def override_path(root: Path, sample_id: str, tube: str, gate: str) -> Path:
    """Where the override of one gate of one tube lives (ids validated)."""
    return (
        Path(root)
        / check_id("sample_id", sample_id)
        / check_id("tube", tube)
        / (check_id("gate", gate) + SUFFIX)
    )


def tube_files(root: Path, sample_id: str, tube: str) -> list[Path]:
    """The override files of one tube, sorted by gate (none when the directory is absent)."""
    d = Path(root) / check_id("sample_id", sample_id) / check_id("tube", tube)
    return sorted(d.glob(f"*{SUFFIX}")) if d.is_dir() else []


def file_sha256(path: Path) -> str | None:
    """sha256 of a file's bytes, None when it does not exist."""
    return sha256_file(path) if Path(path).is_file() else None


def load_doc(path: Path) -> dict[str, Any]:
    """The validated mapping of one override file.

    Raises
    ------
    ConfigError
        Not YAML, not valid against the override schema, or ids that do not match the file's
        place (``<sample_id>/<tube>/<gate>.yaml``).
    """
    import yaml

    from nkflow.schemas import check_against_schema, load_schema

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: override file unreadable ({exc}); fix or remove it") from None
    check_against_schema(doc, load_schema("override"), source=str(p))
    want = (p.parent.parent.name, p.parent.name, p.stem)
    got = (doc["sample_id"], doc["tube"], doc["gate"])
    if want != got:
        raise ConfigError(
            f"{p}: override for {'/'.join(got)} is filed under {'/'.join(want)}; expected the "
            "file at <overrides>/<sample_id>/<tube>/<gate>.yaml; move it or fix its fields"
        )
    return doc


def read_override(path: Path, label: str | None = None) -> GateOverride:
    """The gating engine's override from one file (see the module contract).

    ``label`` names the file in messages and provenance (default: ``path`` as given); the
    workflow gives paths relative to the run directory, and so must anyone predicting its
    output bytes.
    """
    p = Path(path)
    doc = load_doc(p)
    info = {
        "author": doc["author"],
        "time_utc": doc["time_utc"],
        "reason": doc["reason"],
        "sha256": file_sha256(p),
    }
    bounds = {(b["marker"], b["side"]): float(b["new"]) for b in doc.get("bounds") or []}
    # what the fit gave when the override was made (for a correction of a correction, 'old'
    # is the earlier override): a fit that lands elsewhere now makes the override stale
    old = {
        (b["marker"], b["side"]): (
            float(b["fitted"])
            if b.get("fitted") is not None
            else (None if b.get("old") is None else float(b["old"]))
        )
        for b in doc.get("bounds") or []
    }
    vert = doc.get("vertices")
    old_vert = None
    if vert is not None:
        old_vert = vert.get("fitted") if vert.get("fitted") is not None else vert.get("old")
    return GateOverride(
        gate=doc["gate"],
        bounds=bounds,
        old_bounds=old,
        vertices=None if vert is None else tuple(tuple(map(float, v)) for v in vert["new"]),
        old_vertices=None if old_vert is None else tuple(tuple(map(float, v)) for v in old_vert),
        source=label or str(p),
        info=info,
    )


def provenance_record(ov: GateOverride) -> dict[str, Any]:
    """What a tube's provenance.json records of an applied override."""
    rec: dict[str, Any] = {"gate": ov.gate, "file": ov.source, **ov.info}
    if ov.bounds:
        rec["bounds"] = [
            {"marker": m, "side": s, "old": ov.old_bounds.get((m, s)), "new": v}
            for (m, s), v in sorted(ov.bounds.items())
        ]
    if ov.vertices is not None:
        rec["vertices"] = {
            "old": None if ov.old_vertices is None else [list(v) for v in ov.old_vertices],
            "new": [list(v) for v in ov.vertices],
        }
    return rec


def describe_change(doc: dict[str, Any]) -> str:
    """``CD56 min 0.4123 -> 0.45`` (or ``vertices changed``) for logs and the report."""
    parts = []
    for b in doc.get("bounds") or []:
        old = "none" if b.get("old") is None else f"{float(b['old']):.4g}"
        parts.append(f"{b['marker']} {b['side']} {old} -> {float(b['new']):.4g}")
    if doc.get("vertices") is not None:
        parts.append(f"vertices -> {doc['vertices']['new']}")
    return "; ".join(parts)


def remove_override(path: Path, *, expected_sha256: str | None) -> str:
    """Remove one override file (the fitted boundary applies again); returns its sha256.

    Raises
    ------
    ReviewError
        The file is not the one the remover opened (changed or already removed).
    """
    import fcntl

    p = Path(path)
    with (p.parent.parent.parent / ".lock").open("a") as lk:
        fcntl.flock(lk.fileno(), fcntl.LOCK_EX)  # released when the file closes, raise or not
        now = file_sha256(p)
        if now is None or now != expected_sha256:
            raise ReviewError(
                f"{p.parent.parent.name}/{p.parent.name} gate {p.stem} changed since you "
                "opened it; nothing was removed: reload the tube and compare"
            )
        p.unlink()
    return now


def write_override(
    root: Path, doc: dict[str, Any], *, expected_sha256: str | None
) -> tuple[Path, str]:
    """Write one override file atomically; returns its path and sha256.

    ``expected_sha256`` is the sha256 of the file the writer started from (None: there was
    none). The file on disk must still be that one.

    Raises
    ------
    ReviewError
        The file changed (or appeared) since the writer read it, or the reason is missing.
    ConfigError
        The document is not a valid override.
    """
    import fcntl

    import yaml

    from nkflow.schemas import check_against_schema, load_schema

    if not str(doc.get("reason", "")).strip():
        raise ReviewError(
            f"override of {doc.get('sample_id')}/{doc.get('tube')} gate {doc.get('gate')}: a "
            "reason is mandatory; nothing was saved"
        )
    path = override_path(root, doc["sample_id"], doc["tube"], doc["gate"])
    check_against_schema(doc, load_schema("override"), source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with (Path(root) / ".lock").open("a") as lk:
        fcntl.flock(lk.fileno(), fcntl.LOCK_EX)  # released when the file closes, raise or not
        now = file_sha256(path)
        if now != expected_sha256:
            raise ReviewError(
                f"{doc['sample_id']}/{doc['tube']} gate {doc['gate']} changed since you "
                f"opened it (someone saved {path.name} in the meantime, sha256 "
                f"{(now or 'none')[:12]}...); nothing was saved: reload the tube, compare "
                "both versions and save again"
            )
        text = (
            "# nkflow gate override, written by the review app (docs/review.md).\n"
            "# Boundaries are in the gate's transformed units; do not edit by hand: the\n"
            "# audit log records this file's sha256.\n"
            + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
        )
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    sha = file_sha256(path)
    assert sha is not None
    return path, sha
