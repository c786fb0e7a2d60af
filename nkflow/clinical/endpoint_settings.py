"""The ``endpoints`` block of a config as one frozen object, :class:`EndpointSettings`.

Contract: declared once, in ``workflow/schemas/endpoints.schema.yaml`` (validation and every
default, nested ones too); below the sheets and the endpoint code, so both read the same settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nkflow.errors import ConfigError
from nkflow.schemas import build_settings

#: Where the default ``dose_range_per_kg`` comes from (stated in the report when it fires).
DOSE_RANGE_SOURCE = (
    "the protocol's dosing scheme of 2-5 x 10^6 NK cells/kg per infusion (DOMAIN.md section 1)"
)


@dataclass(frozen=True)
class EndpointSettings:
    """Visit matching and the day-14 endpoint (``endpoints``); each field one schema property."""

    day0_infusion: int
    target_day: int
    window_before: int
    window_after: int
    tie_rule: str
    threshold_per_ul: float
    chimerism_preference: tuple[str, ...]
    chimerism_fractions: str
    chimerism_tolerance_days: int
    cbc_tolerance_days: int
    dose_range_per_kg: tuple[float, ...]
    absolute_count_method: str
    denominator_population: str
    populations: Mapping[str, str]
    tubes: Mapping[str, str]
    treg_day: int
    treg_window_before: int
    treg_window_after: int
    treg_low_pct_of_cd4: float
    min_str_loci: int
    str_outlier_sd: float
    str_reference_min_height_frac: float
    str_exclude_markers: tuple[str, ...]
    str_stutter_exclusion: bool
    ci_z: float
    low_event_count: int
    chimerism_assay_limit_pct: float
    response_vocab: str
    dose_plausible_per_kg: tuple[float, ...]
    kinetics_auc_window_days: tuple[int, ...]
    kinetics_persistence_per_ul: Mapping[str, float | None]
    visit_schedule_days: tuple[int, ...]
    visit_schedule_tolerance_days: int
    study_id: str

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> EndpointSettings:
        """The settings of ``config['endpoints']``; only the rule across fields is checked here.

        Raises
        ------
        ConfigError
            A value the schema refuses (the field named), or a dose range upside down.
        """
        raw = (config or {}).get("endpoints")
        s: EndpointSettings = build_settings(cls, raw, "endpoints", prefix="endpoints")
        lo, hi = s.dose_range_per_kg
        if lo > hi:
            raise ConfigError(
                f"config: field 'endpoints.dose_range_per_kg': found [{lo:g}, {hi:g}]; expected "
                "[low, high] NK cells/kg per infusion with low <= high, e.g. [2.0e+6, 5.0e+6]; "
                "fix: swap the two numbers"
            )
        return s
