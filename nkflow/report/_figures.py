"""Matplotlib figures for the report, returned as ``data:image/png;base64,...`` URIs.

Contract: each function takes already-computed numbers (parsed from the cohort tables; nothing
is derived here except plotting positions) and returns a data URI that an ``<img>`` can show
without any network access. matplotlib is imported inside the functions (Agg backend) and PNG
metadata is stripped, so identical inputs give identical bytes.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

VERDICT_COLOURS = {"PASS": "#1b7a3a", "FAIL": "#b3261e", "NOT_EVALUABLE": "#5f6368"}


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _number(x: float | None) -> float | None:
    """``x`` when it is a finite number, else None."""
    return x if x is not None and math.isfinite(x) else None


def _positive(x: float | None) -> float | None:
    """``x`` when it can be drawn on a log axis (finite and > 0), else None."""
    return x if x is not None and math.isfinite(x) and x > 0 else None


def threshold_log_axis(ax: Any, threshold: float, *, label_right: bool) -> None:
    """A log y axis ticked 1-2-5 with plain numbers, and the dashed threshold line labelled.

    ``label_right`` puts the ``<threshold>/µL`` label at the right end of the line, else the left.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.axhline(threshold, color="#b3261e", linestyle="--", linewidth=1.2)
    ax.text(
        0.99 if label_right else 0.005,
        threshold,
        f"{threshold:g}/µL " if label_right else f" {threshold:g}/µL",
        color="#b3261e",
        ha="right" if label_right else "left",
        va="bottom",
        transform=ax.get_yaxis_transform(),
    )
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks cost more than they show


def png_data_uri(fig: object) -> str:
    """``fig`` as a PNG ``data:`` URI (no Software stamp); the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def pyplot():  # noqa: ANN202 - returns the pyplot module
    """The pyplot module of matplotlib, on the Agg (file) backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class Series:
    """One line of a kinetics panel: study days, values and optional 95 % bounds."""

    label: str
    days: Sequence[float]
    values: Sequence[float | None]
    lo: Sequence[float | None] | None = None
    hi: Sequence[float | None] | None = None


def kinetics_figure(
    nk_series: Sequence[Series],
    treg_series: Sequence[Series],
    threshold: float,
    endpoint_day: float | None,
    patient_id: str,
) -> str:
    """Two panels: NK cells/uL over visits (log y, threshold line) and Treg over visits.

    Parameters
    ----------
    nk_series
        Donor and total NK/uL series; values <= 0 or missing are not drawn on the log axis
        (the caller lists them in the table under the figure).
    treg_series
        Treg % of CD4 and Ki-67+ Treg % of CD4 (linear axis).
    threshold
        The endpoint threshold (cells/uL), drawn as a dashed line.
    endpoint_day
        Study day of the day-14 sample (vertical dotted line), or None.
    patient_id
        Used in the title.
    """
    plt = pyplot()

    # fixed margins, not constrained_layout: the layout solver redraws the figure several
    # times and was 90 % of the report's time on a 1,000-tube cohort
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.6), sharex=True)
    fig.subplots_adjust(left=0.08, right=0.985, bottom=0.14, top=0.9, wspace=0.22)
    markers = ["o", "s", "^", "D"]
    drawn = False
    for i, s in enumerate(nk_series):
        none = [None] * len(s.days)
        pts = [
            (dd, vv, _positive(lo), _number(hi))
            for d, v, lo, hi in zip(s.days, s.values, s.lo or none, s.hi or none, strict=True)
            if (dd := _number(d)) is not None and (vv := _positive(v)) is not None
        ]
        if not pts:
            continue
        drawn = True
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        line = ax1.plot(xs, ys, marker=markers[i % 4], label=s.label)[0]
        err = [(x, y, y - lo, hi - y) for x, y, lo, hi in pts if lo is not None and hi is not None]
        if err:
            err_x, err_y, err_lo, err_hi = (list(c) for c in zip(*err, strict=True))
            ax1.errorbar(
                err_x, err_y, yerr=[err_lo, err_hi], fmt="none", ecolor=line.get_color(), capsize=3
            )
    threshold_log_axis(ax1, threshold, label_right=True)
    ax1.set_xlabel("study day (day 0 = first NK infusion)")
    ax1.set_ylabel("NK cells / µL (log)")
    ax1.set_title(f"{patient_id}: NK cells per µL", y=1.0)  # explicit y: no overlap search
    if not drawn:
        ax1.text(0.5, 0.5, "no positive NK/µL values", ha="center", transform=ax1.transAxes)
    for ax in (ax1, ax2):
        if endpoint_day is not None and _finite(endpoint_day):
            ax.axvline(endpoint_day, color="#888888", linestyle=":", linewidth=1)
        ax.grid(True, which="major", alpha=0.3)
    if drawn:
        ax1.legend(loc="upper left", fontsize=8)  # "best" searches every position

    drawn2 = False
    for i, s in enumerate(treg_series):
        pairs = [(_number(d), _number(v)) for d, v in zip(s.days, s.values, strict=True)]
        tx = [d for d, v in pairs if d is not None and v is not None]
        ty = [v for d, v in pairs if d is not None and v is not None]
        if not tx:
            continue
        drawn2 = True
        ax2.plot(tx, ty, marker=markers[i % 4], label=s.label)
    ax2.set_xlabel("study day")
    ax2.set_ylabel("% of CD4+ T cells")
    ax2.set_title("Treg and Ki-67+ Treg", y=1.0)
    if drawn2:
        ax2.legend(loc="upper left", fontsize=8)
        ax2.set_ylim(bottom=0)
    else:
        ax2.text(0.5, 0.5, "no Treg values", ha="center", transform=ax2.transAxes)
    return png_data_uri(fig)


