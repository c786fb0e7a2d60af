"""Command-line adapter: one subcommand per workflow stage.

The CLI parses arguments, configures logging and calls one function of the package. It
computes nothing itself. An :class:`~nkflow.errors.NkflowError` becomes one readable line on
stderr and exit status 1, with no traceback. Heavy libraries are imported inside the handlers
so that ``nkflow --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nkflow import __version__
from nkflow.errors import NkflowError

if TYPE_CHECKING:
    from nkflow.config import Study

logger = logging.getLogger("nkflow")


def _study(args: argparse.Namespace) -> Study:
    """The study of ``--config FILE``, ``--config-json TEXT`` or ``--validated JSON``."""
    from nkflow.config import load_study

    if getattr(args, "validated", None):
        return load_study(validated=Path(args.validated))
    if getattr(args, "config_json", None):
        try:
            data = json.loads(args.config_json)
        except json.JSONDecodeError as exc:
            raise NkflowError(f"--config-json: not valid JSON ({exc})") from None
        return load_study(data=data, source="--config-json")
    # argparse makes the options a required, exclusive group
    return load_study(config=Path(args.config))


def _add_config_args(
    p: argparse.ArgumentParser, *, config_json: bool = False, validated: bool = False
) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", metavar="FILE", help="nkflow config.yaml")
    if config_json:
        g.add_argument(
            "--config-json",
            metavar="TEXT",
            help="the same configuration as JSON (used by the workflow)",
        )
    if validated:
        g.add_argument(
            "--validated",
            metavar="JSON",
            help="the configuration `nkflow validate --write-resolved` wrote (used by the "
            "workflow; read without re-validating)",
        )


def _required(p: argparse.ArgumentParser, *options: str) -> None:
    """Options a subcommand cannot run without (paths and ids the workflow always gives)."""
    for option in options:
        p.add_argument(option, required=True)


# --------------------------------------------------------------------------- handlers


def cmd_validate(args: argparse.Namespace) -> int:
    """``nkflow validate``: validate the config and every sheet, run nothing."""
    from nkflow import config as cfgmod

    # the sheet loaders log each row warning as they find it; paths relative to the run
    # directory, as in sheet_warnings.tsv, so validated/config.json is the same wherever the
    # run is (it held the absolute path of the checkout)
    study = _study(args)
    warnings = cfgmod.validate_inputs(study)
    if args.write_resolved:
        cfgmod.write_resolved(study.config, warnings, Path(args.write_resolved))
    sys.stdout.write(f"configuration OK ({len(warnings)} warning(s))\n")
    if args.explain:
        from nkflow.plan import plan_text, run_plan

        sys.stdout.write("\n" + plan_text(run_plan(study.config, log_warnings=False)))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """``nkflow plan``: say what a run will use per patient and visit (day 14, CBC, chimerism); run nothing."""
    from nkflow.plan import plan_text, run_plan, write_plan_tsv

    plan = run_plan(_study(args).config)
    sys.stdout.write(plan_text(plan))
    if args.tsv:
        write_plan_tsv(plan, Path(args.tsv))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """``nkflow inspect``: describe FCS files: version, channels, markers, spillover."""
    from nkflow.fcs.inspect import inspect_files

    text, status = inspect_files([Path(f) for f in args.files], panel=args.panel, fmt=args.format)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return status


def cmd_tube(args: argparse.Namespace) -> int:
    """``nkflow tube``: read, compensate, QC and gate one tube."""
    from nkflow.tube import TubeOutputs, run_tube

    settings = json.loads(args.settings) if args.settings else {}
    status = run_tube(
        fcs=Path(args.fcs),
        panel=Path(args.panel),
        gating=Path(args.gating),
        sample_id=args.sample_id,
        tube=args.tube,
        settings=settings,
        outputs=TubeOutputs(
            counts=Path(args.counts),
            qc=Path(args.qc),
            figure=Path(args.figure),
            provenance=Path(args.provenance),
            perturbation=Path(args.perturbation) if args.perturbation else None,
            gatingml=Path(args.gatingml) if args.gatingml else None,
        ),
        overrides=[Path(f) for f in args.override or []],
    )
    logger.info("tube %s/%s finished with QC status %s", args.sample_id, args.tube, status)
    return 0


def cmd_tubes(args: argparse.Namespace) -> int:
    """``nkflow tubes``: process a batch of tubes sharing a panel and gate tree."""
    from nkflow.stages import run_batch

    settings = json.loads(args.settings) if args.settings else {}
    fmo: dict[tuple[str, str], dict[str, Path]] = {}
    for s, t, marker, f in args.fmo or []:
        fmo.setdefault((s, t), {})[marker] = Path(f)
    overrides: dict[tuple[str, str], list[Path]] = {}
    for s, t, f in args.override or []:
        overrides.setdefault((s, t), []).append(Path(f))
    statuses = run_batch(
        tubes=[(s, t, Path(f)) for s, t, f in args.tube],
        panel=Path(args.panel),
        gating=Path(args.gating),
        settings=settings,
        outdir=Path(args.outdir),
        fmo=fmo,
        overrides=overrides,
    )
    counts = {s: sum(1 for v in statuses.values() if v == s) for s in ("PASS", "WARN", "FAIL")}
    logger.info("batch of %d tube(s): %s", len(statuses), counts)
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    """``nkflow collect``: cohort counts, QC and tube index from the batches."""
    from nkflow.stages import run_collect

    run_collect(
        _study(args),
        [Path(p) for p in args.batches],
        out_counts=Path(args.counts),
        out_qc=Path(args.qc),
        out_index=Path(args.index),
        out_perturbation=Path(args.perturbation) if args.perturbation else None,
    )
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """``nkflow merge``: join counts, ALC and chimerism per visit."""
    from nkflow.stages import run_merge

    run_merge(_study(args), Path(args.counts), Path(args.qc), Path(args.out))
    return 0


def cmd_endpoints(args: argparse.Namespace) -> int:
    """``nkflow endpoints``: per-patient day-14 verdicts and cohort tables."""
    from nkflow.stages import run_endpoints

    run_endpoints(
        _study(args),
        Path(args.visits),
        Path(args.outdir),
        perturbation_path=Path(args.perturbation) if args.perturbation else None,
        tubes_index=Path(args.tubes_index) if args.tubes_index else None,
        audit_log=Path(args.audit_log) if args.audit_log else None,
    )
    return 0


def cmd_readout(args: argparse.Namespace) -> int:
    """``nkflow readout``: cellular kinetics and the statistician's exports."""
    from nkflow.stages import run_readout

    run_readout(
        _study(args),
        Path(args.visits),
        Path(args.endpoints),
        Path(args.kinetics),
        Path(args.exports),
        Path(args.summary) if args.summary else None,
    )
    return 0


