#!/usr/bin/env python
"""Extra CPU of the verdict's uncertainty per day-14 tube (issue 17). Not a test.

Contract
--------
``python bench/perturbation.py [--events 100000] [--draws 200] [--rounds 5]``

Generates one NK tube of ``--events`` events with the sample generator (BD style), writes it as
an FCS file and reads it back, gates it with the shipped ``nk_v1`` tree (``gate_sample``, the
work the tube job does anyway), then times, in CPU seconds (``time.process_time``, median of
``--rounds``):

* ``perturb``: ``perturb_counts`` with ``--draws`` joint re-gatings and the shipped sweeps, plus
  writing ``perturbation.tsv`` (what the tube job adds);
* ``combine``: the endpoint step's draws for that tube (``gate_draws`` + ``combine``, the
  shipped 4,000 draws).

The target (issue 17): the extra CPU per day-14 tube under 2 s for 200 perturbations of a
100k-event tube. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nkflow.clinical import uncertainty as unc  # noqa: E402
from nkflow.gating import gate_sample, load_tree  # noqa: E402
from nkflow.gating import perturb as pt  # noqa: E402
from nkflow.tables import write_tsv  # noqa: E402
from tests.generated import generator, placed, write_tube  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    gen = generator()
    style = gen.STYLES["bd_fortessa"]
    visit = gen.Visit(day=14, nk_pct=8.0, bright_frac=0.4, treg_pct_cd4=5.0, alc="1000",
                      chimerism={}, n_nk=args.events)  # fmt: skip
    tube = gen.make_tube(np.random.default_rng(1), style, "nk", visit)
    settings = pt.PerturbSettings.from_dict({"draws": args.draws})
    usettings = unc.UncertaintySettings.from_config({})
    times: dict[str, list[float]] = {"gate_sample": [], "perturb": [], "combine": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_tube(style, "nk", tube, Path(tmp) / "nk.fcs")
        s, mi, spill, ranges = placed(path, "nk")
        tree = load_tree(ROOT / "config/gating/nk_v1.yaml")
        for _ in range(args.rounds):
            t0 = time.process_time()
            res = gate_sample(tree, s.events, mi, spill=spill, channel_names=s.channel_names,
                              ranges=ranges)  # fmt: skip
            t1 = time.process_time()
            out = pt.perturb_counts(res, "nk", "live", settings, pt.tube_seed("B-D14", "nk"))
            assert not isinstance(out, str), out
            write_tsv(out.table, Path(tmp) / "perturbation.tsv")
            t2 = time.process_time()
            gate = unc.gate_draws(out.table.to_dict(orient="records"))
            assert not isinstance(gate, str), gate
            r = unc.combine(
                alc_per_ul=1000.0, chimerism_pct=90.0, chimerism_sd=3.0, gate=gate,
                threshold=100.0, above=True, settings=usettings, seed=1,
            )  # fmt: skip
            assert not isinstance(r, str), r
            t3 = time.process_time()
            times["gate_sample"].append(t1 - t0)
            times["perturb"].append(t2 - t1)
            times["combine"].append(t3 - t2)
    med = {k: round(statistics.median(v), 4) for k, v in times.items()}
    summary = {
        "events": int(s.events.shape[0]),
        "draws": args.draws,
        "rows": int(len(out.table)),
        "rounds": args.rounds,
        "cpu_s_median": med,
        "extra_cpu_s_per_tube": round(med["perturb"] + med["combine"], 4),
        "target_s": 2.0,
        "nk_events": int(res.count("nk") or 0),
        "live_events": int(res.count("live") or 0),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
