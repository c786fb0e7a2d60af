#!/usr/bin/env python
"""Gate the real public FCS files with nkflow's data-driven gates; write figures and a summary.

Reads the files in place from ``$NKFLOW_PUBLIC_DATA`` (some are GPL and are never copied into
the repository; see its CATALOG.md). Each file is gated with the panel and tree of
``docs/public-gating/panels`` and ``docs/public-gating/trees``; the figures go to
``<out>/<name>.png`` and one long table to ``<out>/summary.tsv`` with a row per population
count, per fitted boundary (method, value, channel units, statistics) and per flag.

Usage::

    NKFLOW_PUBLIC_DATA=../shared/data/public python scripts/gate_public_files.py [--out DIR]
        [--only NAME ...] [--no-figures]

Discussion of each figure: docs/public-gating.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "docs" / "public-gating"


@dataclass(frozen=True)
class PublicFile:
    """One public file and the panel/tree it is gated with."""

    name: str
    path: str  # relative to $NKFLOW_PUBLIC_DATA
    panel: str
    tree: str


FILES: tuple[PublicFile, ...] = (
    PublicFile(
        "omip021_donor1", "cytopipeline_omip021_human_tcell/Donor1.fcs", "omip021", "omip021"
    ),
    PublicFile(
        "omip021_donor2", "cytopipeline_omip021_human_tcell/Donor2.fcs", "omip021", "omip021"
    ),
    PublicFile("flowkit_100715", "flowkit_fcs_misc/100715.fcs", "flowkit_100715", "flowkit_100715"),
    PublicFile("itn_02", "cytoflow_itn_and_quirks/itn_02.fcs", "itn", "itn"),
    PublicFile("itn_03", "cytoflow_itn_and_quirks/itn_03.fcs", "itn", "itn"),
    *(
        PublicFile(
            f"cytof_{p}_{k}",
            f"cytonorm_cytof_human_blood/Gates_PTLG{p}_Unstim_Control_{k}.fcs",
            "cytof",
            "cytof",
        )
        for p in ("021", "028", "034")
        for k in (1, 2)
    ),
)

COLUMNS = (
    "file",
    "instrument",
    "kind",
    "item",
    "method",
    "value",
    "raw",
    "pct_of_parent",
    "detail",
)


def gate_file(root: Path, pf: PublicFile, out: Path | None) -> dict[str, Any]:
    """Gate one file; return ``{rows, counts, pct, flags, fits, instrument}`` (figure to ``out``).

    ``counts`` and ``pct`` (share of the parent, %) are keyed by population; ``None`` when the
    population was not computed.
    """
    from nkflow.fcs import panel as panel_mod
    from nkflow.fcs.compensation import spillover_for
    from nkflow.fcs.io import read_fcs
    from nkflow.figures import FigureSettings, gating_figure
    from nkflow.gating import gate_sample, load_tree

    sample = read_fcs(root / pf.path)
    pnl = panel_mod.load_panel(HERE / "panels" / f"{pf.panel}.yaml")
    tree = load_tree(HERE / "trees" / f"{pf.tree}.yaml")
    resolution = panel_mod.resolve(pnl, sample)
    marker_index = {
        m: i
        for m in pnl.markers
        if (i := resolution.index_for(m)) is not None and m not in resolution.missing
    }
    spill = spillover_for(sample)
    ranges = {m: float(sample.channels[i].pnr) for m, i in marker_index.items()}
    res = gate_sample(
        tree,
        sample.events,
        marker_index,
        spill=spill,
        channel_names=sample.channel_names,
        ranges=ranges,
        tube=pf.name,
    )
    instrument = sample.keywords.get("$CYT", "")
    rows: list[tuple[Any, ...]] = []
    counts: dict[str, int | None] = {}
    pct: dict[str, float | None] = {}
    table = res.counts_table(denominator=res.tree.populations[0])
    rows.append((pf.name, instrument, "count", "all_events", "", sample.n_events, "", "", ""))
    for r in table.itertuples(index=False):
        ok = r.status == "ok"
        counts[r.population] = int(r.events) if ok else None
        pct[r.population] = float(r.pct_of_parent) if ok and r.parent_events else None
        rows.append(
            (
                pf.name,
                instrument,
                "count",
                r.population,
                "",
                counts[r.population] if ok else "",
                "",
                f"{pct[r.population]:.2f}" if pct[r.population] is not None else "",
                f"of {r.parent or 'all events'}" if ok else r.reason,
            )
        )
    for f in res.fits:
        where = f"{f['gate']}.{'/'.join(f['markers'])}.{f['side']}"
        value = f["value"]
        if isinstance(value, dict):  # a shape: keep the numbers a reviewer reads
            shown = {k: v for k, v in value.items() if k in ("mean", "raw_mean", "distance_square")}
            if "vertices" in value:
                shown = {"vertices": value["vertices"]}
            value_text = json.dumps(shown)
        else:
            value_text = f"{value:.4f}"
        raw = f"{f['raw']:.6g}" if isinstance(f.get("raw"), float) else ""
        rows.append(
            (
                pf.name,
                instrument,
                "fit",
                where,
                f["method"],
                value_text,
                raw,
                "",
                json.dumps(f["stats"], sort_keys=True),
            )
        )
    for fl in res.flags:
        rows.append(
            (
                pf.name,
                instrument,
                "flag",
                f"{fl['code']}:{fl.get('where', fl['gate'])}",
                "",
                "",
                "",
                "",
                fl["message"],
            )
        )
    if out is not None:
        gating_figure(
            res,
            out / f"{pf.name}.png",
            title=f"{pf.name}  ({pf.path}, {instrument}, {sample.n_events} events)",
            settings=FigureSettings.from_dict(None),
        )
    return {
        "rows": rows,
        "counts": counts,
        "pct": pct,
        "flags": list(res.flags),
        "fits": list(res.fits),
        "instrument": instrument,
    }


def run(root: Path, out: Path, only: list[str] | None = None, figures: bool = True) -> dict:
    """Gate the selected files; write ``out/summary.tsv`` (and figures). Return results by name."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for pf in FILES:
        if only and pf.name not in only:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results[pf.name] = gate_file(root, pf, out if figures else None)
    lines = ["\t".join(COLUMNS)]
    for r in results.values():
        for row in r["rows"]:
            lines.append("\t".join(str(x).replace("\t", " ") for x in row))
    (out / "summary.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (docs/public-gating)")
    ap.add_argument("--only", nargs="*", help="file names to gate (default: all)")
    ap.add_argument("--no-figures", action="store_true", help="summary only")
    args = ap.parse_args(argv)
    root_env = os.environ.get("NKFLOW_PUBLIC_DATA")
    if not root_env or not Path(root_env).is_dir():
        print(
            f"NKFLOW_PUBLIC_DATA={root_env!r} is not a directory; set it to the public data folder",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.ERROR)
    results = run(Path(root_env), args.out, args.only, figures=not args.no_figures)
    for name, r in results.items():
        shown = ", ".join(
            f"{p} {c} ({r['pct'][p]:.1f} %)" if r["pct"][p] is not None else f"{p} {c}"
            for p, c in r["counts"].items()
        )
        flags = "; ".join(f"{f['code']}:{f.get('where', f['gate'])}" for f in r["flags"]) or "-"
        print(f"{name} [{r['instrument']}]: {shown} | flags: {flags}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
