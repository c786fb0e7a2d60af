"""QC settings: the ``qc:`` block of ``config/config.yaml`` as frozen dataclasses.

Contract: every setting is declared once, in ``workflow/schemas/qc.schema.yaml`` (type, range,
default, description; the severities in the reason registry ``reasons.yaml``;
``config/config.yaml`` carries the same values, kept in step by a test).
:meth:`QcConfig.from_dict` validates the (possibly partial) ``qc`` mapping against that schema
(:class:`~nkflow.errors.ConfigError` naming the key path, e.g. ``qc.time.bin_seconds``, what was
found and what is expected), fills every absent key with the schema's default and builds the
frozen dataclasses below, which hold no validation of their own; only the rules across fields
(``fail_frac >= warn_frac``, ``max_dead_frac_fail >= max_dead_frac``) are checked here.

The severity map says which reason codes make a tube ``PASS``, ``WARN`` or ``FAIL``. Keys are the
codes with a severity in the reason registry (:data:`nkflow.reasons.SEVERITY_KEYS`; "ok" is
always PASS); ``gate_subset_<code>`` without an entry takes ``gate_subset``, and a gate code the
registry does not know takes ``gate_flag``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from nkflow.errors import ConfigError
from nkflow.reasons import DEFAULT_SEVERITY
from nkflow.schemas import build_settings, check_against_schema, load_schema

#: Statuses a severity map may assign.
SEVERITIES = ("PASS", "WARN", "FAIL")


@functools.lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    """The qc schema, read once (only read, never modified)."""
    return load_schema("qc")


@dataclass(frozen=True)
class TimeQcConfig:
    """Time / flow-rate stability (``qc.time``); see config/config.yaml for each default's source."""

    enabled: bool
    bin_seconds: float
    min_events_per_bin: int
    min_bins: int
    rate_mad_threshold: float
    signal_mad_threshold: float
    gap_expected_events: float
    min_gap_seconds: float
    pad_bins: int
    max_removed_frac: float
    assume_timestep: float | None


@dataclass(frozen=True)
class MarginConfig:
    """Events at a channel's ``$PnR`` ceiling or the instrument floor (``qc.margins``)."""

    remove: bool
    ceiling_offset: float
    floor: float | None
    warn_frac: float
    fail_frac: float


@dataclass(frozen=True)
class FloorConfig:
    """Minimum event counts (``qc.floors``)."""

    min_total_events: int
    lymphocyte_floor_population: str | None
    min_lymphocyte_events: int
    min_numerator_events: int
    min_numerator_events_other: int


@dataclass(frozen=True)
class ViabilityConfig:
    """Dead-cell fraction among singlets (``qc.viability``)."""

    max_dead_frac: float
    max_dead_frac_fail: float | None
    populations: tuple[str, ...]


@dataclass(frozen=True)
class CompensationQcConfig:
    """Sanity of compensated data (``qc.compensation``)."""

    far_below_frac_of_range: float
    default_range: float
    max_far_below_frac: float


@dataclass(frozen=True)
class DateQcConfig:
    """The file's ``$DATE`` against the sample sheet's ``collection_date`` (``qc.dates``)."""

    max_days_after_collection: int
    max_days_before_collection: int


@dataclass(frozen=True)
class AcquisitionConfig:
    """Events the instrument detected but did not record (``qc.acquisition``)."""

    max_lost_frac: float


#: the sections of ``qc`` read into settings objects (``severity`` is a mapping)
_SECTIONS: dict[str, type] = {
    "time": TimeQcConfig,
    "margins": MarginConfig,
    "floors": FloorConfig,
    "viability": ViabilityConfig,
    "compensation": CompensationQcConfig,
    "dates": DateQcConfig,
    "acquisition": AcquisitionConfig,
}


@dataclass(frozen=True)
class QcConfig:
    """All QC settings. ``QcConfig.from_dict(None)`` holds the documented defaults."""

    time: TimeQcConfig
    margins: MarginConfig
    floors: FloorConfig
    viability: ViabilityConfig
    compensation: CompensationQcConfig
    dates: DateQcConfig
    acquisition: AcquisitionConfig
    severity: Mapping[str, str]

    def _key(self) -> tuple[Any, ...]:
        return (*(getattr(self, s) for s in _SECTIONS), tuple(sorted(self.severity.items())))

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if isinstance(other, QcConfig) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> QcConfig:
        """Build from the ``qc`` block of the workflow config.

        Parameters
        ----------
        raw
            The ``qc`` mapping (``config.get("qc", {})``); ``None`` or ``{}`` gives the defaults.

        Raises
        ------
        ConfigError
            Unknown section or key, wrong type, out-of-range value, unknown reason code or
            severity. The message names the key path, e.g. ``qc.time.bin_seconds``.
        """
        raw = {} if raw is None else raw
        check_against_schema(raw, _schema(), source="config", prefix="qc")
        sections = {
            s: build_settings(c, raw.get(s), "qc", prefix=f"qc.{s}", path=(s,))
            for s, c in _SECTIONS.items()
        }
        # the defaults overlaid with the (validated) qc.severity mapping
        severity = MappingProxyType({**DEFAULT_SEVERITY, **dict(raw.get("severity") or {})})
        cfg = cls(**sections, severity=severity)
        _check_across_fields(cfg)
        return cfg

    def severity_of(self, reason_code: str) -> str | None:
        """Severity configured for ``reason_code``; ``None`` when the code is not QC's own.

        ``ok`` is always ``PASS``. A gate code may name where it arose after a colon
        (``gate_no_valley:nk.CD56``): the part before the colon is looked up.
        ``gate_subset_<code>`` without an entry takes ``gate_subset``; any other ``gate_<code>``
        without an entry falls back to ``gate_flag``.
        """
        if reason_code == "ok":
            return "PASS"
        if reason_code in self.severity:
            return self.severity[reason_code]
        base = reason_code.split(":", 1)[0]
        if base in self.severity:
            return self.severity[base]
        if base.startswith("gate_subset_"):
            return self.severity["gate_subset"]
        if base.startswith("gate_"):
            return self.severity["gate_flag"]
        return None


def _check_across_fields(cfg: QcConfig) -> None:
    """The rules that relate two settings (the schema checks each setting alone).

    Raises
    ------
    ConfigError
        ``qc.margins.fail_frac`` below ``warn_frac``, or ``qc.viability.max_dead_frac_fail``
        below ``max_dead_frac``.
    """
    m, v = cfg.margins, cfg.viability
    if m.fail_frac < m.warn_frac:
        raise ConfigError(
            f"config: field 'qc.margins.fail_frac': found {m.fail_frac:g}, below "
            f"qc.margins.warn_frac = {m.warn_frac:g}; expected fail_frac >= warn_frac; fix: "
            "raise fail_frac or lower warn_frac"
        )
    if v.max_dead_frac_fail is not None and v.max_dead_frac_fail < v.max_dead_frac:
        raise ConfigError(
            f"config: field 'qc.viability.max_dead_frac_fail': found {v.max_dead_frac_fail:g}, "
            f"below qc.viability.max_dead_frac = {v.max_dead_frac:g}; expected the FAIL "
            "threshold to be >= the WARN threshold (or null to disable it)"
        )
