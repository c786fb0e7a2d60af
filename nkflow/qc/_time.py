"""Time / flow-rate stability QC: find and remove acquisition stretches that are not steady.

Contract: :func:`time_qc` is pure. It takes the Time column, a few key signals and ``$TIMESTEP``,
and returns a :class:`TimeQcResult` whose ``keep`` mask drops the events of anomalous time bins,
the removed ranges in seconds and the checks to record. It never raises on bad data: a missing
Time channel, a missing ``$TIMESTEP``, a non-monotonic clock or too few events give a
``NOT_ASSESSED`` check and keep every event.

Method (after flowAI, Monaco et al. Bioinformatics 2016, and PeacoQC, Emmaneel et al. Cytometry A
2022): split the acquisition into equal time bins (``qc.time.bin_seconds``, flowAI's
``second_fraction`` of 0.1 s, widened so that a bin expects at least ``min_events_per_bin``
events, and made of whole clock ticks when the Time channel is coarse, e.g. 0.1 s ticks); flag
bins whose event count or signal location lies more than ``rate_mad_threshold`` /
``signal_mad_threshold`` robust SDs (1.4826 x MAD, PeacoQC's MAD rule, default 6) from the median
of all bins. The signal location of a bin is the mean of its events' ranks within the whole file
(0-1): unlike a bin median it is stable for bimodal markers (a CD3 median sits in the valley
between T and non-T cells and jumps between modes) and it does not depend on the transform the
caller applied. The robust SD is floored at the sampling noise of a steady acquisition (Poisson
``sqrt(count)`` for counts, ``1/sqrt(12 count)`` for a mean rank) so that a perfectly steady file
flags nothing. Gaps (clogs: no event for longer than ``gap_expected_events`` events at
the median rate, and at least ``min_gap_seconds``) flag the bins they touch. Flagged bins are
widened by ``pad_bins`` on each side, since anomalies rarely start on a bin edge.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from nkflow.qc._checks import Check, make_check
from nkflow.qc._config import QcConfig

logger = logging.getLogger(__name__)

#: Bins narrower than this many clock ticks are aligned to whole ticks (aliasing <= 2 %).
_ALIGN_TICKS = 50


@dataclass(frozen=True)
class TimeQcResult:
    """Outcome of :func:`time_qc`.

    Attributes
    ----------
    keep
        Events to keep (all True when not assessed).
    assessed
        False when time QC could not run (see the ``time_qc`` check's message).
    removed_ranges
        ``(start_s, end_s)`` of removed stretches, on the Time channel's scale in seconds.
    n_removed
        Events removed.
    checks
        Checks for qc.tsv.
    bin_seconds
        Width of the time bins (NaN when not assessed).
    gaps
        ``(start_s, end_s)`` of detected gaps (clogs).
    """

    keep: np.ndarray
    assessed: bool
    removed_ranges: list[tuple[float, float]]
    n_removed: int
    checks: list[Check]
    bin_seconds: float = math.nan
    gaps: list[tuple[float, float]] = field(default_factory=list)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) index of each run of True values."""
    if not flags.any():
        return []
    padded = np.concatenate(([False], flags, [False])).astype(np.int8)
    d = np.diff(padded)
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _mid_ranks(x: np.ndarray) -> np.ndarray | None:
    """Mid-ranks of ``x`` scaled to (0, 1): ``(#below + #below-or-equal) / (2 n)``.

    ``None`` when all values are equal (nothing to rank).
    """
    m = x.size
    order = np.argsort(x)
    xs = x[order]
    if m == 0 or xs[0] == xs[-1]:
        return None
    bounds = np.flatnonzero(np.diff(xs)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [m]))
    mid = np.repeat((starts + ends) / (2.0 * m), ends - starts)
    out = np.empty(m)
    out[order] = mid
    return out


def _fmt_ranges(ranges: list[tuple[float, float]], limit: int = 8) -> str:
    parts = [f"{a:.2f}-{b:.2f} s" for a, b in ranges[:limit]]
    if len(ranges) > limit:
        parts.append(f"... ({len(ranges) - limit} more)")
    return ", ".join(parts)


