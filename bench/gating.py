"""Benchmark: nkflow gating engine vs FlowKit, end to end (read, compensate, transform, gate).

Writes synthetic FCS 3.1 files (float32, 14 channels: 4 scatter/time + 10 fluorescence of the
NK/Treg panel, with a $SPILLOVER matrix) of 1M and 5M events, then times, each in its own
process so peak memory is the process's own (``VmHWM``, see ``_maxrss_bytes``):

* ``flowkit``: ``flowkit.Sample(path)`` + ``GatingStrategy.gate_sample`` on the same tree;
* ``nkflow``: ``nkflow.fcs.io.read_fcs`` + ``spillover_for`` + ``nkflow.gating.gate_sample``;
* ``rawread``: ``np.fromfile`` of the DATA segment (the read limit).

Several rounds per tool; medians are reported. A separate verification process checks that
every population's per-event membership is identical between the two engines.

``--fitted`` instead times the shipped data-driven trees (``config/gating``) on the sample
cohort's day-14 tubes written at ``--events`` events each (4 instrument styles): nkflow read +
fit + evaluate against FlowKit evaluating the fitted tree (``res.tree``) on the same file.

Run: ``.venv/bin/python bench/gating.py [--events 1000000 5000000] [--rounds 5]``
or ``.venv/bin/python bench/gating.py --fitted --events 100000 --rounds 5``
Results go to stdout (a Markdown table) and are copied by hand into ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CHANNELS = [  # ($PnN, $PnS)
    ("FSC-A", ""),
    ("FSC-H", ""),
    ("SSC-A", ""),
    ("Time", ""),
    ("BV785-A", "CD3"),
    ("PE-A", "CD56"),
    ("FITC-A", "CD16"),
    ("APC-Cy7-A", "Viability"),
    ("BV605-A", "CD4"),
    ("BV510-A", "CD8"),
    ("PE-Cy7-A", "CD25"),
    ("BV421-A", "CD127"),
    ("AF647-A", "FoxP3"),
    ("PerCP-Cy5.5-A", "Ki-67"),
]
FLUO = [i for i, (_, s) in enumerate(CHANNELS) if s]

LOGICLE = {"type": "logicle", "t": 262144, "w": 0.5, "m": 4.5, "a": 0}


def _d(marker: str, **kw: float) -> dict:
    return {"marker": marker, "transform": "logicle", "compensated": True, **kw}


_SC = {"transform": "lin", "compensated": False}
TREE = {
    "name": "bench_nk_treg",
    "panel": None,
    "transforms": {"lin": {"type": "linear", "t": 262144, "a": 0}, "logicle": LOGICLE},
    "gates": [
        {
            "id": "singlets",
            "parent": None,
            "type": "polygon",
            "dims": [{"marker": "FSC-A", **_SC}, {"marker": "FSC-H", **_SC}],
            "vertices": [[0.02, 0.0], [1.0, 0.65], [1.0, 1.0], [0.0, 0.2]],
        },
        {
            "id": "lymphocytes",
            "parent": "singlets",
            "type": "polygon",
            "dims": [{"marker": "FSC-A", **_SC}, {"marker": "SSC-A", **_SC}],
            "vertices": [[0.14, 0.0], [0.34, 0.0], [0.36, 0.08], [0.32, 0.125], [0.14, 0.125]],
        },
        {
            "id": "live",
            "parent": "lymphocytes",
            "type": "rectangle",
            "dims": [_d("Viability", max=0.5)],
        },
        {
            "id": "nk",
            "parent": "live",
            "type": "rectangle",
            "dims": [_d("CD3", max=0.45), _d("CD56", min=0.42)],
        },
        {
            "id": "nk_cd56bright",
            "parent": "nk",
            "type": "rectangle",
            "dims": [_d("CD56", min=0.64), _d("CD16", max=0.5)],
        },
        {
            "id": "nk_cd56dim",
            "parent": "nk",
            "type": "rectangle",
            "dims": [_d("CD56", max=0.64), _d("CD16", min=0.45)],
        },
        {
            "id": "nkt_like",
            "parent": "live",
            "type": "rectangle",
            "dims": [_d("CD3", min=0.45), _d("CD56", min=0.42)],
        },
        {"id": "cd3", "parent": "live", "type": "rectangle", "dims": [_d("CD3", min=0.45)]},
        {
            "id": "cd4",
            "parent": "cd3",
            "type": "rectangle",
            "dims": [_d("CD4", min=0.45), _d("CD8", max=0.45)],
        },
        {
            "id": "treg_candidates",
            "parent": "cd4",
            "type": "polygon",
            "dims": [_d("CD25"), _d("CD127")],
            "vertices": [[0.56, -0.2], [0.95, -0.2], [0.95, 0.44], [0.56, 0.44]],
        },
        {
            "id": "treg",
            "parent": "treg_candidates",
            "type": "rectangle",
            "dims": [_d("FoxP3", min=0.45)],
        },
        {"id": "treg_ki67", "parent": "treg", "type": "rectangle", "dims": [_d("Ki-67", min=0.45)]},
    ],
}


# ----------------------------------------------------------------------------- data


def spill_matrix() -> np.ndarray:
    """A plausible 10x10 spillover (row = dye, column = detector)."""
    k = len(FLUO)
    s = np.eye(k)
    rng = np.random.default_rng(7)
    for i in range(k):
        for j in range(k):
            if i != j and rng.random() < 0.35:
                s[i, j] = round(float(rng.uniform(0.005, 0.15)), 4)
    return s


def make_events(n: int, seed: int = 0) -> np.ndarray:
    """Synthetic NK/Treg-tube events (raw, spillover applied), float32."""
    from flowutils import transforms as fut

    rng = np.random.default_rng(seed)
    p = len(CHANNELS)
    out = np.empty((n, p), dtype=np.float32)
    kinds = rng.choice(
        [
            "debris",
            "doublet",
            "myeloid",
            "dead",
            "t4",
            "t8",
            "treg",
            "nk_dim",
            "nk_bright",
            "b",
            "nkt",
        ],
        size=n,
        p=[0.05, 0.05, 0.15, 0.07, 0.27, 0.14, 0.02, 0.09, 0.01, 0.12, 0.03],
    )
    fsc = rng.normal(60000, 8000, n)
    ssc = rng.normal(15000, 4000, n)
    ratio = rng.normal(0.82, 0.03, n)
    m = kinds == "debris"
    fsc[m], ssc[m] = rng.normal(15000, 5000, m.sum()), rng.normal(5000, 2000, m.sum())
    m = kinds == "myeloid"
    fsc[m], ssc[m] = rng.normal(100000, 15000, m.sum()), rng.normal(60000, 15000, m.sum())
    m = kinds == "doublet"
    fsc[m] *= 1.9
    ratio[m] = rng.normal(0.5, 0.04, m.sum())
    out[:, 0], out[:, 1], out[:, 2] = fsc, fsc * ratio, ssc
    out[:, 3] = np.sort(rng.uniform(0, 3000, n))
    # transformed (logicle) levels per marker, per kind: (mean) ; sd 0.05
    names = [s for _, s in CHANNELS if s]
    base = dict.fromkeys(names, 0.2)
    prof = {
        "t4": {"CD3": 0.7, "CD4": 0.68},
        "t8": {"CD3": 0.7, "CD8": 0.7},
        "treg": {"CD3": 0.7, "CD4": 0.68, "CD25": 0.75, "CD127": 0.25, "FoxP3": 0.65, "Ki-67": 0.5},
        "nk_dim": {"CD56": 0.55, "CD16": 0.7},
        "nk_bright": {"CD56": 0.78, "CD16": 0.3},
        "nkt": {"CD3": 0.7, "CD56": 0.55},
        "dead": {"Viability": 0.75},
        "b": {},
        "myeloid": {"CD4": 0.5},
        "debris": {},
        "doublet": {"CD3": 0.5},
    }
    lv = np.empty((n, len(names)))
    for j, mk in enumerate(names):
        mu = np.full(n, base[mk])
        for kind, d in prof.items():
            if mk in d:
                mu[kinds == kind] = d[mk]
        lv[:, j] = rng.normal(mu, 0.05)
    true = fut.logicle_inverse(lv, None, t=262144, m=4.5, w=0.5, a=0)
    out[:, FLUO] = true @ spill_matrix()
    return out


def write_fcs(path: Path, events: np.ndarray) -> None:
    """Minimal FCS 3.1 writer (float32, little-endian, $SPILLOVER)."""
    n, p = events.shape
    s = spill_matrix()
    spill = ",".join(
        [str(len(FLUO))] + [CHANNELS[i][0] for i in FLUO] + [f"{v:g}" for v in s.ravel()]
    )
    kw = {
        "$BYTEORD": "1,2,3,4",
        "$DATATYPE": "F",
        "$MODE": "L",
        "$NEXTDATA": "0",
        "$PAR": str(p),
        "$TOT": str(n),
        "$BEGINANALYSIS": "0",
        "$ENDANALYSIS": "0",
        "$BEGINSTEXT": "0",
        "$ENDSTEXT": "0",
        "$SPILLOVER": spill,
        "$CYT": "nkflow-bench",
        "$TIMESTEP": "0.01",
    }
    for i, (pnn, pns) in enumerate(CHANNELS, start=1):
        kw[f"$P{i}N"], kw[f"$P{i}B"], kw[f"$P{i}E"] = pnn, "32", "0,0"
        kw[f"$P{i}R"] = "262144"
        if pns:
            kw[f"$P{i}S"] = pns
    nbytes = n * p * 4
    text_start = 58
    body = "".join(f"/{k}/{v}" for k, v in kw.items())
    # offsets written with a fixed width so the TEXT length does not depend on them
    tlen = len(body) + len("/$BEGINDATA/" + "0" * 20 + "/$ENDDATA/" + "0" * 20 + "/")
    data_start = text_start + tlen
    data_end = data_start + nbytes - 1
    text = body + f"/$BEGINDATA/{data_start:020d}/$ENDDATA/{data_end:020d}/"
    assert len(text) == tlen
    big = data_end > 99_999_999
    hdr = "FCS3.1    " + "".join(
        f"{v:>8}"
        for v in (
            text_start,
            text_start + tlen - 1,
            0 if big else data_start,
            0 if big else data_end,
            0,
            0,
        )
    )
    with open(path, "wb") as fh:
        fh.write(hdr.encode("ascii"))
        fh.write(text.encode("ascii"))
        events.astype("<f4").tofile(fh)


# ----------------------------------------------------------------------------- workers


def _maxrss_bytes() -> int:
    """Peak resident set size of this process image (``VmHWM``).

    Not ``ru_maxrss``: Linux keeps in it the high-water mark of the image that ``exec``
    replaced, which for a ``subprocess`` worker is the parent's; a worker spawned after the
    parent had generated a 1M-event file reported the parent's ~430 MB as its own peak (3.5x the
    raw matrix instead of 2.2x). ``VmHWM`` starts afresh with the new image.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _marker_index(channel_names: list[str]) -> dict[str, int]:
    mi = {}
    for i, (pnn, pns) in enumerate(CHANNELS):
        assert channel_names[i] == pnn
        mi[pns or pnn] = i
    return mi


