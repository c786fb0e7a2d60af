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
        results=lambda w, input: os.path.dirname(os.path.dirname(input.endpoints)),
    shell:
        "nkflow report --validated {input.validated} --results {params.results}"
        " --outdir {params.outdir} --workers {threads} 2> {log}"
