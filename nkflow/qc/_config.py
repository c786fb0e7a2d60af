"""QC settings: the ``qc:`` block of ``config/config.yaml`` as frozen dataclasses.

Contract: :meth:`QcConfig.from_dict` accepts the (possibly partial) ``qc`` mapping, fills every
absent key with the documented default (the same values as ``config/config.yaml`` and
``workflow/schemas/qc.schema.yaml``), and raises :class:`~nkflow.errors.ConfigError` naming the
key path (``qc.time.bin_seconds``), the value found and the value expected. It never reads files.

The severity map says which reason codes make a tube ``PASS``, ``WARN`` or ``FAIL``. Keys are the
reason codes in :data:`REASON_CODES`, or any ``gate_<code>`` (gate flags from the gating engine,
an open set); gate codes without an entry use the severity of ``gate_flag``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from nkflow.errors import ConfigError

#: Statuses a severity map may assign.
SEVERITIES = ("PASS", "WARN", "FAIL")

#: Every reason code the qc module emits, with its default severity. "ok" (a check that found
#: nothing) is not a reason and is always PASS.
DEFAULT_SEVERITY: Mapping[str, str] = MappingProxyType(
    {
        # time / flow-rate QC
        "flow_rate_anomaly": "WARN",
        "flow_gap": "WARN",
        "signal_drift": "WARN",
        "time_excess_removed": "FAIL",
        "time_not_assessed": "WARN",
        "time_qc_disabled": "PASS",
        # margin events
        "margin_events": "WARN",
        "margin_events_excess": "FAIL",
        # event floors
        "low_total_events": "FAIL",
        "low_lymphocyte_events": "FAIL",
        "low_numerator_events": "WARN",
        "low_numerator_events_other": "PASS",
        "floor_not_assessed": "PASS",
        # viability
        "low_viability": "WARN",
        "very_low_viability": "FAIL",
        "viability_not_assessed": "PASS",
        # panel markers the file lacks: one a gate reads (or the panel requires), or one no
        # gate reads (recorded only: it changes no number)
        "missing_marker": "WARN",
        "unused_marker_missing": "PASS",
        # the file's $DATE against the sample sheet's collection_date
        "date_mismatch": "WARN",
        "date_not_assessed": "PASS",
        # events lost at acquisition ($LOST computer busy, $ABRT electronic coincidence)
        "events_lost": "WARN",
        "events_lost_not_assessed": "PASS",
        # compensation
        "compensation_nonfinite": "FAIL",
        "over_compensation": "WARN",
        "compensation_not_assessed": "PASS",
        # gates fitted to the tube (nkflow.gating.fit): a gate the endpoints depend on that
        # cannot be fitted, or whose population is implausible, leaves nothing to stand behind
        "gate_no_valley": "FAIL",
        "gate_out_of_bounds": "FAIL",
        "gate_too_few_events": "FAIL",
        "gate_no_cluster": "FAIL",
        "gate_degenerate_fit": "FAIL",
        "gate_reference_not_fitted": "FAIL",
        "gate_implausible": "FAIL",
        # ... the same on a gate no endpoint depends on (CD56bright/dim, NKT-like)
        "gate_subset": "WARN",
        # a fitted boundary, recorded
        "gate_fit": "PASS",
        # a boundary a reviewer set (review overrides), recorded with who, when and why
        "gate_override": "PASS",
        # the data under an override changed since it was made (the fit moved): review again
        "gate_override_stale": "WARN",
        # gate flags (default for any gate_<code> not listed)
        "gate_flag": "WARN",
    }
)

REASON_CODES: tuple[str, ...] = tuple(DEFAULT_SEVERITY)


def _path(*parts: str) -> str:
    return ".".join(("qc", *parts))


def _number(
    value: Any,
    where: str,
    *,
    minimum: float | None = None,
    exclusive_minimum: float | None = None,
    maximum: float | None = None,
    integer: bool = False,
) -> float:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"config {where}: found {value!r} ({type(value).__name__}); expected {kind}. "
            f"Fix the value in the qc block of config/config.yaml."
        )
    if integer and float(value) != int(value):
        raise ConfigError(f"config {where}: found {value!r}; expected an integer.")
    if not math.isfinite(float(value)):
        raise ConfigError(f"config {where}: found {value!r}; expected a finite number.")
    bounds = []
    if minimum is not None and value < minimum:
        bounds.append(f">= {minimum:g}")
    if exclusive_minimum is not None and value <= exclusive_minimum:
        bounds.append(f"> {exclusive_minimum:g}")
    if maximum is not None and value > maximum:
        bounds.append(f"<= {maximum:g}")
    if bounds:
        raise ConfigError(
            f"config {where}: found {value!r}; expected {kind} {' and '.join(bounds)}. "
            f"Fix the value in the qc block of config/config.yaml."
        )
    return int(value) if integer else float(value)


def _optional_number(value: Any, where: str, **kw: Any) -> float | None:
    return None if value is None else _number(value, where, **kw)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"config {where}: found {value!r}; expected true or false.")
    return value


def _section(raw: Any, name: str, known: tuple[str, ...]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"config {_path(name)}: found {type(raw).__name__}; expected a mapping of settings."
        )
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise ConfigError(
            f"config {_path(name)}: unknown key(s) {', '.join(unknown)}; "
            f"known keys: {', '.join(known)}. Check the spelling."
        )
    return dict(raw)


def _known(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class TimeQcConfig:
    """Time / flow-rate stability (``qc.time``); see config/config.yaml for each default's source."""

    enabled: bool = True
    bin_seconds: float = 0.1
    min_events_per_bin: int = 100
    min_bins: int = 10
    rate_mad_threshold: float = 6.0
    signal_mad_threshold: float = 6.0
    gap_expected_events: float = 20.0
    min_gap_seconds: float = 0.1
    pad_bins: int = 1
    max_removed_frac: float = 0.25
    assume_timestep: float | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> TimeQcConfig:
        """Build from ``qc.time``; absent keys take the defaults.

        Raises
        ------
        ConfigError
            Unknown key or a value of the wrong type or range.
        """
        d = _section(raw, "time", _known(cls))
        p = lambda k: _path("time", k)  # noqa: E731
        base = cls()
        return cls(
            enabled=_bool(d.get("enabled", base.enabled), p("enabled")),
            bin_seconds=_number(
                d.get("bin_seconds", base.bin_seconds), p("bin_seconds"), exclusive_minimum=0
            ),
            min_events_per_bin=int(
                _number(
                    d.get("min_events_per_bin", base.min_events_per_bin),
                    p("min_events_per_bin"),
                    minimum=10,
                    integer=True,
                )
            ),
            min_bins=int(
                _number(d.get("min_bins", base.min_bins), p("min_bins"), minimum=3, integer=True)
            ),
            rate_mad_threshold=_number(
                d.get("rate_mad_threshold", base.rate_mad_threshold),
                p("rate_mad_threshold"),
                exclusive_minimum=0,
            ),
            signal_mad_threshold=_number(
                d.get("signal_mad_threshold", base.signal_mad_threshold),
                p("signal_mad_threshold"),
                exclusive_minimum=0,
            ),
            gap_expected_events=_number(
                d.get("gap_expected_events", base.gap_expected_events),
                p("gap_expected_events"),
                exclusive_minimum=0,
            ),
            min_gap_seconds=_number(
                d.get("min_gap_seconds", base.min_gap_seconds), p("min_gap_seconds"), minimum=0
            ),
            pad_bins=int(
                _number(d.get("pad_bins", base.pad_bins), p("pad_bins"), minimum=0, integer=True)
            ),
            max_removed_frac=_number(
                d.get("max_removed_frac", base.max_removed_frac),
                p("max_removed_frac"),
                minimum=0,
                maximum=1,
            ),
            assume_timestep=_optional_number(
                d.get("assume_timestep", base.assume_timestep),
                p("assume_timestep"),
                exclusive_minimum=0,
            ),
        )


