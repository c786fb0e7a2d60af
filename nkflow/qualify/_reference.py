"""The lab's reference set (performance qualification).

Locked FCS files gated with the lab's configuration, each expected value judged against its
acceptance range, and the CV of replicate acquisitions judged against its limit.

Contract: :func:`load_reference` validates the YAML against
``workflow/schemas/reference.schema.yaml`` and checks that every replicate names a listed file
(raising :class:`~nkflow.errors.ConfigError` naming the field). :func:`check_reference` checks
each file's sha256 first: a changed file fails naming it and is not gated (its values are not
run). Files are gated by :func:`nkflow.tube.run_tube` with the settings the workflow hands a
tube (:func:`nkflow.config.tube_settings`), outputs under ``out/work/reference/<id>/``.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from nkflow.qualify._cohort import text_rows
from nkflow.qualify._context import Context
from nkflow.qualify._model import CheckResult, Criterion, evidence, judged, not_run


def load_reference(path: Path) -> dict[str, Any]:
    """Read and validate a reference-set YAML."""
    import yaml

    from nkflow.errors import ConfigError
    from nkflow.schemas import check_against_schema, load_schema

    if not path.is_file():
        raise ConfigError(f"{path}: reference set not found (give the path of your reference YAML)")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    check_against_schema(doc, load_schema("reference"), source=str(path))
    ids = [f["id"] for f in doc["files"]]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(
            f"{path}: field 'files': id(s) {', '.join(dup)} listed twice; expected each once"
        )
    for i, rep in enumerate(doc.get("replicates", [])):
        unknown = [f for f in rep["files"] if f not in ids]
        if unknown:
            raise ConfigError(
                f"{path}: field 'replicates.{i}.files': found {', '.join(unknown)}, not listed "
                f"under 'files:'; expected ids of listed files: {', '.join(ids)}"
            )
    return doc


def _gate(
    ctx: Context, cfg: dict[str, Any], ref_dir: Path, f: dict[str, Any]
) -> dict[tuple[str, str], float | None]:
    from nkflow.config import tube_settings
    from nkflow.errors import ConfigError
    from nkflow.tube import TubeOutputs, run_tube

    for kind, name in (("panels", f["panel"]), ("gating", f["gating"])):
        if name not in cfg.get(kind, {}):
            raise ConfigError(
                f"reference file {f['id']}: {kind[:-1] if kind == 'panels' else 'gate tree'} "
                f"'{name}' is not under '{kind}:' of the configuration; known: "
                f"{', '.join(sorted(cfg.get(kind, {})))}"
            )
    d = ctx.work / "reference" / f["id"]
    outputs = TubeOutputs(d / "counts.tsv", d / "qc.tsv", d / "gating.png", d / "provenance.json")
    run_tube(
        fcs=ref_dir / f["fcs"],
        panel=ctx.base_dir / cfg["panels"][f["panel"]],
        gating=ctx.base_dir / cfg["gating"][f["gating"]],
        sample_id=f["id"],
        tube=f["panel"],
        settings=tube_settings(cfg, f["panel"], f["gating"]),
        outputs=outputs,
    )
    values: dict[tuple[str, str], float | None] = {}
    for row in text_rows(outputs.counts):
        for measure in ("events", "pct_of_parent", "pct_of_lymphocytes"):
            text = row.get(measure, "")
            values[(row["population"], measure)] = float(text) if text else None
    return values


def _cv_pct(values: list[float]) -> float | None:
    mean = statistics.fmean(values)
    if len(values) < 2 or mean == 0:
        return None
    return statistics.stdev(values) / mean * 100.0


def check_reference(ctx: Context) -> CheckResult:
    """Performance qualification on the lab's locked reference files."""
    from nkflow.config import load_config
    from nkflow.errors import NkflowError
    from nkflow.provenance import sha256_file

    title = "Lab reference set (PQ)"
    desc = (
        "The lab's locked reference FCS files, each checked against its recorded sha256, "
        "gated with the lab's configuration, and each expected population value judged "
        "against its acceptance range; replicate acquisitions judged by their CV per "
        "population (CLSI H62-style repeatability)."
    )
    if ctx.reference_path is None:
        crit = not_run("reference.set", "the lab's reference set is gated within its ranges", "",
                       "no reference set given (nkflow qualify --reference FILE)")  # fmt: skip
        return CheckResult("reference", title, desc, (crit,))
    try:
        doc = load_reference(ctx.reference_path)
        cfg = load_config(ctx.config_path)
    except NkflowError as exc:
        crit = judged("reference.set", "the reference set and configuration load", "no error",
                      "error", False, str(exc))  # fmt: skip
        return CheckResult("reference", title, desc, (crit,))
    ref_dir = ctx.reference_path.parent
    criteria: list[Criterion] = []
    file_rows, value_rows = [], []
    values: dict[str, dict[tuple[str, str], float | None]] = {}
    for f in doc["files"]:
        path = ref_dir / f["fcs"]
        now = sha256_file(path) if path.is_file() else ""
        same = now == f["sha256"]
        criteria.append(
            judged(
                f"reference.{f['id']}.sha256",
                f"reference file {f['fcs']} is the locked file (sha256 as recorded)",
                f"sha256 {f['sha256'][:12]}...",
                f"sha256 {now[:12]}..." if now else "file missing",
                same,
                f"{f['fcs']}: "
                + (
                    f"sha256 {now}, recorded {f['sha256']}: the file changed"
                    if now
                    else "file not found"
                ),
            )
        )
        file_rows.append((f["id"], f["fcs"], f["sha256"], now or "missing", same))
        if not same:
            for e in f.get("expected", []):
                criteria.append(not_run(f"reference.{f['id']}.{e['population']}.{e['measure']}",
                                        f"{e['population']} {e['measure']} within range", str(e["range"]),
                                        f"{f['fcs']} changed (sha256): not gated"))  # fmt: skip
            continue
        try:
            values[f["id"]] = _gate(ctx, cfg, ref_dir, f)
        except NkflowError as exc:
            criteria.append(judged(f"reference.{f['id']}.gated", f"{f['fcs']} is gated", "no error",
                                   "error", False, str(exc)))  # fmt: skip
            continue
        for e in f.get("expected", []):
            lo, hi = e["range"]
            v = values[f["id"]].get((e["population"], e["measure"]))
            ok = v is not None and lo <= v <= hi
            criteria.append(
                judged(
                    f"reference.{f['id']}.{e['population']}.{e['measure']}",
                    f"{f['id']}: {e['population']} {e['measure']} within its acceptance range",
                    f"[{lo:g}, {hi:g}]",
                    "not computed" if v is None else f"{v:.6g}",
                    ok,
                    f"{f['fcs']}: {e['population']} {e['measure']} "
                    + ("not computed" if v is None else f"{v:.6g}")
                    + f", range [{lo:g}, {hi:g}]",
                )
            )
            value_rows.append(
                (f["id"], e["population"], e["measure"], e.get("value"), lo, hi, v, ok)
            )
    rep_rows = []
    for rep in doc.get("replicates", []):
        for p in rep["populations"]:
            cid = f"reference.{rep['id']}.{p['population']}.{p['measure']}.cv"
            text = f"replicates {rep['id']}: CV of {p['population']} {p['measure']} at most {p['cv_max_pct']:g} %"
            got = {
                fid: values.get(fid, {}).get((p["population"], p["measure"]))
                for fid in rep["files"]
            }
            gone = [fid for fid in rep["files"] if fid not in values]
            if gone:
                criteria.append(not_run(cid, text, f"CV <= {p['cv_max_pct']:g} %",
                                        f"replicate file(s) {', '.join(gone)} not gated"))  # fmt: skip
                continue
            missing = [fid for fid, v in got.items() if v is None]
            nums = [v for v in got.values() if v is not None]
            cv = None if missing else _cv_pct(nums)
            ok = cv is not None and math.isfinite(cv) and cv <= p["cv_max_pct"]
            measured = (
                f"CV {cv:.2f} % over {len(nums)}"
                if cv is not None
                else f"not computed ({', '.join(missing) or 'mean 0'})"
            )
            criteria.append(
                judged(cid, text, f"CV <= {p['cv_max_pct']:g} %", measured, ok, measured)
            )
            rep_rows.append(
                (rep["id"], p["population"], p["measure"],
                 "; ".join(f"{k}={'' if v is None else f'{v:.6g}'}" for k, v in got.items()),
                 statistics.fmean(nums) if nums else None,
                 statistics.stdev(nums) if len(nums) > 1 else None, cv, p["cv_max_pct"], ok)
            )  # fmt: skip
    return CheckResult(
        "reference",
        title,
        desc + (f" Set: {doc['name']}." if doc.get("name") else ""),
        tuple(criteria),
        (
            evidence(
                "Reference files",
                ["id", "file", "sha256 recorded", "sha256 now", "same"],
                file_rows,
            ),
            evidence(
                "Expected values",
                [
                    "file",
                    "population",
                    "measure",
                    "established value",
                    "low",
                    "high",
                    "nkflow",
                    "within",
                ],
                value_rows,
                note=f"gated with {ctx.config_path}; per-file outputs in {ctx.rel(ctx.work / 'reference')}",
            ),
            evidence(
                "Replicates (repeatability)",
                [
                    "set",
                    "population",
                    "measure",
                    "values",
                    "mean",
                    "SD",
                    "CV %",
                    "limit %",
                    "within",
                ],
                rep_rows,
            ),
        ),  # fmt: skip
    )
