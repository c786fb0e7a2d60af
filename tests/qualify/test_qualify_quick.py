"""``nkflow qualify --quick`` on a fresh clone of this repository, as CI runs it: it passes,
and its JSON says what was checked (issue #16)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import public_data_root
from tests.qualify.helpers import criteria, fresh_clone, run_qualify

pytestmark = pytest.mark.workflow

#: criteria allowed to be not run in --quick (the validation cohort; no reference set given)
QUICK_NOT_RUN = {"truth.validation", "reference.set"}
PUBLIC = {"gatingml.per_event", "flowjo.counts"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    clone = fresh_clone(tmp_path_factory.mktemp("clone") / "nkflow")
    out = tmp_path_factory.mktemp("qualify_quick")
    t0 = time.perf_counter()
    code, doc, log = run_qualify(clone, out, "--quick")
    print(f"nkflow qualify --quick: {time.perf_counter() - t0:.0f} s")
    return code, doc, log, out, clone


def test_quick_passes_on_a_fresh_clone(quick):
    code, doc, log, _, _ = quick
    s = doc["summary"]
    assert code == 0, (s["failed_criteria"], log[-3000:])
    assert s["failed"] == 0 and s["failed_criteria"] == []
    allowed = QUICK_NOT_RUN | (set() if public_data_root() else PUBLIC)
    assert set(s["not_run_criteria"]) <= allowed, s["not_run_criteria"]
    assert s["status"] == ("INCOMPLETE" if s["not_run_criteria"] else "PASS")
    assert s["criteria"] == s["passed"] + s["not_run"]


def test_quick_json_names_every_check_and_its_evidence(quick):
    _, doc, _, _, clone = quick
    assert doc["schema"] == "nkflow-qualification/1" and doc["mode"] == "quick"
    assert [c["id"] for c in doc["checks"]] == [
        "installation", "gatingml", "flowjo", "truth_cohort", "determinism", "bad_inputs",
        "precision", "reference",
    ]  # fmt: skip
    crit = criteria(doc)
    # a development checkout is compared with its git commit, and the report says so
    files = next(c for c in doc["checks"] if c["id"] == "installation")["evidence"]
    git = [e for e in files if e["title"].startswith("Checkout files against git commit")]
    assert git and "record: the git commit" in git[0]["note"]
    assert all(r[-1] == "same" for r in git[0]["rows"])
    assert any(r[0] == "config/gating/nk_v1.yaml" for r in git[0]["rows"])
    # the sample cohort on all four instrument styles, each measure, and every verdict
    styles = {"bd_fortessa", "cytoflex", "aurora", "attune"}
    for style in styles:
        for m in ("nk_pct_of_lymphocytes", "donor_nk_per_ul", "treg_pct_of_cd4"):
            assert crit[f"truth.default.{style}.{m}"]["status"] == "pass"
    assert crit["truth.default.verdicts"]["measured"] == "8/8 exact"
    assert crit["truth.workflow_package"]["measured"].endswith(f"imports {clone / 'nkflow'}")
    assert crit["determinism.tables"]["status"] == "pass"
    for case in ("truncated_file", "tot_mismatch", "missing_marker", "bad_spillover",
                 "duplicate_id", "qns_alc", "negative_alc", "unknown_unit"):  # fmt: skip
        assert crit[f"bad_inputs.{case}"]["status"] == "pass", crit[f"bad_inputs.{case}"]
    assert crit["precision.numerator_floor"]["measured"] == "100 events: CV 10.0%"
    if public_data_root():
        assert crit["gatingml.per_event"]["measured"] == "51/51 files exact"
        assert crit["flowjo.counts"]["measured"] == "8/8 equal"


def test_quick_html_opens_with_the_summary(quick):
    _, doc, _, out, _ = quick
    page = (out / "qualification.html").read_text()
    s = doc["summary"]
    head = f"{s['criteria']} criteria: {s['passed']} passed, {s['failed']} failed"
    assert page.index(head) < page.index('id="environment"') < page.index('id="check-installation"')
    assert page.index('id="check-reference"') < page.index('id="provenance"')
    assert "http://" not in page and "https://" not in page  # self-contained
    # the generated FCS files are removed after the run; tables and truth stay
    assert not list((out / "work").rglob("*.fcs"))
    assert (out / "work/default/results/cohort/endpoints.tsv").is_file()
