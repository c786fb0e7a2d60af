"""The bad-input matrix: each defect gives its expected named error or NOT_EVALUABLE reason.

Contract: :func:`check_bad_inputs` makes every defect of :data:`FILE_CASES` in a freshly
generated copy of the sample cohort (cut to each patient's day-14 draw), runs the workflow once
and reads, per case, the damaged patient's endpoint reason and the tube's QC row. The defects
that stop a run before any job (:data:`SHEET_CASES`) are each validated on their own, as the
workflow validates when it is parsed (``nkflow.config.validate_inputs``), and must raise a
:class:`~nkflow.errors.ConfigError` whose message matches.
"""

from __future__ import annotations

import csv
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nkflow.qualify import _damage
from nkflow.qualify import _workflow as wf
from nkflow.qualify._cohort import NO_WORKFLOW, text_rows
from nkflow.qualify._context import Context
from nkflow.qualify._model import CheckResult, Criterion, evidence, judged, not_run


@dataclass(frozen=True)
class FileCase:
    """A defect in one patient's day-14 data, and what nkflow must say about it."""

    id: str
    defect: str
    patient: str
    reason: str  # endpoint reason code expected in endpoints.tsv
    qc_message: str = ""  # regex the tube's QC FAIL message must match ('' = no QC row)


FILE_CASES = (
    FileCase("truncated_file", "NK tube cut 1000 bytes short", "P01", "fcs_unreadable",
             r"truncated|expected \d+ bytes"),
    FileCase("tot_mismatch", "NK tube $TOT one more than its DATA holds", "P05",
             "fcs_unreadable", r"\$TOT"),
    FileCase("missing_marker", "CD56 renamed CD99 in the NK tube", "P02", "missing_marker"),
    FileCase("ambiguous_marker", "CD16 renamed CD56 in the NK tube's $PnS", "P06",
             "panel_ambiguous", r"CD56"),
    FileCase("bad_spillover", "NK tube spillover singular (all ones)", "P07",
             "compensation_invalid", r"singular|invertible"),
    FileCase("qns_alc", "day-14 ALC written QNS", "P03", "missing_alc"),
    FileCase("negative_alc", "day-14 ALC written -0.5", "P08", "invalid_alc"),
)  # fmt: skip


@dataclass(frozen=True)
class SheetCase:
    """A sheet defect that must stop validation, with the message expected."""

    id: str
    defect: str
    sheet: str
    change: Callable[[Path], None]
    message: str  # regex the ConfigError must match


def _duplicate_first_row(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join([*lines, lines[1]]), encoding="utf-8")


def _unknown_unit(path: Path) -> None:
    _damage.set_cell(path, {"patient_id": "P01"}, "alc_unit", "mmol/L")


SHEET_CASES = (
    SheetCase("duplicate_id", "samples.tsv: the first row repeated", "samples",
              _duplicate_first_row, r"rows \d+ and \d+: duplicate key \(sample_id="),
    SheetCase("unknown_unit", "cbc.tsv: alc_unit mmol/L on P01's rows", "cbc", _unknown_unit,
              r"alc_unit.*mmol/L"),
)  # fmt: skip


def _fcs_of(data: Path, sample_id: str, tube: str) -> Path:
    for r in text_rows(data / "samples.tsv"):
        if r["sample_id"] == sample_id and r["tube"] == tube:
            return data / r["fcs_file"]
    raise KeyError(f"{sample_id}/{tube} not in {data / 'samples.tsv'}")


def day14_samples(data: Path) -> dict[str, str]:
    """Patient -> the day-14 sample the generator's truth names (patients with one)."""
    return {
        r["patient_id"]: r["sample_id"]
        for r in text_rows(data / "truth" / "endpoints.tsv")
        if r["sample_id"]
    }


def _cut_to_day14(data: Path) -> None:
    """Keep only each patient's day-14 draw in samples.tsv (a smaller, faster run)."""
    keep = set(day14_samples(data).values())
    path = data / "samples.tsv"
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    sid = rows[0].index("sample_id")
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, delimiter="\t", lineterminator="\n").writerows(
            [rows[0], *(r for r in rows[1:] if r[sid] in keep)]
        )


def damage_cohort(data: Path) -> None:
    """Make every :data:`FILE_CASES` defect in a generated sample cohort at ``data``."""
    day14 = day14_samples(data)
    _cut_to_day14(data)
    changes = {
        "truncated_file": _damage.truncate,
        "tot_mismatch": lambda p: _damage.with_keywords(p, _damage.add_to_tot(1)),
        "missing_marker": lambda p: _damage.with_keywords(p, _damage.rename_marker("CD56", "CD99")),
        "ambiguous_marker": lambda p: _damage.with_keywords(
            p, _damage.rename_marker("CD16", "CD56", keys="S")
        ),
        "bad_spillover": lambda p: _damage.with_keywords(p, _damage.singular_spillover),
    }
    dates = {r["sample_id"]: r["collection_date"] for r in text_rows(data / "samples.tsv")}
    alc = {"qns_alc": "QNS", "negative_alc": "-0.5"}
    for case in FILE_CASES:
        sid = day14[case.patient]
        if case.id in changes:
            changes[case.id](_fcs_of(data, sid, "nk"))
        else:
            n = _damage.set_cell(
                data / "cbc.tsv",
                {"patient_id": case.patient, "date": dates[sid]},
                "alc_value",
                alc[case.id],
            )
            if n != 1:
                raise RuntimeError(f"{case.id}: {n} CBC rows of {case.patient} on {dates[sid]}")


