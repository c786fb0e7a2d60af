"""Benchmark: the review app's latency from "boundary released" to updated numbers (issue 14).

Generates the sample cohort with every tube at ``--events`` events (default 100,000), runs the
workflow on patients P01 and P02, then opens the day-14 NK tube of P01 in the review model and
times, per round, a boundary move of:

* ``nk.CD56 min`` (the endpoint gate; the gates before it are reused, see ``gate_sample(reuse=)``),
* ``live.Viability max`` (the denominator: nk and its subsets are refitted below it),
* the same ``nk.CD56`` move with nothing reused (``full``: every gate fitted again, the GMM of
  the lymphocyte gate included), the worst case;

each as ``POST /api/preview`` through the app (Starlette in process: JSON in, re-gating, QC,
collect date check, build_visits and build_endpoints for the patient, JSON out), and the figure
(``POST /api/figure``), which the page loads after the numbers. The target is < 200 ms from
release to numbers on a 100,000-event tube; this is a benchmark, never a timed test.

Run: ``.venv/bin/python bench/review_latency.py [--events 100000] [--rounds 20] [--dir DIR]``
Results go to stdout (a Markdown table) and are copied by hand into ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PATIENTS = ("P01", "P02")
TUBE = {"sample_id": "P01-D14", "tube": "nk"}


def make_run(root: Path, n_events: int) -> Path:
    """A finished workflow run on P01 and P02 of the cohort at ``n_events`` events per tube."""
    sys.path.insert(0, str(REPO / "bench"))
    import cohort  # bench/cohort.py

    work = root / f"run_{n_events}"
    if (work / "results/cohort/endpoints.tsv").is_file():
        return work
    data = work / "data" / "sample"
    gen = cohort.load_generator()
    original = gen._cohort
    gen._cohort = cohort.sized_cohort(original, n_events)
    try:
        gen.generate(data, seed=gen.DEFAULT_SEED)
    finally:
        gen._cohort = original
    shutil.copy2(REPO / "Snakefile", work / "Snakefile")
    for sub in ("workflow", "config"):
        shutil.copytree(REPO / sub, work / sub, dirs_exist_ok=True)
    sheet = data / "samples.tsv"
    lines = sheet.read_text().splitlines(keepends=True)
    pid = lines[0].rstrip("\n").split("\t").index("patient_id")
    sheet.write_text(lines[0] + "".join(ln for ln in lines[1:] if ln.split("\t")[pid] in PATIENTS))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run([str(BIN / "snakemake"), "--cores", "2", "-q"], cwd=work, env=env, check=True)
    return work


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--dir", type=Path, help="keep the generated run here (default: a temp dir)")
    a = ap.parse_args(argv)
    root = a.dir or Path(tempfile.mkdtemp(prefix="nkflow-review-bench-"))
    work = make_run(root, a.events)
    os.chdir(work)
    from starlette.testclient import TestClient

    from nkflow.config import load_config
    from nkflow.review.app import CSRF_HEADER, create_app
    from nkflow.review.live import ReviewRun

    run = ReviewRun(load_config(Path("config/config.yaml")), work)
    app = create_app(run, token="t", port=1)
    client = TestClient(app, base_url="http://127.0.0.1:1")
    client.get("/?token=t", follow_redirects=False)
    headers = {CSRF_HEADER: app.state.csrf, "content-type": "application/json"}

    def post(url: str, bounds: list[dict]) -> tuple[float, dict]:
        t0 = time.perf_counter()
        r = client.post(url, content=json.dumps({**TUBE, "bounds": bounds}), headers=headers)
        dt = 1000 * (time.perf_counter() - t0)
        assert r.status_code == 200, r.text
        return dt, r.json()

    _, base = post("/api/preview", [])
    n_events = run.open(**TUBE).prep.sample.n_events
    if n_events != a.events:
        raise SystemExit(f"the tube has {n_events} events, not the {a.events} asked for")
    bounds = {(b["gate"], b["marker"]): b["value"] for b in base["bounds"]}
    cases = {
        "nk.CD56 min": ("nk", "CD56", "min"),
        "live.Viability max": ("live", "Viability", "max"),
        "nk.CD56 min, nothing reused (full)": ("nk", "CD56", "min"),
    }
    rows = []
    for name, (gate, marker, side) in cases.items():
        wall, server, gate_ms, fig = [], [], [], []
        v0 = bounds[(gate, marker)]
        for k in range(a.rounds):
            if "full" in name:
                run.open(**TUBE).last = None
            cand = [
                {"gate": gate, "marker": marker, "side": side, "value": v0 + 0.002 * (k % 5 + 1)}
            ]
            dt, doc = post("/api/preview", cand)
            wall.append(dt)
            server.append(doc["elapsed_ms"])
            gate_ms.append(doc["gate_ms"])
            if k < 5:
                fig.append(post("/api/figure", cand)[0])
        rows.append(
            (name, statistics.median(wall), sorted(wall)[int(0.95 * (len(wall) - 1))],
             statistics.median(server), statistics.median(gate_ms), statistics.median(fig))
        )  # fmt: skip
    load = os.getloadavg()[0]
    print(f"\nTube {TUBE['sample_id']}/{TUBE['tube']}: {n_events:,} events; {a.rounds} rounds; "
          f"load average {load:.1f} (2 cores)\n")  # fmt: skip
    print("| boundary moved | release -> numbers, median ms | p95 ms | server ms | "
          "of which gating ms | figure ms (median of 5) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, w, p95, srv, g, f in rows:
        print(f"| {name} | {w:.0f} | {p95:.0f} | {srv:.0f} | {g:.0f} | {f:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
