"""A deliberately broken installation fails ``nkflow qualify`` with the criterion named: a gate
file edited after install, a patched module (checkout and wheel), a changed reference file.
The lab's reference set (PQ) passes when its files are as locked, and fails when a range or CV
limit is not met."""

from __future__ import annotations

import hashlib

import pytest
import yaml

from tests.qualify.helpers import criteria, fresh_clone, reference_set, run_qualify, wheel_install


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    return fresh_clone(tmp_path_factory.mktemp("clone") / "nkflow")


def test_clean_clone_passes_the_installation_check(clone, tmp_path):
    code, doc, log = run_qualify(clone, tmp_path / "q", "--only", "installation")
    assert code == 0, log[-2000:]
    assert criteria(doc)["installation.files"]["status"] == "pass"
    assert doc["summary"]["status"] == "INCOMPLETE"  # the other checks were not selected


def test_a_gate_file_edited_after_install_fails_naming_it(clone, tmp_path):
    gate = clone / "config/gating/nk_v1.yaml"
    original = gate.read_bytes()
    gate.write_bytes(original.replace(b"fit:", b"fit: ", 1))
    try:
        code, doc, log = run_qualify(clone, tmp_path / "q", "--only", "installation")
    finally:
        gate.write_bytes(original)
    assert code == 1, log[-2000:]
    assert doc["summary"]["failed_criteria"] == ["installation.files"]
    assert "config/gating/nk_v1.yaml modified" in criteria(doc)["installation.files"]["reason"]
    assert "FAILED installation.files" in log


def test_a_patched_module_fails_naming_it(clone, tmp_path):
    mod = clone / "nkflow/gating/evaluate.py"
    original = mod.read_text()
    mod.write_text(original + "\n# patched\n")
    extra = clone / "nkflow/gating/extra.py"
    extra.write_text("x = 1\n")
    try:
        code, doc, _ = run_qualify(clone, tmp_path / "q", "--only", "installation")
    finally:
        mod.write_text(original)
        extra.unlink()
    assert code == 1
    reason = criteria(doc)["installation.files"]["reason"]
    assert "nkflow/gating/evaluate.py modified" in reason
    assert "nkflow/gating/extra.py untracked" in reason


def test_a_lab_file_added_beside_the_shipped_config_is_listed_not_failed(clone, tmp_path):
    own = clone / "config/gating/nk_v1_lab.yaml"
    own.write_text((clone / "config/gating/nk_v1.yaml").read_text())
    try:
        code, doc, _ = run_qualify(clone, tmp_path / "q", "--only", "installation")
    finally:
        own.unlink()
    assert code == 0
    ev = next(c for c in doc["checks"] if c["id"] == "installation")["evidence"]
    rows = {r[0]: r[-1] for e in ev if e["title"].startswith("Checkout files") for r in e["rows"]}
    assert rows["config/gating/nk_v1_lab.yaml"] == "untracked (not compared)"


def test_a_wheel_install_is_checked_against_its_record(tmp_path):
    site = wheel_install(tmp_path / "site")
    code, doc, log = run_qualify(site, tmp_path / "ok", "--only", "installation", cwd=tmp_path)
    crit = criteria(doc)["installation.files"]
    assert crit["status"] == "pass", (crit, log[-2000:])
    ev = next(c for c in doc["checks"] if c["id"] == "installation")["evidence"]
    assert any(e["title"] == "Installed files against the wheel's RECORD" for e in ev)
    (site / "nkflow/clinical/counts.py").write_text(
        (site / "nkflow/clinical/counts.py").read_text() + "# x\n"
    )
    code, doc, _ = run_qualify(site, tmp_path / "bad", "--only", "installation", cwd=tmp_path)
    assert code == 1
    assert criteria(doc)["installation.files"]["reason"] == "nkflow/clinical/counts.py modified"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return reference_set(tmp_path_factory.mktemp("reference"))


def test_the_reference_set_passes_within_its_ranges(clone, reference, tmp_path):
    ref, truths = reference
    code, doc, log = run_qualify(
        clone, tmp_path / "q", "--only", "reference", "--reference", str(ref)
    )
    crit = criteria(doc)
    assert code == 0, (doc["summary"], log[-2000:])
    for k, truth in enumerate(truths, start=1):
        c = crit[f"reference.ref{k}.nk.pct_of_lymphocytes"]
        assert c["status"] == "pass"
        assert abs(float(c["measured"]) - truth) / truth < 0.03
        assert crit[f"reference.ref{k}.sha256"]["status"] == "pass"
    cv = crit["reference.rep.nk.pct_of_lymphocytes.cv"]
    assert cv["status"] == "pass" and cv["measured"].endswith("over 3")


def test_a_changed_reference_file_fails_naming_it(clone, reference, tmp_path):
    ref, _ = reference
    doc_in = yaml.safe_load(ref.read_text())
    changed = ref.parent / doc_in["files"][1]["fcs"]
    original = changed.read_bytes()
    changed.write_bytes(original + b" ")
    try:
        code, doc, _ = run_qualify(
            clone, tmp_path / "q", "--only", "reference", "--reference", str(ref)
        )
    finally:
        changed.write_bytes(original)
    assert hashlib.sha256(changed.read_bytes()).hexdigest() == doc_in["files"][1]["sha256"]
    crit = criteria(doc)
    assert code == 1
    assert "reference.ref2.sha256" in doc["summary"]["failed_criteria"]
    assert crit["reference.ref2.sha256"]["reason"].startswith(f"{changed.name}: sha256 ")
    # the changed file is not gated: its values and the replicate CV are not run, never passed
    assert crit["reference.ref2.nk.pct_of_lymphocytes"]["status"] == "not_run"
    assert crit["reference.rep.nk.pct_of_lymphocytes.cv"]["status"] == "not_run"
    assert crit["reference.ref1.nk.pct_of_lymphocytes"]["status"] == "pass"


def test_a_range_or_cv_limit_not_met_fails(clone, tmp_path):
    # a range 0.1 % wide around truth, and a CV limit no real replicate meets
    ref, _ = reference_set(tmp_path / "ref", n=2, half_width_pct=0.001, cv_max_pct=1e-6)
    code, doc, _ = run_qualify(
        clone, tmp_path / "q", "--only", "reference", "--reference", str(ref)
    )
    failed = set(doc["summary"]["failed_criteria"])
    assert code == 1
    assert "reference.rep.nk.pct_of_lymphocytes.cv" in failed
    assert {"reference.ref1.nk.pct_of_lymphocytes", "reference.ref2.nk.pct_of_lymphocytes"} & failed
