"""Synthetic truth cohorts through the real workflow, and determinism.

Contract: :func:`check_truth_cohort` generates each cohort from the installed generator and its
seed (:mod:`nkflow.synthetic`), runs the workflow on it and judges, per instrument style, NK %
of lymphocytes, donor NK/uL and Treg % of CD4 against the generator's truth, and every
patient's verdict and reason codes. :func:`check_determinism` runs the sample cohort a second
time in another directory and compares every table byte for byte. The comparisons
(:func:`truth_errors`, :func:`verdict_rows`, :func:`compare_trees`) are pure functions on files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from nkflow.provenance import sha256_file
from nkflow.qualify import _workflow as wf
from nkflow.qualify._context import Context
from nkflow.qualify._limits import LIMIT
from nkflow.qualify._model import CheckResult, Criterion, evidence, judged, not_run
from nkflow.tables import read_tsv

#: (column of visits.tsv, words) judged per instrument style
MEASURES = (
    ("nk_pct_of_lymphocytes", "NK % of lymphocytes"),
    ("donor_nk_per_ul", "donor NK/uL"),
    ("treg_pct_of_cd4", "Treg % of CD4"),
)
#: cohort variant -> (words, limit id per measure)
VARIANTS = {
    "default": (
        "sample cohort (the four instrument styles the gates were developed on)",
        {
            "nk_pct_of_lymphocytes": "truth_nk_pct_rel_err",
            "donor_nk_per_ul": "truth_donor_nk_rel_err",
            "treg_pct_of_cd4": "truth_treg_pct_rel_err",
        },
    ),
    "validation": (
        "validation cohort (four instrument styles the gates were not developed on)",
        {
            "nk_pct_of_lymphocytes": "validation_nk_pct_rel_err",
            "donor_nk_per_ul": "validation_nk_pct_rel_err",
            "treg_pct_of_cd4": "truth_treg_pct_rel_err",
        },
    ),
}


def text_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a TSV as dicts of the cells' text (:func:`nkflow.tables.read_tsv` ``text``)."""
    return read_tsv(path, text=True).to_dict("records")