def worker(tool: str, path: Path, rounds: int) -> dict:
    """Run one tool ``rounds`` times in this process; return times and peak memory."""
    if tool == "flowkit":
        import flowkit as fk

        from nkflow.gating import to_flowkit, tree_from_dict

        tree = tree_from_dict(TREE)
        names = {(s or n): n for n, s in CHANNELS}
        gs = to_flowkit(tree, channel_names=names)

        def run() -> int:
            s = fk.Sample(str(path))
            r = gs.gate_sample(s)
            return int(r.get_gate_membership("treg_ki67").sum())

    elif tool == "nkflow":
        from nkflow.fcs import compensation, io
        from nkflow.gating import gate_sample, tree_from_dict

        tree = tree_from_dict(TREE)

        def run() -> int:
            s = io.read_fcs(path)
            spill = compensation.spillover_for(s)
            r = gate_sample(
                tree,
                s.events,
                _marker_index(list(s.channel_names)),
                spill=spill,
                channel_names=s.channel_names,
            )
            return int(r.count("treg_ki67") or 0)

    elif tool == "rawread":
        from nkflow.fcs import io

        h = io.read_fcs_metadata(path)
        kw = h.keywords
        start, end = int(kw["$BEGINDATA"]), int(kw["$ENDDATA"])
        count = (end - start + 1) // 4

        def run() -> int:
            a = np.fromfile(path, dtype="<f4", count=count, offset=start)
            return int(a.size)

    else:
        raise SystemExit(f"unknown tool {tool}")
    import gc

    gc.collect()
    base = _rss_bytes()
    times, cpu, result = [], [], 0
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        result = run()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "tool": tool,
        "times": times,
        "cpu": cpu,
        "rss_base": base,
        "rss_peak": _maxrss_bytes(),
        "result": result,
    }