def _file_case_criteria(data: Path, results: Path) -> tuple[list[Criterion], list[tuple]]:
    endpoints = {r["patient_id"]: r for r in text_rows(results / "cohort" / "endpoints.tsv")}
    qc = text_rows(results / "qc" / "tubes.tsv")
    day14 = day14_samples(data)
    criteria, rows = [], []
    for case in FILE_CASES:
        ep = endpoints.get(case.patient, {})
        reasons = [r.split(":")[0] for r in ep.get("reason", "").split(";") if r]
        codes = {r.split(":")[-1] for r in ep.get("reason", "").split(";")} | set(reasons)
        got_reason = ep.get("verdict") == "NOT_EVALUABLE" and case.reason in codes
        no_number = ep.get("donor_nk_per_ul", "") == ""
        msg = ""
        qc_ok = True
        if case.qc_message:
            fails = [
                r for r in qc
                if r["sample_id"] == day14[case.patient] and r["tube"] == "nk"
                and r["reason_code"] == case.reason and r["tube_status"] == "FAIL"
            ]  # fmt: skip
            msg = fails[0]["message"] if fails else ""
            qc_ok = bool(fails) and re.search(case.qc_message, msg) is not None
        ok = got_reason and no_number and qc_ok
        measured = f"{ep.get('verdict', 'no endpoint row')} ({ep.get('reason', '')})"
        criteria.append(
            judged(
                f"bad_inputs.{case.id}",
                f"{case.defect}: the patient is NOT_EVALUABLE with reason {case.reason}, no "
                "number"
                + (
                    f", and the tube's QC FAIL message names it (/{case.qc_message}/)"
                    if case.qc_message
                    else ""
                ),
                f"NOT_EVALUABLE, reason {case.reason}",
                measured,
                ok,
                f"{case.patient}: got {measured}"
                + ("" if no_number else f", donor NK/uL {ep.get('donor_nk_per_ul')}")
                + ("" if qc_ok else f"; QC message {msg!r} does not match /{case.qc_message}/"),
            )
        )
        rows.append((case.id, case.defect, case.patient, case.reason, measured, msg, ok))
    return criteria, rows


def _sheet_case(data: Path, config_path: Path, case: SheetCase) -> tuple[bool, str]:
    """Validate the cohort with one sheet damaged (a copy beside the original)."""
    import yaml

    from nkflow.config import load_study, validate_inputs
    from nkflow.errors import ConfigError

    workdir = data.parent.parent
    cfg = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    original = workdir / cfg["sheets"][case.sheet]
    damaged = original.with_name(f"{original.stem}.{case.id}{original.suffix}")
    shutil.copy2(original, damaged)
    case.change(damaged)
    cfg["sheets"][case.sheet] = str(damaged.relative_to(workdir))
    try:
        validate_inputs(load_study(data=cfg, source=f"{case.id} config", base_dir=workdir))
    except ConfigError as exc:
        text = str(exc).replace(str(workdir) + "/", "")
        return re.search(case.message, text) is not None, text
    return False, "validation passed (no error)"


def check_bad_inputs(ctx: Context) -> CheckResult:
    """The bad-input matrix through the workflow and validation.

    File and value defects go through the workflow, defects that refuse the run through validation.
    """
    title = "Bad-input matrix"
    desc = (
        "Defects made on purpose in a freshly generated sample cohort (cut to each patient's "
        "day-14 draw), one patient each, run through the workflow: each must give its named "
        "NOT_EVALUABLE reason and no number. Sheet defects that must refuse the run are "
        "validated one by one, as the workflow validates before any job."
    )
    if ctx.workflow_dir is None:
        crits = tuple(
            not_run(f"bad_inputs.{c.id}", c.defect, "", NO_WORKFLOW)
            for c in (*FILE_CASES, *SHEET_CASES)
        )
        return CheckResult("bad_inputs", title, desc, crits)
    workdir = ctx.work / "bad-inputs"
    wf.prepare(ctx.workflow_dir, workdir, "default", damage=damage_cohort)
    run = wf.run(workdir, ctx.cores)
    ctx.runs["bad-inputs"] = (run, {})
    data = workdir / "data" / "sample"
    criteria: list[Criterion] = []
    rows: list[tuple] = []
    if run.ok:
        criteria, rows = _file_case_criteria(data, workdir / "results")
    else:
        criteria = [
            judged(f"bad_inputs.{c.id}", c.defect, f"NOT_EVALUABLE, reason {c.reason}",
                   "workflow failed", False, run.failure())
            for c in FILE_CASES
        ]  # fmt: skip
    sheet_rows = []
    for case in SHEET_CASES:
        ok, text = _sheet_case(data, workdir / "config" / "config.yaml", case)
        criteria.append(
            judged(
                f"bad_inputs.{case.id}",
                f"{case.defect}: validation refuses it with a message matching /{case.message}/",
                "ConfigError naming the defect",
                text if len(text) <= 160 else text[:157] + "...",
                ok,
                text,
            )
        )
        sheet_rows.append((case.id, case.defect, case.message, text, ok))
    return CheckResult(
        "bad_inputs",
        title,
        desc,
        tuple(criteria),
        (
            evidence(
                "File and value defects (one workflow run)",
                [
                    "case",
                    "defect",
                    "patient",
                    "expected reason",
                    "endpoint",
                    "tube QC message",
                    "as expected",
                ],
                rows,
                note=f"run in {ctx.rel(workdir)}",
            ),
            evidence(
                "Sheet defects (validation)",
                ["case", "defect", "expected message", "message", "as expected"],
                sheet_rows,
            ),
        ),
    )
