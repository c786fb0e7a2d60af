"""Counting precision: the Poisson CV at the event floors, and the LLOQ of NK/uL.

The floors are the configured ones; the LLOQ is the one the lymphocyte floor implies at typical
ALC values.

Contract: pure arithmetic on the lab's configuration plus the package's own counting-error
function (:func:`nkflow.clinical.counts.dual_platform_cv`, the one behind every endpoint interval), which
is checked against the model stated here. Dual-platform NK/uL = ALC x n_NK / n_lymph, with
relative SE sqrt(1/n_NK + 1/n_lymph); the LLOQ is the lowest NK/uL whose CV is at most the
declared limit (:data:`~nkflow.qualify._limits.LIMITS` ``lloq_cv``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nkflow.qualify._context import Context
from nkflow.qualify._limits import LIMIT, TYPICAL_ALC_PER_UL
from nkflow.qualify._model import CheckResult, evidence, judged

#: acquisition sizes (lymphocyte-denominator events) the LLOQ is stated for, besides the floor
LYMPH_EVENTS = (5000, 20000)


def poisson_cv(n: int) -> float:
    """CV of a Poisson count of ``n`` events, 1/sqrt(n)."""
    return 1.0 / math.sqrt(n)


def min_nk_events(lymph_events: int, cv_limit: float) -> int | None:
    """Fewest NK events with sqrt(1/n + 1/lymph_events) <= cv_limit (None if none can)."""
    room = cv_limit * cv_limit - 1.0 / lymph_events
    if room <= 1e-12:  # the denominator alone uses up the CV (float noise counts as none)
        return None
    n = max(1, math.ceil(1.0 / room))
    if n > 1 and math.sqrt(1.0 / (n - 1) + 1.0 / lymph_events) <= cv_limit:
        n -= 1  # the ceiling of a rounded quotient can be one too many
    return n


def lloq_per_ul(alc_per_ul: float, lymph_events: int, cv_limit: float) -> float | None:
    """Lowest NK/uL counted with CV <= cv_limit at this ALC and acquisition size."""
    n = min_nk_events(lymph_events, cv_limit)
    return None if n is None else alc_per_ul * n / lymph_events


def _floors(cfg: dict[str, Any], low_event_count: int) -> list[tuple[str, int]]:
    """The configured event floors, with the schema's defaults where the lab sets none."""
    from nkflow.qc import QcConfig

    qc = QcConfig.from_dict(cfg.get("qc"))
    names = ("min_numerator_events", "min_numerator_events_other", "min_lymphocyte_events",
             "min_total_events")  # fmt: skip
    out = [(f"qc.floors.{k}", getattr(qc.floors, k)) for k in names]
    out.append(("qc.time.min_events_per_bin", qc.time.min_events_per_bin))
    out.append(("endpoints.low_event_count", low_event_count))
    return [(k, int(v)) for k, v in out]


