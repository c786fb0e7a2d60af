"""The cohort view of the index page: kinetics summary table, spaghetti, swimmer and Treg plots.

Contract: pure functions from a :class:`~nkflow.report._inputs.ReportInputs` bundle to HTML
sections (figures embedded as ``data:`` PNG URIs, as every report figure). No number is made
here: the summary is ``cohort/kinetics_summary.tsv`` (computed by the readout rule), the curves
are visits.tsv values, the swimmer lanes are the sheets' dates placed on the study-day axis
(date - day0_date of endpoints.tsv: a plotting position). A missing input is a note in its
section, never a crash.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nkflow.report import _format as fmt
from nkflow.report import _html as h
from nkflow.report._figures import VERDICT_COLOURS, png_data_uri, pyplot, threshold_log_axis
from nkflow.report._inputs import ReportInputs, Row

#: CTCAE grade -> colour (1 mild ... 5 death), for the swimmer plot
GRADE_COLOURS = {1: "#f2c14e", 2: "#f08a24", 3: "#d1495b", 4: "#8e1b3a", 5: "#000000"}
PARAMETER_LABELS = {
    "baseline_per_ul": ("baseline /µL", fmt.per_ul),
    "cmax_per_ul": ("Cmax /µL", fmt.per_ul),
    "tmax_day": ("Tmax (day)", fmt.count),
    "clast_per_ul": ("Clast /µL", fmt.per_ul),
    "tlast_day": ("Tlast (day)", fmt.count),
    "fold_expansion": ("fold expansion", fmt.ratio),
    "persistence_day": ("persistence (last day above)", fmt.count),
    "auc_per_ul_x_day": ("AUC (/µL x day)", fmt.count),
}
MEASURE_LABELS = {
    "donor_nk_per_ul": "donor NK cells/µL",
    "total_nk_per_ul": "total NK cells/µL",
    "nk_cd56bright_per_ul": "CD56bright NK cells/µL",
    "nk_cd56dim_per_ul": "CD56dim NK cells/µL",
    "treg_per_ul": "Treg/µL",
}


# --------------------------------------------------------------------------- summary table


def summary_section(inp: ReportInputs) -> str:
    """n, median and IQR of every kinetic parameter by verdict and by response category."""
    rows = inp.kinetics_summary
    if not rows:
        return h.section(
            "kinetics-summary",
            "Kinetics by verdict and response",
            h.note("cohort/kinetics_summary.tsv not available (run the readout rule)."),
        )
    groups: list[tuple[str, str, str]] = []
    for r in rows:
        key = (r["grouping"], r["group"], r["n_patients"])
        if key not in groups:
            groups.append(key)
    by = {(r["grouping"], r["group"], r["measure"], r["parameter"]): r for r in rows}
    measures = list(dict.fromkeys(r["measure"] for r in rows))
    params = list(dict.fromkeys(r["parameter"] for r in rows))
    header = ["parameter", *(f"{g} (n={n})" for _, g, n in groups)]

    def table(measure: str) -> str:
        body = []
        for p in params:
            label, f = PARAMETER_LABELS.get(p, (p, lambda t: t))
            cells = [label]
            for grouping, group, _ in groups:
                r = by.get((grouping, group, measure, p))
                if r is None or not r.get("median"):
                    cells.append("–" if r is None else "– (n=0)")
                    continue
                cells.append(f"{f(r['median'])} ({f(r['q1'])}–{f(r['q3'])}) n={r['n']}")
            body.append(cells)
        reasons = sorted(
            {
                code
                for r in inp.kinetics
                if r.get("measure") == measure
                for code in (r.get("not_computed") or "").split(";")
                if code
            }
        )
        why = h.note("Left empty, with the reasons of kinetics.tsv: " + ", ".join(reasons) + ".")
        return h.table(header, body, css_class="summary") + (why if reasons else "")

    first, rest = measures[0], measures[1:]
    body = h.note(
        "Median (first–third quartile) and n = patients with a value, per group: all patients, "
        "by day-14 verdict, by last response category. From cohort/kinetics_summary.tsv "
        "(quartiles: R type 7); definitions in docs/kinetics.md."
    )
    body += f"<h3>{h.esc(MEASURE_LABELS.get(first, first))}</h3>" + table(first)
    for m in rest:
        body += h.details(MEASURE_LABELS.get(m, m), table(m))
    return h.section("kinetics-summary", "Kinetics by verdict and response", body)


# --------------------------------------------------------------------------- spaghetti


@dataclass(frozen=True)
class Curve:
    """One patient's line: study days and values (plotted where > 0), its verdict."""

    patient_id: str
    verdict: str
    days: Sequence[float]
    values: Sequence[float]


