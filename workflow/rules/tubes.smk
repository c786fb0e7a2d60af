rule tubes:
    """Read, compensate, time-QC and gate a batch of tubes sharing a panel and gate tree.

    Each tube gets <batch>/<sample>/<tube>/{counts.tsv,qc.tsv,gating.png,provenance.json,
    gates.xml}, an NK tube its re-gatings, perturbation.tsv (docs/uncertainty.md); a reviewer's
    override files of its tubes are inputs (docs/review.md).
    """
    input:
        unpack(batch_inputs),
    output:
        report(
            directory(f"{RESULTS}/tubes/{{batch}}"),
            patterns=["{sample}/{tube}/gating.png"],
            caption="../report/gating.rst",
            category="Gating",
            labels={"sample": "{sample}", "tube": "{tube}"},
        ),
    log:
        f"{RESULTS}/logs/tubes/{{batch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tubes/{{batch}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=20,
    params:
        settings=batch_settings,
        tubes=batch_tube_args,
    shell:
        "nkflow tubes --panel {input.panel:q} --gating {input.gating:q}"
        " --settings {params.settings:q} --outdir {output} {params.tubes} 2> {log}"


rule collect:
    """Cohort tables in sample-sheet order: population counts, QC checks, tube index, and the
    NK tubes' re-gatings."""
    input:
        validated=VALIDATED,
        batches=BATCH_DIRS,
        # its collection_date is checked against each tube's $DATE (qc.dates)
        samples=NKCONFIG["sheets"]["samples"],
    output:
        counts=report(
            f"{RESULTS}/cohort/counts.tsv",
            caption="../report/counts.rst",
            category="Cohort tables",
        ),
        qc=report(
            f"{RESULTS}/qc/tubes.tsv",
            caption="../report/qc.rst",
            category="Quality control",
        ),
        index=f"{RESULTS}/cohort/tubes.tsv",
        perturbation=f"{RESULTS}/cohort/perturbation.tsv",
    log:
        f"{RESULTS}/logs/collect.log",
    benchmark:
        f"{RESULTS}/benchmarks/collect.tsv"
    localrule: True
    shell:
        "nkflow collect --validated {input.validated} --batches {input.batches:q}"
        " --counts {output.counts} --qc {output.qc} --index {output.index}"
        " --perturbation {output.perturbation} 2> {log}"
