"""Gating figure: written, deterministic bytes, not-computed gates drawn as such."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from nkflow import figures as F
from nkflow.figures import FigureSettings, gating_figure
from nkflow.gating import gate_sample, load_tree, tree_from_dict

FIG = FigureSettings.from_dict(None)  # the configured defaults

FIX = Path(__file__).parent / "gating_fixtures"


def _events(n: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.column_stack(
        [rng.uniform(0, 100, n), rng.uniform(0, 100, n), rng.uniform(-100, 50000, n)]
    )


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_figure_is_deterministic(tmp_path: Path) -> None:
    tree = load_tree(FIX / "tiny.yaml")
    ev = _events()
    mi = {"A": 0, "B": 1, "C": 2}
    res = gate_sample(tree, ev, mi)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    gating_figure(res, a, title="t", settings=FigureSettings(max_events=500, random_state=0))
    gating_figure(res, b, title="t", settings=FigureSettings(max_events=500, random_state=0))
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _sha(a) == _sha(b)
    c = tmp_path / "c.png"
    gating_figure(res, c, title="t", settings=FigureSettings(max_events=500, random_state=1))
    assert _sha(c) != _sha(a)  # the seed is what makes it reproducible, not luck
    d = tmp_path / "d.png"
    ev2 = ev.copy()
    ev2[:, 0] = 100 - ev2[:, 0]  # mirrored A: same counts of most gates, different picture
    gating_figure(
        gate_sample(tree, ev2, mi),
        d,
        title="t",
        settings=FigureSettings(max_events=500, random_state=0),
    )
    assert _sha(d) != _sha(a)


def test_figure_with_missing_marker(tmp_path: Path) -> None:
    tree = load_tree(FIX / "tiny.yaml")
    ev = _events()
    mi = {"A": 0, "B": 1}
    res = gate_sample(tree, ev, mi)
    out = gating_figure(res, tmp_path / "m.png", settings=FIG)
    assert out.stat().st_size > 10_000


# ---- pixel facts of a hand-built tree (one panel per gate type, one not computed)

SHAPES = {
    "name": "shapes",
    "panel": "p",
    "gates": [
        {
            "id": "rect",
            "parent": None,
            "type": "rectangle",
            "dims": [{"marker": "A", "min": 20, "max": 60}, {"marker": "B", "min": 30}],
        },
        {
            "id": "poly",
            "parent": None,
            "type": "polygon",
            "dims": [{"marker": "A"}, {"marker": "B"}],
            "vertices": [[10, 10], [90, 10], [50, 90]],
        },
        {
            "id": "round",
            "parent": None,
            "type": "ellipse",
            "dims": [{"marker": "A"}, {"marker": "B"}],
            "mean": [50, 50],
            "covariance": [[100, 0], [0, 400]],
            "distance_square": 1.0,
        },
        {
            "id": "quads",
            "parent": None,
            "type": "quadrant",
            "dims": [{"marker": "A", "divider": 50}, {"marker": "B", "divider": 50}],
            "quadrants": {
                "pp": ["hi", "hi"],
                "mp": ["lo", "hi"],
                "pm": ["hi", "lo"],
                "mm": ["lo", "lo"],
            },
        },
        {
            "id": "cut",
            "parent": None,
            "type": "threshold",
            "dims": [{"marker": "A"}],
            "method": "valley",
            "bounds": [30, 70],
            "default": 50,
            "allow_fallback": True,
        },
        {
            "id": "gone",
            "parent": None,
            "type": "rectangle",
            "dims": [{"marker": "A", "min": 1}, {"marker": "MISSING", "min": 1}],
        },
    ],
}


def _panel(img: np.ndarray, k: int) -> np.ndarray:
    """Plot area of panel k (row-major, NCOLS per row) as an (H, W, 3) array."""
    ox = (k % F.NCOLS) * F.PANEL_W + F.PLOT_L
    oy = F.TITLE_H + (k // F.NCOLS) * F.PANEL_H + F.PLOT_T
    return img[oy : oy + F.PLOT_H, ox : ox + F.PLOT_W]


def _has(area: np.ndarray, rgb: tuple[int, int, int]) -> int:
    return int(np.all(area == np.asarray(rgb, dtype=np.uint8), axis=-1).sum())


def _viridis_pixels(area: np.ndarray) -> int:
    lut = F.VIRIDIS.astype(np.int64)
    a = area.astype(np.int64)
    codes = (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]
    return int(np.isin(codes, (lut[:, 0] << 16) | (lut[:, 1] << 8) | lut[:, 2]).sum())


def _shapes_png(tmp_path: Path) -> tuple[np.ndarray, object]:
    from PIL import Image

    tree = tree_from_dict(SHAPES)
    ev = _events(4000)
    mi = {"A": 0, "B": 1}  # MISSING is not in the tube: gate 'gone' is not computed
    res = gate_sample(tree, ev, mi)
    assert "gone" in res.not_computed
    out = gating_figure(res, tmp_path / "s.png", title="shapes", settings=FIG)
    return np.asarray(Image.open(out).convert("RGB")), res


def test_shapes_figure_pixels(tmp_path: Path) -> None:
    img, _ = _shapes_png(tmp_path)
    # 6 gates -> 2 rows of 4 panels under the title band
    assert img.shape == (F.TITLE_H + 2 * F.PANEL_H, 4 * F.PANEL_W, 3)
    for k in range(4):  # rectangle, polygon, ellipse, quadrant: density + red outline
        area = _panel(img, k)
        assert _has(area, F.GATE_RGB) > 50, k
        assert _viridis_pixels(area) > 1000, k
    cut = _panel(img, 4)  # 1-D: grey histogram and the red threshold line, no density
    assert _has(cut, F.HIST_RGB) > 1000
    assert _has(cut, F.GATE_RGB) >= F.PLOT_H
    assert _viridis_pixels(cut) == 0
    gone = _panel(img, 5)  # not computed: no density, no histogram, no outline
    assert _viridis_pixels(gone) == 0
    assert _has(gone, F.HIST_RGB) == 0
    assert _has(gone, F.GATE_RGB) == 0
    # empty grid cells (7th, 8th) stay white
    assert (_panel(img, 6) == 255).all() and (_panel(img, 7) == 255).all()


def test_rectangle_outline_at_its_bounds(tmp_path: Path) -> None:
    # rect is A in [20, 60), B >= 30 on uniform(0, 100) events: x limits are the 0.1/99.9 %
    # quantiles padded by 5 %, so A=20 and A=60 fall at known fractions of the plot width
    img, _ = _shapes_png(tmp_path)
    area = _panel(img, 0)
    red_cols = np.flatnonzero(np.all(area == np.asarray(F.GATE_RGB, np.uint8), -1).sum(0) > 40)
    ev = _events(4000)
    lo, hi = np.quantile(ev[:, 0], [0.001, 0.999])
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    for a in (20, 60):
        expect = (a - lo) / (hi - lo) * (F.PLOT_W - 1)
        assert np.min(np.abs(red_cols - expect)) <= 1.5, (a, expect, red_cols)


def test_ticks_are_round_and_three_to_five() -> None:
    assert F._ticks(0.0, 1.0) == [0.0, 0.5, 1.0]
    assert F._ticks(-0.05, 0.85) == [0.0, 0.25, 0.5, 0.75]
    assert F._ticks(0.0, 3000.0) == [0.0, 1000.0, 2000.0, 3000.0]
    assert F._ticks(1.0, 1.0) == []


def test_render_does_not_import_pyplot(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from nkflow.figures import FigureSettings, gating_figure\n"
        "from nkflow.gating import gate_sample, tree_from_dict\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_gating_figures import SHAPES, _events\n"
        "t = tree_from_dict(SHAPES); ev = _events(500); mi = {'A': 0, 'B': 1}\n"
        f"gating_figure(gate_sample(t, ev, mi), {str(tmp_path / 'x.png')!r}, "
        "settings=FigureSettings(max_events=50000, random_state=0))\n"
        "print('matplotlib.pyplot' in sys.modules, 'matplotlib.figure' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_display_transform_table_matches_exact_logicle() -> None:
    from nkflow.fcs.transforms import LogicleTransform

    xf = LogicleTransform(t=262144, w=0.5, m=4.5, a=0)
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.normal(0, 300, 5000), 10 ** rng.uniform(0, 5.4, 5000), [np.nan, -1e9, 1e12, 0.0]]
    )
    exact = xf.apply(x)
    fast = F._display_apply(xf, x)
    # a pixel of a 268-px plot spans ~0.004 transformed units: the table must be far finer
    assert np.nanmax(np.abs(fast - exact)) < 1e-6
    assert np.array_equal(np.isnan(fast), np.isnan(exact))
    assert F._display_apply(xf, x[:100]).tolist() == pytest.approx(exact[:100].tolist())


def test_a_failed_fit_shows_the_events_it_was_tried_on(tmp_path: Path) -> None:
    """A fitted gate that finds no valley: its panel draws the parent's events (the data a
    reviewer needs to see why), no boundary, and the failure in words."""
    from PIL import Image

    rng = np.random.default_rng(3)
    one_mode = np.column_stack([rng.normal(50, 5, 4000), rng.uniform(0, 100, 4000)])
    two_modes = np.column_stack(
        [np.r_[rng.normal(20, 4, 2000), rng.normal(80, 4, 2000)], rng.uniform(0, 100, 4000)]
    )
    tree = tree_from_dict(
        {
            "name": "fits",
            "gates": [
                {
                    "id": "pos",
                    "parent": None,
                    "type": "rectangle",
                    "dims": [{"marker": "A", "min": {"fit": "valley", "bounds": [30, 70]}}],
                },
                {
                    "id": "box",
                    "parent": None,
                    "type": "ellipse",
                    "dims": [{"marker": "A"}, {"marker": "B"}],
                    "fit": {"method": "scatter_cluster", "mean_bounds": [[0, 1], [0, 1]]},
                },
            ],
        }
    )
    res = gate_sample(tree, one_mode, {"A": 0, "B": 1})
    assert res.not_computed == {
        "pos": "gate_fit_failed:pos.A:no_valley",
        "box": "gate_fit_failed:box:out_of_bounds",
    }
    img = np.asarray(
        Image.open(gating_figure(res, tmp_path / "f.png", settings=FIG)).convert("RGB")
    )
    hist, shape = _panel(img, 0), _panel(img, 1)
    assert _has(hist, F.HIST_RGB) > 1000 and _has(hist, F.GATE_RGB) == 0
    assert _viridis_pixels(shape) > 1000 and _has(shape, F.GATE_RGB) == 0
    ok = gate_sample(tree, two_modes, {"A": 0, "B": 1})
    assert "pos" not in ok.not_computed  # the same gate with two modes is drawn with its cut
    img2 = np.asarray(
        Image.open(gating_figure(ok, tmp_path / "g.png", settings=FIG)).convert("RGB")
    )
    assert _has(_panel(img2, 0), F.GATE_RGB) >= F.PLOT_H


def test_count_box_goes_to_the_corner_with_fewest_events():
    """The count/percent box must not hide the populations it counts: on a plot whose top left
    is full of events it moves to an empty corner; on an empty plot it stays top left."""
    from PIL import Image, ImageDraw

    from nkflow import figures as fg

    size = (fg.PANEL_W, fg.PANEL_H)
    px0, py0 = fg.PLOT_L, fg.PLOT_T
    lines = ["nk: 1,750 (7.0%)", "fitted: valley"]
    empty = Image.new("L", size, fg.WHITE_I)
    tdraw = ImageDraw.Draw(Image.new("L", size, 255))
    assert fg._text_box(empty, tdraw, lines, px0, py0) == (px0 + 1, py0 + 1)
    busy = Image.new("L", size, fg.WHITE_I)
    half_w, half_h = fg.PLOT_W // 2, fg.PLOT_H // 2
    busy.paste(0, (px0, py0, px0 + half_w, py0 + half_h))  # events in the top-left quarter
    busy.paste(0, (px0 + half_w, py0 + half_h, px0 + fg.PLOT_W, py0 + fg.PLOT_H))  # bottom right
    x, y = fg._text_box(busy, tdraw, lines, px0, py0)
    assert (x > px0 + half_w and y == py0 + 1) or (x == px0 + 1 and y > py0 + half_h)
    under = np.asarray(busy)[y : y + 20, x : x + 60]
    assert (under == fg.WHITE_I).all()  # nothing was whited out: no events were under it


def test_count_box_avoids_a_gate_line_more_than_a_few_events():
    from PIL import Image, ImageDraw

    from nkflow import figures as fg

    size = (fg.PANEL_W, fg.PANEL_H)
    px0, py0 = fg.PLOT_L, fg.PLOT_T
    img = Image.new("L", size, fg.WHITE_I)
    tdraw = ImageDraw.Draw(Image.new("L", size, 255))
    img.paste(0, (px0 + 10, py0 + 5, px0 + 14, py0 + 9))  # 16 event pixels in the top left
    x_mid = px0 + fg.PLOT_W - 40  # a vertical gate line through the top-right corner
    ImageDraw.Draw(img).line([(x_mid, py0), (x_mid, py0 + fg.PLOT_H)], fill=fg.GATE_I, width=2)
    img.paste(0, (px0, py0 + fg.PLOT_H // 2, px0 + fg.PLOT_W, py0 + fg.PLOT_H))  # bottom: full
    assert fg._text_box(img, tdraw, ["nk: 1 (1.0%)", "fitted: valley"], px0, py0) == (
        px0 + 1,
        py0 + 1,
    )
