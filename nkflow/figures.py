"""Per-tube gating figure: every gate drawn on its parent's events.

Contract
--------
``gating_figure(res, path, ...)`` writes one PNG with one panel per gate of ``res.tree``
(boolean gates excepted): the parent population's events in the gate's transformed units
(a 2-D density for two or more dims, a histogram for one), the gate outline, and each defined
population's event count and percent of parent (from ``res``, never recomputed), and for a
gate fitted to the tube the methods that placed it (``fitted: valley, tail``). Axes are
labelled with marker names and transform ids. A gate whose fit failed shows the parent events it
was tried on, no boundary, and the failure; any other gate that was not computed gets a panel
saying why. The figure is a pure function of its inputs: subsampling uses ``random_state`` and the PNG
carries no timestamp, so the same input gives the same bytes.

Drawing uses Pillow directly (no matplotlib figure: its axes and tick artists cost ~10x the whole
render). Layout: ``NCOLS`` panels per row, each ``PANEL_W`` x ``PANEL_H`` px, under a title band.
Densities are 2-D histograms on a log colour scale through an embedded viridis table; 1-D gates
are filled histograms with their min/max/threshold lines; gate outlines are red.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nkflow.gating.evaluate import GatingResult
from nkflow.gating.tree import Gate

logger = logging.getLogger(__name__)

DENSITY_BINS = 128
NCOLS = 4


def _label(gate: Gate, i: int) -> str:
    d = gate.dims[i]
    xf = f" [{d.transform}]" if d.transform else ""
    comp = "" if d.compensation is None else " (comp)"
    return f"{d.marker}{xf}{comp}"


def _values(res: GatingResult, gate: Gate, rows: np.ndarray) -> list[np.ndarray]:
    out = []
    for d in gate.dims:
        x = res.raw_values(d, rows)
        xf = res.tree.transform_of(d)
        with np.errstate(all="ignore"):
            out.append(np.asarray(x if xf is None else _display_apply(xf, x), dtype=np.float64))
    return out


# Logicle and hyperlog solve an equation per value (~1 us each): for drawing, interpolate in a
# table instead, uniform in u = asinh(x / _GRID_SCALE) so a value's cell is found by arithmetic
# (no search). Error < 1e-6 transformed units, far below a pixel; values outside the table (and
# NaN) take the exact path.
_GRID_KINDS = ("logicle", "hyperlog")
_GRID_N = 16385
_GRID_SCALE = 100.0
_GRIDS: dict[str, tuple[float, float, np.ndarray] | None] = {}


def _grid(xf: Any) -> tuple[float, float, np.ndarray] | None:
    key = repr(sorted(xf.to_dict().items()))
    if key not in _GRIDS:
        with np.errstate(all="ignore"):
            lo, hi = (float(v) for v in np.asarray(xf.inverse(np.array([-0.5, 1.5]))))
            u = np.linspace(np.arcsinh(lo / _GRID_SCALE), np.arcsinh(hi / _GRID_SCALE), _GRID_N)
            y = np.asarray(xf.apply(np.sinh(u) * _GRID_SCALE), dtype=np.float64)
        ok = bool(np.all(np.isfinite(y)) and np.all(np.diff(y) > 0))
        _GRIDS[key] = (float(u[0]), float((_GRID_N - 1) / (u[-1] - u[0])), y) if ok else None
    return _GRIDS[key]


def _display_apply(xf: Any, x: np.ndarray) -> np.ndarray:
    """``xf.apply(x)`` for drawing: table lookup for the slow transforms on many values."""
    if getattr(xf, "kind", "") not in _GRID_KINDS or x.size < 4096:
        return xf.apply(x)
    g = _grid(xf)
    if g is None:
        return xf.apply(x)
    u0, inv_du, y = g
    pos = (np.arcsinh(np.asarray(x, dtype=np.float64) / _GRID_SCALE) - u0) * inv_du
    inside = (pos >= 0) & (pos <= _GRID_N - 1)  # False for NaN
    i = np.minimum(np.where(inside, pos, 0).astype(np.int64), _GRID_N - 2)
    frac = np.where(inside, pos, 0) - i
    out = y[i] + frac * (y[i + 1] - y[i])
    if not inside.all():
        out[~inside] = xf.apply(np.asarray(x, dtype=np.float64)[~inside])
    return out


def _limits(v: np.ndarray, extra: Sequence[float | None]) -> tuple[float, float]:
    f = v[np.isfinite(v)]
    pts = [float(x) for x in extra if x is not None and np.isfinite(x)]
    if f.size:
        pts += [float(q) for q in np.quantile(f, [0.001, 0.999])]
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


# ---------------------------------------------------------------- rendering (Pillow only)

PANEL_W, PANEL_H = 330, 300
TITLE_H = 34
# plot area inside a panel: left room for y ticks + rotated label, bottom for x ticks + label
PLOT_L, PLOT_R, PLOT_T, PLOT_B = 62, 12, 26, 46
PLOT_W, PLOT_H = PANEL_W - PLOT_L - PLOT_R, PANEL_H - PLOT_T - PLOT_B
GATE_RGB = (220, 20, 20)
HIST_RGB = (96, 112, 140)  # slate, not grey: text anti-aliasing never produces it
AXIS_RGB = (40, 40, 40)
WHITE = (255, 255, 255)
NOTE_INK = 90  # grey level of the "not computed" note (text layer, 0 = black)
# viridis sampled at 32 evenly spaced points (matplotlib's table), interpolated to N_VIRIDIS levels
_VIRIDIS32 = (
    0x440154, 0x470D60, 0x48186A, 0x482374, 0x472E7C, 0x453882, 0x424186, 0x3E4A89,
    0x3A548C, 0x365D8D, 0x32658E, 0x2E6D8E, 0x2B758E, 0x287D8E, 0x25848E, 0x228C8D,
    0x1F948C, 0x1E9C89, 0x20A386, 0x25AB82, 0x2EB37C, 0x3ABA76, 0x48C16E, 0x58C765,
    0x6CCD5A, 0x7FD34E, 0x93D741, 0xA8DB34, 0xC0DF25, 0xD5E21A, 0xEAE51A, 0xFDE725,
)  # fmt: skip
N_VIRIDIS = 128
N_GREY = 64


def _viridis_lut() -> np.ndarray:
    anchors = np.array([[(c >> 16) & 255, (c >> 8) & 255, c & 255] for c in _VIRIDIS32], float)
    x = np.linspace(0.0, 1.0, anchors.shape[0])
    t = np.linspace(0.0, 1.0, N_VIRIDIS)
    lut = np.stack([np.interp(t, x, anchors[:, k]) for k in range(3)], axis=1)
    return np.round(lut).astype(np.uint8)


VIRIDIS = _viridis_lut()
# The PNG is paletted (encodes ~4x faster than RGB, same pixels): indices 0..N_VIRIDIS-1 are the
# density colours, then the flat colours, then a grey ramp for anti-aliased text.
WHITE_I, GATE_I, HIST_I, AXIS_I = range(N_VIRIDIS, N_VIRIDIS + 4)
GREY0 = N_VIRIDIS + 8
GREYS = np.round(np.linspace(0, 255, N_GREY)).astype(np.uint8)
_PALETTE = np.zeros((256, 3), dtype=np.uint8)
_PALETTE[:N_VIRIDIS] = VIRIDIS
_PALETTE[[WHITE_I, GATE_I, HIST_I, AXIS_I]] = [WHITE, GATE_RGB, HIST_RGB, AXIS_RGB]
_PALETTE[GREY0 : GREY0 + N_GREY] = GREYS[:, None]
_PALETTE_BYTES = _PALETTE.tobytes()
# text-layer level (0 = black ink, 255 = no text) -> palette index of the nearest grey
_GREY_INDEX = ((np.arange(256) * (N_GREY - 1) + 127) // 255 + GREY0).astype(np.uint8)
_FONTS: dict[int, Any] = {}


def _font(size: int) -> Any:
    """DejaVu Sans from matplotlib's data directory (no pyplot import), cached per size."""
    if size not in _FONTS:
        from PIL import ImageFont

        try:
            import matplotlib

            ttf = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
            _FONTS[size] = ImageFont.truetype(str(ttf), size)
        except (ImportError, OSError):
            logger.warning("DejaVuSans.ttf not found; gating figures use Pillow's default font")
            _FONTS[size] = ImageFont.load_default(size=size)
    return _FONTS[size]


