EXPORTS = [
    f"{RESULTS}/cohort/exports/{stem}.{ext}"
    for stem in ("measurements", "cp", "data_dictionary")
    for ext in ("tsv", "csv")
]


rule readout:
    """Per patient: cellular kinetics (Cmax, Tmax, AUC, Clast, Tlast, fold expansion,
    persistence) of donor, total and subset NK cells and Tregs; and the exports for a trial
    statistician (tidy long table, SDTM-style CP dataset, data dictionary)."""
    input:
        validated=VALIDATED,
        visits=f"{RESULTS}/cohort/visits.tsv",
        endpoints=f"{RESULTS}/cohort/endpoints.tsv",
    output:
        kinetics=report(
            f"{RESULTS}/cohort/kinetics.tsv",
            caption="../report/kinetics.rst",
            category="Cohort tables",
        ),
        summary=f"{RESULTS}/cohort/kinetics_summary.tsv",
        exports=EXPORTS,
    log:
        f"{RESULTS}/logs/readout.log",
    benchmark:
        f"{RESULTS}/benchmarks/readout.tsv"
    localrule: True
    params:
        exports=lambda w, output: os.path.dirname(output.exports[0]),
    shell:
        "nkflow readout --validated {input.validated} --visits {input.visits}"
        " --endpoints {input.endpoints} --kinetics {output.kinetics} --summary {output.summary}"
        " --exports {params.exports} 2> {log}"