def check_precision(ctx: Context) -> CheckResult:
    """Poisson CV at the lab configuration's floors, and the NK/uL LLOQ they imply."""
    from nkflow.clinical.counts import dual_platform_cv
    from nkflow.clinical.endpoint_settings import EndpointSettings
    from nkflow.config import load_config
    from nkflow.errors import NkflowError

    title = "Counting precision"
    desc = (
        "Counting error of the endpoint under the lab's configuration: the Poisson CV "
        "(1/sqrt(n)) at each configured event floor, and the lower limit of quantitation "
        "(LLOQ) of NK/uL that the lymphocyte floor implies at typical ALC values. The same "
        "model gives each endpoint's 95 % interval (nkflow.clinical.counts)."
    )
    try:
        cfg = load_config(Path(ctx.config_path))
        settings = EndpointSettings.from_config(cfg)
    except NkflowError as exc:
        crit = judged("precision.config", "the configuration loads", "", "", False, str(exc))
        return CheckResult("precision", title, desc, (crit,))
    floors = dict(_floors(cfg, settings.low_event_count))
    cv_lim = LIMIT["lloq_cv"]
    lymph_floor = floors.get("qc.floors.min_lymphocyte_events", 0)
    threshold = settings.threshold_per_ul
    # the package's counting error against the model stated above, on the floors' grid
    grid = sorted({v for v in floors.values() if v > 0} | {1, 10, 100, 1000, *LYMPH_EVENTS})
    worst = max(
        abs((dual_platform_cv(n, m) or math.inf) - math.sqrt(1 / n + 1 / m))
        for n in grid
        for m in grid
    )
    num_floor = floors.get("qc.floors.min_numerator_events", 0)
    num_cv = poisson_cv(num_floor) if num_floor > 0 else math.inf
    typical = LIMIT["lloq_typical_alc_per_ul"]
    lloq = lloq_per_ul(typical, lymph_floor, cv_lim) if lymph_floor > 0 else None
    criteria = (
        judged(
            "precision.model",
            "the package's counting error is the Poisson model sqrt(1/n_NK + 1/n_lymph)",
            "equal to 1e-12 on every pair of the floors' grid",
            f"largest difference {worst:.1e}",
            worst <= 1e-12,
            f"nkflow.clinical.counts.dual_platform_cv differs from the model by {worst:.3g}",
        ),
        judged(
            "precision.numerator_floor",
            "a percentage at the numerator floor (qc.floors.min_numerator_events) has a "
            f"Poisson CV of at most {LIMIT['numerator_floor_cv']:.0%}",
            f"CV <= {LIMIT['numerator_floor_cv']:.0%}",
            f"{num_floor} events: CV {num_cv:.1%}",
            num_cv <= LIMIT["numerator_floor_cv"],
            f"min_numerator_events {num_floor} gives CV {num_cv:.1%}; raise it to at least "
            f"{math.ceil(1 / LIMIT['numerator_floor_cv'] ** 2)}",
        ),
        judged(
            "precision.lloq_at_threshold",
            f"at ALC {typical:g}/uL and the lymphocyte floor, the endpoint threshold "
            f"({threshold:g} NK/uL) is at or above the LLOQ (CV {cv_lim:.0%})",
            f"LLOQ <= {threshold:g} NK/uL",
            f"{lymph_floor} lymphocytes: LLOQ {lloq:.1f} NK/uL"
            if lloq
            else f"{lymph_floor} lymphocytes: no LLOQ",
            lloq is not None and lloq <= threshold,
            "raise qc.floors.min_lymphocyte_events: at this floor the threshold cannot be "
            "counted with the declared precision",
        ),
    )
    floor_rows = [(k, v, poisson_cv(v) * 100 if v > 0 else None) for k, v in floors.items()]
    sizes = ([lymph_floor] if lymph_floor > 0 else []) + list(LYMPH_EVENTS)
    lloq_rows = []
    for alc in TYPICAL_ALC_PER_UL:
        for n_l in sizes:
            value = lloq_per_ul(alc, n_l, cv_lim)
            n_thr = threshold / alc * n_l
            cv_thr = dual_platform_cv(max(1, round(n_thr)), n_l)
            lloq_rows.append(
                (alc, n_l, "floor" if n_l == lymph_floor else "", value,
                 min_nk_events(n_l, cv_lim), round(n_thr), None if cv_thr is None else cv_thr * 100)
            )  # fmt: skip
    return CheckResult(
        "precision",
        title,
        desc,
        criteria,
        (
            evidence(
                "Poisson CV at the configured floors", ["setting", "events", "CV %"], floor_rows
            ),
            evidence(
                f"LLOQ of NK/uL (counting CV <= {cv_lim:.0%})",
                [
                    "ALC /uL",
                    "lymphocyte events",
                    "",
                    "LLOQ NK/uL",
                    "NK events at LLOQ",
                    f"NK events at {threshold:g}/uL",
                    f"CV % at {threshold:g}/uL",
                ],
                lloq_rows,
                note="donor NK/uL = NK/uL x % donor / 100: at 100 % donor the LLOQ is the same; "
                "at lower chimerism it rises in proportion. The ALC itself is taken as exact.",
            ),  # fmt: skip
        ),
    )
