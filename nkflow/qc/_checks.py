"""Per-tube QC checks other than time QC, the tube status and the qc.tsv table.

Contract: every function here is pure (arrays and tables in, :class:`Check` records out) and never
raises on bad *data*: too few events, NaN after compensation, saturated channels all become checks
with a status and a reason code. Only a caller's programming error (arrays of mismatched shape,
negative counts) raises ``ValueError``. A check's status comes from the severity map of the
:class:`~nkflow.qc.QcConfig`; :func:`tube_status` and :func:`checks_table` re-apply that map, so a
severity override changes the tube status without recomputing anything.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nkflow.qc._config import QcConfig

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: Allowed values of :attr:`Check.status`.
CHECK_STATUSES = ("PASS", "WARN", "FAIL", "NOT_ASSESSED")

#: Columns of ``results/tubes/{sample_id}/{tube}/qc.tsv`` (docs/DEVELOPING.md).
QC_COLUMNS = (
    "sample_id",
    "tube",
    "tube_status",
    "check",
    "status",
    "reason_code",
    "value",
    "threshold",
    "message",
)

_RANK = {"PASS": 0, "WARN": 1, "FAIL": 2}


@dataclass(frozen=True)
class Check:
    """One QC finding: a row of qc.tsv.

    Attributes
    ----------
    check
        What was checked, e.g. ``time_flow_rate``, ``events:nk``, ``margins``.
    status
        ``PASS``, ``WARN``, ``FAIL`` or ``NOT_ASSESSED``.
    reason_code
        Machine-readable reason (``ok`` when nothing was found); see ``qc.severity``.
    value
        The measured quantity (fraction, count, Poisson CV...), ``None`` when undefined.
    threshold
        The threshold it was compared with, ``None`` when not applicable.
    message
        Human-readable sentence stating what was found and what it means.
    """

    check: str
    status: str
    reason_code: str
    value: float | None
    threshold: float | None
    message: str

    def __post_init__(self) -> None:
        if self.status not in CHECK_STATUSES:
            raise ValueError(
                f"Check {self.check!r}: status {self.status!r} is not one of {CHECK_STATUSES}"
            )


def make_check(
    cfg: QcConfig,
    check: str,
    reason_code: str,
    value: float | None,
    threshold: float | None,
    message: str,
    *,
    not_assessed: bool = False,
) -> Check:
    """Build a :class:`Check` whose status is the configured severity of ``reason_code``.

    ``not_assessed=True`` gives status ``NOT_ASSESSED`` (the severity still counts towards the
    tube status, see :func:`tube_status`).
    """
    status = "NOT_ASSESSED" if not_assessed else (cfg.severity_of(reason_code) or "WARN")
    return Check(check, status, reason_code, value, threshold, message)


def effective_severity(check: Check, cfg: QcConfig) -> str:
    """What ``check`` contributes to the tube status under ``cfg`` (PASS, WARN or FAIL).

    Registered reason codes (and ``gate_*``) take their severity from ``cfg.severity``; a code
    the registry does not know keeps the check's own status, and a ``NOT_ASSESSED`` check with
    an unknown code counts as PASS.
    """
    own = check.status if check.status in _RANK else "PASS"
    return cfg.severity_of(check.reason_code) or own


def tube_status(checks: Iterable[Check], cfg: QcConfig) -> tuple[str, list[Check]]:
    """Overall status of a tube and the checks that decided it.

    Parameters
    ----------
    checks
        All checks of the tube (time QC, margins, floors, ...).
    cfg
        Its severity map decides each check's weight.

    Returns
    -------
    tuple[str, list[Check]]
        The worst severity (``FAIL`` > ``WARN`` > ``PASS``) and the checks at that severity, in
        input order (empty for ``PASS``). Their ``reason_code`` values are what the endpoint
        reports (``qc_fail:<codes>``).
    """
    checks = list(checks)
    severities = [effective_severity(c, cfg) for c in checks]
    worst = max(severities, key=_RANK.__getitem__, default="PASS")
    if worst == "PASS":
        return "PASS", []
    return worst, [c for c, sev in zip(checks, severities, strict=True) if sev == worst]


def checks_table(sample_id: str, tube: str, checks: Sequence[Check], cfg: QcConfig) -> pd.DataFrame:
    """The qc.tsv table of one tube: one row per check, columns :data:`QC_COLUMNS`.

    Row statuses are recomputed with ``cfg`` (NOT_ASSESSED stays NOT_ASSESSED) so that rows and
    ``tube_status`` always agree. ``value``/``threshold`` are float64 with NaN for ``None``.
    """
    import pandas as pd

    status, _ = tube_status(checks, cfg)
    rows = [
        {
            "sample_id": sample_id,
            "tube": tube,
            "tube_status": status,
            "check": c.check,
            "status": "NOT_ASSESSED" if c.status == "NOT_ASSESSED" else effective_severity(c, cfg),
            "reason_code": c.reason_code,
            "value": np.nan if c.value is None else float(c.value),
            "threshold": np.nan if c.threshold is None else float(c.threshold),
            "message": c.message,
        }
        for c in checks
    ]
    df = pd.DataFrame(rows, columns=list(QC_COLUMNS))
    return df.astype({"value": "float64", "threshold": "float64"})


# ------------------------------------------------------------------------------------------------
# Margin events
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MarginCount:
    """Margin events on one channel (raw scale)."""

    channel: str
    ceiling: float
    n_ceiling: int
    floor: float | None
    n_floor: int


@dataclass(frozen=True)
class MarginResult:
    """Result of :func:`margin_events`.

    ``at_margin`` marks events at a ceiling or floor of any checked channel; ``keep`` is
    ``~at_margin`` when ``qc.margins.remove`` is true and all True otherwise.
    """

    per_channel: tuple[MarginCount, ...]
    at_margin: np.ndarray
    keep: np.ndarray
    n_at_margin: int
    frac: float
    removed: bool
    checks: tuple[Check, ...]


def raw_ceiling(channel: Any, offset: float) -> float:
    """The ``$PnR`` ceiling of ``channel`` on the raw (FlowIO/FlowKit) scale.

    The top channel value is ``$PnR - offset`` (FlowCal's ``high_low`` gate uses ``$PnR - 1``);
    FlowIO then applies log amplification ``10**(f1 * v / PnR) * f0`` (``$PnE = f1,f0``, with f0 0
    read as 1) and divides by a gain ``$PnG`` other than 0 or 1. The same mapping is applied here.
    """
    pnr = float(channel.pnr)
    top = pnr - offset
    pne = getattr(channel, "pne", (0.0, 0.0)) or (0.0, 0.0)
    decades, log0 = float(pne[0]), float(pne[1])
    if decades > 0:
        top = 10 ** (decades * top / pnr) * (log0 if log0 > 0 else 1.0)
    gain = float(getattr(channel, "png", 1.0) or 1.0)
    if gain not in (0.0, 1.0):
        top = top / gain
    return top


def margin_events(
    events: np.ndarray,
    channels: Sequence[Any],
    cfg: QcConfig,
    scatter_and_key_indices: Sequence[int],
) -> MarginResult:
    """Count events at the ``$PnR`` ceiling or the instrument floor on the given channels.

    Parameters
    ----------
    events
        ``(n_events, n_channels)`` raw events (uncompensated, as read).
    channels
        One channel description per column of ``events`` (``pnn``, ``pnr`` and optionally
        ``pne``, ``png``; ``nkflow.fcs.io.Channel`` fits).
    cfg
        ``cfg.margins``: ceiling offset, floor, WARN/FAIL fractions, whether to remove.
    scatter_and_key_indices
        Column indices to check (scatter and key markers); other columns are ignored.

    Returns
    -------
    MarginResult
        Per-channel counts, the event mask, the keep mask and one ``margins`` check:
        ``margin_events_excess`` when the fraction of events at any margin is above
        ``fail_frac``, ``margin_events`` above ``warn_frac``, ``ok`` otherwise.

    Notes
    -----
    Ceiling: raw value ``>= raw_ceiling(channel)``. Floor: ``<= qc.margins.floor`` when that is
    set; otherwise the channel's observed minimum counts as a floor only when more than one event
    sits exactly on it (a pile-up, as clipped integer or baseline-restored data shows).
    """
    events = np.asarray(events, dtype=np.float64)
    if events.ndim != 2 or events.shape[1] != len(channels):
        raise ValueError(
            f"margin_events: events shape {events.shape} does not match {len(channels)} channels"
        )
    mc = cfg.margins
    n = events.shape[0]
    at_margin = np.zeros(n, dtype=bool)
    per: list[MarginCount] = []
    for i in scatter_and_key_indices:
        ch = channels[i]
        x = events[:, i]
        ceiling = raw_ceiling(ch, mc.ceiling_offset)
        hi = x >= ceiling
        if mc.floor is not None:
            floor: float | None = mc.floor
            lo = x <= mc.floor
        else:
            floor = float(np.nanmin(x)) if np.isfinite(x).any() else None
            lo = x == floor if floor is not None else np.zeros(n, dtype=bool)
            if int(lo.sum()) < 2:
                floor, lo = None, np.zeros(n, dtype=bool)
        per.append(MarginCount(str(ch.pnn), ceiling, int(hi.sum()), floor, int(lo.sum())))
        at_margin |= hi | lo
    n_at = int(at_margin.sum())
    frac = n_at / n if n else 0.0
    detail = "; ".join(
        f"{m.channel}: {m.n_ceiling} at ceiling >= {m.ceiling:.6g}, {m.n_floor} at floor"
        + (f" <= {m.floor:.6g}" if m.floor is not None else "")
        for m in per
        if m.n_ceiling or m.n_floor
    )
    action = "removed before gating" if mc.remove else "kept (qc.margins.remove: false)"
    if frac > mc.fail_frac:
        code, thr = "margin_events_excess", mc.fail_frac
    elif frac > mc.warn_frac:
        code, thr = "margin_events", mc.warn_frac
    else:
        code, thr = "ok", mc.warn_frac
    msg = (
        f"{n_at} of {n} events ({100 * frac:.2f}%) at a channel ceiling or floor"
        + (f" ({detail})" if detail else "")
        + f"; {action}"
        + (f"; above the {100 * thr:g}% limit" if code != "ok" else "")
    )
    check = make_check(cfg, "margins", code, frac, thr, msg)
    keep = ~at_margin if mc.remove else np.ones(n, dtype=bool)
    return MarginResult(tuple(per), at_margin, keep, n_at, frac, mc.remove, (check,))


# ------------------------------------------------------------------------------------------------
# Compensation sanity
# ------------------------------------------------------------------------------------------------


def compensation_sanity(
    comp_events_subset: np.ndarray,
    channel_names: Sequence[str],
    cfg: QcConfig,
    ranges: Sequence[float] | None = None,
) -> list[Check]:
    """Check compensated data for NaN/inf and gross over-compensation.

    Parameters
    ----------
    comp_events_subset
        ``(n_events, k)`` compensated fluorescence values (raw scale), any subset of events.
    channel_names
        The k channel names, for messages.
    cfg
        ``cfg.compensation``: how far below zero is "far" and the tolerated fraction.
    ranges
        ``$PnR`` of each channel; ``qc.compensation.default_range`` when ``None``.

    Returns
    -------
    list[Check]
        ``compensation_finite`` (``compensation_nonfinite`` when any value is NaN/inf) and
        ``compensation_negative`` (``over_compensation`` when on some channel more than
        ``max_far_below_frac`` of the finite values lie below
        ``-far_below_frac_of_range * range``); value = worst channel's fraction. Empty input gives
        one NOT_ASSESSED check.
    """
    x = np.asarray(comp_events_subset, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(channel_names):
        raise ValueError(
            f"compensation_sanity: events shape {x.shape} does not match "
            f"{len(channel_names)} channel names"
        )
    cc = cfg.compensation
    if x.shape[0] == 0 or x.shape[1] == 0:
        return [
            make_check(
                cfg,
                "compensation",
                "compensation_not_assessed",
                None,
                None,
                "no compensated fluorescence events to check",
                not_assessed=True,
            )
        ]
    rng = np.full(x.shape[1], cc.default_range) if ranges is None else np.asarray(ranges, float)
    finite = np.isfinite(x)
    bad_per = (~finite).sum(axis=0)
    n_bad = int(bad_per.sum())
    detail = ", ".join(
        f"{channel_names[j]}: {bad_per[j]}" for j in np.flatnonzero(bad_per).tolist()
    )
    finite_check = make_check(
        cfg,
        "compensation_finite",
        "compensation_nonfinite" if n_bad else "ok",
        float(n_bad),
        0.0,
        f"{n_bad} NaN/inf values after compensation ({detail}); the spillover matrix or its "
        "inverse is wrong for this file"
        if n_bad
        else "no NaN/inf after compensation",
    )
    limits = -cc.far_below_frac_of_range * rng
    # per channel, the fraction of its finite values below the limit (0 when none is finite)
    n_finite = finite.sum(axis=0)
    below = ((x < limits) & finite).sum(axis=0)
    fracs = np.divide(below, n_finite, out=np.zeros(x.shape[1]), where=n_finite > 0).tolist()
    worst = int(np.argmax(fracs))
    offenders = [j for j, f in enumerate(fracs) if f > cc.max_far_below_frac]
    detail = ", ".join(
        f"{channel_names[j]}: {100 * fracs[j]:.1f}% below {limits[j]:.6g}" for j in offenders
    )
    neg_check = make_check(
        cfg,
        "compensation_negative",
        "over_compensation" if offenders else "ok",
        fracs[worst],
        cc.max_far_below_frac,
        f"gross over-compensation suspected ({detail}); more than "
        f"{100 * cc.max_far_below_frac:g}% of events far below zero. Check the spillover "
        "matrix (source and channel order)"
        if offenders
        else f"largest fraction far below zero: {100 * fracs[worst]:.2f}% ({channel_names[worst]})",
    )
    return [finite_check, neg_check]


# ------------------------------------------------------------------------------------------------
# Event floors
# ------------------------------------------------------------------------------------------------


def poisson_cv(n: float) -> float | None:
    """Poisson coefficient of variation of a count, ``1/sqrt(n)``; ``None`` for ``n <= 0``."""
    return 1.0 / math.sqrt(n) if n > 0 else None


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v)


def event_floor_checks(
    counts_df: pd.DataFrame,
    cfg: QcConfig,
    endpoint_populations: Sequence[str],
    n_total: int | None = None,
) -> list[Check]:
    """Event floors: total events, lymphocytes, and the numerator of every reported population.

    Parameters
    ----------
    counts_df
        The tube's counts table: columns ``population, parent, events, parent_events,
        pct_of_parent, status`` (extra columns ignored). Rows with status other than ``ok`` are
        skipped (the counts table already says why they are missing).
    cfg
        ``cfg.floors``.
    endpoint_populations
        Populations whose numerator under ``min_numerator_events`` is ``low_numerator_events``
        (WARN by default); other populations use ``min_numerator_events_other`` and
        ``low_numerator_events_other`` (PASS, i.e. recorded only, by default).
    n_total
        Events in the file (before time QC; ``FcsSample.n_events``). When ``None``, the largest
        ``parent_events`` of a root row (empty ``parent``) is used, which counts only the events
        that survived time QC; no total check is made if there is no root row.

    Returns
    -------
    list[Check]
        ``total_events``, ``lymphocyte_events`` and one ``events:<population>`` per ok row, in
        table order. The population checks carry the Poisson CV ``1/sqrt(events)`` as ``value``
        and ``1/sqrt(floor)`` as ``threshold``. A population's denominator is its parent's
        numerator, checked on the parent's row (or the total for a root population).
    """
    fc = cfg.floors
    if fc.lymphocyte_floor_population is None:
        raise ValueError(
            "qc.floors.lymphocyte_floor_population is null: the caller resolves it to the "
            "endpoint's denominator population first (nkflow.tube._qc_config)"
        )
    missing = {"population", "parent", "events", "parent_events", "status"} - set(counts_df.columns)
    if missing:
        raise ValueError(f"event_floor_checks: counts table lacks columns {sorted(missing)}")
    rows = counts_df.to_dict("records")
    checks: list[Check] = []

    if n_total is None:
        roots = [
            r for r in rows if _is_missing(r["parent"]) and not _is_missing(r["parent_events"])
        ]
        n_total = int(max(r["parent_events"] for r in roots)) if roots else None
    if n_total is not None:
        low = n_total < fc.min_total_events
        checks.append(
            make_check(
                cfg,
                "total_events",
                "low_total_events" if low else "ok",
                float(n_total),
                float(fc.min_total_events),
                f"{n_total} events in the file"
                + (
                    f", below the floor of {fc.min_total_events} (qc.floors.min_total_events); "
                    f"too little sample was acquired"
                    if low
                    else f" (floor {fc.min_total_events})"
                ),
            )
        )

    lymph = [r for r in rows if r["population"] == fc.lymphocyte_floor_population]
    if lymph:
        r = lymph[0]
        if r["status"] != "ok" or _is_missing(r["events"]):
            checks.append(
                make_check(
                    cfg,
                    "lymphocyte_events",
                    "floor_not_assessed",
                    None,
                    float(fc.min_lymphocyte_events),
                    f"population {fc.lymphocyte_floor_population!r} was not computed "
                    f"({r.get('reason', '') or 'no reason given'})",
                    not_assessed=True,
                )
            )
        else:
            n_l = int(r["events"])
            low = n_l < fc.min_lymphocyte_events
            checks.append(
                make_check(
                    cfg,
                    "lymphocyte_events",
                    "low_lymphocyte_events" if low else "ok",
                    float(n_l),
                    float(fc.min_lymphocyte_events),
                    f"{n_l} {fc.lymphocyte_floor_population} events"
                    + (
                        f", below the floor of {fc.min_lymphocyte_events} "
                        f"(qc.floors.min_lymphocyte_events); the lymphocyte denominator is "
                        f"too small"
                        if low
                        else f" (floor {fc.min_lymphocyte_events})"
                    ),
                )
            )

    endpoint = set(endpoint_populations)
    for r in rows:
        if r["status"] != "ok" or _is_missing(r["events"]):
            continue
        pop = str(r["population"])
        n = int(r["events"])
        is_ep = pop in endpoint
        floor = fc.min_numerator_events if is_ep else fc.min_numerator_events_other
        cv = poisson_cv(n)
        thr = poisson_cv(floor)
        cv_text = f"Poisson CV 1/sqrt({n}) = {100 * cv:.1f}%" if cv is not None else "CV undefined"
        if n < floor:
            code = "low_numerator_events" if is_ep else "low_numerator_events_other"
            parent = r["parent"] if not _is_missing(r["parent"]) else "all events"
            msg = (
                f"{pop}: {n} events, below the floor of {floor}; {cv_text}; its percentage of "
                f"{parent} is imprecise and is reported with this flag"
            )
        else:
            code = "ok"
            msg = f"{pop}: {n} events (floor {floor}); {cv_text}"
        checks.append(make_check(cfg, f"events:{pop}", code, cv, thr, msg))
    return checks


# ------------------------------------------------------------------------------------------------
# Viability and gate flags
# ------------------------------------------------------------------------------------------------


def viability_check(n_dead: int | None, n_singlets: int | None, cfg: QcConfig) -> Check:
    """Fraction of dead cells among singlets against ``qc.viability`` thresholds.

    Parameters
    ----------
    n_dead
        Dead (viability-dye positive) singlets; ``None`` when the tube has no viability marker.
    n_singlets
        Singlet events (the denominator).
    cfg
        ``cfg.viability``.

    Returns
    -------
    Check
        ``viability`` with value = dead fraction (0-1): ``very_low_viability`` above
        ``max_dead_frac_fail`` (when set), ``low_viability`` above ``max_dead_frac``, ``ok``
        otherwise; NOT_ASSESSED (``viability_not_assessed``) without a marker or singlets.

    Raises
    ------
    ValueError
        Negative counts or more dead cells than singlets (a caller error).
    """
    vc = cfg.viability
    if n_dead is None or n_singlets is None or n_singlets == 0:
        why = "no viability marker in this tube" if n_dead is None else "no singlet events"
        return make_check(
            cfg,
            "viability",
            "viability_not_assessed",
            None,
            vc.max_dead_frac,
            f"viability not assessed: {why}",
            not_assessed=True,
        )
    if n_dead < 0 or n_singlets < 0 or n_dead > n_singlets:
        raise ValueError(
            f"viability_check: n_dead={n_dead}, n_singlets={n_singlets}; expected "
            f"0 <= n_dead <= n_singlets"
        )
    frac = n_dead / n_singlets
    text = f"{n_dead} of {n_singlets} singlets dead ({100 * frac:.1f}%)"
    code, limit = "ok", vc.max_dead_frac
    msg = f"{text} (limit {100 * limit:g}%)"
    if vc.max_dead_frac_fail is not None and frac > vc.max_dead_frac_fail:
        code, limit = "very_low_viability", vc.max_dead_frac_fail
        msg = f"{text}, above the FAIL limit {100 * limit:g}%"
    elif frac > vc.max_dead_frac:
        code = "low_viability"
        msg = (
            f"{text}, above the warning limit {100 * limit:g}%; "
            "sample quality (age, transport) may bias the lymphocyte subsets"
        )
    return make_check(cfg, "viability", code, frac, limit, msg)


# ------------------------------------------------------------------------------------------------
# Acquisition date
# ------------------------------------------------------------------------------------------------


def acquisition_date_check(
    fcs_date: str | None,
    collection_date: dt.date,
    cfg: QcConfig,
    fcs_name: str,
    *,
    unknown: str | None = None,
) -> Check:
    """The file's ``$DATE`` against the sample sheet's ``collection_date``.

    Parameters
    ----------
    fcs_date
        The ``$DATE`` keyword as written; ``None`` when the file has none.
    collection_date
        The draw date of the sample sheet (authoritative).
    cfg
        ``cfg.dates``: days the acquisition may follow (``max_days_after_collection``) or
        precede (``max_days_before_collection``) the draw.
    fcs_name
        The file, for the message.
    unknown
        Why ``$DATE`` is not known at all (e.g. the file could not be read); overrides
        ``fcs_date``.

    Returns
    -------
    Check
        ``acquisition_date``, value = days from collection to acquisition: ``date_mismatch``
        outside the allowance (threshold = the limit crossed, negative before the draw),
        ``ok`` inside it, NOT_ASSESSED ``date_not_assessed`` when ``$DATE`` is absent, not a
        date, or readable both day-first and month-first (``nkflow.fcs.io.parse_fcs_date``).
    """
    from nkflow.fcs.io import parse_fcs_date

    dc = cfg.dates
    after, before = dc.max_days_after_collection, dc.max_days_before_collection
    allowance = (
        f"qc.dates.max_days_after_collection = {after}, "
        f"qc.dates.max_days_before_collection = {before}"
    )

    def not_assessed(why: str) -> Check:
        return make_check(
            cfg,
            "acquisition_date",
            "date_not_assessed",
            None,
            None,
            f"{why}; the acquisition date was not compared with collection_date "
            f"{collection_date.isoformat()}",
            not_assessed=True,
        )

    if unknown is not None:
        return not_assessed(unknown)
    if fcs_date is None or not fcs_date.strip():
        return not_assessed(f"{fcs_name} has no $DATE")
    acquired = parse_fcs_date(fcs_date)
    if acquired is None:
        return not_assessed(
            f"{fcs_name}: $DATE {fcs_date!r} is not a date nkflow can read unambiguously "
            "(expected dd-mmm-yyyy, e.g. 06-FEB-2024, as FCS 3.0/3.1 write it)"
        )
    days = (acquired - collection_date).days
    seen = (
        f"{fcs_name}: $DATE {fcs_date!r} ({acquired.isoformat()}) is {abs(days)} day(s) "
        f"{'after' if days >= 0 else 'before'} collection_date {collection_date.isoformat()}"
    )
    if -before <= days <= after:
        return make_check(
            cfg, "acquisition_date", "ok", float(days), float(after), f"{seen} ({allowance})"
        )
    if days > after:
        limit = float(after)
        msg = (
            f"{seen}, later than qc.dates.max_days_after_collection = {after}; check that the "
            "file belongs to this sample and that the sheet's date is right (collection_date is "
            "used as written; a lab that acquires later raises the setting)"
        )
    else:
        limit = -float(before)
        msg = (
            f"{seen}, earlier than qc.dates.max_days_before_collection = {before}: a tube is "
            "not acquired before the draw; check that the file belongs to this sample, the "
            "sheet's date and the instrument clock (collection_date is used as written)"
        )
    return make_check(cfg, "acquisition_date", "date_mismatch", float(days), limit, msg)


def add_checks(
    table: pd.DataFrame, sample_id: str, tube: str, checks: Sequence[Check], cfg: QcConfig
) -> pd.DataFrame:
    """A tube's qc.tsv table with ``checks`` appended, ``tube_status`` updated on every row.

    The tube status is the worst severity of its checks (:func:`tube_status`), so the new
    status is the worse of the table's and the new checks' own; nothing else is recomputed.
    """
    import pandas as pd

    new = checks_table(sample_id, tube, checks, cfg)
    statuses = [str(s) for s in table["tube_status"].unique()] + [str(new["tube_status"].iloc[0])]
    worst = max(statuses, key=lambda s: _RANK.get(s, 0))
    out = pd.concat([table, new], ignore_index=True) if len(table) else new
    out["tube_status"] = worst
    return out


def events_lost_check(keywords: Mapping[str, str], n_recorded: int, cfg: QcConfig) -> Check:
    """Events the instrument detected but did not record, from ``$LOST`` and ``$ABRT``.

    FCS 3.1: ``$LOST`` is the number of events lost because the computer was busy, ``$ABRT``
    the number lost to electronic coincidence. Neither is in the DATA segment, so the file's
    ``$TOT`` events are ``1 - lost fraction`` of what passed the laser. Fractions of
    lymphocytes stay unbiased when the losses are random; a high loss says the acquisition ran
    too fast (coincidences, doublets) and a count from the tube is an undercount.

    Parameters
    ----------
    keywords
        The file's TEXT keywords (``$LOST`` and ``$ABRT`` are read, both optional).
    n_recorded
        Events in the file (``$TOT``).
    cfg
        ``cfg.acquisition.max_lost_frac``.

    Returns
    -------
    Check
        ``acquisition`` with value = (lost + aborted) / (recorded + lost + aborted):
        ``events_lost`` above ``max_lost_frac``, ``ok`` otherwise; NOT_ASSESSED
        (``events_lost_not_assessed``) when the file has neither keyword or one is not a
        whole number >= 0.
    """
    limit = cfg.acquisition.max_lost_frac
    counts: dict[str, int] = {}
    bad: list[str] = []
    for key in ("$LOST", "$ABRT"):
        raw = keywords.get(key)
        if raw is None:
            continue
        text = raw.strip()
        if text.isdigit():
            counts[key] = int(text)
        else:
            bad.append(f"{key} is {raw[:40]!r}, not a whole number >= 0")
    if bad or not counts:
        why = "; ".join(bad) if bad else "the file has neither $LOST nor $ABRT"
        return make_check(
            cfg,
            "acquisition",
            "events_lost_not_assessed",
            None,
            limit,
            f"events lost at acquisition not assessed: {why}",
            not_assessed=True,
        )
    lost = sum(counts.values())
    detected = n_recorded + lost
    frac = lost / detected if detected else 0.0
    parts = " + ".join(f"{k} {v}" for k, v in counts.items())
    text = (
        f"{parts} = {lost} events lost at acquisition, {100 * frac:.2f}% of {detected} "
        f"detected ({n_recorded} recorded)"
    )
    over = frac > limit
    return make_check(
        cfg,
        "acquisition",
        "events_lost" if over else "ok",
        frac,
        limit,
        f"{text}, above qc.acquisition.max_lost_frac {100 * limit:g}%: the acquisition ran "
        "too fast or the instrument was busy; fractions are unbiased only if the losses "
        "were random, and a count from this tube is an undercount"
        if over
        else f"{text} (limit {100 * limit:g}%)",
    )


def gate_flag_checks(
    flags: Iterable[Mapping[str, Any] | Any],
    cfg: QcConfig,
    critical: Collection[str] | None = None,
) -> list[Check]:
    """Turn the gating engine's flags into checks.

    Parameters
    ----------
    flags
        ``res.flags`` of the gating engine: mappings (or objects) with ``gate``, ``code``,
        ``message`` and optionally ``where`` (``<gate>.<marker>`` of a fitted boundary, or the
        population of an implausible share).
    cfg
        Severity of ``gate_<code>`` in ``qc.severity``, else of ``gate_flag`` (WARN by default).
    critical
        Gates the endpoints depend on. A flag on any other gate gets reason
        ``gate_subset_<code>`` (severity ``gate_subset``, WARN by default): a CD56bright fit that
        fails does not make the NK endpoint unusable. None: every gate is critical.

    Returns
    -------
    list[Check]
        One ``gate:<gate id>`` check per flag, reason code ``gate_<code>[:<where>]``; empty when
        no flags.
    """
    out = []
    for f in flags:
        get = f.get if isinstance(f, Mapping) else lambda k, d=None, f=f: getattr(f, k, d)
        gate = str(get("gate", "") or "?")
        code = str(get("code", "") or "flag")
        code = code[5:] if code.startswith("gate_") else code
        sub = critical is not None and gate not in critical
        reason = f"gate_subset_{code}" if sub else f"gate_{code}"
        where = get("where")
        if where:
            reason += f":{where}"
        message = str(get("message", "") or f"gate {gate}: {code}")
        out.append(make_check(cfg, f"gate:{gate}", reason, None, None, message))
    return out


def gate_fit_checks(fits: Iterable[Mapping[str, Any]], cfg: QcConfig) -> list[Check]:
    """One ``gate_fit`` check (PASS, a record) per boundary fitted to the tube.

    ``value`` is a 1-D boundary in gate units (empty for a shape); the message gives the method,
    the boundary in gate and channel units and the fit statistics.
    """
    out = []
    for f in fits:
        markers = "/".join(f["markers"])
        stats = ", ".join(
            f"{k} {v}" for k, v in f["stats"].items() if k not in ("components", "fallback_from")
        )
        if f["side"] == "shape":
            val = None
            where = f"{f['gate']} ({markers})"
            shape = f["value"]
            what = f"mean {shape['mean']}" if "mean" in shape else f"vertices {shape['vertices']}"
        else:
            val = float(f["value"])
            where = f"{f['gate']}.{markers} {f['side']}"
            raw = f["raw"]
            what = f"{val:.4g}" + (f" (channel value {raw:.6g})" if raw is not None else "")
        fallback = f["stats"].get("fallback_from")
        if f["method"] == "override":
            st = f["stats"]
            fitted = st.get("fitted")
            fitted_text = (
                st.get("fit_failed", "no fit")
                if fitted is None
                else (f"{float(fitted):.4g}" if f["side"] != "shape" else f"{fitted}")
            )
            msg = (
                f"{where}: boundary {what} set by {st.get('author', '?')} at "
                f"{st.get('time_utc', '?')} (override {st.get('source', '')}); the fit gave "
                f"{fitted_text}; reason: {st.get('reason', '')}"
            )
            code = "gate_override"
        else:
            msg = f"{where}: {f['method']} boundary {what}; {stats}"
            code = "gate_fit"
        if fallback:
            msg += f"; no valley ({fallback}), so the population beyond the main peak is absent"
        out.append(make_check(cfg, f"fit:{f['gate']}.{markers}", code, val, None, msg))
    return out
