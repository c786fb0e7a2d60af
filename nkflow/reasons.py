"""The reason-code registry (``nkflow/schemas/reasons.yaml``) and the record stages exchange.

Contract: :data:`CODES` maps every reason code nkflow writes into a table (QC checks, the gating
engine's reasons for a population not computed, visit and endpoint reasons, flags, uncertainty
statuses) to its :class:`Code`: emitting stage, where it is written, a one-line meaning and, for a
QC check code, its default severity. :data:`DEFAULT_SEVERITY` holds the codes ``qc.severity`` may
set (:data:`SEVERITY_KEYS` every key it accepts); the qc schema takes its keys and defaults from
them (:func:`nkflow.schemas.load_schema`). A :class:`Reason` is a code with its detail
(``missing_marker:CD56``): how one stage hands a reason to the next through a table cell, and
how the next reads it back. The registry is
data (beside the schemas that read it), so adding a code is one YAML entry; a test fails on a
code the package emits that is not registered. Foundation layer: imports nothing else of nkflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import yaml

REGISTRY_FILE = Path(__file__).resolve().parent / "schemas" / "reasons.yaml"


@dataclass(frozen=True)
class Code:
    """One registered reason code (see the header of ``reasons.yaml`` for each field)."""

    code: str
    stage: str
    written_in: tuple[str, ...]
    meaning: str
    severity: str | None = None
    subset_key: bool = False


def _load() -> Mapping[str, Code]:
    with REGISTRY_FILE.open(encoding="utf-8") as fh:
        codes = yaml.safe_load(fh)["codes"]
    return MappingProxyType(
        {c: Code(c, **{**e, "written_in": tuple(e["written_in"])}) for c, e in codes.items()}
    )


#: Every reason code, in the registry's order.
CODES: Mapping[str, Code] = _load()

#: The QC check codes ``qc.severity`` may set, with their default severities.
DEFAULT_SEVERITY: Mapping[str, str] = MappingProxyType(
    {c: e.severity for c, e in CODES.items() if e.severity is not None}
)

#: Every key ``qc.severity`` accepts: those codes, and gate_subset_<code> for each gate flag code
#: (the flag on a gate no endpoint depends on; without an entry it takes gate_subset's severity).
SEVERITY_KEYS: tuple[str, ...] = (
    *DEFAULT_SEVERITY,
    *(f"gate_subset_{c[5:]}" for c, e in CODES.items() if e.subset_key),
)


@dataclass(frozen=True)
class Reason:
    """A reason code and its detail, as written into a table cell by ``str()``.

    Not checked against the registry here: a table read back may hold any text (a reader shows
    it, never crashes on it); the test suite fails on a literal code the package emits that is
    not registered.
    """

    code: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.code}:{self.detail}" if self.detail else self.code

    @classmethod
    def parse(cls, text: str) -> Reason:
        """The reason written as ``code`` or ``code:detail`` (the detail may hold colons)."""
        code, _, detail = text.partition(":")
        return cls(code, detail)
