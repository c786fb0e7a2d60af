#!/usr/bin/env python
"""Cohort-scale benchmark of the nkflow workflow (issue 8). Not a test.

Contract
--------
``python bench/cohort.py [--tubes 1000] [--events 100000] [--cores 2] [--out bench/out/cohort]``

1. Generates a cohort of ``--tubes`` tubes of ``--events`` events each with the sample generator
   (``scripts/make_sample_data.py``): replicate ``r`` is ``generate(seed=DEFAULT_SEED + r)`` with
   every visit's event count set to ``--events``; the replicates' sheets are merged under ids
   prefixed ``R<r>-`` and the merged sample sheet is cut to exactly ``--tubes`` rows.
2. In a copy of the workflow under ``--out`` it times: ``snakemake -n`` (DAG build), a full local
   run on ``--cores`` cores (``--workflow-profile none``: nothing but cores and the greedy
   scheduler), ``nkflow --help`` (CLI start-up, median of 5), and a FlowKit-per-tube baseline (in
   one process: ``flowkit.Sample`` -> compensation from the file -> logicle -> events, on
   ``--baseline-tubes`` tubes).
3. Reads every job's ``benchmark:`` file: per-tube CPU time and peak RSS (``max_rss``).
4. Prints a JSON summary and writes it to ``<out>/summary.json``; ``--readme`` also rewrites the
   ``## Cohort`` section of ``bench/README.md`` (and nothing else in that file).

Definitions: *compute* = sum of the jobs' CPU seconds (from ``benchmark:``); *ideal wall* =
compute / cores; *workflow overhead* = measured wall - ideal wall, reported as a share of the
ideal wall. This is a developer tool: it prints, and it imports heavy libraries at top level.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHEETS = ("samples", "infusions", "cbc", "chimerism")


def load_generator():
    from nkflow import synthetic

    return synthetic


def sized_cohort(original: Any, n_events: int) -> Any:
    """The generator's scenario table (``original``, its ``_cohort``) with every tube at
    ``n_events`` events: assign the result to ``gen._cohort`` before ``gen.generate``."""

    def cohort() -> tuple[Any, ...]:
        return tuple(
            dataclasses.replace(
                p,
                visits=tuple(
                    dataclasses.replace(v, n_nk=n_events, n_treg=n_events) for v in p.visits
                ),
            )
            for p in original()
        )

    return cohort


def generate_cohort(
    out: Path, n_tubes: int, n_events: int, distinct: int = 4
) -> tuple[Path, float]:
    """Write ``n_tubes`` tubes (merged sheets in ``out``); return (samples.tsv, seconds).

    The sample cohort is generated ``distinct`` times with different seeds (64 tubes each);
    further replicates reuse those FCS files under new patient and sample ids. Generating
    1,000 distinct 100k-event tubes takes about 30 min here and measures the generator, not
    nkflow: every tube is still read, gated and reported on its own.
    """
    gen = load_generator()
    original = gen._cohort
    gen._cohort = sized_cohort(original, n_events)
    t0 = time.perf_counter()
    merged: dict[str, list[list[str]]] = {s: [] for s in SHEETS}
    headers: dict[str, list[str]] = {}
    n_rows, rep = 0, 0
    while n_rows < n_tubes:
        rdir = out / f"r{rep % distinct:02d}"
        if not (rdir / "samples.tsv").exists():
            gen.generate(rdir, seed=gen.DEFAULT_SEED + rep % distinct)
        for sheet in SHEETS:
            with (rdir / f"{sheet}.tsv").open(newline="") as fh:
                rows = list(csv.reader(fh, delimiter="\t"))
            headers[sheet] = rows[0]
            pid = rows[0].index("patient_id")
            for row in rows[1:]:
                row = list(row)
                row[pid] = f"R{rep:02d}-{row[pid]}"
                if sheet == "samples":
                    if n_rows >= n_tubes:
                        continue
                    sid = rows[0].index("sample_id")
                    fcs = rows[0].index("fcs_file")
                    row[sid] = f"R{rep:02d}-{row[sid]}"
                    row[fcs] = f"{rdir.name}/{row[fcs]}"
                    n_rows += 1
                merged[sheet].append(row)
        rep += 1
    for sheet in SHEETS:
        with (out / f"{sheet}.tsv").open("w", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", lineterminator="\n")
            w.writerow(headers[sheet])
            w.writerows(merged[sheet])
    gen._cohort = original
    return out / "samples.tsv", time.perf_counter() - t0


def make_workdir(work: Path, data: Path) -> Path:
    """A copy of the workflow whose config points at the benchmark cohort."""
    import yaml

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copy2(REPO / "Snakefile", work / "Snakefile")
    for sub in ("workflow", "config"):
        shutil.copytree(REPO / sub, work / sub)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["sheets"] = {s: str(data / f"{s}.tsv") for s in SHEETS}
    (work / "bench.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return work


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    return e


def timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, proc


def read_benchmarks(results: Path) -> list[dict[str, float | str]]:
    rows = []
    for f in sorted((results / "benchmarks").rglob("*.tsv")):
        with f.open(newline="") as fh:
            rec = next(csv.DictReader(fh, delimiter="\t"))
        rows.append(
            {
                "job": str(f.relative_to(results / "benchmarks")),
                "wall_s": float(rec["s"]),
                "cpu_s": float(rec["cpu_time"]),
                "max_rss_mb": float(rec["max_rss"]) if rec["max_rss"] not in ("", "-") else 0.0,
            }
        )
    return rows


def flowkit_baseline(fcs_files: list[Path]) -> dict[str, float]:
    """In one process: FlowKit Sample -> compensate from the file -> logicle -> events."""
    t_import = time.perf_counter()
    import flowkit as fk

    import_s = time.perf_counter() - t_import
    xform = fk.transforms.LogicleTransform(param_t=262144, param_w=0.5, param_m=4.5, param_a=0)
    cpu, wall = [], []
    for path in fcs_files:
        c0, w0 = time.process_time(), time.perf_counter()
        sample = fk.Sample(str(path))
        # BD-style files ($SPILLOVER over the fluorescence channels only): FlowKit reads the
        # Beckman-style SPILL of the generator only with null channels declared, so the
        # baseline uses the BD-style tubes (the caller picks them).
        sample.apply_compensation(sample.metadata["spillover"])
        sample.apply_transform(xform)
        sample.get_events(source="xform")
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {
        "import_flowkit_s": round(import_s, 3),
        "tubes": len(fcs_files),
        "median_cpu_s_per_tube": round(statistics.median(cpu), 3),
        "median_wall_s_per_tube": round(statistics.median(wall), 3),
    }


def startup_time(n: int = 5) -> float:
    times = []
    for _ in range(n):
        t, proc = timed([str(BIN / "nkflow"), "--help"], REPO)
        if proc.returncode != 0:
            raise SystemExit(f"nkflow --help failed: {proc.stderr}")
        times.append(t)
    return statistics.median(times)


def summarise(args: argparse.Namespace) -> dict:
    out = args.out.resolve()
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    sheet, gen_s = generate_cohort(data, args.tubes, args.events, args.distinct)
    n_tubes = sum(1 for _ in sheet.open()) - 1
    work = make_workdir(out / "work", data)
    smk = [str(BIN / "snakemake"), "--configfile", "bench.yaml", "--workflow-profile", "none"]

    dag_s, proc = timed([*smk, "-n", "-q", "--cores", str(args.cores)], work)
    if proc.returncode != 0:
        raise SystemExit(f"snakemake -n failed:\n{proc.stderr[-3000:]}")
    load_before = os.getloadavg()
    run_s, proc = timed(
        [*smk, "--cores", str(args.cores), "--scheduler", "greedy", "--keep-going"], work
    )
    if proc.returncode != 0:
        raise SystemExit(f"the workflow run failed:\n{proc.stderr[-3000:]}")
    load_after = os.getloadavg()

    jobs = read_benchmarks(work / "results")
    tubes = [j for j in jobs if str(j["job"]).startswith("tubes/")]
    compute = sum(float(j["cpu_s"]) for j in jobs)
    ideal = compute / args.cores
    fcs = [
        p
        for p in sorted((data / "r00" / "fcs").glob("*.fcs"))
        if b"$SPILLOVER" in p.read_bytes()[:20000]
    ][: args.baseline_tubes]
    summary = {
        "machine": f"{platform.node()} {os.cpu_count()} CPUs",
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "tubes": n_tubes,
        "events_per_tube": args.events,
        "cores": args.cores,
        "generate_s": round(gen_s, 1),
        "dag_build_s": round(dag_s, 2),
        "run_wall_s": round(run_s, 1),
        "jobs": len(jobs),
        "compute_cpu_s": round(compute, 1),
        "ideal_wall_s": round(ideal, 1),
        "overhead_share_of_ideal": round((run_s - ideal) / ideal, 3) if ideal else None,
        "tube_jobs": len(tubes),
        "tubes_per_job": round(n_tubes / len(tubes), 1),
        # per tube = the per-tube jobs' CPU (start-up included) divided by the tubes they ran
        "cpu_s_per_tube": round(sum(float(j["cpu_s"]) for j in tubes) / n_tubes, 3),
        "tube_job_cpu_s_median": round(statistics.median(float(j["cpu_s"]) for j in tubes), 2),
        "tube_job_wall_s_median": round(statistics.median(float(j["wall_s"]) for j in tubes), 2),
        "peak_rss_mb_tube_job_median": round(
            statistics.median(float(j["max_rss_mb"]) for j in tubes), 1
        ),
        "peak_rss_mb_any_job": max(
            ((float(j["max_rss_mb"]), str(j["job"])) for j in jobs), default=(0.0, "")
        ),
        "cohort_jobs_cpu_s": {
            str(j["job"]): j["cpu_s"] for j in jobs if not str(j["job"]).startswith("tubes/")
        },
        "nkflow_help_s_median_of_5": round(startup_time(), 3),
        "flowkit_baseline": flowkit_baseline(fcs),
        "projected_1000_tubes_wall_s": round(run_s / n_tubes * 1000, 0),
    }
    return summary


def render_section(s: dict) -> str:
    fb = s["flowkit_baseline"]
    over = s["overhead_share_of_ideal"]
    return f"""## Cohort

