rule readout:
    """Per patient: cellular kinetics (Cmax, Tmax, AUC, Clast, Tlast, fold expansion,
    persistence) of donor, total and subset NK cells and Tregs."""
    input:
        visits=f"{RESULTS}/cohort/visits.tsv",
    output:
        kinetics=report(
            f"{RESULTS}/cohort/kinetics.tsv",
            caption="../report/kinetics.rst",
            category="Cohort tables",
        ),
    log:
        f"{RESULTS}/logs/readout.log",
    benchmark:
        f"{RESULTS}/benchmarks/readout.tsv"
    localrule: True
    params:
        config=CONFIG_JSON,
    shell:
        "nkflow readout --config-json {params.config:q} --visits {input.visits}"
        " --kinetics {output.kinetics} 2> {log}"