def _ticks(lo: float, hi: float) -> list[float]:
    """Three to five round tick values inside [lo, hi] (steps 1, 2, 2.5, 5 x 10^k)."""
    span = hi - lo
    if not (np.isfinite(span) and span > 0):
        return []
    mag = 10.0 ** math.floor(math.log10(span))
    for step in (m * mag * e for e in (1.0, 0.1, 0.01) for m in (5, 2.5, 2, 1)):
        first = math.ceil(lo / step - 1e-9)
        last = math.floor(hi / step + 1e-9)
        if last - first + 1 >= 3:
            return [0.0 if k == 0 else k * step for k in range(first, last + 1)]
    return []


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 10_000:
        return f"{v:,.0f}"
    if a >= 100 or v == int(v):
        return f"{v:g}"
    return f"{v:.3g}"


class _Map:
    """Data -> pixel coordinates of the plot area (y up)."""

    def __init__(self, xlim: tuple[float, float], ylim: tuple[float, float]) -> None:
        self.x0, self.sx = xlim[0], (PLOT_W - 1) / ((xlim[1] - xlim[0]) or 1.0)
        self.y0, self.sy = ylim[0], (PLOT_H - 1) / ((ylim[1] - ylim[0]) or 1.0)

    def x(self, v: Any) -> Any:
        return np.clip((np.asarray(v, float) - self.x0) * self.sx, -4 * PLOT_W, 5 * PLOT_W)

    def y(self, v: Any) -> Any:
        return np.clip(
            PLOT_H - 1 - (np.asarray(v, float) - self.y0) * self.sy, -4 * PLOT_H, 5 * PLOT_H
        )

    def points(self, pts: np.ndarray) -> list[tuple[float, float]]:
        """Pixel coordinates of the rows ``(x, y)`` of ``pts``."""
        return list(zip(self.x(pts[:, 0]).tolist(), self.y(pts[:, 1]).tolist(), strict=True))