def spread_labels(positions: Sequence[float], min_gap: float) -> list[float]:
    """Label positions at least ``min_gap`` apart, each moved as little as the others allow.

    ``positions`` are the labels' anchors on one axis (any order; the result is in the same
    order). Labels closer than ``min_gap`` are stacked ``min_gap`` apart and each stack is
    centred on its anchors' mean; neighbouring stacks that would overlap become one.
    """
    order = sorted(range(len(positions)), key=lambda i: positions[i])
    stacks: list[list[float]] = []  # the anchors of each stack, lowest stack first

    def bottom(stack: list[float]) -> float:
        return sum(stack) / len(stack) - min_gap * (len(stack) - 1) / 2

    for i in order:
        stacks.append([float(positions[i])])
        while len(stacks) > 1 and (
            bottom(stacks[-1]) - bottom(stacks[-2]) - min_gap * len(stacks[-2]) < 0
        ):
            last = stacks.pop()
            stacks[-1].extend(last)
    placed = [bottom(s) + k * min_gap for s in stacks for k in range(len(s))]
    out = [0.0] * len(positions)
    for rank, i in enumerate(order):
        out[i] = placed[rank]
    return out


def spaghetti_figure(
    curves: Sequence[Curve], threshold: float, window: tuple[float, float], ylabel: str
) -> str:
    """Donor NK/uL against study day, one line per patient coloured by verdict (log y)."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(10.5, 4.2))
    fig.subplots_adjust(left=0.08, right=0.86, bottom=0.13, top=0.93)
    ax.axvspan(window[0], window[1], color="#e8eaed", zorder=0)
    drawn = False
    ends: list[tuple[str, str, float, float]] = []  # patient, colour, last day, last value
    for c in curves:
        pts = [(d, v) for d, v in zip(c.days, c.values, strict=True) if v > 0]
        if not pts:
            continue
        drawn = True
        colour = VERDICT_COLOURS.get(c.verdict, "#5f6368")
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, marker="o", markersize=4, color=colour, linewidth=1.4, alpha=0.85)
        ends.append((c.patient_id, colour, xs[-1], ys[-1]))
    threshold_log_axis(ax, threshold, label_right=False)
    ax.set_xlabel("study day (day 0 = NK infusion); grey band = day-14 window")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    _end_labels(ax, ends)
    if not drawn:
        ax.text(0.5, 0.5, "no positive values", ha="center", transform=ax.transAxes)
    handles = [Line2D([], [], color=col, marker="o", label=v) for v, col in VERDICT_COLOURS.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return png_data_uri(fig)


def _end_labels(ax: Any, ends: Sequence[tuple[str, str, float, float]]) -> None:
    """Write each patient's id at the end of its line; ids ending on one day never overlap."""
    if not ends:
        return
    lo, hi = (math.log10(v) for v in ax.get_ylim())
    axis_height_pt = ax.get_window_extent().height * 72 / ax.figure.dpi
    gap = (hi - lo) * 9.0 / axis_height_pt  # one 7-pt label plus leading, in decades
    by_day: dict[float, list[tuple[str, str, float, float]]] = {}
    for end in ends:
        by_day.setdefault(end[2], []).append(end)
    for day, group in by_day.items():
        anchors = [math.log10(e[3]) for e in group]
        for (pid, colour, _, y), at, placed in zip(
            group, anchors, spread_labels(anchors, gap), strict=True
        ):
            ax.annotate(
                pid,
                (day, y),
                xytext=(4, (placed - at) / (hi - lo) * axis_height_pt),
                textcoords="offset points",
                fontsize=7,
                color=colour,
                va="center",
            )


# --------------------------------------------------------------------------- swimmer


@dataclass
class Lane:
    """One patient's lane in the swimmer plot (study days)."""

    patient_id: str
    verdict: str
    infusions: list[tuple[float, str]] = field(default_factory=list)  # (day, dose label)
    visits: list[tuple[float, bool]] = field(default_factory=list)  # (day, evaluable)
    adverse_events: list[tuple[float, int]] = field(default_factory=list)  # (day, grade)
    responses: list[tuple[float, str]] = field(default_factory=list)  # (day, label)