def time_in_seconds(
    time: np.ndarray, timestep: float | None, time_pnn: str = "Time", assume: float | None = None
) -> tuple[np.ndarray | None, str]:
    """Convert the Time column as read into seconds.

    FlowIO (hence FlowKit's raw events and ``nkflow.fcs.io``) already multiplies the channel whose
    ``$PnN`` is ``time`` (any case) by ``$TIMESTEP``; any other time channel (``HDR-T``) is still
    in clock ticks and is multiplied here.

    Returns
    -------
    tuple
        Seconds (``None`` when no valid timestep is known) and a note for messages.
    """
    t = np.asarray(time, dtype=np.float64)
    flowio_scaled = time_pnn.strip().lower() == "time"
    if timestep is not None and math.isfinite(timestep) and timestep > 0:
        if flowio_scaled:
            return t, f"Time scaled by $TIMESTEP {timestep:g} s in the reader"
        return t * float(timestep), f"Time scaled by $TIMESTEP {timestep:g} s"
    if assume is not None:
        return t * assume, f"no valid $TIMESTEP ({timestep!r}); assumed {assume:g} s per unit"
    return None, f"no valid $TIMESTEP ({timestep!r})"


def time_qc(
    time: np.ndarray | None,
    signals: Mapping[str, np.ndarray],
    timestep: float | None,
    cfg: QcConfig,
    *,
    time_pnn: str = "Time",
) -> TimeQcResult:
    """Flow-rate and signal stability over acquisition time.

    Parameters
    ----------
    time
        The Time column exactly as ``nkflow.fcs.io.FcsSample.events`` holds it (FlowKit raw scale), in
        acquisition order; ``None`` when the file has no Time channel.
    signals
        Key channels, name -> 1-D array of the same length (raw or transformed FSC-A, SSC-A, CD3,
        CD56...; any monotone transform gives the same result). May be empty (then only the
        event rate is checked).
    timestep
        ``$TIMESTEP`` in seconds per unit, ``None`` when absent.
    cfg
        ``cfg.time`` settings and the severity map.
    time_pnn
        ``$PnN`` of the time channel: ``Time``/``TIME`` is already in seconds (FlowIO scaled it),
        anything else is multiplied by ``timestep``.

    Returns
    -------
    TimeQcResult
        ``keep`` mask, removed ranges in seconds and checks ``time_flow_rate``, ``time_gap``,
        ``time_signal``, ``time_removed`` (or one NOT_ASSESSED ``time_qc`` check).

    Raises
    ------
    ValueError
        A signal's length differs from the Time column's (a caller error).
    """
    tc = cfg.time
    n = len(time) if time is not None else (len(next(iter(signals.values()))) if signals else 0)
    for name, s in signals.items():
        if len(s) != n:
            raise ValueError(f"time_qc: signal {name!r} has {len(s)} values, Time has {n}")
    try:
        t, ts_note = _seconds(time, timestep, time_pnn, cfg, n)
        b = _bins(t, cfg)
        rate = _rate(b, cfg)
    except _NotAssessed as exc:
        logger.info("time QC not assessed: %s", exc)
        check = make_check(cfg, "time_qc", exc.code, None, None, str(exc), not_assessed=True)
        return TimeQcResult(np.ones(n, dtype=bool), False, [], 0, [check])
    dt = np.diff(t)
    # Gaps (clogs): no event for longer than the expected wait of gap_expected_events events.
    gap_thr = max(tc.gap_expected_events / rate.per_s, tc.min_gap_seconds, 2 * b.resolution)
    gap_idx = np.flatnonzero(dt > gap_thr)
    gaps = [(float(t[i]), float(t[i + 1])) for i in gap_idx]
    gap_flag = np.zeros(b.n_bins, dtype=bool)
    for i in gap_idx:
        gap_flag[b.idx[i] : b.idx[i + 1] + 1] = True
    signal_flag, signal_hits = _signal_flags(signals, b, rate.median, cfg)

    flagged = rate.flag | gap_flag | signal_flag
    removed = flagged.copy()
    for k in range(1, tc.pad_bins + 1):
        removed[k:] |= flagged[:-k]
        removed[:-k] |= flagged[k:]
    keep = ~removed[b.idx]
    n_removed = int(n - keep.sum())
    removed_ranges = b.ranges(removed)
    base = (
        f"{b.n_bins} bins of {b.width:.3g} s ({ts_note}), median {rate.per_s:.4g} events/s, "
        f"robust SD {rate.scale:.3g} events/bin"
    )
    alone = signal_flag & ~rate.flag & ~gap_flag
    checks = [
        _rate_check(cfg, b, rate, base),
        _gap_check(cfg, gaps, gap_thr),
        _signal_check(cfg, b.ranges(alone), int(alone.sum()), signal_hits, list(signals)),
        _removed_check(cfg, n_removed, n, removed_ranges),
    ]
    logger.info(
        "time QC: removed %d of %d events in %d range(s)", n_removed, n, len(removed_ranges)
    )
    return TimeQcResult(
        keep=keep,
        assessed=True,
        removed_ranges=removed_ranges,
        n_removed=n_removed,
        checks=checks,
        bin_seconds=b.width,
        gaps=gaps,
    )