Measured by `python bench/cohort.py --tubes {s["tubes"]} --events {s["events_per_tube"]} \
--cores {s["cores"]} --readme` on {s["machine"]}
(1-min load average {s["load_average_before_after"][0]} before the run and
{s["load_average_before_after"][1]} after it: other jobs shared the machine, so every time
below is an upper bound).

| measure | value | target |
|---|---|---|
| tubes x events | {s["tubes"]} x {s["events_per_tube"]:,} | 1,000 x 100,000 |
| `snakemake -n` (DAG build) | {s["dag_build_s"]} s | |
| full local run, {s["cores"]} cores | {s["run_wall_s"]} s | |
| projected 1,000 tubes (linear) | {s["projected_1000_tubes_wall_s"]:.0f} s | <= 300 s |
| compute (sum of job CPU) | {s["compute_cpu_s"]} s ({s["jobs"]} jobs) | |
| workflow overhead (wall vs compute/cores) | {over:.0%} | < 30 % |
| per-tube jobs (batches) | {s["tube_jobs"]} x {s["tubes_per_job"]} tubes | |
| CPU per tube (batch CPU / tubes, start-up included) | {s["cpu_s_per_tube"]} s | |
| per-tube job, median CPU / wall | {s["tube_job_cpu_s_median"]} / {s["tube_job_wall_s_median"]} s | |
| peak RSS per tube job (median) | {s["peak_rss_mb_tube_job_median"]} MB | |
| peak RSS of any job | {s["peak_rss_mb_any_job"][0]} MB ({s["peak_rss_mb_any_job"][1]}) | |
| `nkflow --help` (median of 5) | {s["nkflow_help_s_median_of_5"]} s | <= 0.3 s |
| FlowKit baseline per tube (CPU, median of {fb["tubes"]}) | {fb["median_cpu_s_per_tube"]} s | |
| `import flowkit` | {fb["import_flowkit_s"]} s | |

Cohort-level job CPU seconds: {", ".join(f"{k} {v}" for k, v in s["cohort_jobs_cpu_s"].items())}.
Raw numbers: `bench/out/cohort/summary.json` (not committed).
"""


def update_readme(section: str, readme: Path) -> None:
    """Replace (or append) the ``## Cohort`` section; other sections are left as they are."""
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Cohort\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    readme.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tubes", type=int, default=1000)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--baseline-tubes", type=int, default=10)
    ap.add_argument(
        "--distinct",
        type=int,
        default=4,
        help="distinct generated cohorts (64 tubes each); more tubes reuse their files",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "cohort")
    ap.add_argument("--readme", action="store_true", help="rewrite ## Cohort in bench/README.md")
    args = ap.parse_args(argv)
    summary = summarise(args)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    if args.readme:
        update_readme(render_section(summary), REPO / "bench" / "README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