def swimmer_figure(lanes: Sequence[Lane], window: tuple[float, float]) -> str:
    """One lane per patient: infusions (dose per kg), visits, AEs by grade, responses + MRD."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = max(len(lanes), 1)
    height = 1.1 + 0.62 * n
    fig, ax = plt.subplots(figsize=(10.5, height))
    fig.subplots_adjust(left=0.15, right=0.8, bottom=0.7 / height, top=1 - 0.15 / height)
    ax.axvspan(window[0], window[1], color="#e8eaed", zorder=0)
    for y, lane in enumerate(lanes):
        days = [d for d, _ in lane.infusions] + [d for d, _ in lane.visits]
        days += [d for d, _ in lane.adverse_events] + [d for d, _ in lane.responses]
        if days:
            colour = VERDICT_COLOURS.get(lane.verdict, "#5f6368")
            ax.plot([min(0.0, *days), max(days)], [y, y], color=colour, linewidth=6, alpha=0.25)
        # the y axis runs downward: y - 0.24 is above the lane, y + 0.26 below it
        shown: tuple[float, str] | None = None
        for d, label in lane.infusions:
            ax.plot([d], [y - 0.24], marker="v", color="#1a5fb4", markersize=7, linestyle="none")
            # the same dose a day or two later is not written again (the labels would overlap)
            if shown is not None and shown[1] == label and d - shown[0] < 2.5:
                continue
            shown = (d, label)
            ax.annotate(label, (d, y - 0.24), xytext=(0, 5), textcoords="offset points",
                        fontsize=6.5, ha="center", color="#1a5fb4")  # fmt: skip
        for d, ok in lane.visits:
            ax.plot([d], [y], marker="o", markersize=6, linestyle="none", color="#24292f",
                    markerfacecolor="#24292f" if ok else "white")  # fmt: skip
        for d, grade in lane.adverse_events:
            ax.plot([d], [y + 0.26], marker="D", markersize=6, linestyle="none",
                    color=GRADE_COLOURS.get(grade, "#5f6368"))  # fmt: skip
        for d, label in lane.responses:
            ax.plot([d], [y + 0.26], marker="s", markersize=6, color="#6a1b9a", linestyle="none")
            ax.annotate(label, (d, y + 0.26), xytext=(5, 0), textcoords="offset points",
                        fontsize=7, va="center", color="#6a1b9a")  # fmt: skip
    every = [d for ln in lanes for d, _ in (*ln.infusions, *ln.visits, *ln.adverse_events)]
    every += [d for ln in lanes for d, _ in ln.responses]
    if every:
        lo, hi = min(0.0, *every), max(every)
        # room on the right for the response labels
        ax.set_xlim(lo - 1.5, hi + max(4.0, 0.14 * (hi - lo)))
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels([f"{ln.patient_id} ({ln.verdict})" for ln in lanes], fontsize=8)
    ax.set_ylim(len(lanes) - 0.45, -0.65)
    ax.set_xlabel("study day (day 0 = NK infusion); grey band = day-14 window")
    ax.grid(True, axis="x", alpha=0.3)
    handles = [
        Line2D(
            [], [], marker="v", color="#1a5fb4", linestyle="none", label="NK infusion (x10^6/kg)"
        ),
        Line2D([], [], marker="o", color="#24292f", linestyle="none", label="visit, evaluable"),
        Line2D(
            [],
            [],
            marker="o",
            color="#24292f",
            markerfacecolor="white",
            linestyle="none",
            label="visit, not evaluable",
        ),  # fmt: skip
        Line2D([], [], marker="s", color="#6a1b9a", linestyle="none", label="response (MRD)"),
        *[Patch(color=c, label=f"AE grade {g}") for g, c in GRADE_COLOURS.items()],
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5)
    return png_data_uri(fig)


# --------------------------------------------------------------------------- Treg


def treg_figure(
    treg: Sequence[Curve],
    ki67: Sequence[Curve],
    low_pct: float,
    treg_day: float,
    day7: Sequence[tuple[str, float, float, bool]],
) -> str:
    """Treg and Ki-67+ Treg % of CD4 per patient; the day-7 < ``low_pct`` marker.

    ``day7``: (patient, study day, Treg % of CD4, below) of each patient's day-7 read-out.
    """
    plt = pyplot()
    from matplotlib.lines import Line2D

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.5, 3.8), sharex=True)
    fig.subplots_adjust(left=0.07, right=0.86, bottom=0.14, top=0.9, wspace=0.22)
    for ax, curves, title in ((a1, treg, "Treg % of CD4"), (a2, ki67, "Ki-67+ Treg % of CD4")):
        for c in curves:
            pts = list(zip(c.days, c.values, strict=True))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3,
                        color=VERDICT_COLOURS.get(c.verdict, "#5f6368"), linewidth=1.2,
                        alpha=0.85)  # fmt: skip
        ax.axvline(treg_day, color="#888888", linestyle=":", linewidth=1)
        ax.set_title(title, y=1.0)
        ax.set_xlabel("study day")
        ax.set_ylabel("% of CD4+ T cells")
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    a1.axhline(low_pct, color="#b3261e", linestyle="--", linewidth=1.2)
    a1.text(0.99, low_pct, f"{low_pct:g} % ", color="#b3261e", ha="right", va="bottom",
            transform=a1.get_yaxis_transform())  # fmt: skip
    for _pid, d, v, below in day7:
        a1.plot([d], [v], marker="*", markersize=12, linestyle="none",
                color="#b3261e" if below else "#5f6368", markerfacecolor="none" if not below else None)  # fmt: skip
    handles = [Line2D([], [], color=col, marker="o", label=v) for v, col in VERDICT_COLOURS.items()]
    handles += [
        Line2D(
            [],
            [],
            marker="*",
            color=colour,
            markerfacecolor=face,
            linestyle="none",
            markersize=10,
            label=f"day {treg_day:g}: {side} {low_pct:g} %",
        )
        for colour, face, side in (("#b3261e", None, "<"), ("#5f6368", "none", ">="))
    ]
    a2.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7.5)
    return png_data_uri(fig)


# --------------------------------------------------------------------------- sections


def _verdicts(inp: ReportInputs) -> dict[str, str]:
    return {e["patient_id"]: e.get("verdict", "") or "NOT_EVALUABLE" for e in inp.endpoints}


def _curves(inp: ReportInputs, column: str, evaluable_only: bool) -> list[Curve]:
    verdict = _verdicts(inp)
    out = []
    for pid in verdict:
        pts = []
        for r in inp.visits:
            if r.get("patient_id") != pid or (evaluable_only and r.get("status") != "ok"):
                continue
            d, v = fmt.number(r.get("study_day", "")), fmt.number(r.get(column, ""))
            if d is not None and v is not None:
                pts.append((d, v))
        pts.sort()
        out.append(Curve(pid, verdict[pid], [p[0] for p in pts], [p[1] for p in pts]))
    return out


def _date(text: str, inp: ReportInputs, sheet: str) -> dt.date | None:
    from nkflow.clinical.sheets import parse_date
    from nkflow.errors import NkflowError

    if not text:
        return None
    order = ((inp.config.get("sheet_format") or {}).get(sheet) or {}).get("date_order")
    try:
        return parse_date(text, sheet, "report", "date", order=order, sheet_key=sheet)
    except NkflowError:
        return None


def _lanes(inp: ReportInputs) -> tuple[list[Lane], list[str]]:
    notes: list[str] = []
    lanes = []
    for e in inp.endpoints:
        pid = e["patient_id"]
        lane = Lane(pid, e.get("verdict", "") or "NOT_EVALUABLE")
        lanes.append(lane)
        for r in inp.visits:
            if r.get("patient_id") == pid and (d := fmt.number(r.get("study_day", ""))) is not None:
                lane.visits.append((d, r.get("status") == "ok"))
        day0 = _date(e.get("day0_date", ""), inp, "endpoints")
        if day0 is None:
            notes.append(
                f"{pid}: no day0_date in endpoints.tsv, so infusions, adverse events and "
                "responses are not placed"
            )
            continue
        infs = sorted(
            (r for r in inp.sheets.get("infusions", []) if r.get("patient_id") == pid),
            key=lambda r: fmt.number(r.get("infusion_number", "")) or 0.0,
        )
        doses = [x.strip() for x in e.get("cells_per_kg_infusions", "").split(",") if x.strip()]
        for i, r in enumerate(infs):
            when = _date(r.get("infusion_date", ""), inp, "infusions")
            if when is None:
                continue
            label = ""
            if len(doses) == len(infs) and (v := fmt.number(doses[i])) is not None:
                label = f"{v / 1e6:.1f}"
            lane.infusions.append(((when - day0).days, label))
        for r in inp.sheets.get("adverse_events", []):
            if r.get("patient_id") != pid:
                continue
            when = _date(r.get("onset_date", "") or r.get("date", ""), inp, "adverse_events")
            grade = fmt.number(r.get("ctcae_grade", ""))
            if when is not None and grade is not None:
                lane.adverse_events.append(((when - day0).days, int(grade)))
            else:
                notes.append(f"{pid}: adverse event row without a usable date or grade")
        for r in inp.sheets.get("response", []):
            if r.get("patient_id") != pid:
                continue
            when = _date(r.get("assessment_date", ""), inp, "response")
            if when is None:
                notes.append(f"{pid}: response row without a usable date")
                continue
            mrd = {"negative": " MRD-", "positive": " MRD+"}.get(r.get("mrd_status", ""), "")
            lane.responses.append(((when - day0).days, f"{r.get('category', '')}{mrd}"))
    return lanes, notes


def cohort_sections(inp: ReportInputs, threshold: float) -> list[tuple[str, str, str]]:
    """(anchor, nav label, section HTML) of the cohort view, in page order."""
    s = inp.endpoint_settings
    target, before, after = s.target_day, s.window_before, s.window_after
    window = (target - before - 0.5, target + after + 0.5)
    out = [("kinetics-summary", "kinetics", summary_section(inp))]

    donor = _curves(inp, "donor_nk_per_ul", evaluable_only=True)
    zero = sorted({c.patient_id for c in donor for v in c.values if v <= 0})
    caption = (
        f"Donor NK cells/µL at every evaluable visit, one line per patient coloured by day-14 "
        f"verdict (green PASS, red FAIL, grey NOT_EVALUABLE); log axis, dashed = {threshold:g}/µL, "
        f"grey band = day-14 window ({target - before}-{target + after})."
    )
    if zero:
        caption += f" Zero values (not drawn on the log axis): {', '.join(zero)}."
    body = h.img(
        spaghetti_figure(donor, threshold, window, "donor NK cells / µL (log)"),
        "donor NK cells per µL against study day, every patient",
        caption,
    )
    out.append(("spaghetti", "spaghetti", h.section("spaghetti", "Donor NK expansion", body)))

    lanes, notes = _lanes(inp)
    sheets = inp.config.get("sheets") or {}
    absent = [w for w, k in (("response", "response"), ("adverse events", "adverse_events"))
              if k not in sheets]  # fmt: skip
    caption = (
        "One lane per patient (coloured by verdict): NK infusions (triangles above the lane, "
        "dose in 10^6 cells/kg), visits (filled = evaluable, open = not evaluable), adverse "
        "events by CTCAE grade (diamonds below), response assessments with MRD (squares below, "
        "labelled); grey band = day-14 window."
    )
    if absent:
        caption += f" Not configured: {' and '.join(absent)} sheet."
    body = h.img(swimmer_figure(lanes, window), "swimmer plot of every patient", caption)
    if notes:
        body += h.note("; ".join(notes))
    out.append(("swimmer", "swimmer", h.section("swimmer", "Patient timelines", body)))

    day7 = []
    for e in inp.endpoints:
        d, v = (
            fmt.number(e.get("treg_study_day7", "")),
            fmt.number(e.get("treg_pct_of_cd4_day7", "")),
        )
        if d is not None and v is not None:
            day7.append(
                (e["patient_id"], d, v, fmt.yes_no(e.get("treg_below_5pct_day7", "")) == "yes")
            )
    low, tday = s.treg_low_pct_of_cd4, float(s.treg_day)
    body = h.img(
        treg_figure(
            _curves(inp, "treg_pct_of_cd4", evaluable_only=False),
            _curves(inp, "treg_ki67_pct_of_cd4", evaluable_only=False),
            low,
            tday,
            day7,
        ),
        "Treg and Ki-67+ Treg percent of CD4 against study day, every patient",
        f"Treg (left) and Ki-67+ Treg (right) % of CD4+ T cells per visit, coloured by verdict; "
        f"stars = the day-{tday:g} read-out of endpoints.tsv (filled red: below {low:g} %, "
        f"associated with expansion in Bachanova 2014); dotted line = day {tday:g}.",
    )
    out.append(("treg", "Treg", h.section("treg", "Treg kinetics", body)))
    return out


__all__ = ["cohort_sections", "Curve", "Lane", "Row"]
