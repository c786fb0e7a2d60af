"""Audit trail, users and signatures (nkflow/review): tampering, voiding, the two-person rule and
every refusal, on a small hand-built run (endpoints, visits, tube index, provenance)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nkflow import cli
from nkflow.clinical.endpoints import ENDPOINT_COLUMNS
from nkflow.clinical.visits import VISIT_COLUMNS
from nkflow.errors import AuditError, ReviewError
from nkflow.qc import QC_COLUMNS
from nkflow.review import audit, basis, signing, users
from nkflow.tube import COUNT_COLUMNS
from tests.conftest import columns

PW = {"alice": "alice-password", "bob": "bob-password", "carol": "carol-password"}


# ----------------------------------------------------------------------------- fixtures


def _tsv(path: Path, columns, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(columns)] + ["\t".join(r.get(c, "") for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_run(root: Path, *, fcs_sha: str = "a" * 64, overrides=None) -> Path:
    """A finished run of one patient (P01, one nk tube) in ``root``; returns the config path."""
    res = root / "results"
    tube_dir = res / "tubes" / "b1" / "P01-D14" / "nk"
    tube_dir.mkdir(parents=True)
    counts_header = "\t".join(columns(COUNT_COLUMNS, "population", "events"))
    (tube_dir / "counts.tsv").write_text(f"{counts_header}\nnk\t120\n")
    (tube_dir / "qc.tsv").write_text(
        "\t".join(columns(QC_COLUMNS, "check", "status")) + "\nfloors\tPASS\n"
    )
    prov = {
        "fcs_sha256": fcs_sha,
        "panel_sha256": "b" * 64,
        "gating_sha256": "c" * 64,
        "settings_sha256": "d" * 64,
        "overrides": overrides or [],
    }
    (tube_dir / "provenance.json").write_text(json.dumps(prov))
    _tsv(
        res / "cohort" / "tubes.tsv",
        ["sample_id", "tube", "provenance"],
        [{"sample_id": "P01-D14", "tube": "nk", "provenance": str(tube_dir / "provenance.json")}],
    )
    _tsv(
        res / "cohort" / "visits.tsv",
        VISIT_COLUMNS,
        [{"patient_id": "P01", "sample_id": "P01-D14", "donor_nk_per_ul": "123.1"}],
    )
    _tsv(
        res / "cohort" / "endpoints.tsv",
        ENDPOINT_COLUMNS,
        [
            {
                "patient_id": "P01",
                "sample_id": "P01-D14",
                "donor_nk_per_ul": "123.1",
                "verdict": "PASS",
                "review_status": "not_reviewed",
            }
        ],
    )
    cfg = root / "config.yaml"
    cfg.write_text(
        "sheets: {samples: s.tsv, infusions: i.tsv, cbc: c.tsv, chimerism: h.tsv}\n"
        "panels: {nk_v1: p.yaml}\ngating: {nk_v1: g.yaml}\nresults: results\n"
    )
    return cfg


@pytest.fixture
def run(tmp_path, monkeypatch):
    cfg = make_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    for uid, role in (("alice", "reviewer"), ("bob", "approver"), ("carol", "approver")):
        users.add_user(
            tmp_path / "review/users.yaml",
            tmp_path / "review/audit.jsonl",
            user_id=uid,
            name=uid.title() + " Example",
            role=role,
            password=PW[uid],
        )
    return tmp_path, cfg


def sign(root: Path, uid: str, meaning: str, password: str | None = None, rule: bool = True):
    b = basis.run_bases(root / "results", root)["P01"]
    return signing.sign(
        root / "review/audit.jsonl",
        users.load_users(root / "review/users.yaml"),
        user_id=uid,
        password=PW[uid] if password is None else password,
        meaning=meaning,
        basis=b,
        two_person_rule=rule,
    )


def state(root: Path) -> signing.ReviewState:
    b = basis.run_bases(root / "results", root)
    return signing.review_states(audit.read(root / "review/audit.jsonl"), b)["P01"]


# ----------------------------------------------------------------------------- audit chain


def _log(tmp_path: Path, n: int = 4) -> Path:
    log = tmp_path / "audit.jsonl"
    for i in range(n):
        audit.append(log, "run", user="u", data={"i": i}, time_utc=f"2025-01-0{i + 1}T00:00:00Z")
    return log


def _tamper(log: Path, edit) -> list[audit.Finding]:
    """Rewrite the log's lines with ``edit(lines)`` (in place) and verify it."""
    lines = log.read_text().splitlines()
    edit(lines)
    log.write_text("\n".join(lines) + "\n")
    return audit.verify(log)


