rule report:
    """Self-contained HTML: one page per patient and the cohort index."""
    input:
        validated=VALIDATED,
        endpoints=f"{RESULTS}/cohort/endpoints.tsv",
        visits=f"{RESULTS}/cohort/visits.tsv",
        kinetics=f"{RESULTS}/cohort/kinetics.tsv",
        kinetics_summary=f"{RESULTS}/cohort/kinetics_summary.tsv",
        qc=f"{RESULTS}/qc/tubes.tsv",
        counts=f"{RESULTS}/cohort/counts.tsv",
        patients=f"{RESULTS}/cohort/patients",
        index=f"{RESULTS}/cohort/tubes.tsv",
        str_tables=STR_TABLES,
        batches=BATCH_DIRS,
        # read through the validated config: source rows shown, digests in the provenance
        sheets=list(NKCONFIG["sheets"].values()),
        panels=list(NKCONFIG["panels"].values()),
        gating=list(NKCONFIG["gating"].values()),
    output:
        index=report(
            f"{RESULTS}/reports/index.html",
            caption="../report/index.rst",
            category="Reports",
        ),
        patients=report(
            expand(f"{RESULTS}/reports/{{patient}}.html", patient=PATIENTS),
            caption="../report/patient.rst",
            category="Reports",
        ),
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    localrule: True
    threads: 2
    params:
        outdir=lambda w, output: os.path.dirname(output.index),
        str_tables=lambda w, input: (
            f"--str-results {shlex.quote(input.str_tables[0])}"
            f" --str-loci {shlex.quote(input.str_tables[1])}"
            if input.str_tables
            else ""
        ),
    shell:
        "nkflow report --validated {input.validated} --endpoints {input.endpoints}"
        " --visits {input.visits} --qc {input.qc} --counts {input.counts}"
        " --kinetics {input.kinetics} --kinetics-summary {input.kinetics_summary}"
        " --patients {input.patients} --tubes-index {input.index} {params.str_tables}"
        " --outdir {params.outdir} --workers {threads} 2> {log}"
