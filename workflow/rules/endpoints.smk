rule endpoints:
    """Per patient: the day-14 sample, donor NK/uL with its interval, and the verdict, with
    how sure it is (gate placement, counting and chimerism error)."""
    input:
        visits=f"{RESULTS}/cohort/visits.tsv",
        perturbation=f"{RESULTS}/cohort/perturbation.tsv",
        sheets=list(NKCONFIG["sheets"].values()),
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
        config=CONFIG_JSON,
        outdir=lambda w, output: os.path.dirname(output.endpoints),
    shell:
        "nkflow endpoints --config-json {params.config:q} --visits {input.visits}"
        " --outdir {params.outdir} --perturbation {input.perturbation} 2> {log}"