def _density(
    x: np.ndarray, y: np.ndarray, xlim: tuple[float, float], ylim: tuple[float, float], bins: int
) -> np.ndarray:
    """Plot-area palette indices of the log-scaled 2-D histogram (white where a bin is empty)."""
    ix = np.floor((x - xlim[0]) * (bins / (xlim[1] - xlim[0]))).astype(np.int64)
    iy = np.floor((y - ylim[0]) * (bins / (ylim[1] - ylim[0]))).astype(np.int64)
    ok = (ix >= 0) & (ix < bins) & (iy >= 0) & (iy < bins)
    h = np.bincount(iy[ok] * bins + ix[ok], minlength=bins * bins).reshape(bins, bins)
    idx = np.full(h.shape, WHITE_I, dtype=np.uint8)
    nz = h > 0
    if nz.any():
        top = math.log(max(float(h.max()), 2.0))
        level = np.log(h[nz]) / top * (N_VIRIDIS - 1)
        idx[nz] = np.minimum(np.round(level), N_VIRIDIS - 1).astype(np.uint8)
    cols = np.arange(PLOT_W) * bins // PLOT_W
    rows = (PLOT_H - 1 - np.arange(PLOT_H)) * bins // PLOT_H  # row 0 = top = high y
    return idx[rows][:, cols]