@dataclass(frozen=True)
class MarginConfig:
    """Events at a channel's ``$PnR`` ceiling or the instrument floor (``qc.margins``)."""

    remove: bool = False
    ceiling_offset: float = 1.0
    floor: float | None = None
    warn_frac: float = 0.05
    fail_frac: float = 0.25

    @classmethod
    def from_dict(cls, raw: Any) -> MarginConfig:
        """Build from ``qc.margins``; absent keys take the defaults.

        Raises
        ------
        ConfigError
            Unknown key or a value of the wrong type or range.
        """
        d = _section(raw, "margins", _known(cls))
        p = lambda k: _path("margins", k)  # noqa: E731
        base = cls()
        out = cls(
            remove=_bool(d.get("remove", base.remove), p("remove")),
            ceiling_offset=_number(
                d.get("ceiling_offset", base.ceiling_offset), p("ceiling_offset"), minimum=0
            ),
            floor=_optional_number(d.get("floor", base.floor), p("floor")),
            warn_frac=_number(
                d.get("warn_frac", base.warn_frac), p("warn_frac"), minimum=0, maximum=1
            ),
            fail_frac=_number(
                d.get("fail_frac", base.fail_frac), p("fail_frac"), minimum=0, maximum=1
            ),
        )
        if out.fail_frac < out.warn_frac:
            raise ConfigError(
                f"config {p('fail_frac')}: found {out.fail_frac:g}, below "
                f"{p('warn_frac')} = {out.warn_frac:g}; expected fail_frac >= warn_frac."
            )
        return out


