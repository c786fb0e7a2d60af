#!/usr/bin/env python
"""Check the gate trees in config/gating against the known truth of data/sample.

Contract
--------
``check_sample_truth.py [--sample DIR] [--config DIR] [--engine own|nkflow] [--no-time-qc]``
gates every tube listed in ``DIR/samples.tsv`` with the YAML gate tree named in the sheet and
prints, per tube, gated vs true NK % of lymphocytes (denominator ``live``) and, for treg tubes,
Treg % of CD4 and Ki-67+ % of Treg; then the worst relative NK % error. Exit status 0 when every
tube is within 2 % relative of truth, 1 otherwise.

Engines (``nkflow`` is the default: the shipped trees are fitted to each tube, which the ``own``
evaluator does not do; it still checks trees with fixed coordinates):

- ``own`` (default): an independent minimal evaluator written here (panel aliases matched
  exactly, case-insensitively, on ``$PnS`` then ``$PnN``; compensation from the file's
  spillover keyword as observed @ inv(S); logicle from ``flowutils``; rectangles
  ``min <= v < max``; polygons with matplotlib's even-odd ``Path.contains_points``).
- ``nkflow``: the package's reader, panel resolution, compensation and gating engine.

Time QC (on unless ``--no-time-qc``): the acquisition is cut into 0.5-s bins; when the run has a
gap (no event for > 2 s), the bins right after the gap whose event rate exceeds 3x the median
rate are removed (a clog followed by a burst). Both numbers (with and without) are printed for
tubes where events were removed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _spill(meta: dict[str, str]) -> tuple[list[str], np.ndarray] | None:
    for key in ("spillover", "spill"):
        if key in meta:
            parts = [p.strip() for p in meta[key].split(",")]
            k = int(parts[0])
            return parts[1 : k + 1], np.array(parts[k + 1 :], dtype=float).reshape(k, k)
    return None


def load_own(path: Path, panel: dict) -> tuple[np.ndarray, np.ndarray, dict[str, int], float]:
    """Raw events, compensated events, marker -> column, timestep (seconds)."""
    import flowio

    fd = flowio.FlowData(str(path))
    raw = np.reshape(np.asarray(fd.events, dtype=float), (-1, fd.channel_count))
    meta = {k.lower(): v for k, v in fd.text.items()}
    pnn = [meta[f"p{i}n"] for i in range(1, fd.channel_count + 1)]
    pns = [meta.get(f"p{i}s", "").strip() for i in range(1, fd.channel_count + 1)]
    comp = raw.copy()
    sp = _spill(meta)
    if sp is not None:
        names, s = sp
        idx = [pnn.index(n) for n in names]
        comp[:, idx] = raw[:, idx] @ np.linalg.inv(s)
    index: dict[str, int] = {}
    for marker, spec in panel["markers"].items():
        aliases = {a.lower() for a in spec["aliases"]}
        hits = [i for i, s in enumerate(pns) if s.lower() in aliases]
        hits = hits or [i for i, n in enumerate(pnn) if n.lower() in aliases]
        if len(hits) == 1:
            index[marker] = hits[0]
    return raw, comp, index, float(meta.get("timestep", "1"))


def _transform(spec: dict, x: np.ndarray) -> np.ndarray:
    from flowutils.transforms import logicle

    if spec["type"] == "linear":
        return (x + spec.get("a", 0)) / (spec["t"] + spec.get("a", 0))
    if spec["type"] == "logicle":
        return logicle(x.copy(), None, t=spec["t"], m=spec["m"], w=spec["w"], a=spec["a"])
    raise SystemExit(f"transform type {spec['type']} not supported by the own engine")


def gate_own(tree: dict, raw: np.ndarray, comp: np.ndarray, index: dict[str, int]) -> dict:
    """Membership masks per population for the subset of gate types the trees use."""
    from matplotlib.path import Path as MplPath

    n = len(raw)
    members: dict[str, np.ndarray] = {}
    for g in tree["gates"]:
        parent = np.ones(n, bool) if g.get("parent") is None else members[g["parent"]]
        cols = []
        for d in g["dims"]:
            scatter = d["marker"] in ("FSC-A", "FSC-H", "SSC-A", "Time")
            src = comp if d.get("compensated", not scatter) else raw
            cols.append(_transform(tree["transforms"][d["transform"]], src[:, index[d["marker"]]]))
        if g["type"] == "rectangle":
            m = parent.copy()
            for d, x in zip(g["dims"], cols, strict=True):
                if d.get("min") is not None:
                    m &= x >= d["min"]
                if d.get("max") is not None:
                    m &= x < d["max"]
        elif g["type"] == "polygon":
            poly = MplPath(np.array(g["vertices"], float))
            m = parent & poly.contains_points(np.column_stack(cols))
        else:
            raise SystemExit(f"gate type {g['type']} not supported by the own engine")
        members[g["id"]] = m
    return members


def time_keep(t_seconds: np.ndarray, bin_s: float = 0.5) -> np.ndarray:
    """Mask of events kept by the clog/burst rule described in the module docstring."""
    keep = np.ones(len(t_seconds), bool)
    if len(t_seconds) < 2:
        return keep
    order = np.sort(t_seconds)
    gaps = np.diff(order)
    if gaps.max() <= 2.0:
        return keep
    gap_end = order[np.argmax(gaps) + 1]
    edges = np.arange(0.0, t_seconds.max() + bin_s, bin_s)
    counts, _ = np.histogram(t_seconds, edges)
    med = np.median(counts[counts > 0])
    b = int(np.searchsorted(edges, gap_end, side="right") - 1)
    while b < len(counts) and counts[b] > 3 * med:
        keep &= ~((t_seconds >= edges[b]) & (t_seconds < edges[b + 1]))
        b += 1
    return keep


def gate_nkflow(path: Path, panel_path: Path, tree_path: Path) -> tuple[dict, np.ndarray]:
    from nkflow.fcs import compensation, io, panel
    from nkflow.gating import evaluate, tree

    s = io.read_fcs(path)
    res = panel.resolve(panel.load_panel(panel_path), s)
    index = {m: ch.index for m, ch in res.channels.items() if ch is not None}
    sp = compensation.spillover_for(s)
    gtree = tree.load_tree(tree_path)
    ranges = {m: s.channels[i].pnr for m, i in index.items()}
    out = evaluate.gate_sample(
        gtree, s.events, index, spill=sp, channel_names=s.channel_names, ranges=ranges
    )
    members = {p: out.membership(p) for p in gtree.populations if p not in out.not_computed}
    t = s.events[:, index["Time"]]  # FlowKit raw scale: $TIMESTEP already applied
    return members, t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=Path, default=ROOT / "data" / "sample")
    ap.add_argument("--config", type=Path, default=ROOT / "config")
    ap.add_argument("--engine", choices=("own", "nkflow"), default="nkflow")
    ap.add_argument("--no-time-qc", action="store_true")
    args = ap.parse_args(argv)

    def rows(p: Path) -> list[dict[str, str]]:
        lines = p.read_text().splitlines()
        head = lines[0].split("\t")
        return [dict(zip(head, ln.split("\t"), strict=True)) for ln in lines[1:]]

    truth = {
        (r["sample_id"], r["tube"], r["population"]): int(r["events"])
        for r in rows(args.sample / "truth" / "populations.tsv")
    }
    worst = (0.0, "")
    print(f"engine={args.engine}  time_qc={'off' if args.no_time_qc else 'on'}")
    print("sample\ttube\tpopulation\tgated_pct\ttrue_pct\trel_err\tnote")
    for r in rows(args.sample / "samples.tsv"):
        sid, tube = r["sample_id"], r["tube"]
        fcs = args.sample / r["fcs_file"]
        panel_path = args.config / "panels" / f"{r['panel']}.yaml"
        tree_path = args.config / "gating" / f"{r['gating']}.yaml"
        if args.engine == "own":
            panel = yaml.safe_load(panel_path.read_text())
            tree = yaml.safe_load(tree_path.read_text())
            raw, comp, index, step = load_own(fcs, panel)
            members = gate_own(tree, raw, comp, index)
            t = raw[:, index["Time"]] * step
        else:
            members, t = gate_nkflow(fcs, panel_path, tree_path)
        keep = np.ones(len(t), bool) if args.no_time_qc else time_keep(t)
        note = "" if keep.all() else f"time QC removed {int((~keep).sum())} events"
        ratios = (
            [("nk", "live")]
            if tube == "nk"
            else [("treg", "cd4"), ("treg_ki67", "treg"), ("cd4", "live")]
        )
        for num, den in ratios:
            true = 100.0 * truth[(sid, tube, num)] / truth[(sid, tube, den)]
            got = 100.0 * (members[num] & keep).sum() / (members[den] & keep).sum()
            rel = abs(got - true) / true
            extra = note
            if note:
                raw_pct = 100.0 * members[num].sum() / members[den].sum()
                extra += f"; without time QC {raw_pct:.3f} %"
            print(f"{sid}\t{tube}\t{num}/{den}\t{got:.3f}\t{true:.3f}\t{rel:.2%}\t{extra}")
            if num == "nk" and rel >= worst[0]:
                worst = (rel, sid)
    print(f"worst relative NK % error: {worst[0]:.3%} ({worst[1]})")
    return 0 if worst[0] <= 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