def _histogram(v: np.ndarray, xlim: tuple[float, float]) -> tuple[np.ndarray, float]:
    """Plot-area palette indices of a filled histogram, and the y-axis maximum (events)."""
    nb = int(np.clip(2 * np.sqrt(v.size), 16, 128))
    counts, _ = np.histogram(v, bins=nb, range=xlim)
    ymax = max(1.0, float(counts.max(initial=0)) * 1.05)
    heights = np.round(counts / ymax * (PLOT_H - 1)).astype(np.int64)
    col_h = heights[np.arange(PLOT_W) * nb // PLOT_W]
    filled = np.arange(PLOT_H)[:, None] >= (PLOT_H - col_h)[None, :]
    return np.where(filled, np.uint8(HIST_I), np.uint8(WHITE_I)), ymax


def _outline(
    draw: Any, gate: Gate, m: _Map, xlim: tuple[float, float], ylim: tuple[float, float]
) -> None:
    w = 2
    if gate.type == "polygon":
        xy = m.points(np.asarray(gate.vertices, float))
        draw.line([*xy, xy[0]], fill=GATE_I, width=w, joint="curve")
    elif gate.type == "ellipse":
        cov = np.asarray(gate.covariance, float)[:2, :2]
        vals, vecs = np.linalg.eigh(cov)
        if np.all(vals > 0):
            t = np.linspace(0, 2 * math.pi, 121)
            circle = np.stack([np.cos(t), np.sin(t)])
            pts = (vecs @ (np.sqrt(vals * float(gate.distance_square or 0))[:, None] * circle)).T
            pts += np.asarray(gate.mean[:2], float)
            draw.line(m.points(pts), fill=GATE_I, width=w, joint="curve")
    elif gate.type == "quadrant":
        for v in gate.dims[0].dividers:
            px = float(m.x(v))
            draw.line([(px, 0), (px, PLOT_H)], fill=GATE_I, width=w)
        for v in gate.dims[1].dividers:
            py = float(m.y(v))
            draw.line([(0, py), (PLOT_W, py)], fill=GATE_I, width=w)
    else:  # rectangle, range, threshold: an open side reaches past the axes
        (x0, x1), (y0, y1) = (
            (lo - (hi - lo) if d.min is None else d.min, hi + (hi - lo) if d.max is None else d.max)
            for d, (lo, hi) in zip(gate.dims[:2], (xlim, ylim), strict=True)
        )
        draw.rectangle(
            [float(m.x(x0)), float(m.y(y1)), float(m.x(x1)), float(m.y(y0))],
            outline=GATE_I,
            width=w,
        )


# Rendered text masks, keyed by (text, size, anchor, rotated): tick labels, axis labels and
# panel titles repeat across panels and tubes, and rasterising a string costs ~0.1 ms.
_TEXT_CACHE: dict[tuple[str, int, str, bool], tuple[Any, int, int]] = {}
_TEXT_CACHE_MAX = 4096


def _mask(text: str, size: int, anchor: str, rotated: bool) -> tuple[Any, int, int]:
    key = (text, size, anchor, rotated)
    hit = _TEXT_CACHE.get(key)
    if hit is None:
        from PIL import Image, ImageDraw

        f = _font(size)
        x0, y0, x1, y1 = f.getbbox(text, anchor=anchor)
        tile = Image.new("L", (max(1, x1 - x0), max(1, y1 - y0)), 0)
        ImageDraw.Draw(tile).text((-x0, -y0), text, font=f, fill=255, anchor=anchor)
        if rotated:  # reading upwards, centred on the anchor point
            tile = tile.transpose(Image.Transpose.ROTATE_90)
            x0, y0 = -(tile.width // 2), -(tile.height // 2)
        hit = (tile, x0, y0)
        if len(_TEXT_CACHE) < _TEXT_CACHE_MAX:
            _TEXT_CACHE[key] = hit
    return hit


def _text(
    txt: Any,
    xy: tuple[float, float],
    text: str,
    size: int,
    anchor: str = "la",
    rotated: bool = False,
) -> None:
    """Draw one line of black text on the text layer at ``xy`` (Pillow anchor semantics)."""
    tile, dx, dy = _mask(text, size, anchor, rotated)
    txt.paste(0, (round(xy[0]) + dx, round(xy[1]) + dy), tile)


#: cost of one gate-line pixel under a count box, in event pixels (see :func:`_text_box`)
GATE_LINE_COST = 10


def _text_box(img: Any, tdraw: Any, lines: list[str], px0: int, py0: int) -> tuple[int, int]:
    """Count/percent box in the plot corner that hides least (top left on a tie).

    A corner's cost is the event pixels under the box plus ``GATE_LINE_COST`` per gate-line
    pixel: text across a gate line is harder to read than text over a few events. The plot's
    top-left corner is at (px0, py0). Density under the text is whited out, gate lines are kept.
    Returns the box's top-left pixel.
    """
    from PIL import Image

    f = _font(12)
    text = "\n".join(lines)
    _, _, r, b = tdraw.multiline_textbbox((4, 3), text, font=f, spacing=2)
    bw, bh = min(r + 4, PLOT_W - 3), min(b + 4, PLOT_H - 3)
    x1, y1 = px0 + PLOT_W - 2 - bw, py0 + PLOT_H - 2 - bh
    plot = np.asarray(img)

    def covered(corner: tuple[int, int]) -> int:
        region = plot[corner[1] : corner[1] + bh, corner[0] : corner[0] + bw]
        gate = np.count_nonzero(region == GATE_I)
        return int(np.count_nonzero(region != WHITE_I) - gate + GATE_LINE_COST * gate)

    x, y = min([(px0 + 1, py0 + 1), (x1, py0 + 1), (px0 + 1, y1), (x1, y1)], key=covered)
    box = (x, y, x + bw, y + bh)
    region = np.asarray(img.crop(box))
    img.paste(Image.fromarray(np.where(region == GATE_I, region, np.uint8(WHITE_I))), box[:2])
    tdraw.multiline_text((x + 4, y + 3), text, font=f, fill=0, spacing=2)
    return x, y


def _axes(
    txt: Any,
    draw: Any,
    ox: int,
    oy: int,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    xlabel: str,
    ylabel: str,
) -> None:
    """Frame and ticks (graphics layer), tick and axis labels (text layer) of one panel."""
    px0, py0 = ox + PLOT_L, oy + PLOT_T
    px1, py1 = px0 + PLOT_W, py0 + PLOT_H
    draw.rectangle([px0 - 1, py0 - 1, px1, py1], outline=AXIS_I, width=1)
    m = _Map(xlim, ylim)
    for v in _ticks(*xlim):
        x = px0 + float(m.x(v))
        draw.line([(x, py1), (x, py1 + 4)], fill=AXIS_I)
        _text(txt, (x, py1 + 6), _fmt(v), 11, "mt")
    for v in _ticks(*ylim):
        y = py0 + float(m.y(v))
        draw.line([(px0 - 5, y), (px0 - 1, y)], fill=AXIS_I)
        _text(txt, (px0 - 7, y), _fmt(v), 11, "rm")
    _text(txt, (px0 + PLOT_W // 2, py1 + 22), xlabel, 12, "mt")
    if ylabel:
        _text(txt, (ox + 12, py0 + PLOT_H // 2), ylabel, 12, "mm", rotated=True)


def _wrap(text: str, width: int) -> str:
    """Greedy word wrap (a reason string can be long)."""
    lines: list[str] = []
    for word in str(text).split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines[:4])


@dataclass(frozen=True)
class FigureSettings:
    """The ``figures`` settings (``workflow/schemas/config.schema.yaml``)."""

    max_events: int
    random_state: int

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> FigureSettings:
        """From the ``figures`` block, checked by its schema, defaults filled."""
        from nkflow.schemas import build_settings

        return build_settings(cls, raw, "config", prefix="figures", path=("figures",))  # type: ignore[no-any-return]


def gating_figure(
    res: GatingResult,
    path: str | Path,
    title: str = "",
    *,
    settings: FigureSettings,
    layout: dict[str, Any] | None = None,
) -> Path:
    """Write the gating figure of one tube as PNG.

    Parameters
    ----------
    res
        The result of :func:`nkflow.gating.gate_sample` on the tube: the tree as evaluated,
        counts, memberships and the event values (compensated once, by gating) are taken
        from it.
    path
        Output PNG.
    title
        Figure title (sample, tube, file).
    settings
        ``max_events`` parent events at most are drawn per panel, a subsample seeded with
        ``random_state``.
    layout
        When given, filled with gate id -> ``{"box": [x, y, w, h]`` of its plot area in image
        pixels, ``"xlim"``, ``"ylim"`` (None for a histogram) and ``"markers"``}``, so that a
        viewer can map a position on the image to gate units.

    Returns
    -------
    Path
        ``path``.
    """
    from PIL import Image, ImageDraw

    tree = res.tree
    gates = [g for g in tree.gates if g.type != "boolean"]
    n = res.n_events
    nrows = max(1, math.ceil(len(gates) / NCOLS))
    ncols = min(NCOLS, max(1, len(gates)))
    size = (ncols * PANEL_W, TITLE_H + nrows * PANEL_H)
    # two layers: palette indices of the graphics, and grey levels of the (anti-aliased) text
    img = Image.new("L", size, WHITE_I)
    draw = ImageDraw.Draw(img)
    txt = Image.new("L", size, 255)
    tdraw = ImageDraw.Draw(txt)
    if title:
        _text(txt, (size[0] // 2, TITLE_H // 2), title, 15, "mm")
    methods: dict[str, list[str]] = {}
    for f in res.fits:
        methods.setdefault(f["gate"], []).append(f["method"])
    for k, g in enumerate(gates):
        ox, oy = (k % NCOLS) * PANEL_W, TITLE_H + (k // NCOLS) * PANEL_H
        px0, py0 = ox + PLOT_L, oy + PLOT_T
        pops = g.population_ids()
        _text(txt, (px0 + PLOT_W // 2, oy + 4), f"{g.id} (of {g.parent or 'all events'})", 13, "mt")
        # a gate whose fit failed on a computed parent: draw the parent's events it was tried on
        why = res.not_computed.get(pops[0], "")
        fit_failed = why.startswith("gate_fit_failed:") and (
            g.parent is None or g.parent not in res.not_computed
        )
        if not fit_failed and (
            any(p in res.not_computed for p in pops)
            or (g.parent is not None and g.parent in res.not_computed)
        ):
            reason = res.not_computed.get(pops[0], res.not_computed.get(g.parent or "", ""))
            draw.rectangle([px0 - 1, py0 - 1, px0 + PLOT_W, py0 + PLOT_H], outline=AXIS_I)
            tdraw.multiline_text(
                (px0 + PLOT_W // 2, py0 + PLOT_H // 2),
                "not computed\n" + _wrap(reason, 38),
                font=_font(12),
                fill=NOTE_INK,
                anchor="mm",
                align="center",
                spacing=3,
            )
            continue
        if g.parent is None:
            rows = np.arange(n) if res.keep is None else np.flatnonzero(res.keep)
        else:
            rows = np.flatnonzero(res.membership(g.parent))
        parent_n = rows.size
        if rows.size > settings.max_events:
            rng = np.random.default_rng(settings.random_state)
            rows = np.sort(rng.choice(rows, size=settings.max_events, replace=False))
        vals = _values(res, g, rows)
        if len(vals) >= 2:
            d0, d1 = g.dims[0], g.dims[1]
            # a fitted shape reaches past the data (the singlet band runs to the top of the
            # scale): the axes follow the events, not its vertices
            verts = g.vertices if g.vertices and g.id not in methods else ()
            xlim = _limits(vals[0], [d0.min, d0.max, *d0.dividers] + [v[0] for v in verts])
            ylim = _limits(vals[1], [d1.min, d1.max, *d1.dividers] + [v[1] for v in verts])
            ok = np.isfinite(vals[0]) & np.isfinite(vals[1])
            bins = DENSITY_BINS if rows.size >= 20_000 else DENSITY_BINS // 2
            plot = Image.fromarray(_density(vals[0][ok], vals[1][ok], xlim, ylim, bins))
            if not fit_failed:
                _outline(ImageDraw.Draw(plot), g, _Map(xlim, ylim), xlim, ylim)
            ylabel, layout_ylim = _label(g, 1), list(ylim)
        else:
            d0 = g.dims[0]
            cut = res.thresholds.get(g.id)
            lines = [v for v in (d0.min, d0.max, cut) if v is not None]
            xlim = _limits(vals[0], lines)
            arr, ymax = _histogram(vals[0][np.isfinite(vals[0])], xlim)
            plot = Image.fromarray(arr)
            pd = ImageDraw.Draw(plot)
            m = _Map(xlim, (0.0, ymax))
            for v in lines:
                x = float(m.x(v))
                pd.line([(x, 0), (x, PLOT_H)], fill=GATE_I, width=2)
            ylim, ylabel, layout_ylim = (0.0, ymax), "events", None
        img.paste(plot, (px0, py0))
        _axes(txt, draw, ox, oy, xlim, ylim, _label(g, 0), ylabel)
        if layout is not None:
            layout[g.id] = {"box": [px0, py0, PLOT_W, PLOT_H], "xlim": list(xlim),
                            "ylim": layout_ylim, "markers": [d.marker for d in g.dims[:2]]}  # fmt: skip
        notes = [_stats(res, p, parent_n) for p in pops]
        if fit_failed:
            notes.append("fit FAILED: " + why.removeprefix("gate_fit_failed:"))
        elif g.id in methods:
            fitted = [m for m in dict.fromkeys(methods[g.id]) if m != "override"]
            if fitted:
                notes.append("fitted: " + ", ".join(fitted))
            authors = sorted(
                {
                    str(f["stats"].get("author", "?"))
                    for f in res.fits
                    if f["gate"] == g.id and f["method"] == "override"
                }
            )
            if authors:
                notes.append("OVERRIDE by " + ", ".join(authors))
        _text_box(img, tdraw, notes, px0, py0)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    t = np.asarray(txt)
    idx = np.array(img)
    inked = t < 255
    idx[inked] = _GREY_INDEX[t[inked]]
    png = Image.frombytes("P", size, np.ascontiguousarray(idx).tobytes())
    png.putpalette(_PALETTE_BYTES)
    # no pnginfo: Pillow writes no timestamp, so identical input gives identical bytes
    png.save(out, format="PNG", optimize=False, compress_level=6)
    return out