def verify(path: Path) -> dict:
    """Per-event identity of every population between nkflow and FlowKit."""
    import flowkit as fk

    from nkflow.fcs import compensation, io
    from nkflow.gating import gate_sample, to_flowkit, tree_from_dict

    tree = tree_from_dict(TREE)
    s = io.read_fcs(path)
    spill = compensation.spillover_for(s)
    r = gate_sample(
        tree,
        s.events,
        _marker_index(list(s.channel_names)),
        spill=spill,
        channel_names=s.channel_names,
    )
    fr = to_flowkit(tree, channel_names={(b or a): a for a, b in CHANNELS}).gate_sample(
        fk.Sample(str(path))
    )
    diff = {p: int((fr.get_gate_membership(p) != r.membership(p)).sum()) for p in tree.populations}
    return {
        "identical": all(v == 0 for v in diff.values()),
        "diff": diff,
        "counts": {p: r.count(p) for p in tree.populations},
    }


# ----------------------------------------------------------------------------- fitted trees

REPO = Path(__file__).resolve().parents[1]


def fitted_tubes(root: Path, n: int) -> list[dict[str, str]]:
    """The sample cohort's day-14 tubes, every tube at ``n`` events (generated once in ``root``).

    ``scripts/make_sample_data.py`` writes the 64-tube cohort (4 instrument styles, 2 patients
    each) with every visit at ``n`` events; the nk and treg tubes of the visits in the day-14
    endpoint window (day 12-16: 14 tubes with the default seed) are returned with their style,
    panel and gate tree.
    """
    import csv
    import importlib.util

    out = root / f"sample_cohort_{n}"
    if not (out / "samples.tsv").exists():
        spec = importlib.util.spec_from_file_location(
            "bench_cohort", Path(__file__).with_name("cohort.py")
        )
        assert spec is not None and spec.loader is not None
        cohort = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cohort)
        gen = cohort.load_generator()
        original = gen._cohort
        gen._cohort = cohort.sized_cohort(original, n)
        try:
            gen.generate(out, seed=gen.DEFAULT_SEED)
        finally:
            gen._cohort = original
    with (out / "samples.tsv").open(newline="") as fh:
        sheet = {(r["sample_id"], r["tube"]): r for r in csv.DictReader(fh, delimiter="\t")}
    with (out / "truth" / "tubes.tsv").open(newline="") as fh:
        styles = {
            (r["sample_id"], r["tube"]): r["instrument_style"]
            for r in csv.DictReader(fh, delimiter="\t")
        }
    return [
        {
            "path": str(out / r["fcs_file"]),
            "sample": sid,
            "tube": tube,
            "style": styles[(sid, tube)],
            "panel": r["panel"],
            "gating": r["gating"],
        }
        for (sid, tube), r in sheet.items()
        if 12 <= int(sid.rsplit("-D", 1)[1]) <= 16
    ]