class _NotAssessed(Exception):
    """Time QC cannot run on this file: the message says why (all events are kept)."""

    def __init__(self, message: str, code: str = "time_not_assessed") -> None:
        super().__init__(message)
        self.code = code


def _seconds(
    time: np.ndarray | None, timestep: float | None, time_pnn: str, cfg: QcConfig, n: int
) -> tuple[np.ndarray, str]:
    """The Time column in seconds and how it was converted, if time QC can run on it."""
    tc = cfg.time
    if not tc.enabled:
        raise _NotAssessed(
            "time QC disabled (qc.time.enabled: false); all events kept", "time_qc_disabled"
        )
    if time is None:
        raise _NotAssessed(
            "no Time channel in this file: flow-rate stability not assessed; all events kept"
        )
    t, ts_note = time_in_seconds(time, timestep, time_pnn, tc.assume_timestep)
    if t is None:
        raise _NotAssessed(
            f"Time channel present but {ts_note}: time cannot be converted to seconds; set "
            f"qc.time.assume_timestep to assess it; all events kept"
        )
    if not np.isfinite(t).all():
        bad = int((~np.isfinite(t)).sum())
        raise _NotAssessed(f"{bad} events have a non-finite Time value; all events kept")
    dec = int((np.diff(t) < 0).sum())
    if dec:
        raise _NotAssessed(
            f"Time decreases {dec} times in acquisition order (clock rollover or concatenated "
            f"acquisitions); all events kept"
        )
    duration = float(t[-1] - t[0]) if n else 0.0
    min_needed = tc.min_events_per_bin * tc.min_bins
    if n < min_needed or duration <= 0:
        raise _NotAssessed(
            f"{n} events over {duration:.3g} s: too few to assess flow rate (need at least "
            f"{min_needed} = qc.time.min_events_per_bin x qc.time.min_bins); all events kept"
        )
    return t, ts_note


@dataclass(frozen=True)
class _Bins:
    """The time bins of one acquisition: each event's bin, and each bin's share of a width."""

    idx: np.ndarray
    coverage: np.ndarray
    counts: np.ndarray
    n_full: int
    width: float
    t0: float
    t_end: float
    resolution: float

    @property
    def n_bins(self) -> int:
        return int(self.coverage.size)

    def edge(self, i: int) -> float:
        return round(min(self.t0 + i * self.width, self.t_end), 9)

    def ranges(self, flags: np.ndarray) -> list[tuple[float, float]]:
        """``(start_s, end_s)`` of each run of flagged bins."""
        return [(self.edge(a), self.edge(b + 1)) for a, b in _runs(flags)]