def _num(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def truth_errors(data: Path, results: Path) -> list[dict[str, Any]]:
    """Per visit with a truth value: style, measure, truth, result and relative error.

    A visit whose result is missing where truth has a number has ``rel_err`` None.
    """
    style = {
        r["sample_id"]: r["instrument_style"]
        for r in text_rows(data / "truth" / "tubes.tsv")
        if r["tube"] == "nk"
    }
    got = {r["sample_id"]: r for r in text_rows(results / "cohort" / "visits.tsv")}
    out = []
    for t in text_rows(data / "truth" / "visits.tsv"):
        for col, _ in MEASURES:
            want = _num(t.get(col))
            if want is None:
                continue
            have = _num(got.get(t["sample_id"], {}).get(col))
            out.append(
                {
                    "sample_id": t["sample_id"],
                    "style": style[t["sample_id"]],
                    "measure": col,
                    "truth": want,
                    "got": have,
                    # a zero truth (no donor cells) is met only exactly
                    "rel_err": None
                    if have is None
                    else abs(have - want) / want
                    if want
                    else float(have != want),
                }
            )
    return out


def verdict_rows(data: Path, results: Path) -> list[tuple[str, str, str, str, str, bool]]:
    """Per patient: truth verdict and reasons, nkflow's, and whether they agree exactly.

    When evaluable, the chosen day-14 sample must agree too.
    """
    got = {r["patient_id"]: r for r in text_rows(results / "cohort" / "endpoints.tsv")}
    rows = []
    for t in text_rows(data / "truth" / "endpoints.tsv"):
        g = got.get(t["patient_id"], {})
        same = g.get("verdict") == t["verdict"] and g.get("reason") == t["reason"]
        if t["verdict"] != "NOT_EVALUABLE":
            same = same and g.get("sample_id") == t["sample_id"]
        rows.append(
            (
                t["patient_id"],
                f"{t['verdict']} ({t['reason']})",
                f"{g.get('verdict', 'missing')} ({g.get('reason', '')})",
                t["sample_id"],
                g.get("sample_id", ""),
                same,
            )
        )
    return rows


def _style_criteria(variant: str, errors: list[dict[str, Any]]) -> list[Criterion]:
    words, limit_ids = VARIANTS[variant]
    out = []
    for style in sorted({e["style"] for e in errors}):
        for col, name in MEASURES:
            rows = [e for e in errors if e["style"] == style and e["measure"] == col]
            limit = LIMIT[limit_ids[col]]
            missing = [e["sample_id"] for e in rows if e["rel_err"] is None]
            done = [e for e in rows if e["rel_err"] is not None]
            worst = max(done, key=lambda e: e["rel_err"], default=None)
            measured = (
                f"worst {worst['rel_err']:.2%} ({worst['sample_id']}) over {len(done)} visits"
                if worst
                else "no visit"
            ) + (f"; missing: {', '.join(missing)}" if missing else "")
            ok = bool(done) and not missing and worst is not None and worst["rel_err"] <= limit
            out.append(
                judged(
                    f"truth.{variant}.{style}.{col}",
                    f"{name} of every visit within {limit:.0%} of truth ({style}, {words})",
                    f"relative error <= {limit:.0%}, no visit missing",
                    measured,
                    ok,
                    measured,
                )
            )
    return out


def _run_cohort(ctx: Context, variant: str, name: str) -> tuple[wf.Run, dict[str, str]]:
    assert ctx.workflow_dir is not None
    workdir = ctx.work / name
    digests = wf.prepare(ctx.workflow_dir, workdir, variant)
    return wf.run(workdir, ctx.cores), digests


NO_WORKFLOW = (
    "no workflow directory (Snakefile, workflow/, config/) beside the package; "
    "give it with --workflow DIR"
)


def check_truth_cohort(ctx: Context) -> CheckResult:
    """Synthetic truth cohorts, generated on the spot, through the workflow (OQ).

    ``--quick`` runs the sample cohort (4 instrument styles); the full qualification adds the
    validation cohort (4 more styles, instrument settings the gates were not developed on).
    """
    from nkflow import synthetic

    title = "Synthetic truth cohort"
    desc = (
        "Cohorts generated on the spot by the installed generator (nkflow.synthetic) from its "
        "committed seeds, run through the Snakemake workflow with the shipped configuration "
        "(config/config.yaml of the workflow directory), and compared with the generator's "
        "own truth, per instrument style."
    )
    if ctx.workflow_dir is None:
        crit = not_run("truth.workflow", "the workflow runs the truth cohorts", "", NO_WORKFLOW)
        return CheckResult("truth_cohort", title, desc, (crit,))
    exe, used = wf.workflow_package()
    from nkflow.qualify._install import package_dir

    criteria: list[Criterion] = [
        judged(
            "truth.workflow_package",
            "the workflow's rules run the nkflow package being qualified",
            f"the `nkflow` command imports {package_dir()}",
            f"`{exe}` imports {used or 'nothing (failed)'}",
            used == str(package_dir()),
            f"the workflow would run the package at {used or '(none)'}",
        )
    ]
    evid = []
    gen_rows = []
    for variant in ("default", "validation"):
        words, _ = VARIANTS[variant]
        if variant == "validation" and ctx.quick:
            criteria.append(
                not_run(
                    "truth.validation",
                    f"the {words} is within its limits and every verdict exact",
                    "see the full qualification",
                    "--quick: the validation cohort runs in the full qualification only",
                )
            )
            continue
        run, digests = _run_cohort(ctx, variant, variant)
        ctx.runs[variant] = (run, digests)
        data, results = run.workdir / "data" / "sample", run.workdir / "results"
        seed = synthetic.SEED_OF_VARIANT[variant]
        # no duration here: timings belong to the run block, not the deterministic evidence
        manifest_sha = hashlib.sha256(synthetic.manifest_text(digests).encode()).hexdigest()
        gen_rows.append((variant, seed, len(digests), manifest_sha, ctx.rel(run.workdir)))
        criteria.append(
            judged(
                f"truth.{variant}.workflow",
                f"the workflow completes on the {words}",
                "snakemake exit status 0",
                f"exit status {run.returncode}",
                run.ok,
                run.failure() if not run.ok else "",
            )
        )
        if not run.ok:
            continue
        errors = truth_errors(data, results)
        criteria += _style_criteria(variant, errors)
        verdicts = verdict_rows(data, results)
        wrong = [r[0] for r in verdicts if not r[5]]
        criteria.append(
            judged(
                f"truth.{variant}.verdicts",
                f"every patient's day-14 verdict and reason codes equal truth ({words})",
                "all exact",
                f"{len(verdicts) - len(wrong)}/{len(verdicts)} exact",
                bool(verdicts) and not wrong,
                f"differs for {', '.join(wrong)}",
            )
        )
        evid.append(
            evidence(
                f"Verdicts, {variant} cohort",
                ["patient", "truth", "nkflow", "truth day-14 sample", "nkflow sample", "exact"],
                verdicts,
            )
        )
        evid.append(
            evidence(
                f"Per visit, {variant} cohort",
                ["sample", "instrument style", "measure", "truth", "nkflow", "relative error"],
                [
                    (
                        e["sample_id"],
                        e["style"],
                        e["measure"],
                        e["truth"],
                        e["got"],
                        "missing" if e["rel_err"] is None else f"{e['rel_err']:.3%}",
                    )
                    for e in errors
                ],
            )  # fmt: skip
        )
    evid.insert(
        0,
        evidence(
            "Generated cohorts",
            ["variant", "seed", "files", "sha256 of the file manifest", "run directory"],
            gen_rows,
            note="the manifest lists the sha256 of every generated FCS file, sheet and truth "
            "table (data/sample/MANIFEST.sha256 of each work directory)",
        ),
    )
    return CheckResult("truth_cohort", title, desc, tuple(criteria), tuple(evid))


def table_files(results: Path) -> dict[str, str]:
    """sha256 of every table and record (``*.tsv``, ``*.json``) a run writes, by path.

    Paths are under ``results``; logs and benchmarks (timings) are not tables.
    """
    out = {}
    for path in sorted(results.rglob("*")):
        rel = path.relative_to(results)
        if rel.parts[0] in ("logs", "benchmarks") or path.suffix not in (".tsv", ".json"):
            continue
        out[str(rel)] = sha256_file(path)
    return out


def compare_trees(a: dict[str, str], b: dict[str, str]) -> list[tuple[str, str, str, bool]]:
    """(file, sha256 in a, sha256 in b, identical) over the union of both runs' files."""
    return [(k, a.get(k, ""), b.get(k, ""), a.get(k) == b.get(k)) for k in sorted({*a, *b})]


def check_determinism(ctx: Context) -> CheckResult:
    """Two runs of the same cohort, in two directories, give byte-identical tables."""
    title = "Determinism"
    desc = (
        "The sample cohort is generated and run a second time in another directory; the "
        "generated files and every table and record of the two runs are compared byte for byte."
    )
    first = ctx.runs.get("default")
    if ctx.workflow_dir is None or first is None:
        reason = NO_WORKFLOW if ctx.workflow_dir is None else "the truth cohort did not run"
        crit = not_run("determinism.tables", "two runs give byte-identical tables", "", reason)
        return CheckResult("determinism", title, desc, (crit,))
    run1, digests1 = first
    run2, digests2 = _run_cohort(ctx, "default", "default-repeat")
    ctx.runs["default-repeat"] = (run2, digests2)
    gen_same = digests1 == digests2
    criteria = [
        judged(
            "determinism.generator",
            "the generator writes the same cohort twice",
            "every generated file identical",
            f"{sum(digests1.get(k) == v for k, v in digests2.items())}/{len(digests1)} identical",
            gen_same,
            "the generated cohorts differ",
        )
    ]
    if not (run1.ok and run2.ok):
        bad = run2 if run1.ok else run1
        criteria.append(
            judged("determinism.tables", "two runs give byte-identical tables", "", "", False,
                   bad.failure())
        )  # fmt: skip
        return CheckResult("determinism", title, desc, tuple(criteria))
    rows = compare_trees(
        table_files(run1.workdir / "results"), table_files(run2.workdir / "results")
    )
    diff = [r[0] for r in rows if not r[3]]
    criteria.append(
        judged(
            "determinism.tables",
            "two runs of the same cohort give byte-identical tables",
            "every table and record identical",
            f"{len(rows) - len(diff)}/{len(rows)} files identical",
            bool(rows) and not diff,
            f"differ: {', '.join(diff[:10])}" + (" ..." if len(diff) > 10 else ""),
        )
    )
    ev = evidence(
        "Tables of the two runs",
        ["file under results/", "sha256 run 1", "sha256 run 2", "identical"],
        rows,
        note=f"run 1 in {ctx.rel(run1.workdir)}, run 2 in {ctx.rel(run2.workdir)}",
    )
    return CheckResult("determinism", title, desc, tuple(criteria), (ev,))
