#!/usr/bin/env python
"""Are the stated 95 % intervals of donor NK/uL calibrated? (issue 17). Not a test.

Contract
--------
``python bench/calibration.py [--patients 300] [--events 15000] [--seed 17] [--cd56dim MU SD]
[--out FILE]``

Each synthetic patient has a known true day-14 donor NK/uL near the threshold and goes through
the same code as the workflow, on a real FCS file:

1. truth: donor NK/uL ``T`` uniform in [``--low``, ``--high``] (70-130), true NK fraction of
   live lymphocytes ``f`` uniform in [5, 20] %, true % donor ``c`` uniform in [50, 98]; the ALC
   is ``T / (f x c / 100)`` (taken as exact, as in the workflow);
2. the tube: the NK count of its ``n`` lymphocyte events is ``Binomial(n, f)`` (counting error:
   the tube is a sample of the blood), the CD56bright share uniform in [0.2, 0.6], one of the
   four instrument styles of the sample cohort in turn, simulated by the sample generator
   (``scripts/make_sample_data.py``), written as that style's FCS file and read back;
3. the lab's chimerism: ``c + N(0, chimerism_assay_sd_pct)``, clipped to [0, 100];
4. gating with the shipped ``nk_v1`` tree, the tube job's re-gatings (``perturb_counts``) and
   the endpoint step's draws (``combine``), with the shipped defaults of ``uncertainty``;
5. covered when ``donor_nk_per_ul_all_lo95 <= T <= donor_nk_per_ul_all_hi95``; a patient whose
   gate flags fail QC (the workflow's NOT_EVALUABLE) has status ``qc_fail:<codes>`` and is not
   evaluated.

It prints one line per patient and a JSON summary (coverage, with its binomial 95 % interval,
and the same for the counting-only interval of ``donor_nk_per_ul_lo95/hi95``); ``--out``
writes the per-patient rows as TSV. :func:`simulate` is also used by the small calibration
test (``tests/unit/test_uncertainty.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nkflow import qc  # noqa: E402
from nkflow.clinical import counts as cnt  # noqa: E402
from nkflow.clinical import uncertainty as unc  # noqa: E402
from nkflow.gating import gate_sample, load_tree  # noqa: E402
from nkflow.gating import perturb as pt  # noqa: E402
from nkflow.tables import write_tsv  # noqa: E402
from tests.generated import generator, placed, write_tube  # noqa: E402

THRESHOLD = 100.0
STYLES = ("bd_fortessa", "cytoflex", "aurora", "attune")


def _lymph_events(gen: Any, n: int) -> int:
    """Lymphocyte events of an ``n``-event tube, as the generator splits it."""
    top = gen._counts(n, {**gen.MIX, "lymph": 1.0 - sum(gen.MIX.values())})
    return int(top["lymph"])


def simulate(
    i: int,
    *,
    seed: int,
    n_events: int,
    low: float,
    high: float,
    workdir: Path,
    cd56dim: tuple[float, float] | None = None,
    perturbation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One synthetic patient through gating, re-gating and the endpoint draws (module doc).

    ``cd56dim``: (log10 median, sd) of CD56 on CD56dim NK cells instead of the generator's
    (3.0, 0.25 gives a shallow CD56 valley, where gate placement matters); ``perturbation``:
    ``uncertainty.perturbation`` settings other than the shipped defaults.
    """
    gen = generator()
    rng = np.random.default_rng([seed, i])
    truth = float(rng.uniform(low, high))
    f_true = float(rng.uniform(0.05, 0.20))
    c_true = float(rng.uniform(50.0, 98.0))
    alc = truth / (f_true * c_true / 100.0)
    n_l = _lymph_events(gen, n_events)
    k = int(rng.binomial(n_l, f_true))
    style = gen.STYLES[STYLES[i % len(STYLES)]]
    visit = gen.Visit(
        day=14,
        nk_pct=100.0 * k / n_l,
        bright_frac=float(rng.uniform(0.2, 0.6)),
        treg_pct_cd4=5.0,
        alc=f"{alc:.6g}",
        chimerism={},
        n_nk=n_events,
    )
    pheno = None if cd56dim is None else gen.pheno_with("nk", "nk_cd56dim", {"CD56": cd56dim})
    tube = gen.make_tube(np.random.default_rng([seed, i, 1]), style, "nk", visit, pheno)
    path = write_tube(style, "nk", tube, workdir / f"p{i}.fcs")
    s, mi, spill, ranges = placed(path, "nk")
    res = gate_sample(
        load_tree(ROOT / "config/gating/nk_v1.yaml"), s.events, mi, spill=spill,
        channel_names=s.channel_names, ranges=ranges,
    )  # fmt: skip
    path.unlink()
    usettings = unc.UncertaintySettings.from_config({})
    sd = usettings.chimerism_assay_sd_pct
    chim = float(np.clip(c_true + rng.normal(0.0, sd), 0.0, 100.0))
    row: dict[str, Any] = {
        "patient": i,
        "style": style.key,
        "truth": truth,
        "true_nk_events": k,
        "true_lymphocyte_events": n_l,
        "chimerism_true_pct": c_true,
        "chimerism_pct": chim,
        "alc_per_ul": alc,
    }
    if "nk" in res.not_computed or "live" in res.not_computed:
        row["status"] = "not_computed"
        return row
    cfg = qc.QcConfig.from_dict(None)
    checks = qc.gate_flag_checks(res.flags, cfg, critical={"singlets", "lymphocytes", "live", "nk"})
    if qc.tube_status(checks, cfg)[0] == "FAIL":  # the workflow: NOT_EVALUABLE, no interval
        row["status"] = "qc_fail:" + ",".join(c.reason_code for c in checks if c.status == "FAIL")
        return row
    k0, n0 = int(res.count("nk") or 0), int(res.count("live") or 0)
    reported = alc * k0 / n0 * chim / 100.0
    pert = pt.perturb_counts(
        res, "nk", "live", pt.PerturbSettings.from_dict(perturbation), pt.tube_seed(f"C{i}", "nk")
    )
    assert not isinstance(pert, str), pert
    gate = unc.gate_draws(pert.table.to_dict(orient="records"))
    assert not isinstance(gate, str), gate
    out = unc.combine(
        alc_per_ul=alc, chimerism_pct=chim, chimerism_sd=sd, gate=gate, threshold=THRESHOLD,
        above=reported > THRESHOLD, settings=usettings, seed=unc.endpoint_seed(f"C{i}", "D14"),
    )  # fmt: skip
    assert not isinstance(out, str), out
    plo, phi = cnt.interval(reported, cnt.dual_platform_cv(k0, n0), 0.0)
    row.update(
        status="ok",
        nk_events=k0,
        lymphocyte_events=n0,
        reported=reported,
        lo95=out.lo95,
        hi95=out.hi95,
        p_above=out.p_above,
        dominant=out.dominant,
        unstable=";".join(out.unstable),
        covered=bool(out.lo95 <= truth <= out.hi95),
        counting_lo95=plo,
        counting_hi95=phi,
        counting_covered=bool(plo is not None and phi is not None and plo <= truth <= phi),
        gate_bias_pct=100.0 * ((k0 / n0) / (k / n_l) - 1.0),
    )
    return row