def _password(args: argparse.Namespace, prompt: str) -> str:
    """The password from one line of stdin (``--password-stdin``) or a terminal prompt."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    return getpass.getpass(prompt)


def cmd_users(args: argparse.Namespace) -> int:
    """``nkflow users``: keep the users who may correct gates and sign."""
    from nkflow.review import review_settings
    from nkflow.review.users import add_user

    rs = review_settings(_study(args).config)
    password = _password(args, f"password for {args.id}: ")
    user = add_user(
        rs.users,
        rs.audit_log,
        user_id=args.id,
        name=args.name,
        role=args.role,
        password=password,
        by=args.by,
    )
    sys.stdout.write(f"user {user.id} ({user.name}, {user.role}) saved in {rs.users}\n")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """``nkflow audit``: check or print the review audit trail."""
    from nkflow.review import audit, review_settings
    from nkflow.review.users import load_users

    rs = review_settings(_study(args).config)
    if args.audit_cmd == "verify":
        findings = audit.verify(rs.audit_log)
        if findings:
            for f in findings:
                sys.stderr.write(f"nkflow audit verify: {f.message}\n")
            sys.stderr.write(
                f"nkflow audit verify: FAILED: {len(findings)} finding(s) in {rs.audit_log}; "
                "restore the log from a backup and investigate who changed it\n"
            )
            return 1
        n, sha = audit.head(rs.audit_log)
        sys.stdout.write(f"audit log {rs.audit_log}: OK, {n} entries, head sha256 {sha}\n")
        return 0
    names = {u.id: u.name for u in load_users(rs.users).values()}
    sys.stdout.write(audit.show(rs.audit_log, names, patient=args.patient))
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    """``nkflow review``: local web app: check, correct and sign the gates of a finished run."""
    from nkflow.review import signing
    from nkflow.review.app import serve
    from nkflow.review.live import ReviewRun

    run = ReviewRun(_study(args).config, Path.cwd())
    run.record_run()
    signing.sync_voids(run.rs.audit_log, run.bases())
    serve(run, port=args.port)
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    """``nkflow sign``: sign a patient's current endpoint (reviewed / approved)."""
    from nkflow.review.live import ReviewRun

    # the review app's signing: on the predicted basis when overrides are not yet applied
    run = ReviewRun(_study(args).config, Path.cwd())
    run.check_patient(args.patient)
    password = _password(args, f"password for {args.user}: ")
    out = run.sign(args.user, password, args.patient, args.meaning)
    entry = out["entry"]
    pending = (
        f" (on the recomputation of {', '.join(out['pending'])}, whose overrides the run has not "
        "applied yet)"
        if out["pending"]
        else ""
    )
    sys.stdout.write(
        f"signed: patient {args.patient}, '{args.meaning}' by {entry['data']['name']} "
        f"({args.user}) at {entry['time_utc']} (audit seq {entry['seq']}){pending}; rerun "
        "snakemake to show it in endpoints.tsv and the report\n"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``nkflow report``: per-patient HTML pages and the cohort index."""
    from dataclasses import fields

    from nkflow.report._inputs import ReportPaths
    from nkflow.stages import run_report

    named = {f.name: getattr(args, f.name) for f in fields(ReportPaths)}
    paths = ReportPaths(**{k: Path(v) for k, v in named.items() if v})
    pages = run_report(_study(args), paths, Path(args.outdir), workers=args.workers)
    sys.stdout.write(f"report: {Path(args.outdir) / 'index.html'} ({len(pages)} pages)\n")
    return 0


def cmd_gates(args: argparse.Namespace) -> int:
    """``nkflow gates``: import or export gate trees (Gating-ML 2.0, FlowJo .wsp)."""
    from nkflow import gating

    if args.gates_cmd == "export":
        tree = gating.load_tree(Path(args.tree))
        gating.to_gatingml(tree, Path(args.out))
    elif args.gates_cmd == "import":
        src = Path(args.source)
        if src.suffix.lower() == ".wsp":
            tree = gating.from_flowjo_wsp(src, sample_id=args.sample_id, group=args.group)
        else:
            tree = gating.from_gatingml(src)
        gating.write_tree(tree, Path(args.out))
    sys.stdout.write(f"wrote {args.out}\n")
    return 0


def cmd_qualify(args: argparse.Namespace) -> int:
    """``nkflow qualify``: installation/operational qualification: run the checks, write a signable report."""
    from nkflow.qualify import run_qualification, write_qualification

    doc = run_qualification(
        Path(args.out),
        config=Path(args.config) if args.config else None,
        reference=Path(args.reference) if args.reference else None,
        quick=args.quick,
        workflow_dir=Path(args.workflow) if args.workflow else None,
        cores=args.cores,
        only=[c for c in args.only.split(",") if c] if args.only else None,
        keep_events=args.keep_events,
        command=" ".join(["nkflow", *sys.argv[1:]]),
    )
    js, page = write_qualification(doc, Path(args.out))
    s = doc["summary"]
    sys.stdout.write(
        f"qualification {s['status']}: {s['criteria']} criteria, {s['passed']} passed, "
        f"{s['failed']} failed, {s['not_run']} not run ({doc['run']['seconds']:.0f} s)\n"
    )
    for cid in s["failed_criteria"]:
        sys.stdout.write(f"  FAILED {cid}\n")
    sys.stdout.write(f"report: {page}\njson: {js}\n")
    return 1 if s["failed"] else 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The ``nkflow`` command line: one subparser per workflow stage and tool."""
    parser = argparse.ArgumentParser(
        prog="nkflow",
        description=(
            "Donor NK-cell expansion endpoints from raw FCS files. Each subcommand is one "
            "workflow stage; run the whole cohort with `snakemake --cores N`."
        ),
    )
    parser.add_argument("--version", action="version", version=f"nkflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("validate", help="validate the config and every sheet, run nothing")
    _add_config_args(p, config_json=True)
    p.add_argument("--write-resolved", metavar="JSON", help="write the validated config here")
    p.add_argument(
        "--explain",
        action="store_true",
        help="then print what a run will use (the output of `nkflow plan`)",
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "plan",
        help="say what a run will use per patient and visit (day 14, CBC, chimerism); run nothing",
    )
    _add_config_args(p)
    p.add_argument("--tsv", metavar="FILE", help="also write one row per (patient, visit) here")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("inspect", help="describe FCS files: version, channels, markers, spillover")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--panel", metavar="YAML", help="panel file to resolve markers with")
    p.add_argument("--format", choices=["text", "tsv", "json"], default="text")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("tube", help="read, compensate, QC and gate one tube")
    _required(p, "--fcs", "--panel", "--gating", "--sample-id", "--tube")
    p.add_argument("--settings", help="JSON with the qc and tube sections of the config")
    _required(p, "--counts", "--qc", "--figure", "--provenance")
    p.add_argument("--perturbation", help="the NK tube's re-gatings (perturbation.tsv)")
    p.add_argument("--gatingml", help="also write the gates used as Gating-ML 2.0 here")
    p.add_argument(
        "--override",
        action="append",
        metavar="YAML",
        help="a reviewer's gate override file of this tube (repeatable; docs/review.md)",
    )
    p.set_defaults(func=cmd_tube)

    p = sub.add_parser("tubes", help="process a batch of tubes sharing a panel and gate tree")
    _required(p, "--panel", "--gating")
    p.add_argument("--settings", help="JSON with the qc and tube sections of the config")
    p.add_argument("--outdir", required=True, help="batch directory (<sample>/<tube>/ inside)")
    p.add_argument(
        "--tube",
        nargs=3,
        action="append",
        required=True,
        metavar=("SAMPLE_ID", "TUBE", "FCS"),
        help="one tube (repeat the option for each tube of the batch)",
    )
    p.add_argument(
        "--fmo",
        nargs=4,
        action="append",
        metavar=("SAMPLE_ID", "TUBE", "MARKER", "FCS"),
        help="an FMO control tube of one tube, for one marker (repeatable)",
    )
    p.add_argument(
        "--override",
        nargs=3,
        action="append",
        metavar=("SAMPLE_ID", "TUBE", "YAML"),
        help="a reviewer's gate override file of one tube (repeatable; docs/review.md)",
    )
    p.set_defaults(func=cmd_tubes)

    p = sub.add_parser("collect", help="cohort counts, QC and tube index from the batches")
    _add_config_args(p, validated=True)
    p.add_argument("--batches", nargs="+", required=True)
    _required(p, "--counts", "--qc", "--index")
    p.add_argument("--perturbation", help="cohort table of every NK tube's re-gatings")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("merge", help="join counts, ALC and chimerism per visit")
    _add_config_args(p, validated=True)
    _required(p, "--counts", "--qc", "--out")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("endpoints", help="per-patient day-14 verdicts and cohort tables")
    _add_config_args(p, validated=True)
    _required(p, "--visits", "--outdir")
    p.add_argument(
        "--perturbation", help="cohort perturbation.tsv (gate placement in the uncertainty)"
    )
    p.add_argument("--tubes-index", help="cohort/tubes.tsv (with --audit-log: review status)")
    p.add_argument("--audit-log", help="the review audit log (review.audit_log), if it exists")
    p.set_defaults(func=cmd_endpoints)

    p = sub.add_parser("readout", help="cellular kinetics and the statistician's exports")
    _add_config_args(p, validated=True)
    p.add_argument("--visits", required=True)
    p.add_argument("--endpoints", required=True, help="endpoints.tsv (groups of the summary)")
    p.add_argument("--kinetics", required=True, help="kinetics.tsv to write")
    p.add_argument("--summary", help="kinetics_summary.tsv to write (default: beside --kinetics)")
    p.add_argument("--exports", required=True, help="directory of the exports")
    p.set_defaults(func=cmd_readout)

    p = sub.add_parser("report", help="per-patient HTML pages and the cohort index")
    _add_config_args(p, validated=True)
    for opt, what in (
        ("--endpoints", "cohort/endpoints.tsv"),
        ("--visits", "cohort/visits.tsv"),
        ("--qc", "qc/tubes.tsv"),
        ("--counts", "cohort/counts.tsv"),
        ("--kinetics", "cohort/kinetics.tsv"),
        ("--kinetics-summary", "cohort/kinetics_summary.tsv"),
        ("--patients", "the directory cohort/patients (per-patient JSON)"),
        ("--tubes-index", "cohort/tubes.tsv (each tube's figure and provenance)"),
    ):
        p.add_argument(opt, required=True, help=what)
    p.add_argument("--str-results", help="cohort/str_results.tsv, when STR peaks are configured")
    p.add_argument("--str-loci", help="cohort/str_loci.tsv, when STR peaks are configured")
    p.add_argument("--outdir", required=True)
    p.add_argument("--workers", type=int, default=1, help="processes rendering patient pages")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("gates", help="import or export gate trees (Gating-ML 2.0, FlowJo .wsp)")
    gsub = p.add_subparsers(dest="gates_cmd", required=True)
    e = gsub.add_parser("export", help="YAML gate tree -> Gating-ML 2.0 XML")
    _required(e, "--tree", "--out")
    i = gsub.add_parser("import", help="Gating-ML 2.0 XML or FlowJo .wsp -> YAML gate tree")
    i.add_argument("source")
    i.add_argument("--out", required=True)
    i.add_argument("--sample-id", help="FlowJo sample whose gates to import")
    i.add_argument("--group", default="All Samples", help="FlowJo sample group")
    p.set_defaults(func=cmd_gates)

    p = sub.add_parser(
        "qualify",
        help="installation/operational qualification: run the checks, write a signable report",
    )
    p.add_argument("--out", required=True, help="directory for qualification.{json,html}")
    p.add_argument("--config", metavar="FILE", help="the lab's config.yaml (default: shipped)")
    p.add_argument("--reference", metavar="YAML", help="the lab's locked reference set (PQ)")
    p.add_argument("--quick", action="store_true", help="the CI subset (no validation cohort)")
    p.add_argument("--workflow", metavar="DIR", help="directory with Snakefile, workflow/, config/")
    p.add_argument("--cores", type=int, default=2, help="cores for the workflow runs")
    p.add_argument("--only", metavar="IDS", help="comma-separated check ids to run")
    p.add_argument(
        "--keep-events", action="store_true", help="keep the generated FCS files under OUT/work"
    )
    p.set_defaults(func=cmd_qualify)

    p = sub.add_parser("users", help="keep the users who may correct gates and sign")
    usub = p.add_subparsers(dest="users_cmd", required=True)
    a = usub.add_parser("add", help="add a user, or change one's name, role and password")
    _add_config_args(a)
    a.add_argument("--id", required=True, help="user id, e.g. jdoe")
    a.add_argument("--name", required=True, help="printed name shown on signatures")
    a.add_argument("--role", required=True, choices=["reviewer", "approver"])
    a.add_argument("--by", default="admin", help="who makes the change (audit log)")
    a.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=cmd_users)

    p = sub.add_parser("audit", help="check or print the review audit trail")
    asub = p.add_subparsers(dest="audit_cmd", required=True)
    v = asub.add_parser("verify", help="check the hash chain; exit 1 naming any broken entry")
    _add_config_args(v)
    s_ = asub.add_parser("show", help="print the trail readably, per patient")
    _add_config_args(s_)
    s_.add_argument("--patient", help="only this patient (and cohort-wide events)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser(
        "review", help="local web app: check, correct and sign the gates of a finished run"
    )
    _add_config_args(p)
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("sign", help="sign a patient's current endpoint (reviewed / approved)")
    _add_config_args(p)
    _required(p, "--patient", "--user")
    p.add_argument("--meaning", required=True, choices=["reviewed", "approved"])
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=cmd_sign)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nkflow`` console command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except NkflowError as exc:
        sys.stderr.write(f"nkflow {args.command}: error: {exc}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
