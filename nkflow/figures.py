"""Per-tube gating figure: every gate drawn on its parent's events.

Contract
--------
``gating_figure(tree, events, marker_index, res, path, ...)`` writes one PNG with one panel per
gate (boolean gates excepted): the parent population's events in the gate's transformed units
(a 2-D density for two or more dims, a histogram for one), the gate outline, and each defined
population's event count and percent of parent (from ``res``, never recomputed). Axes are
labelled with marker names and transform ids. A gate that was not computed gets a panel saying
why. The figure is a pure function of its inputs: subsampling uses ``random_state`` and the PNG
carries no timestamp, so the same input gives the same bytes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nkflow.gating.evaluate import GatingResult, _Columns, _xf
from nkflow.gating.tree import Gate, GateTree

logger = logging.getLogger(__name__)

DENSITY_BINS = 128
NCOLS = 4


def _label(tree: GateTree, gate: Gate, i: int) -> str:
    d = gate.dims[i]
    xf = f" [{d.transform}]" if d.transform else ""
    comp = "" if d.compensation is None else " (comp)"
    return f"{d.marker}{xf}{comp}"


def _values(cols: _Columns, tree: GateTree, gate: Gate, rows: np.ndarray) -> list[np.ndarray]:
    out = []
    for d in gate.dims:
        x = cols.raw(d, rows)
        xf = _xf(tree, d)
        with np.errstate(all="ignore"):
            out.append(np.asarray(x if xf is None else xf.apply(x), dtype=np.float64))
    return out


def _limits(v: np.ndarray, extra: Sequence[float | None]) -> tuple[float, float]:
    f = v[np.isfinite(v)]
    pts = [float(x) for x in extra if x is not None and np.isfinite(x)]
    if f.size:
        pts += [float(np.quantile(f, 0.001)), float(np.quantile(f, 0.999))]
    if not pts:
        return 0.0, 1.0
    lo, hi = min(pts), max(pts)
    pad = 0.05 * (hi - lo or 1.0)
    return lo - pad, hi + pad


def _stats(res: GatingResult, pop: str, parent_n: int) -> str:
    if pop in res.not_computed:
        return f"{pop}: not computed"
    c = res.count(pop) or 0
    pct = f"{100.0 * c / parent_n:.1f}%" if parent_n else "n/a"
    return f"{pop}: {c:,} ({pct})"


def _draw_gate(ax: Any, gate: Gate, xlim: tuple[float, float], ylim: tuple[float, float]) -> None:
    from matplotlib.patches import Polygon, Rectangle

    kw: dict[str, Any] = {"fill": False, "edgecolor": "red", "linewidth": 1.2}
    if gate.type == "polygon":
        ax.add_patch(Polygon(np.asarray(gate.vertices), closed=True, **kw))
    elif gate.type == "ellipse":
        cov = np.asarray(gate.covariance)[:2, :2]
        vals, vecs = np.linalg.eigh(cov)
        if np.all(vals > 0):
            t = np.linspace(0, 2 * math.pi, 200)
            circle = np.stack([np.cos(t), np.sin(t)])
            pts = (vecs @ (np.sqrt(vals * float(gate.distance_square or 0))[:, None] * circle)).T
            pts += np.asarray(gate.mean[:2])
            ax.plot(pts[:, 0], pts[:, 1], color="red", linewidth=1.2)
    elif gate.type == "quadrant":
        for v in gate.dims[0].dividers:
            ax.axvline(v, color="red", linewidth=1.0)
        for v in gate.dims[1].dividers:
            ax.axhline(v, color="red", linewidth=1.0)
    elif gate.type in ("rectangle", "threshold"):
        (x0, x1), (y0, y1) = ((d.min, d.max) for d in gate.dims[:2])
        x0 = xlim[0] if x0 is None else x0
        x1 = xlim[1] if x1 is None else x1
        y0 = ylim[0] if y0 is None else y0
        y1 = ylim[1] if y1 is None else y1
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, **kw))


def gating_figure(
    tree: GateTree,
    events: np.ndarray,
    marker_index: Mapping[str, int | None],
    res: GatingResult,
    path: str | Path,
    title: str = "",
    spill: Any = None,
    max_events: int = 50_000,
    random_state: int = 0,
    channel_names: Sequence[str] | None = None,
) -> Path:
    """Write the gating figure of one tube as PNG.

    Parameters
    ----------
    tree, events, marker_index, spill, channel_names
        As given to :func:`nkflow.gating.gate_sample` (without ``channel_names`` the spillover
        placement recorded in ``res`` is used).
    res
        The result of that call (counts and memberships are taken from it).
    path
        Output PNG.
    title
        Figure title (sample, tube, file).
    max_events
        At most this many parent events are drawn per panel (seeded subsample).
    random_state
        Seed of the subsample.

    Returns
    -------
    Path
        ``path``.
    """
    # Figure + Agg canvas directly (no pyplot): no global state, and a cheaper import.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if spill is not None and channel_names is None:
        spill = res.spill_columns  # placed on columns by gate_sample
    cols = _Columns(tree, np.asarray(events), marker_index, spill, channel_names)
    gates = [g for g in tree.gates if g.type != "boolean"]
    n = np.asarray(events).shape[0]
    nrows = max(1, math.ceil(len(gates) / NCOLS))
    ncols = min(NCOLS, max(1, len(gates)))
    fig = Figure(figsize=(3.6 * ncols, 3.2 * nrows))
    FigureCanvasAgg(fig)
    # only as many axes as gates (an unused axes still costs its construction)
    axes = np.array([fig.add_subplot(nrows, ncols, k + 1) for k in range(max(1, len(gates)))])
    for k, g in enumerate(gates):
        ax = axes[k]
        pops = g.population_ids()
        # explicit y: skips matplotlib's per-draw title/tick overlap search
        ax.set_title(f"{g.id} (of {g.parent or 'all events'})", fontsize=9, y=1.0)
        # few ticks: tick artists dominate the drawing time of a small panel
        ax.xaxis.set_major_locator(MaxNLocator(nbins=3))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=3))
        if any(p in res.not_computed for p in pops) or (
            g.parent is not None and g.parent in res.not_computed
        ):
            reason = res.not_computed.get(pops[0], res.not_computed.get(g.parent or "", ""))
            ax.text(0.5, 0.5, f"not computed\n{reason}", ha="center", va="center", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        if g.parent is None:
            rows = np.arange(n) if res.keep is None else np.flatnonzero(res.keep)
        else:
            rows = np.flatnonzero(res.membership(g.parent))
        parent_n = rows.size
        if rows.size > max_events:
            rng = np.random.default_rng(random_state)
            rows = np.sort(rng.choice(rows, size=max_events, replace=False))
        vals = _values(cols, tree, g, rows)
        text = "\n".join(_stats(res, p, parent_n) for p in pops)
        if len(vals) >= 2:
            d0, d1 = g.dims[0], g.dims[1]
            xlim = _limits(
                vals[0],
                [d0.min, d0.max, *d0.dividers] + ([v[0] for v in g.vertices] if g.vertices else []),
            )
            ylim = _limits(
                vals[1],
                [d1.min, d1.max, *d1.dividers] + ([v[1] for v in g.vertices] if g.vertices else []),
            )
            ok = np.isfinite(vals[0]) & np.isfinite(vals[1])
            if ok.any():
                # a 2-D histogram drawn as one image: as informative as hexbin for a gate
                # check, and an order of magnitude cheaper to render than a hexagon per bin
                hist, _, _ = np.histogram2d(
                    vals[0][ok],
                    vals[1][ok],
                    bins=DENSITY_BINS if rows.size >= 20_000 else DENSITY_BINS // 2,
                    range=(xlim, ylim),
                )
                hist = np.ma.masked_less(hist.T, 1)
                if hist.count():
                    ax.imshow(
                        hist,
                        origin="lower",
                        extent=(*xlim, *ylim),
                        aspect="auto",
                        interpolation="nearest",
                        cmap="viridis",
                        norm=LogNorm(vmin=1, vmax=max(float(hist.max()), 2.0)),
                    )
            ax.set_xlim(xlim)
            ax.set_ylim(ylim)
            ax.set_xlabel(_label(tree, g, 0), fontsize=8)
            ax.set_ylabel(_label(tree, g, 1), fontsize=8)
            _draw_gate(ax, g, xlim, ylim)
        else:
            d0 = g.dims[0]
            cut = res.thresholds.get(g.id)
            lines = [v for v in (d0.min, d0.max, cut) if v is not None]
            xlim = _limits(vals[0], lines)
            f = vals[0][np.isfinite(vals[0])]
            counts_h, edges = np.histogram(
                f, bins=int(np.clip(2 * np.sqrt(f.size), 16, 128)), range=xlim
            )
            ax.stairs(counts_h, edges, fill=True, color="0.4")
            for v in lines:
                ax.axvline(v, color="red", linewidth=1.2)
            ax.set_xlim(xlim)
            ax.set_xlabel(_label(tree, g, 0), fontsize=8)
            ax.set_ylabel("events", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.text(
            0.02,
            0.98,
            text,
            transform=ax.transAxes,
            va="top",
            ha="left",
            fontsize=7,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
    if title:
        fig.suptitle(title, fontsize=10)
    # fixed margins instead of tight_layout(), which costs a full extra draw
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=0.55 / width,
        right=1 - 0.15 / width,
        bottom=0.5 / height,
        top=1 - 0.6 / height,
        wspace=0.35,
        hspace=0.55,
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, metadata={"Software": None})
    return out
