#!/usr/bin/env python
"""Does the nk gate keep the NK cells when CD56dim sits close to the CD56- cells? Not a test.

Contract
--------
``python bench/cd56_shoulder.py [--medians 2.9 3.1 3.3] [--sd 0.18] [--replicates 2]
[--events 15000] [--seed 56] [--gating FILE] [--out FILE]``

For each CD56dim log10 median (the generator's default is 3.3, sd 0.18:
``NK_PHENO["nk_cd56dim"]`` in :mod:`nkflow.synthetic`), each instrument style of the sample
cohort, CD56bright share of NK 5 and 30 %, NK 3 and 12 % of live lymphocytes and
``--replicates`` seeds, one nk tube is simulated by the sample generator, written as that
style's FCS file and run through the tube stage's own code (:func:`nkflow.tube.prepare_tube`
and :func:`~nkflow.tube.gate_tube` with the shipped QC defaults) on ``--gating`` (default the
shipped ``config/gating/nk_v1.yaml``).

Per tube: ``recovered`` = true NK events (per-event labels) inside the nk gate / true NK
events; ``count_ratio`` = nk gate events / true NK events (what the endpoint uses); the tube's QC status; whether the nk endpoint is usable (QC not FAIL and nk computed);
the share of the nk gate's ``keeps_pct_of`` reference population it keeps
(``ref_kept``, when the tree declares one); and the QC codes that failed it. Per CD56dim median it prints the median and worst recovery,
how many tubes keep less than half their NK cells ("cut"), how many of those QC FAILs, and how
many tubes QC FAILs although they keep at least 0.85 ("false alarms"). ``--out`` writes the
per-tube rows as TSV.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nkflow.tables import write_tsv  # noqa: E402
from nkflow.tube import gate_tube, prepare_tube  # noqa: E402
from tests.generated import generator, write_tube  # noqa: E402

STYLES = ("bd_fortessa", "cytoflex", "aurora", "attune")
BRIGHT_FRACS = (0.05, 0.30)
NK_PCTS = (3.0, 12.0)
CUT = 0.5  # a tube keeping less than this share of its NK cells is a catastrophic cut
GOOD = 0.85  # a tube keeping at least this share should not fail QC for the nk gate


def one_tube(
    *, median: float, sd: float, style_key: str, bright: float, nk_pct: float, rep: int,
    seed: int, n_events: int, gating: Path, workdir: Path,
) -> dict[str, Any]:  # fmt: skip
    """Simulate, write, read and gate one nk tube; its recovery and QC (module doc)."""
    gen = generator()
    style = gen.STYLES[style_key]
    visit = gen.Visit(
        day=14, nk_pct=nk_pct, bright_frac=bright, treg_pct_cd4=5.0, alc="1000",
        chimerism={}, n_nk=n_events,
    )  # fmt: skip
    key = [seed, int(round(median * 100)), STYLES.index(style_key), int(bright * 100), int(nk_pct)]
    rng = np.random.default_rng([*key, rep])
    pheno = gen.pheno_with("nk", "nk_cd56dim", {"CD56": (median, sd)})
    tube = gen.make_tube(rng, style, "nk", visit, pheno)
    path = write_tube(style, "nk", tube, workdir / "tube.fcs")
    prep = prepare_tube(
        fcs=path, panel=ROOT / "config/panels/nk_v1.yaml", gating=gating, sample_id="S",
        tube="nk", settings={"qc": {}, "endpoints": {}},
    )  # fmt: skip
    assert prep.failure is None, prep.failure
    gated = gate_tube(prep)
    res = gated.result
    is_nk = np.isin(tube.labels, [gen.CODE_OF["nk_cd56bright"], gen.CODE_OF["nk_cd56dim"]])
    kept = res.members.get("nk")
    recovered = (
        float(np.count_nonzero(kept & is_nk) / np.count_nonzero(is_nk))
        if kept is not None
        else float("nan")
    )
    keeps = prep.tree.gate("nk").keeps
    ref = res.members.get(keeps.population) if keeps is not None else None
    ref_kept = (
        float(np.count_nonzero(ref & kept) / np.count_nonzero(ref))
        if ref is not None and kept is not None and ref.any()
        else float("nan")
    )
    failed = sorted({c.reason_code for c in gated.checks if c.status == "FAIL"})
    return {
        "cd56dim_median": median,
        "style": style_key,
        "bright_frac": bright,
        "nk_pct": nk_pct,
        "replicate": rep,
        "true_nk_events": int(np.count_nonzero(is_nk)),
        "recovered": round(recovered, 4),
        "count_ratio": round(float(np.count_nonzero(kept)) / np.count_nonzero(is_nk), 4)
        if kept is not None
        else float("nan"),
        "ref_kept": round(ref_kept, 4),
        "qc_status": gated.status,
        "nk_usable": gated.status != "FAIL" and "nk" not in res.not_computed,
        "qc_fail_codes": ",".join(failed),
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per CD56dim median: recovery (median, worst), cuts below CUT and how many QC caught."""
    out = []
    for med in sorted({r["cd56dim_median"] for r in rows}):
        sel = [r for r in rows if r["cd56dim_median"] == med]
        rec = np.array([r["recovered"] for r in sel], dtype=float)
        rec0 = np.nan_to_num(rec, nan=0.0)
        cut = [r for r, v in zip(sel, rec0, strict=True) if v < CUT]
        good = [r for r, v in zip(sel, rec0, strict=True) if v >= GOOD]
        out.append(
            {
                "cd56dim_median": med,
                "tubes": len(sel),
                "median_recovered": round(float(np.median(rec0)), 3),
                "worst_recovered": round(float(rec0.min()), 3),
                "median_abs_count_error_pct": round(
                    100 * float(np.nanmedian(np.abs([r["count_ratio"] - 1 for r in sel]))), 2
                ),
                "cut_below_half": len(cut),
                "cut_flagged": sum(not r["nk_usable"] for r in cut),
                "qc_fail": sum(not r["nk_usable"] for r in sel),
                "false_alarms": sum(not r["nk_usable"] for r in good),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--medians", type=float, nargs="+", default=[2.9, 3.1, 3.3])
    ap.add_argument("--sd", type=float, default=0.18)
    ap.add_argument("--replicates", type=int, default=2)
    ap.add_argument("--events", type=int, default=15_000)
    ap.add_argument("--seed", type=int, default=56)
    ap.add_argument("--gating", type=Path, default=ROOT / "config/gating/nk_v1.yaml")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    rows = []
    grid = itertools.product(args.medians, STYLES, BRIGHT_FRACS, NK_PCTS, range(args.replicates))
    with tempfile.TemporaryDirectory() as tmp:
        for med, style, bright, nk_pct, rep in grid:
            r = one_tube(
                median=med, sd=args.sd, style_key=style, bright=bright, nk_pct=nk_pct,
                rep=rep, seed=args.seed, n_events=args.events, gating=args.gating,
                workdir=Path(tmp),
            )  # fmt: skip
            rows.append(r)
            sys.stdout.write("\t".join(str(v) for v in r.values()) + "\n")
    if args.out:
        write_tsv(pd.DataFrame(rows), args.out)
    sys.stdout.write(json.dumps(summarise(rows), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
