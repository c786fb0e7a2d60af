"""The ``endpoints`` settings: their defaults and the merge with a config's ``endpoints`` block.

Contract: :func:`settings` returns ``DEFAULTS`` overlaid with the config (a new dict) or raises
:class:`~nkflow.errors.ConfigError` naming the field. Below the sheets and the endpoint code, so
both read the same settings without importing each other.
"""

from __future__ import annotations

from typing import Any

from nkflow import counts as cnt
from nkflow.errors import ConfigError

#: Where the default ``dose_range_per_kg`` comes from (stated in the report when it fires).
DOSE_RANGE_SOURCE = (
    "the protocol's dosing scheme of 2-5 x 10^6 NK cells/kg per infusion (DOMAIN.md section 1)"
)

DEFAULTS: dict[str, Any] = {
    "day0_infusion": 1,
    "target_day": 14,
    "window_before": 2,
    "window_after": 2,
    "tie_rule": "closest_then_earlier",
    "threshold_per_ul": 100.0,
    "chimerism_preference": ["CD56", "PB"],
    "chimerism_tolerance_days": 3,
    "cbc_tolerance_days": 0,
    "dose_range_per_kg": [2.0e6, 5.0e6],
    "absolute_count_method": "dual_platform",
    "lymphocyte_population": "live",
    "populations": {
        "nk": "nk",
        "nk_cd56bright": "nk_cd56bright",
        "nk_cd56dim": "nk_cd56dim",
        "cd4": "cd4",
        "treg": "treg",
        "treg_ki67": "treg_ki67",
        "beads": "beads",
    },
    "tubes": {"nk": "nk", "treg": "treg"},
    "treg_day": 7,
    "treg_window_before": 2,
    "treg_window_after": 2,
    "treg_low_pct_of_cd4": 5.0,
    "min_str_loci": 3,
    "str_outlier_sd": 2.0,
    "str_reference_min_height_frac": 0.5,
    "str_exclude_markers": ["AMEL", "DYS391", "Yindel"],
    "str_stutter_exclusion": True,
    "ci_z": 1.96,
    "low_event_count": 100,
    "chimerism_assay_limit_pct": 5.0,
    "response_vocab": "config/vocab/response_categories.yaml",
    "chimerism_fractions": "config/vocab/chimerism_fractions.yaml",
    "dose_plausible_per_kg": [1.0e5, 1.0e8],
    "kinetics_auc_window_days": [0, 28],
    "kinetics_persistence_per_ul": {
        "total_nk_per_ul": 100.0,
        "nk_cd56bright_per_ul": None,
        "nk_cd56dim_per_ul": None,
        "treg_per_ul": None,
    },
    "visit_schedule_days": [0, 7, 14, 28],
    "visit_schedule_tolerance_days": 2,
    "study_id": "NKFLOW",
}


def settings(config: dict[str, Any]) -> dict[str, Any]:
    """``DEFAULTS`` overlaid with ``config['endpoints']`` (nested dicts merged one level).

    Raises
    ------
    ConfigError
        Unknown key, unknown method or tie rule, an empty preference list.
    """
    user = dict((config or {}).get("endpoints") or {})
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"config: field 'endpoints.{unknown[0]}': unknown setting; expected one of "
            f"{', '.join(sorted(DEFAULTS))}; fix: remove or correct it (see config/README.md)"
        )
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    for k, v in user.items():
        if isinstance(DEFAULTS[k], dict):
            out[k].update(v or {})
        else:
            out[k] = v
    if out["absolute_count_method"] not in cnt.METHODS:
        raise ConfigError(
            f"config: field 'endpoints.absolute_count_method': found "
            f"{out['absolute_count_method']!r}; expected one of {', '.join(cnt.METHODS)}"
        )
    if out["tie_rule"] not in ("closest_then_earlier", "closest_then_later"):
        raise ConfigError(
            f"config: field 'endpoints.tie_rule': found {out['tie_rule']!r}; expected "
            "closest_then_earlier or closest_then_later"
        )
    lo, hi = out["dose_range_per_kg"]
    if lo > hi:
        raise ConfigError(
            f"config: field 'endpoints.dose_range_per_kg': found [{lo:g}, {hi:g}]; expected "
            "[low, high] NK cells/kg per infusion with low <= high, e.g. [2.0e+6, 5.0e+6]; "
            "fix: swap the two numbers"
        )
    if not out["chimerism_preference"]:
        raise ConfigError(
            "config: field 'endpoints.chimerism_preference': found an empty list; expected "
            "fractions in order of preference, e.g. [CD56, PB]"
        )
    return out
