"""Provenance records: input hashes, software versions, digests.

Contract: functions return plain JSON-serialisable dicts with sorted keys and no timestamps, so
that a provenance file is byte-identical for identical inputs. The run date belongs only in the
HTML report.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

#: distributions whose versions are recorded with every result
TRACKED_PACKAGES = (
    "nkflow",
    "flowkit",
    "flowio",
    "flowutils",
    "numpy",
    "pandas",
    "scikit-learn",
    "matplotlib",
    "snakemake",
)


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    out = []
    for name in TRACKED_PACKAGES:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, "not installed"))
    return tuple(out)


def software_versions() -> dict[str, str]:
    """Versions of the packages in :data:`TRACKED_PACKAGES` ('not installed' when absent).

    Looked up once per process (a batch or a report asks for every tube or page).
    """
    return dict(_versions())


def write_json(doc: dict[str, Any], path: Path) -> None:
    """Write ``doc`` as canonical, indented JSON with a trailing newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, sort_keys=True, indent=2, default=str) + "\n", encoding="utf-8")