def _bins(t: np.ndarray, cfg: QcConfig) -> _Bins:
    tc = cfg.time
    n = t.size
    t0 = float(t[0])
    duration = float(t[-1] - t[0])
    dt = np.diff(t)
    steps = dt[dt > 0]
    resolution = float(steps.min()) if steps.size else 0.0
    width = max(tc.bin_seconds, tc.min_events_per_bin * duration / n)
    if resolution > 0 and width < _ALIGN_TICKS * resolution:
        # Quantized clock (e.g. 0.1 s ticks at thousands of events/s): bins of whole ticks, or
        # bins holding one tick more than others would look like bursts. The last, partial bin
        # is compared after scaling by its coverage.
        tpb = max(1, math.ceil(width / resolution - 1e-9))
        ticks = np.rint((t - t0) / resolution).astype(np.int64)
        n_ticks = int(ticks[-1]) + 1
        n_full, tail = divmod(n_ticks, tpb)
        width = tpb * resolution
        idx = ticks // tpb
        coverage = np.ones(n_full + (1 if tail else 0))
        if tail:
            coverage[-1] = tail / tpb
        t_end = t0 + n_ticks * resolution
    else:
        n_full = int(math.floor(duration / width))
        width = duration / max(n_full, 1)
        idx = np.minimum(((t - t0) / width).astype(np.int64), max(n_full, 1) - 1)
        coverage = np.ones(max(n_full, 1))
        t_end = float(t[-1])
    if n_full < tc.min_bins:
        raise _NotAssessed(
            f"{duration:.3g} s of acquisition gives {n_full} bins of {width:.3g} s, fewer than "
            f"qc.time.min_bins = {tc.min_bins}; all events kept"
        )
    counts = np.bincount(idx, minlength=coverage.size).astype(np.float64)
    return _Bins(idx, coverage, counts, n_full, width, t0, t_end, resolution)


@dataclass(frozen=True)
class _Rate:
    """The event rate per bin against the median of the full bins."""

    median: float
    scale: float
    z: np.ndarray
    flag: np.ndarray
    per_s: float


def _rate(b: _Bins, cfg: QcConfig) -> _Rate:
    tc = cfg.time
    # Event rate, from the full bins; a partial last bin is scaled by its coverage and tested
    # only when it covers at least half a bin.
    full = b.counts[: b.n_full]
    med = float(np.median(full))
    if med == 0:
        raise _NotAssessed(
            f"more than half of the {b.n_full} time bins of {b.width:.3g} s hold no event: the "
            f"acquisition is too sparse or too interrupted to estimate a steady rate; "
            f"all events kept"
        )
    mad = 1.4826 * float(np.median(np.abs(full - med)))
    scale = max(mad, math.sqrt(med), 1.0)
    testable = b.coverage >= 0.5
    z_rate = np.where(testable, (b.counts / b.coverage - med) / scale, 0.0)
    rate_flag = np.abs(z_rate) > tc.rate_mad_threshold
    return _Rate(med, scale, z_rate, rate_flag, med / b.width)


def _signal_flags(
    signals: Mapping[str, np.ndarray], b: _Bins, med: float, cfg: QcConfig
) -> tuple[np.ndarray, dict[str, int]]:
    """Bins whose signal location is off, and per signal how many bins it flags.

    Signal location per bin: mean of the events' whole-file ranks (see module docstring).
    """
    tc = cfg.time
    n, n_bins, idx = b.idx.size, b.n_bins, b.idx
    min_needed = tc.min_events_per_bin * tc.min_bins
    signal_flag = np.zeros(n_bins, dtype=bool)
    signal_hits: dict[str, int] = {}
    usable = b.counts >= max(10.0, 0.5 * med)
    for name, s in signals.items():
        x = np.asarray(s, dtype=np.float64)
        fin = np.isfinite(x)
        if fin.sum() < min_needed:
            continue
        ranks = _mid_ranks(x[fin])
        if ranks is None:
            continue
        ranks_all = np.zeros(n)
        ranks_all[fin] = ranks
        ranks = ranks_all
        n_fin = np.bincount(idx[fin], minlength=n_bins).astype(np.float64)
        ok = usable & (n_fin >= 10)
        if ok.sum() < tc.min_bins:
            continue
        mean_rank = np.bincount(idx, weights=ranks, minlength=n_bins) / np.maximum(n_fin, 1)
        center = float(np.median(mean_rank[ok]))
        mad_b = 1.4826 * float(np.median(np.abs(mean_rank[ok] - center)))
        s_scale = np.maximum(mad_b, 1.0 / np.sqrt(12.0 * np.maximum(n_fin, 1)))
        hit = ok & (np.abs(mean_rank - center) / s_scale > tc.signal_mad_threshold)
        if hit.any():
            signal_hits[name] = int(hit.sum())
            signal_flag |= hit
    return signal_flag, signal_hits


