rule merge:
    """Per visit: counts joined with ALC (cells/uL) and % donor chimerism, with study day."""
    input:
        validated=f"{RESULTS}/validated/config.json",
        counts=f"{RESULTS}/cohort/counts.tsv",
        qc=f"{RESULTS}/qc/tubes.tsv",
        sheets=list(NKCONFIG["sheets"].values()),
        fractions=NKCONFIG["endpoints"]["chimerism_fractions"],
    output:
        report(
            f"{RESULTS}/cohort/visits.tsv",
            caption="../report/visits.rst",
            category="Cohort tables",
        ),
    log:
        f"{RESULTS}/logs/merge.log",
    benchmark:
        f"{RESULTS}/benchmarks/merge.tsv"
    localrule: True
    params:
        config=CONFIG_JSON,
    shell:
        "nkflow merge --config-json {params.config:q} --counts {input.counts}"
        " --qc {input.qc} --out {output} 2> {log}"