def test_intact_chain_verifies_and_links_each_entry_to_the_one_before(tmp_path):
    log = _log(tmp_path)
    assert audit.verify(log) == []
    entries = audit.read(log)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert entries[0]["prev_sha256"] == audit.GENESIS
    assert [e["prev_sha256"] for e in entries[1:]] == [e["sha256"] for e in entries[:-1]]
    assert audit.head(log) == (4, entries[-1]["sha256"])


def test_an_edited_entry_is_named(tmp_path):
    def edit(lines):
        lines[1] = lines[1].replace('"i":1', '"i":7')

    findings = _tamper(_log(tmp_path), edit)
    assert [(f.line, f.seq) for f in findings] == [(2, 2)]
    assert "entry seq 2 (run) was edited" in findings[0].message


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(tmp_path):
    def edit(lines):
        doc = json.loads(lines[1])
        doc["data"]["i"] = 7
        doc["sha256"] = audit.entry_sha256(doc)
        lines[1] = audit.canonical(doc)

    findings = _tamper(_log(tmp_path), edit)
    assert [(f.line, f.seq) for f in findings] == [(3, 3)]
    assert "does not chain to the entry before it" in findings[0].message


def test_a_deleted_entry_is_named(tmp_path):
    def edit(lines):
        del lines[1]

    msgs = [f.message for f in _tamper(_log(tmp_path), edit)]
    assert any(
        "entry seq 3 found where seq 2 was expected: entries were deleted" in m for m in msgs
    )
    assert all("line 2:" in m for m in msgs)


def test_reordered_entries_are_named(tmp_path):
    def edit(lines):
        lines[1], lines[2] = lines[2], lines[1]

    order = [f for f in _tamper(_log(tmp_path), edit) if "was expected" in f.message]
    assert [(f.line, f.seq) for f in order] == [(2, 3), (3, 2)]
    assert "entry seq 3 found where seq 2 was expected" in order[0].message
    assert "seq 2 found where seq 4 was expected: entries were reordered" in order[1].message


def test_a_broken_log_is_never_appended_to(tmp_path):
    log = _log(tmp_path)
    log.write_text(log.read_text().replace('"i":0', '"i":9'))
    before = log.read_bytes()
    with pytest.raises(AuditError, match="entry seq 1 .* was edited"):
        audit.append(log, "run", user="u")
    assert log.read_bytes() == before


