"""Re-gating a tube across its boundaries' plausible ranges (nkflow/gating/perturb.py).

Exact ranges on a hand-built density; on generated tubes (tests/generated.py): the fitted row
equals the gating engine's counts, every row equals a full re-evaluation of the tree with those
boundaries, the table is deterministic, and a shallow CD56 valley gives a wider range and more
spread than a deep one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from nkflow.gating import gate_sample, load_tree
from nkflow.gating import perturb as pt
from nkflow.tables import format_frame
from tests.generated import generator, placed, write_tube

ROOT = Path(__file__).resolve().parents[2]
TREE = ROOT / "config" / "gating" / "nk_v1.yaml"
#: CD56dim NK level (log10 median, sd): the shipped phenotype, and a dim one with a shallow valley
DEEP, SHALLOW = (3.3, 0.18), (3.0, 0.25)


def gated_tube(tmp: Path, cd56dim=DEEP, nk_pct=8.0, n=15000, seed=3, style="bd_fortessa"):
    """(GatingResult, generated tube) of a generated NK tube written and read back."""
    gen = generator()
    pheno = dict(gen.PHENO["nk"])
    levels = dict(pheno["nk_cd56dim"][1], CD56=cd56dim)
    pheno["nk_cd56dim"] = ("lymph", levels)
    visit = gen.Visit(
        day=14, nk_pct=nk_pct, bright_frac=0.3, treg_pct_cd4=5.0, alc="1000", chimerism={}, n_nk=n
    )
    saved = gen.PHENO["nk"]
    gen.PHENO["nk"] = pheno  # the table make_tube reads its phenotypes from
    try:
        tube = gen.make_tube(np.random.default_rng(seed), gen.STYLES[style], "nk", visit)
    finally:
        gen.PHENO["nk"] = saved
    path = write_tube(gen.STYLES[style], "nk", tube, tmp / f"nk_{cd56dim[0]}_{nk_pct}_{seed}.fcs")
    s, mi, spill, ranges = placed(path, "nk")
    res = gate_sample(
        load_tree(TREE), s.events, mi, spill=spill, channel_names=s.channel_names, ranges=ranges
    )
    return res, tube


SETTINGS = pt.PerturbSettings(
    draws=40, valley_density_frac=0.25, shape_scale=1.1, tail_frac=0.2, sweep_points=5,
    random_state=0,
)  # fmt: skip


def test_valley_range_is_where_the_density_stays_below_floor_plus_a_fraction_of_the_lower_peak():
    grid = np.arange(11) / 10
    #            0    .1   .2   .3   .4   .5   .6   .7   .8   .9   1
    dens = np.array([0, 10, 6, 3, 1, 0.5, 1, 2, 4, 8, 0], dtype=float)
    # floor 0.5 at 0.5; lower peak 8 (right side); level 0.5 + 0.25 x 8 = 2.5
    assert pt.valley_range(grid, dens, 0.5, (1, 9), (0.0, 1.0), 0.25) == (0.4, 0.7)
    # a larger fraction reaches further, never past the peaks
    assert pt.valley_range(grid, dens, 0.5, (1, 9), (0.0, 1.0), 0.9) == (0.2, 0.8)
    # level 8.5: the right side reaches its peak (8), the left stops below its peak (10)
    assert pt.valley_range(grid, dens, 0.5, (1, 9), (0.0, 1.0), 1.0) == (0.2, 0.9)
    assert pt.valley_range(grid, dens, 0.5, (1, 9), (0.0, 1.0), 2.0) == (0.1, 0.9)
    # and never outside the gate's declared bounds
    assert pt.valley_range(grid, dens, 0.5, (1, 9), (0.45, 0.65), 0.25) == (0.45, 0.65)


def test_fitted_row_is_the_engine_and_every_row_a_full_re_gating(tmp_path):
    res, _ = gated_tube(tmp_path)
    out = pt.perturb_counts(res, "nk", "live", SETTINGS, seed=11)
    assert not isinstance(out, str), out
    t = out.table
    ids = [b.id for b in out.boundaries]
    assert ids == ["singlets.scale", "lymphocytes.scale", "live.Viability.max", "nk.CD3.max",
                   "nk.CD56.min"]  # fmt: skip
    assert list(t.columns) == [*pt.COLUMNS, *ids]
    assert len(t) == 1 + SETTINGS.draws + len(ids) * SETTINGS.sweep_points
    base = t.iloc[0]
    assert (base.varied, base.nk_events, base.lymphocyte_events) == (
        "none", res.count("nk"), res.count("live")
    )  # fmt: skip
    for b in out.boundaries:
        assert b.low <= b.fitted <= b.high and b.low < b.high, b
    # a few joint draws re-evaluated with the whole tree, the boundaries written in
    tree = res.tree
    for _, row in t.iloc[[1, 7, 23]].iterrows():
        gates = []
        for g in tree.gates:
            if g.id == "singlets":
                v = np.asarray(g.vertices)
                x = v[1, 0]
                lo, hi = v[1, 1] / x, v[2, 1] / x
                med = next(f for f in res.fits if f["gate"] == "singlets")["stats"]["ratio_median"]
                s = row["singlets.scale"]
                lo, hi = med - s * (med - lo), med + s * (hi - med)
                g = replace(g, vertices=((0.0, 0.0), (x, lo * x), (x, hi * x)))
            elif g.id == "lymphocytes":
                g = replace(g, distance_square=g.distance_square * row["lymphocytes.scale"] ** 2)
            else:
                dims = []
                for d in g.dims:
                    for side in ("min", "max"):
                        col = f"{g.id}.{d.marker}.{side}"
                        if col in row.index:
                            d = replace(d, **{side: float(row[col])})
                    dims.append(d)
                g = replace(g, dims=tuple(dims))
            gates.append(g)
        again = gate_sample(replace(tree, gates=tuple(gates)), res.columns.events, res.columns.mi,
                            spill=res.columns.fcs)  # fmt: skip
        assert (again.count("nk"), again.count("live")) == (row.nk_events, row.lymphocyte_events)
    # the joint draws move the counts; each sweep holds the others at their fitted values
    joint = t[t.varied == "all"]
    assert joint.nk_events.nunique() > 5
    cd56 = t[t.varied == "nk.CD56.min"]
    assert np.allclose(cd56["nk.CD3.max"], base["nk.CD3.max"])
    assert np.isclose(cd56["nk.CD56.min"].min(), out.boundaries[-1].low)
    assert np.isclose(cd56["nk.CD56.min"].max(), out.boundaries[-1].high)
    # a higher CD56 cut keeps fewer NK cells
    assert cd56.nk_events.is_monotonic_decreasing and cd56.lymphocyte_events.nunique() == 1


def test_same_tube_same_table_byte_for_byte_and_the_seed_matters(tmp_path):
    res, _ = gated_tube(tmp_path)
    a = pt.perturb_counts(res, "nk", "live", SETTINGS, seed=pt.tube_seed("P1-D14", "nk"))
    b = pt.perturb_counts(res, "nk", "live", SETTINGS, seed=pt.tube_seed("P1-D14", "nk"))
    c = pt.perturb_counts(res, "nk", "live", SETTINGS, seed=pt.tube_seed("P2-D14", "nk"))
    assert format_frame(a.table) == format_frame(b.table)
    assert format_frame(a.table) != format_frame(c.table)
    assert pt.tube_seed("P1-D14", "nk") == pt.tube_seed("P1-D14", "nk") > 0


def test_shallow_cd56_valley_has_a_wider_range_and_more_spread_than_a_deep_one(tmp_path):
    spread, width, depth = {}, {}, {}
    for name, level in (("deep", DEEP), ("shallow", SHALLOW)):
        res, _ = gated_tube(tmp_path, cd56dim=level)
        out = pt.perturb_counts(res, "nk", "live", SETTINGS, seed=5)
        joint = out.table[out.table.varied == "all"]
        frac = joint.nk_events / joint.lymphocyte_events
        spread[name] = float(frac.std() / frac.mean())
        rec = next(f for f in res.fits if f["gate"] == "nk" and f["markers"] == ["CD56"])
        depth[name] = rec["stats"]["valley_depth"]
        cd56 = next(b for b in out.boundaries if b.id == "nk.CD56.min")
        # the range in NK events it spans: the sweep's lowest and highest count
        sweep = out.table[out.table.varied == "nk.CD56.min"]
        width[name] = int(sweep.nk_events.max() - sweep.nk_events.min())
        assert cd56.method == "valley"
    assert depth["shallow"] > 0.3 > depth["deep"], depth
    assert width["shallow"] > 2 * width["deep"], width
    assert spread["shallow"] > 2 * spread["deep"], spread


def test_a_population_that_was_not_computed_gives_the_reason(tmp_path):
    res, _ = gated_tube(tmp_path)
    res.not_computed["nk"] = "gate_fit_failed:nk.CD56:no_valley"
    out = pt.perturb_counts(res, "nk", "live", SETTINGS, seed=1)
    assert out == "population 'nk' was not computed (gate_fit_failed:nk.CD56:no_valley)"
    assert pt.perturb_counts(res, "cd4", "live", SETTINGS, 1) == (
        "population 'cd4' is not in gate tree 'nk_v1'"
    )