@dataclass(frozen=True)
class FloorConfig:
    """Minimum event counts (``qc.floors``)."""

    min_total_events: int = 1000
    lymphocyte_population: str = "lymphocytes"
    min_lymphocyte_events: int = 500
    min_numerator_events: int = 100
    min_numerator_events_other: int = 100

    @classmethod
    def from_dict(cls, raw: Any) -> FloorConfig:
        """Build from ``qc.floors``; absent keys take the defaults.

        Raises
        ------
        ConfigError
            Unknown key or a value of the wrong type or range.
        """
        d = _section(raw, "floors", _known(cls))
        p = lambda k: _path("floors", k)  # noqa: E731
        base = cls()
        pop = d.get("lymphocyte_population", base.lymphocyte_population)
        if not isinstance(pop, str) or not pop.strip():
            raise ConfigError(
                f"config {p('lymphocyte_population')}: found {pop!r}; expected a population id "
                f"from the gate tree, e.g. 'lymphocytes'."
            )

        def count(key: str) -> int:
            return int(_number(d.get(key, getattr(base, key)), p(key), minimum=0, integer=True))

        return cls(
            min_total_events=count("min_total_events"),
            lymphocyte_population=pop,
            min_lymphocyte_events=count("min_lymphocyte_events"),
            min_numerator_events=count("min_numerator_events"),
            min_numerator_events_other=count("min_numerator_events_other"),
        )


@dataclass(frozen=True)
class ViabilityConfig:
    """Dead-cell fraction among singlets (``qc.viability``)."""

    max_dead_frac: float = 0.25
    max_dead_frac_fail: float | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> ViabilityConfig:
        """Build from ``qc.viability``; absent keys take the defaults.

        Raises
        ------
        ConfigError
            Unknown key or a value of the wrong type or range.
        """
        d = _section(raw, "viability", _known(cls))
        p = lambda k: _path("viability", k)  # noqa: E731
        base = cls()
        out = cls(
            max_dead_frac=_number(
                d.get("max_dead_frac", base.max_dead_frac), p("max_dead_frac"), minimum=0, maximum=1
            ),
            max_dead_frac_fail=_optional_number(
                d.get("max_dead_frac_fail", base.max_dead_frac_fail),
                p("max_dead_frac_fail"),
                minimum=0,
                maximum=1,
            ),
        )
        if out.max_dead_frac_fail is not None and out.max_dead_frac_fail < out.max_dead_frac:
            raise ConfigError(
                f"config {p('max_dead_frac_fail')}: found {out.max_dead_frac_fail:g}, below "
                f"{p('max_dead_frac')} = {out.max_dead_frac:g}; expected the FAIL threshold to be "
                f">= the WARN threshold (or null to disable it)."
            )
        return out


@dataclass(frozen=True)
class CompensationQcConfig:
    """Sanity of compensated data (``qc.compensation``)."""

    far_below_frac_of_range: float = 0.01
    default_range: float = 262144.0
    max_far_below_frac: float = 0.05

    @classmethod
    def from_dict(cls, raw: Any) -> CompensationQcConfig:
        """Build from ``qc.compensation``; absent keys take the defaults.

        Raises
        ------
        ConfigError
            Unknown key or a value of the wrong type or range.
        """
        d = _section(raw, "compensation", _known(cls))
        p = lambda k: _path("compensation", k)  # noqa: E731
        base = cls()
        return cls(
            far_below_frac_of_range=_number(
                d.get("far_below_frac_of_range", base.far_below_frac_of_range),
                p("far_below_frac_of_range"),
                exclusive_minimum=0,
                maximum=1,
            ),
            default_range=_number(
                d.get("default_range", base.default_range), p("default_range"), exclusive_minimum=0
            ),
            max_far_below_frac=_number(
                d.get("max_far_below_frac", base.max_far_below_frac),
                p("max_far_below_frac"),
                minimum=0,
                maximum=1,
            ),
        )


@dataclass(frozen=True)
class DateQcConfig:
    """The file's ``$DATE`` against the sample sheet's ``collection_date`` (``qc.dates``)."""

    max_days_after_collection: int = 1
    max_days_before_collection: int = 0

    @classmethod
    def from_dict(cls, raw: Any) -> DateQcConfig:
        """Build from ``qc.dates``; absent keys take the defaults.

        Raises
        ------
        ConfigError
            Unknown key or a value of the wrong type or range.
        """
        d = _section(raw, "dates", _known(cls))
        base = cls()

        def days(key: str) -> int:
            where = _path("dates", key)
            return int(_number(d.get(key, getattr(base, key)), where, minimum=0, integer=True))

        return cls(
            max_days_after_collection=days("max_days_after_collection"),
            max_days_before_collection=days("max_days_before_collection"),
        )