def test_cli_verify_exits_nonzero_naming_the_entry(run, capsys):
    root, cfg = run
    assert cli.main(["audit", "verify", "--config", str(cfg)]) == 0
    log = root / "review/audit.jsonl"
    lines = log.read_text().splitlines()
    lines[1] = lines[1].replace("Bob Example", "Rob Example")
    log.write_text("\n".join(lines) + "\n")
    assert cli.main(["audit", "verify", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "line 2: entry seq 2 (user) was edited" in err
    assert "FAILED: 1 finding(s)" in err


def test_cli_show_prints_the_trail_per_patient(run, capsys):
    root, cfg = run
    sign(root, "alice", "reviewed")
    assert cli.main(["audit", "show", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "chain intact, head seq 4" in out
    assert "== cohort-wide ==" in out and "user alice added: Alice Example (reviewer)" in out
    patient = out.split("== patient P01 ==")[1]
    assert "signature by Alice Example (alice): signed 'reviewed'" in patient
    assert "verdict PASS, donor NK/uL 123.1" in patient


# ----------------------------------------------------------------------------- users


def test_password_is_salted_scrypt_and_never_stored(run):
    root, _ = run
    text = (root / "review/users.yaml").read_text()
    assert PW["alice"] not in text and "scheme: scrypt" in text
    u = users.load_users(root / "review/users.yaml")
    assert u["alice"].password["salt"] != u["bob"].password["salt"]
    assert users.password_matches(u["alice"].password, PW["alice"])
    assert not users.password_matches(u["alice"].password, PW["bob"])
    assert (root / "review/users.yaml").stat().st_mode & 0o077 == 0
    log = (root / "review/audit.jsonl").read_text()
    assert "hash" not in log.replace("sha256", "") and PW["alice"] not in log


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user_id": "Bad Id"}, "user id 'Bad Id': expected lower-case letters"),
        ({"role": "admin"}, "role 'admin' is not one of reviewer, approver"),
        ({"password": "short"}, "the password has 5 characters; at least 8"),
        ({"name": " "}, "the printed name is empty"),
    ],
)
def test_bad_user_is_refused_and_nothing_is_written(tmp_path, kwargs, message):
    args = {"user_id": "dave", "name": "Dave", "role": "reviewer", "password": "long-enough"}
    with pytest.raises(ReviewError, match=message):
        users.add_user(tmp_path / "u.yaml", tmp_path / "a.jsonl", **{**args, **kwargs})
    assert not (tmp_path / "u.yaml").exists() and not (tmp_path / "a.jsonl").exists()


# ----------------------------------------------------------------------------- signatures


def test_signature_records_name_time_meaning_and_what_was_signed(run):
    root, _ = run
    entry = sign(root, "alice", "reviewed")
    d = entry["data"]
    assert (entry["user"], d["name"], d["meaning"]) == ("alice", "Alice Example", "reviewed")
    assert entry["time_utc"].endswith("Z") and "UTC" in d["time_local"]
    assert d["endpoint"]["verdict"] == "PASS" and d["endpoint"]["donor_nk_per_ul"] == "123.1"
    tube = root / "results/tubes/b1/P01-D14/nk"
    from nkflow.provenance import sha256_file

    assert d["basis"]["fcs:P01-D14/nk"] == "a" * 64
    assert d["basis"]["counts:P01-D14/nk"] == sha256_file(tube / "counts.tsv")
    assert set(d["basis"]) >= {"endpoint", "visit:P01-D14", "gating:P01-D14/nk", "qc:P01-D14/nk"}
    assert state(root).status == "reviewed"


@pytest.mark.parametrize(
    ("uid", "password", "meaning", "message"),
    [
        ("alice", "not-her-password", "reviewed", "wrong password for user 'alice'"),
        ("zed", "whatever-long", "reviewed", "unknown user 'zed'"),
        ("alice", None, "approved", "role 'reviewer', which may sign reviewed, not 'approved'"),
    ],
)
def test_refused_signature_changes_nothing(run, uid, password, meaning, message):
    root, _ = run
    log = root / "review/audit.jsonl"
    before = log.read_bytes()
    b = basis.run_bases(root / "results", root)["P01"]
    with pytest.raises(ReviewError, match=message):
        signing.sign(
            log,
            users.load_users(root / "review/users.yaml"),
            user_id=uid,
            password=PW.get(uid, "") if password is None else password,
            meaning=meaning,
            basis=b,
            two_person_rule=True,
        )
    assert log.read_bytes() == before


def test_two_person_rule_refuses_the_reviewer_as_approver(run):
    root, _ = run
    with pytest.raises(ReviewError, match="two-person rule.*there is no current review"):
        sign(root, "bob", "approved")
    sign(root, "bob", "reviewed")
    with pytest.raises(ReviewError, match="the only current review is bob's own"):
        sign(root, "bob", "approved")
    sign(root, "alice", "reviewed")
    sign(root, "bob", "approved")
    st = state(root)
    assert st.status == "approved"
    assert "approved by Bob Example (bob)" in st.note and "reviewed by Alice Example" in st.note


def test_two_person_rule_off_lets_one_approver_sign_alone(run):
    root, _ = run
    sign(root, "bob", "approved", rule=False)
    assert state(root).status == "approved"


def test_override_author_cannot_approve_alone(tmp_path, monkeypatch):
    ov = [{"gate": "nk", "sha256": "e" * 64, "author": "bob"}]
    make_run(tmp_path, overrides=ov)
    monkeypatch.chdir(tmp_path)
    for uid, role in (("alice", "reviewer"), ("bob", "approver")):
        users.add_user(
            tmp_path / "review/users.yaml",
            tmp_path / "review/audit.jsonl",
            user_id=uid,
            name=uid.title(),
            role=role,
            password=PW[uid],
        )
    with pytest.raises(ReviewError, match="bob wrote override:P01-D14/nk:nk and cannot approve"):
        sign(tmp_path, "bob", "approved")
    sign(tmp_path, "alice", "reviewed")
    sign(tmp_path, "bob", "approved")
    assert state(tmp_path).status == "approved"


def test_changing_an_input_after_approval_voids_it_and_names_what_changed(run):
    root, _ = run
    sign(root, "alice", "reviewed")
    sign(root, "bob", "approved")
    assert state(root).status == "approved"
    prov = root / "results/tubes/b1/P01-D14/nk/provenance.json"
    doc = json.loads(prov.read_text())
    doc["fcs_sha256"] = "f" * 64
    prov.write_text(json.dumps(doc))
    st = state(root)
    assert st.status == "void"
    assert (
        "FCS file of tube P01-D14/nk changed (sha256 aaaaaaaaaaaa... -> ffffffffffff...)" in st.note
    )
    assert all(s.void for s in st.signatures)
    # the trail says so too, once
    log = root / "review/audit.jsonl"
    bases = basis.run_bases(root / "results", root)
    assert signing.sync_voids(log, bases) == 2
    assert signing.sync_voids(log, bases) == 0
    voids = [e for e in audit.read(log) if e["event"] == "void"]
    assert [e["data"]["signature_seq"] for e in voids] == [4, 5]
    # restoring the input does not revive a voided signature
    doc["fcs_sha256"] = "a" * 64
    prov.write_text(json.dumps(doc))
    assert state(root).status == "void"


def test_a_changed_endpoint_row_is_named_by_column(run):
    root, _ = run
    sign(root, "alice", "reviewed")
    ep = root / "results/cohort/endpoints.tsv"
    ep.write_text(ep.read_text().replace("\t123.1\tPASS", "\t99.5\tFAIL"))
    st = state(root)
    assert st.status == "void"
    assert "the endpoint row changed (donor_nk_per_ul '123.1'->'99.5', verdict 'PASS'->'FAIL')" in (
        st.note
    )


def test_review_columns_are_not_part_of_what_is_signed(run):
    root, _ = run
    sign(root, "alice", "reviewed")
    ep = root / "results/cohort/endpoints.tsv"
    ep.write_text(ep.read_text().replace("not_reviewed", "reviewed"))
    assert state(root).status == "reviewed"


def test_review_paths_inside_results_are_refused(tmp_path):
    from nkflow.config import validate_config
    from nkflow.errors import ConfigError
    from nkflow.review import review_settings

    cfg = validate_config(
        {
            "sheets": {"samples": "s", "infusions": "i", "cbc": "c", "chimerism": "h"},
            "panels": {"p": "p.yaml"},
            "gating": {"g": "g.yaml"},
            "review": {"audit_log": "results/audit.jsonl"},
        },
        source="test",
    )
    with pytest.raises(ConfigError, match="review.audit_log: 'results/audit.jsonl' lies inside"):
        review_settings(cfg, tmp_path)


def test_config_yaml_writes_the_schema_defaults_of_the_review_block():
    import yaml

    from nkflow.schemas import load_schema

    root = Path(__file__).resolve().parents[2]
    written = yaml.safe_load((root / "config/config.yaml").read_text())["review"]
    props = load_schema("config")["properties"]["review"]["properties"]
    assert written == {k: v["default"] for k, v in props.items()}