def _rate_check(cfg: QcConfig, b: _Bins, rate: _Rate, base: str) -> Check:
    tc = cfg.time
    n_rate = int(rate.flag.sum())
    hi = b.ranges(rate.flag & (rate.z > 0))
    lo = b.ranges(rate.flag & (rate.z < 0))
    parts = [
        f"{what} bins at {_fmt_ranges(r)}"
        for what, r in (("high-rate (burst)", hi), ("low-rate", lo))
        if r
    ]
    return make_check(
        cfg,
        "time_flow_rate",
        "flow_rate_anomaly" if n_rate else "ok",
        n_rate,
        tc.rate_mad_threshold,
        f"{n_rate} of {b.n_bins} time bins deviate from the median event rate by more than "
        f"{tc.rate_mad_threshold:g} robust SDs: {'; '.join(parts)}; {base}"
        if n_rate
        else f"event rate steady: {base}",
    )


def _gap_check(cfg: QcConfig, gaps: list[tuple[float, float]], gap_thr: float) -> Check:
    total_gap = float(sum(b - a for a, b in gaps))
    return make_check(
        cfg,
        "time_gap",
        "flow_gap" if gaps else "ok",
        total_gap,
        gap_thr,
        f"{len(gaps)} acquisition gap(s) longer than {gap_thr:.3g} s (clog): "
        f"{_fmt_ranges(gaps)}; {total_gap:.3g} s without events"
        if gaps
        else f"no gap longer than {gap_thr:.3g} s",
    )


def _signal_check(
    cfg: QcConfig,
    shifted: list[tuple[float, float]],
    n_sig: int,
    signal_hits: dict[str, int],
    listed: list[str],
) -> Check:
    """Signal shifts in bins whose rate is steady (those inside rate/gap anomalies go anyway)."""
    tc = cfg.time
    names = ", ".join(f"{k} ({v} bins)" for k, v in signal_hits.items())
    given = ", ".join(listed) if listed else "no signals given"
    extra = f"; shifts only inside rate/gap anomalies: {names}" if signal_hits else ""
    return make_check(
        cfg,
        "time_signal",
        "signal_drift" if n_sig else "ok",
        n_sig,
        tc.signal_mad_threshold,
        f"{n_sig} time bins with a steady event rate have a signal shifted by more than "
        f"{tc.signal_mad_threshold:g} robust SDs from the other bins (mean rank per bin) "
        f"at {_fmt_ranges(shifted)}; channels: {names}"
        if n_sig
        else f"signal steady over time outside rate anomalies ({given}){extra}",
    )


def _removed_check(
    cfg: QcConfig, n_removed: int, n: int, removed_ranges: list[tuple[float, float]]
) -> Check:
    tc = cfg.time
    frac = n_removed / n
    excess = frac > tc.max_removed_frac
    where = f" at {_fmt_ranges(removed_ranges)}" if removed_ranges else ""
    return make_check(
        cfg,
        "time_removed",
        "time_excess_removed" if excess else "ok",
        frac,
        tc.max_removed_frac,
        f"time QC removed {n_removed} of {n} events ({100 * frac:.2f}%){where}"
        + (
            f"; more than {100 * tc.max_removed_frac:g}% (qc.time.max_removed_frac): the "
            f"acquisition is not steady enough to report"
            if excess
            else ""
        ),
    )
