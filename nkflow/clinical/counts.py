"""Absolute counts: dual-platform and single-platform (bead) counts and their 95 % intervals.

ALC units are normalised first; the intervals are from Poisson counting error.

Contract
--------
* Pure functions on numbers; no I/O, no pandas.
* A missing input gives ``None``, never 0. ALC text that is not a number (``QNS``, empty) is
  ``missing``; a negative number is ``invalid``; both keep the source value and unit.
* Units: ``cells/uL`` (x1), ``10^3/uL`` (x1000), ``10^9/L`` (x1000; 1e9/L = 1e9/1e6 uL), plus the
  aliases listed in :data:`ALC_UNIT_FACTORS` (case-insensitive, ``µ`` = ``u``).
* Intervals are on the log scale, ``v x exp(+/- z cv)``, with ``cv`` the relative standard error
  from Poisson counting statistics (:func:`dual_platform_cv`, :func:`single_platform_cv`)
  combined in quadrature with any extra relative error (the chimerism SD / % donor when % donor
  comes from STR peaks). The ALC itself is taken as exact (no analyser error model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nkflow.errors import ConfigError


@dataclass(frozen=True)
class Alc:
    """One parsed ALC value.

    Attributes
    ----------
    per_ul : float or None
        cells/uL, None unless ``status == 'ok'``.
    status : str
        ``ok``, ``missing`` (not a number) or ``invalid`` (negative).
    source_value, source_unit : str
        Verbatim from the CBC sheet.
    message : str
        Why the value is not ok ('' when ok).
    """

    per_ul: float | None
    status: str
    source_value: str
    source_unit: str
    message: str = ""


#: accepted ALC units (lower-case, no spaces, ``µ`` as ``u``) -> factor to cells/uL
ALC_UNIT_FACTORS = {
    "cells/ul": 1.0,
    "/ul": 1.0,
    "10^3/ul": 1000.0,
    "x10^3/ul": 1000.0,
    "k/ul": 1000.0,
    "10^9/l": 1000.0,
    "x10^9/l": 1000.0,
    "g/l": 1000.0,
}


def unit_factor(unit: str) -> float:
    """Return the factor that converts ``unit`` to cells/uL.

    Raises
    ------
    ConfigError
        For an unknown unit, listing the accepted ones.
    """
    key = unit.strip().replace("µ", "u").replace("μ", "u").replace(" ", "").lower()
    if key not in ALC_UNIT_FACTORS:
        raise ConfigError(
            f"ALC unit: found {unit!r}; expected cells/uL, 10^3/uL or 10^9/L; fix: write the "
            "analyser unit in the alc_unit column"
        )
    return ALC_UNIT_FACTORS[key]


def parse_alc(value: str, unit: str) -> Alc:
    """Parse one CBC cell: number -> cells/uL; QNS/empty/text -> missing; negative -> invalid."""
    factor = unit_factor(unit)
    text = value.strip()
    try:
        num = float(text)
    except ValueError:
        return Alc(None, "missing", value, unit, "not a number; expected a count, read as missing")
    if not math.isfinite(num):
        return Alc(None, "missing", value, unit, "not a finite number; read as missing")
    if num < 0:
        return Alc(None, "invalid", value, unit, "negative count; flagged invalid, not used")
    return Alc(num * factor, "ok", value, unit)


def fraction(events: int | None, parent_events: int | None) -> float | None:
    """``events / parent_events`` or None when either is missing or the parent is 0."""
    if events is None or parent_events is None or parent_events <= 0:
        return None
    return events / parent_events


def dual_platform(alc_per_ul: float | None, events: int | None, lymph_events: int | None):
    """Dual-platform count: ``ALC x events / lymphocyte-denominator events`` (cells/uL)."""
    f = fraction(events, lymph_events)
    if alc_per_ul is None or f is None:
        return None
    return alc_per_ul * f


def single_platform(
    events: int | None,
    bead_events: int | None,
    beads_per_test: float | None,
    sample_volume_ul: float | None,
) -> float | None:
    """Single-platform bead count (ISHAGE): ``events / bead_events x beads_per_test / volume``."""
    if (
        events is None
        or bead_events is None
        or bead_events <= 0
        or beads_per_test is None
        or sample_volume_ul is None
        or sample_volume_ul <= 0
    ):
        return None
    return events / bead_events * beads_per_test / sample_volume_ul


def dual_platform_cv(events: int | None, lymph_events: int | None) -> float | None:
    """Relative SE of ``events / lymph_events`` from Poisson counting error of both counts.

    ``sqrt(1/events + 1/lymph_events)``: the two counts treated as independent Poisson
    variables (the log ratio of two Poisson counts). For a subset of its own denominator this is
    conservative: the binomial value ``sqrt(1/events - 1/lymph_events)`` is smaller.
    ``events == 0`` gives None (no relative error defined).
    """
    if events is None or lymph_events is None or events <= 0 or lymph_events <= 0:
        return None
    return math.sqrt(1.0 / events + 1.0 / lymph_events)


#: relative SE of ``events / bead_events``: two independent Poisson counts, the same formula
single_platform_cv = dual_platform_cv


def interval(
    value: float | None, cv: float | None, extra_cv: float = 0.0, z: float = 1.96
) -> tuple[float | None, float | None]:
    """Log-scale interval ``value x exp(+/- z sqrt(cv^2 + extra_cv^2))`` (always >= 0)."""
    if value is None or cv is None:
        return None, None
    total = math.sqrt(cv * cv + extra_cv * extra_cv)
    return value * math.exp(-z * total), value * math.exp(z * total)