@dataclass(frozen=True)
class CohortPoint:
    """One patient in the cohort plot."""

    patient_id: str
    verdict: str
    value: float | None
    lo: float | None
    hi: float | None


def cohort_figure(points: Sequence[CohortPoint], threshold: float) -> str:
    """Day-14 donor NK/uL per patient (log x) against the threshold, coloured by verdict.

    Patients without a value (NOT_EVALUABLE) are listed at the left edge with the word
    "not evaluable", so that every patient appears. Returns a ``data:`` URI.
    """
    plt = pyplot()
    n = max(len(points), 1)
    fig, ax = plt.subplots(figsize=(9.5, 0.75 + 0.32 * n), constrained_layout=True)
    positives = [v for p in points if (v := _positive(p.value)) is not None]
    los = [v for p in points if (v := _positive(p.lo)) is not None]
    his = [v for p in points if (v := _number(p.hi)) is not None]
    lowest = min([threshold, *positives, *los]) / 3.0
    highest = max([threshold, *positives, *his]) * 3.0
    for y, p in enumerate(points):
        colour = VERDICT_COLOURS.get(p.verdict, "#5f6368")
        value, lo, hi = _positive(p.value), _number(p.lo), _number(p.hi)
        if value is not None:
            if lo is not None and hi is not None:
                ax.plot([max(lo, lowest), hi], [y, y], color=colour, linewidth=2, alpha=0.6)
            ax.plot([value], [y], "o", color=colour)
        else:
            ax.text(lowest * 1.05, y, "not evaluable", va="center", color=colour, fontsize=8)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.axvline(threshold, color="#b3261e", linestyle="--", linewidth=1.2)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 3.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(lowest, highest)
    ax.set_yticks(range(len(points)))
    ax.set_yticklabels([f"{p.patient_id} ({p.verdict})" for p in points], fontsize=8)
    ax.set_ylim(len(points) - 0.5, -0.5)
    ax.set_xlabel(f"day-14 donor NK cells / µL (log); dashed line = {threshold:g}/µL")
    ax.grid(True, axis="x", alpha=0.3)
    return png_data_uri(fig)


def distribution_figure(
    bin_edges: Sequence[float],
    counts: Sequence[int],
    threshold: float,
    reported: float | None,
    interval: tuple[float | None, float | None],
    patient_id: str,
) -> str:
    """Histogram of the day-14 donor NK/uL draws, the threshold and the reported value.

    Parameters
    ----------
    bin_edges, counts
        The histogram as written to the per-patient JSON (``donor_nk_per_ul_distribution``).
    threshold
        The endpoint threshold (dashed red line).
    reported
        The reported donor NK/uL (solid black line), or None.
    interval
        The all-sources 95 % interval (shaded), either end None when not recorded.
    patient_id
        Used in the title.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.0))
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.17, top=0.88)
    edges = [float(e) for e in bin_edges]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
    colours = ["#1b7a3a" if a >= threshold else "#b3261e" for a in edges[:-1]]
    ax.bar(edges[:-1], counts, width=widths, align="edge", color=colours, alpha=0.55)
    # headroom: the bars stay below the threshold and reported labels at the top of the axes
    ax.set_ylim(0, 1.4 * max(counts, default=0) or 1.0)
    lo, hi = (_number(x) for x in interval)
    if lo is not None and hi is not None:
        ax.axvspan(lo, hi, color="#888888", alpha=0.15, linewidth=0)
    ax.axvline(threshold, color="#b3261e", linestyle="--", linewidth=1.2)
    ax.text(threshold, 1.0, f" {threshold:g}/µL", color="#b3261e", va="top",
            transform=ax.get_xaxis_transform())  # fmt: skip
    value = _number(reported)
    if value is not None:
        ax.axvline(value, color="#202124", linewidth=1.5)
        ax.text(value, 0.88, f" reported {value:g}", color="#202124", va="top",
                transform=ax.get_xaxis_transform())  # fmt: skip
    lows = [edges[0], threshold, *([value] if value is not None else [])]
    highs = [edges[-1], threshold, *([value] if value is not None else [])]
    pad = 0.04 * (max(highs) - min(lows) or 1.0)
    ax.set_xlim(min(lows) - pad, max(highs) + pad)
    ax.set_xlabel("day-14 donor NK cells / µL")
    ax.set_ylabel("draws")
    ax.set_title(f"{patient_id}: donor NK/µL under gate placement, counting and chimerism error",
                 y=1.0, fontsize=9)  # fmt: skip
    ax.grid(True, axis="x", alpha=0.3)
    return png_data_uri(fig)