@dataclass(frozen=True)
class AcquisitionConfig:
    """Events the instrument detected but did not record (``qc.acquisition``)."""

    max_lost_frac: float = 0.05

    @classmethod
    def from_dict(cls, raw: Any) -> AcquisitionConfig:
        """Build from ``qc.acquisition``; absent keys take the defaults.

        Raises
        ------
        ConfigError
            Unknown key or a value of the wrong type or range.
        """
        d = _section(raw, "acquisition", _known(cls))
        base = cls()
        return cls(
            max_lost_frac=_number(
                d.get("max_lost_frac", base.max_lost_frac),
                _path("acquisition", "max_lost_frac"),
                minimum=0,
                maximum=1,
            )
        )


def _severity_map(raw: Any) -> Mapping[str, str]:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"config qc.severity: found {type(raw).__name__}; expected a mapping "
            f"reason_code -> PASS | WARN | FAIL."
        )
    merged = dict(DEFAULT_SEVERITY)
    for key, value in raw.items():
        if not isinstance(key, str) or (
            key not in DEFAULT_SEVERITY and not key.startswith("gate_")
        ):
            raise ConfigError(
                f"config qc.severity: unknown reason code {key!r}; known codes: "
                f"{', '.join(REASON_CODES)} (or gate_<code> for a gating-engine flag)."
            )
        if value not in SEVERITIES:
            raise ConfigError(
                f"config qc.severity.{key}: found {value!r}; expected one of "
                f"{', '.join(SEVERITIES)} (upper case)."
            )
        merged[key] = value
    return MappingProxyType(merged)


_SECTIONS = (
    "time",
    "margins",
    "floors",
    "viability",
    "compensation",
    "dates",
    "acquisition",
    "severity",
)


@dataclass(frozen=True)
class QcConfig:
    """All QC settings. ``QcConfig()`` holds the documented defaults."""

    time: TimeQcConfig = field(default_factory=TimeQcConfig)
    margins: MarginConfig = field(default_factory=MarginConfig)
    floors: FloorConfig = field(default_factory=FloorConfig)
    viability: ViabilityConfig = field(default_factory=ViabilityConfig)
    compensation: CompensationQcConfig = field(default_factory=CompensationQcConfig)
    dates: DateQcConfig = field(default_factory=DateQcConfig)
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)
    severity: Mapping[str, str] = field(default_factory=lambda: _severity_map(None))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QcConfig):
            return NotImplemented
        return all(
            getattr(self, s) == getattr(other, s) for s in _SECTIONS if s != "severity"
        ) and dict(self.severity) == dict(other.severity)

    def __hash__(self) -> int:
        return hash(
            (
                self.time,
                self.margins,
                self.floors,
                self.viability,
                self.compensation,
                self.dates,
                self.acquisition,
                tuple(sorted(self.severity.items())),
            )
        )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> QcConfig:
        """Build from the ``qc`` block of the workflow config.

        Parameters
        ----------
        raw
            The ``qc`` mapping (``config.get("qc", {})``); ``None`` or ``{}`` gives the defaults.

        Returns
        -------
        QcConfig

        Raises
        ------
        ConfigError
            Unknown section or key, wrong type, out-of-range value, unknown reason code or
            severity. The message names the key path, e.g. ``qc.time.bin_seconds``.
        """
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"config qc: found {type(raw).__name__}; expected a mapping with sections "
                f"{', '.join(_SECTIONS)}."
            )
        unknown = sorted(str(k) for k in raw if k not in _SECTIONS)
        if unknown:
            raise ConfigError(
                f"config qc: unknown section(s) {', '.join(unknown)}; known sections: "
                f"{', '.join(_SECTIONS)}."
            )
        return cls(
            time=TimeQcConfig.from_dict(raw.get("time")),
            margins=MarginConfig.from_dict(raw.get("margins")),
            floors=FloorConfig.from_dict(raw.get("floors")),
            viability=ViabilityConfig.from_dict(raw.get("viability")),
            compensation=CompensationQcConfig.from_dict(raw.get("compensation")),
            dates=DateQcConfig.from_dict(raw.get("dates")),
            acquisition=AcquisitionConfig.from_dict(raw.get("acquisition")),
            severity=_severity_map(raw.get("severity")),
        )

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
