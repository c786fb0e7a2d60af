rule endpoints:
    """Per patient: the day-14 sample, donor NK/uL with its interval, and the verdict, with
    how sure it is (gate placement, counting and chimerism error)."""
    input:
        validated=VALIDATED,
        visits=f"{RESULTS}/cohort/visits.tsv",
        perturbation=f"{RESULTS}/cohort/perturbation.tsv",
        sheets=list(NKCONFIG["sheets"].values()),
        # review status: the signatures in the log against each patient's tubes
        index=f"{RESULTS}/cohort/tubes.tsv",
        batches=BATCH_DIRS,
        audit=[AUDIT_LOG] if os.path.exists(AUDIT_LOG) else [],
    output:
        endpoints=report(
            f"{RESULTS}/cohort/endpoints.tsv",
            caption="../report/endpoints.rst",
            category="Cohort tables",
        ),
        workbook=f"{RESULTS}/cohort/endpoints.xlsx",
        patients=directory(f"{RESULTS}/cohort/patients"),
    log:
        f"{RESULTS}/logs/endpoints.log",
    benchmark:
        f"{RESULTS}/benchmarks/endpoints.tsv"
    localrule: True
    params:
        outdir=lambda w, output: os.path.dirname(output.endpoints),
        audit=lambda w, input: (
            f"--audit-log {shlex.quote(input.audit[0])}" if input.audit else ""
        ),
    shell:
        "nkflow endpoints --validated {input.validated} --visits {input.visits}"
        " --tubes-index {input.index} {params.audit} --outdir {params.outdir}"
        " --perturbation {input.perturbation} 2> {log}"