def _wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    z, p = 1.96, k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Coverage of the all-sources and the counting-only intervals, with Wilson intervals."""
    ok = [r for r in rows if r["status"] == "ok"]
    n = len(ok)
    k = sum(r["covered"] for r in ok)
    kc = sum(r["counting_covered"] for r in ok)
    # calibration of p_above: the truth is above the threshold in about that share
    bins = [(0.0, 0.1), (0.1, 0.5), (0.5, 0.9), (0.9, 1.0001)]
    calib = []
    for a, b in bins:
        sel = [r for r in ok if a <= r["p_above"] < b]
        if sel:
            calib.append(
                {
                    "p_above": f"{a:g}-{min(b, 1):g}",
                    "patients": len(sel),
                    "mean_p_above": round(float(np.mean([r["p_above"] for r in sel])), 3),
                    "truth_above_frac": round(
                        float(np.mean([r["truth"] > THRESHOLD for r in sel])), 3
                    ),
                }
            )
    return {
        "patients": len(rows),
        "evaluated": n,
        "coverage": round(k / n, 4) if n else None,
        "coverage_wilson95": [round(x, 4) for x in _wilson(k, n)],
        "counting_only_coverage": round(kc / n, 4) if n else None,
        "median_rel_width_pct": round(
            float(np.median([100 * (r["hi95"] - r["lo95"]) / r["reported"] for r in ok])), 2
        )
        if n
        else None,
        "median_abs_gate_bias_pct": round(
            float(np.median([abs(r["gate_bias_pct"]) for r in ok])), 2
        )
        if n
        else None,
        "dominant": {s: sum(r["dominant"] == s for r in ok) for s in unc.SOURCES},
        "p_above_calibration": calib,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=300)
    ap.add_argument("--events", type=int, default=15000)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--low", type=float, default=70.0)
    ap.add_argument("--high", type=float, default=130.0)
    ap.add_argument("--out", type=Path, help="per-patient TSV")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="an uncertainty.perturbation setting, e.g. valley_density_frac=0.5 (repeatable)",
    )  # fmt: skip
    ap.add_argument(
        "--cd56dim", type=float, nargs=2, metavar=("LOG10_MEDIAN", "SD"),
        help="CD56 level of CD56dim NK cells (3.0 0.25: a shallow CD56 valley)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    overrides = {k: float(v) for k, v in (x.split("=", 1) for x in args.set)}
    rows = []
    t0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.patients):
            r = simulate(
                i, seed=args.seed, n_events=args.events, low=args.low, high=args.high,
                workdir=Path(tmp), cd56dim=tuple(args.cd56dim) if args.cd56dim else None,
                perturbation=overrides,
            )  # fmt: skip
            rows.append(r)
            if r["status"] == "ok":
                print(
                    f"{i:4d} {r['style']:12s} truth {r['truth']:7.2f} reported "
                    f"{r['reported']:7.2f} 95% {r['lo95']:7.2f}-{r['hi95']:7.2f} "
                    f"p>100 {r['p_above']:.3f} {'ok ' if r['covered'] else 'OUT'} "
                    f"gate bias {r['gate_bias_pct']:+.2f}% {r['dominant']}",
                    flush=True,
                )
            else:
                print(f"{i:4d} {r['style']:12s} not computed", flush=True)
    summary = summarise(rows)
    summary["cpu_s"] = round(time.process_time() - t0, 1)
    summary["events_per_tube"] = args.events
    summary["seed"] = args.seed
    summary["cd56dim"] = args.cd56dim
    summary["perturbation"] = overrides
    print(json.dumps(summary, indent=2))
    if args.out:
        import pandas as pd

        write_tsv(pd.DataFrame(rows), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