def _open_tube(t: dict[str, str]) -> tuple[Any, dict[str, int], Any, dict[str, float]]:
    """Read a tube as ``nkflow tubes`` does: events, marker index, spillover, ranges."""
    from nkflow.fcs import compensation, io, panel

    sample = io.read_fcs(t["path"])
    pnl = panel.load_panel(REPO / "config" / "panels" / f"{t['panel']}.yaml")
    res = panel.resolve(pnl, sample)
    mi = {}
    for m in pnl.markers:
        idx = res.index_for(m)
        if idx is not None and m not in res.missing:
            mi[m] = idx
    spill = compensation.spillover_for(sample)
    ranges = {m: float(sample.channels[i].pnr) for m, i in mi.items()}
    return sample, mi, spill, ranges


def _gate_tube(
    tree: Any, sample: Any, mi: dict[str, int], spill: Any, ranges: dict[str, float] | None
) -> Any:
    from nkflow.gating import gate_sample

    return gate_sample(
        tree, sample.events, mi, spill=spill, channel_names=sample.channel_names, ranges=ranges
    )


def fitted_worker(tool: str, manifest: Path, rounds: int) -> dict:
    """Time the shipped data-driven trees (nkflow) or their fitted form (FlowKit) per tube.

    The first tube is run once more before the others, untimed (imports, caches). ``fit_nkflow``,
    per round: read (``read_fcs`` + panel + spillover), ``gate_sample`` with the
    shipped tree (fit + evaluate; the fit is the time spent in ``_fit_gate``), then
    ``gate_sample`` with ``res.tree`` (evaluate only). ``fit_flowkit``: ``flowkit.Sample`` +
    ``GatingStrategy.gate_sample`` of ``to_flowkit(res.tree)`` (the strategy is built untimed
    from an nkflow fit in this process), and the per-event comparison with nkflow.
    """
    import gc

    from nkflow.gating import evaluate, load_tree

    tubes = json.loads(manifest.read_text())
    trees = {
        t["gating"]: load_tree(REPO / "config" / "gating" / f"{t['gating']}.yaml") for t in tubes
    }
    clock = {"cpu": 0.0, "wall": 0.0, "by_gate": {}}
    fit_gate = evaluate._fit_gate

    def timed_fit(cols: Any, g: Any, *args: Any, **kwargs: Any) -> Any:
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            return fit_gate(cols, g, *args, **kwargs)
        finally:
            dc = time.process_time() - c0
            clock["cpu"] += dc
            clock["wall"] += time.perf_counter() - w0
            clock["by_gate"][g.id] = clock["by_gate"].get(g.id, 0.0) + dc

    evaluate._fit_gate = timed_fit
    out = []
    if tool == "fit_flowkit":
        import flowkit as fk

        from nkflow.gating import to_flowkit
    for k, t in enumerate([tubes[0], *tubes]):  # tubes[0] twice: the first pass warms up
        tree = trees[t["gating"]]
        rec: dict[str, Any] = {**t, "rounds": []}
        if tool == "fit_nkflow":
            for _ in range(rounds):
                gc.collect()
                clock.update(cpu=0.0, wall=0.0, by_gate={})
                c0, w0 = time.process_time(), time.perf_counter()
                sample, mi, spill, ranges = _open_tube(t)
                c1 = time.process_time()
                res = _gate_tube(tree, sample, mi, spill, ranges)
                c2, w2 = time.process_time(), time.perf_counter()
                _gate_tube(res.tree, sample, mi, spill, None)
                c3 = time.process_time()
                rec["rounds"].append(
                    {
                        "read_cpu": c1 - c0,
                        "gate_cpu": c2 - c1,
                        "fit_cpu": clock["cpu"],
                        "eval_only_cpu": c3 - c2,
                        "total_wall": w2 - w0,
                        "fit_by_gate_cpu": dict(clock["by_gate"]),
                    }
                )
            rec["n_events"] = int(sample.n_events)
            rec["not_computed"] = sorted(res.not_computed)
            rec["flags"] = [f["code"] for f in res.flags]
        elif tool == "fit_flowkit":
            sample, mi, spill, ranges = _open_tube(t)
            res = _gate_tube(tree, sample, mi, spill, ranges)
            names = {m: sample.channels[i].pnn for m, i in mi.items()}
            gs = to_flowkit(res.tree, channel_names=names, spill=spill)
            pops = [p for p in res.tree.populations if p not in res.not_computed]
            for _ in range(rounds):
                gc.collect()
                c0, w0 = time.process_time(), time.perf_counter()
                fr = gs.gate_sample(fk.Sample(t["path"]))
                rec["rounds"].append(
                    {"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0}
                )
            rec["diff"] = {
                p: int((fr.get_gate_membership(p) != res.membership(p)).sum()) for p in pops
            }
        else:
            raise SystemExit(f"unknown tool {tool}")
        if k:
            out.append(rec)
    evaluate._fit_gate = fit_gate
    return {"tool": tool, "tubes": out}


def _agg(recs: list[dict], idx: list[int], f: Any) -> float:
    """Median over the tubes ``idx`` of each tube's median over rounds of ``f(round)``."""
    return statistics.median(statistics.median(f(r) for r in recs[i]["rounds"]) for i in idx)


def fitted_main(a: argparse.Namespace, tmp: Path) -> int:
    """``--fitted``: the shipped data-driven trees per tube, nkflow fit + evaluate vs FlowKit."""
    med = statistics.median
    print(f"load average (1, 5, 15 min) at start: {os.getloadavg()}\n")
    for n in a.events:
        tubes = fitted_tubes(tmp, n)
        manifest = tmp / f"fitted_{n}.json"
        manifest.write_text(json.dumps(tubes))
        common = ["--file", str(manifest), "--rounds", str(a.rounds)]
        ours = _spawn(["--worker", "fit_nkflow", *common])["tubes"]
        theirs = _spawn(["--worker", "fit_flowkit", *common])["tubes"]
        print(
            f"## data-driven trees, {n:,}-event tubes (day-14 tubes of the sample cohort, "
            f"{a.rounds} rounds, medians over rounds then over the tubes of a row; CPU s)\n"
        )
        print(
            "| style | tube | tubes | read | fit | evaluate | nkflow total | nkflow eval-only "
            "(fitted tree) | FlowKit (Sample + gate_sample of res.tree) | FlowKit / nkflow total "
            "| FlowKit / nkflow read+evaluate | nkflow wall | FlowKit wall | identical |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        groups: dict[tuple[str, str], list[int]] = {}
        for i, t in enumerate(ours):
            groups.setdefault((t["style"], t["tube"]), []).append(i)
        groups[("all", "all")] = list(range(len(ours)))
        for (style, tube), idx in groups.items():
            read = _agg(ours, idx, lambda r: r["read_cpu"])
            fit = _agg(ours, idx, lambda r: r["fit_cpu"])
            evl = _agg(ours, idx, lambda r: r["gate_cpu"] - r["fit_cpu"])
            only = _agg(ours, idx, lambda r: r["eval_only_cpu"])
            total = _agg(ours, idx, lambda r: r["read_cpu"] + r["gate_cpu"])
            wall = _agg(ours, idx, lambda r: r["total_wall"])
            fk_cpu = _agg(theirs, idx, lambda r: r["cpu"])
            fk_wall = _agg(theirs, idx, lambda r: r["wall"])
            same = all(v == 0 for i in idx for v in theirs[i]["diff"].values())
            print(
                f"| {style} | {tube} | {len(idx)} | {read:.3f} | {fit:.3f} | {evl:.3f} | "
                f"{total:.3f} | {only:.3f} | {fk_cpu:.3f} | {fk_cpu / total:.1f}x | "
                f"{fk_cpu / (read + evl):.1f}x | {wall:.3f} | {fk_wall:.3f} | {same} |",
                flush=True,
            )
        print("\nFit CPU per gate (ms, median over tubes and rounds):\n")
        print("| tree | gate | fit ms |")
        print("|---|---|---|")
        for gating in sorted({t["gating"] for t in ours}):
            per: dict[str, list[float]] = {}
            for t in ours:
                if t["gating"] == gating:
                    for r in t["rounds"]:
                        for g, v in r["fit_by_gate_cpu"].items():
                            per.setdefault(g, []).append(v)
            for g, vs in per.items():
                print(f"| {gating} | {g} | {1000 * med(vs):.1f} |")
        flagged = {
            f"{t['sample']}/{t['tube']}": t["not_computed"] for t in ours if t["not_computed"]
        }
        print(f"\n<!-- not computed: {json.dumps(flagged)} -->", flush=True)
        print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}\n", flush=True)
    return 0


def _spawn(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"worker {args[:2]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Entry point (see module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the FCS files")
    ap.add_argument(
        "--fitted",
        action="store_true",
        help="time the shipped data-driven trees on the sample cohort's day-14 tubes",
    )
    ap.add_argument(
        "--worker", choices=["flowkit", "nkflow", "rawread", "verify", "fit_nkflow", "fit_flowkit"]
    )
    ap.add_argument("--file", type=Path)
    a = ap.parse_args(argv)
    if a.worker:
        if a.worker == "verify":
            res = verify(a.file)
        elif a.worker.startswith("fit_"):
            res = fitted_worker(a.worker, a.file, a.rounds)
        else:
            res = worker(a.worker, a.file, a.rounds)
        print(json.dumps(res))
        return 0
    tmp = a.dir or Path(tempfile.mkdtemp(prefix="nkflow_bench_"))
    tmp.mkdir(parents=True, exist_ok=True)
    if a.fitted:
        return fitted_main(a, tmp)
    print(f"# nkflow gating benchmark ({os.cpu_count()} CPUs, {a.rounds} rounds, medians)\n")
    uptime = os.getloadavg()[0]
    print(
        f"load average at start: {uptime:.1f} (wall times suffer on a shared machine; CPU "
        "times much less)\n"
    )
    print(
        "| events | FlowKit wall s | nkflow wall s | speed-up wall | FlowKit CPU s | "
        "nkflow CPU s | speed-up CPU | raw read s | nkflow / raw read | raw matrix MB | "
        "FlowKit peak MB (x raw) | nkflow peak MB (x raw) | identical |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in a.events:
        path = tmp / f"bench_{n}.fcs"
        if not path.exists():
            write_fcs(path, make_events(n))
        raw_mb = n * len(CHANNELS) * 8 / 1e6
        res = {
            t: _spawn(["--worker", t, "--file", str(path), "--rounds", str(a.rounds)])
            for t in ("rawread", "nkflow", "flowkit")
        }
        ver = _spawn(["--worker", "verify", "--file", str(path)])
        med = {t: statistics.median(r["times"]) for t, r in res.items()}
        cpu = {t: statistics.median(r["cpu"]) for t, r in res.items()}

        def peak(t: str, res: dict = res, raw_mb: float = raw_mb) -> str:
            inc = (res[t]["rss_peak"] - res[t]["rss_base"]) / 1e6
            return f"{inc:.0f} ({inc / raw_mb:.1f}x)"

        print(
            f"| {n:,} | {med['flowkit']:.3f} | {med['nkflow']:.3f} | "
            f"{med['flowkit'] / med['nkflow']:.1f}x | {cpu['flowkit']:.3f} | "
            f"{cpu['nkflow']:.3f} | {cpu['flowkit'] / cpu['nkflow']:.1f}x | "
            f"{med['rawread']:.3f} | {med['nkflow'] / med['rawread']:.1f}x | {raw_mb:.0f} | "
            f"{peak('flowkit')} | {peak('nkflow')} | {ver['identical']} |",
            flush=True,
        )
        print(
            f"<!-- {n}: wall {json.dumps({t: r['times'] for t, r in res.items()})} "
            f"cpu {json.dumps({t: r['cpu'] for t, r in res.items()})} "
            f"counts {json.dumps(ver['counts'])} -->",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
