"""The lab writes its sorted NK fraction as 'CD56+' (and PB as 'whole blood'): the workflow reads
them through the fraction vocabulary and produces the same endpoints table, byte for byte, as the
canonical spelling. Before the vocabulary, every visit silently fell back to PB."""

from __future__ import annotations

import pytest

from tests.conftest import copy_workflow, run_snakemake

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def alias_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("fraction_aliases"))
    path = workdir / "data/sample/chimerism.tsv"
    text = path.read_text()
    assert "\tCD56\t" in text and "\tPB\t" in text
    path.write_text(text.replace("\tCD56\t", "\tCD56+\t").replace("\tPB\t", "\twhole blood\t"))
    run_snakemake(workdir)
    return workdir


def test_alias_spelling_gives_byte_identical_tables(alias_run, sample_run):
    for rel in ("results/cohort/endpoints.tsv", "results/cohort/visits.tsv"):
        assert (alias_run / rel).read_bytes() == (sample_run / rel).read_bytes(), rel
    assert "CD56" in (alias_run / "results/cohort/endpoints.tsv").read_text()


def test_alias_spelling_is_logged_and_not_a_warning(alias_run, sample_run):
    rel = "results/cohort/sheet_warnings.tsv"
    assert (alias_run / rel).read_bytes() == (sample_run / rel).read_bytes()
    log = (alias_run / "results/logs/merge.log").read_text()
    assert "column 'fraction': 'CD56+' read as CD56" in log
