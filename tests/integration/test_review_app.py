"""The review app's server side on a real finished run (P01, P02 of the sample cohort), in
process (Starlette's TestClient): token, Host and CSRF refusals, id validation, live numbers,
saving with a reason, concurrent saves, sessions, signatures, and that the run's results are
never written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from nkflow.config import load_config
from nkflow.review import audit, users
from nkflow.review.app import CSRF_HEADER, create_app
from nkflow.review.live import ReviewRun
from tests.conftest import run_snakemake
from tests.integration.test_resume import copy_subset

pytestmark = pytest.mark.workflow

PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"
TOKEN = "test-token-0123456789"
TUBE = {"sample_id": "P01-D14", "tube": "nk"}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = copy_subset(tmp_path_factory.mktemp("review_app") / "work")
    run_snakemake(w)
    for uid, role in (("alice", "reviewer"), ("bob", "approver")):
        users.add_user(w / "review/users.yaml", w / "review/audit.jsonl", user_id=uid,
                       name=uid.title() + " Example", role=role, password=uid + "-password")  # fmt: skip
    return w


@pytest.fixture(scope="module")
def app(work: Path):
    import os

    from starlette.testclient import TestClient

    cwd = os.getcwd()
    os.chdir(work)
    try:
        before = tree_digest(work / "results")
        run = ReviewRun(load_config(Path("config/config.yaml")), work)
        clock = Clock()
        application = create_app(run, token=TOKEN, port=PORT, clock=clock)
        client = TestClient(application, base_url=BASE)
        yield client, application, clock, work
        assert tree_digest(work / "results") == before, "the app wrote into the run's results"
    finally:
        os.chdir(cwd)


def authed(client) -> None:
    r = client.get(f"/?token={TOKEN}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "nkflow_review_token" in r.cookies or client.cookies.get("nkflow_review_token")


def post(client, application, url, body, **kw):
    headers = {CSRF_HEADER: application.state.csrf, "content-type": "application/json"}
    headers.update(kw.pop("headers", {}))
    import json

    return client.post(url, content=json.dumps(body), headers=headers, **kw)


def login(client, application, uid: str) -> None:
    r = post(client, application, "/api/login", {"user": uid, "password": uid + "-password"})
    assert r.status_code == 200, r.text


def test_a_request_without_the_token_is_refused(app):
    client, application, _, _ = app
    from starlette.testclient import TestClient

    bare = TestClient(application, base_url=BASE)
    r = bare.get("/")
    assert r.status_code == 403 and "does not carry this app's token" in r.json()["error"]
    r = bare.get("/?token=wrong")
    assert r.status_code == 403
    r = post(bare, application, "/api/preview", {**TUBE, "bounds": []})
    assert r.status_code == 403
    authed(client)
    page = client.get("/")
    assert page.status_code == 200 and "Review queue" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "https://" not in page.text and "cdn" not in page.text.lower()


def test_a_foreign_host_and_cross_site_posts_are_refused(app):
    client, application, _, _ = app
    authed(client)
    assert client.get("/", headers={"host": "evil.example:8765"}).status_code == 403
    r = client.post("/api/preview", json={**TUBE, "bounds": []})  # no CSRF header
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    r = post(client, application, "/api/preview", {**TUBE, "bounds": []},
             headers={"origin": "http://evil.example"})  # fmt: skip
    assert r.status_code == 403 and "cross-site" in r.json()["error"]
    r = client.post("/api/preview", content="x", headers={CSRF_HEADER: application.state.csrf,
                                                          "content-type": "text/plain"})  # fmt: skip
    assert r.status_code == 415


def test_ids_are_validated_no_path_traversal(app):
    client, application, _, _ = app
    authed(client)
    assert client.get("/tube/..%2F..%2Fetc/nk").status_code == 404
    assert client.get("/tube/..%2Fx/nk").status_code == 404
    for sample in ("../../etc", "..", "P01-D14/../x"):
        r = post(client, application, "/api/preview", {"sample_id": sample, "tube": "nk"})
        assert r.status_code == 400 and "is not a valid identifier" in r.json()["error"]
    r = post(client, application, "/api/preview", {"sample_id": "P99-D14", "tube": "nk"})
    assert r.status_code == 400 and "not in this run's tube index" in r.json()["error"]
    r = client.get("/thumb/P01-D14/nk/..%2Fsecret.png")
    assert r.status_code == 404
    r = post(client, application, "/api/sign", {"patient_id": "../P01", "password": "x"})
    assert r.status_code in (400, 401)


def test_preview_gives_the_run_numbers_then_follows_the_boundary(app):
    client, application, _, work = app
    authed(client)
    import csv

    ep = next(r for r in csv.DictReader((work / "results/cohort/endpoints.tsv").open(),
                                        delimiter="\t") if r["patient_id"] == "P01")  # fmt: skip
    r = post(client, application, "/api/preview", {**TUBE, "bounds": []})
    assert r.status_code == 200
    doc = r.json()
    assert doc["endpoint"]["donor_nk_per_ul"] == ep["donor_nk_per_ul"]
    assert doc["endpoint"]["verdict"] == ep["verdict"]
    cd56 = next(b for b in doc["bounds"] if (b["gate"], b["marker"]) == ("nk", "CD56"))
    moved = post(client, application, "/api/preview",
                 {**TUBE, "bounds": [{"gate": "nk", "marker": "CD56", "side": "min",
                                      "value": cd56["value"] + 0.05}]}).json()  # fmt: skip
    nk = lambda d: int(next(p["events"] for p in d["populations"] if p["population"] == "nk"))  # noqa: E731
    assert nk(moved) < nk(doc)
    assert float(moved["endpoint"]["donor_nk_per_ul"]) < float(doc["endpoint"]["donor_nk_per_ul"])
    bad = post(client, application, "/api/preview",
               {**TUBE, "bounds": [{"gate": "nk", "marker": "CD56", "side": "min", "value": "abc"}]})  # fmt: skip
    assert bad.status_code == 400 and "is not a number" in bad.json()["error"]


def _save(client, application, value, reason="CD56 cut in the dim tail", expected=None):
    return post(client, application, "/api/save", {
        **TUBE,
        "bounds": [{"gate": "nk", "marker": "CD56", "side": "min", "value": value}],
        "old": [{"gate": "nk", "marker": "CD56", "side": "min", "value": 0.4}],
        "reason": reason,
        "expected": expected or {},
    })  # fmt: skip


def test_saving_needs_a_login_and_a_reason_and_refuses_a_concurrent_save(app):
    client, application, clock, work = app
    authed(client)
    ovdir = work / "review/overrides"
    r = _save(client, application, 0.45)
    assert r.status_code == 401 and "not logged in" in r.json()["error"]
    r = post(client, application, "/api/login", {"user": "alice", "password": "wrong"})
    assert r.status_code == 400 and "wrong password for user 'alice'" in r.json()["error"]
    r = post(client, application, "/api/login", {"user": "zed", "password": "whatever"})
    assert r.status_code == 400 and "unknown user 'zed'" in r.json()["error"]
    login(client, application, "alice")
    r = _save(client, application, 0.45, reason="   ")
    assert r.status_code == 400 and "a reason is mandatory" in r.json()["error"]
    assert not list(ovdir.rglob("*.yaml"))
    n_log = len(audit.read(work / "review/audit.jsonl"))
    r = _save(client, application, 0.45)
    assert r.status_code == 200, r.text
    (saved,) = r.json()["saved"]
    path = ovdir / "P01-D14/nk/nk.yaml"
    assert path.is_file() and saved["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    entries = audit.read(work / "review/audit.jsonl")
    assert len(entries) == n_log + 1 and entries[-1]["event"] == "override"
    assert entries[-1]["data"]["reason"] == "CD56 cut in the dim tail"
    # a second tab opened the tube before that save: told, shown both, nothing overwritten
    before = path.read_bytes()
    r = _save(client, application, 0.48, reason="other tab")
    assert r.status_code == 409
    doc = r.json()
    assert "changed since you opened it" in doc["error"]
    assert doc["conflicts"][0]["theirs"]["bounds"][0]["new"] == 0.45
    assert doc["yours"] == [{"gate": "nk", "marker": "CD56", "side": "min", "value": 0.48}]
    assert path.read_bytes() == before
    r = _save(client, application, 0.46, reason="on top", expected={"nk": saved["sha256"]})
    assert r.status_code == 200
    # an idle session expires: a clear message, nothing saved
    clock.t += 31 * 60
    r = _save(client, application, 0.47, expected={"nk": r.json()["file_sha"]["nk"]})
    assert r.status_code == 401 and "session expired after 30 minutes" in r.json()["error"]
    assert "0.46" in path.read_text()


def test_a_gate_reset_to_its_fit_and_saved_removes_its_override(app):
    client, application, _, work = app
    authed(client)
    login(client, application, "alice")
    path = work / "review/overrides/P01-D14/nk/nk.yaml"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    r = post(client, application, "/api/save", {**TUBE, "bounds": [], "reason": "fit is right",
                                                 "expected": {"nk": sha}})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["saved"][0]["action"] == "removed" and not path.exists()
    last = audit.read(work / "review/audit.jsonl")[-1]
    assert (last["event"], last["data"]["removed_sha256"]) == ("override", sha)
    r = _save(client, application, 0.46, reason="back to the corrected cut")
    assert r.status_code == 200 and path.exists()


def test_a_polygon_vertex_moves_the_count_and_is_saved_as_vertices(app):
    client, application, _, work = app
    authed(client)
    login(client, application, "alice")
    nk_path = work / "review/overrides/P01-D14/nk/nk.yaml"
    nk_bound = {"gate": "nk", "marker": "CD56", "side": "min", "value": 0.46}
    base = post(client, application, "/api/preview", {**TUBE, "bounds": [nk_bound]}).json()
    (poly,) = base["polygons"]
    assert poly["gate"] == "singlets" and len(poly["vertices"]) == 3
    moved = [list(v) for v in poly["vertices"]]
    moved[1][1] += 0.05  # raise the lower edge of the singlet band
    cand = [nk_bound, {"gate": "singlets", "vertices": moved}]
    after = post(client, application, "/api/preview", {**TUBE, "bounds": cand}).json()
    count = lambda d, p: int(next(r["events"] for r in d["populations"] if r["population"] == p))  # noqa: E731
    assert count(after, "singlets") < count(base, "singlets")
    bad = post(client, application, "/api/preview",
               {**TUBE, "bounds": [{"gate": "singlets", "vertices": [[0, 0], [1, 1]]}]})  # fmt: skip
    assert bad.status_code == 400 and "at least 3 [x, y] pairs" in bad.json()["error"]
    r = post(client, application, "/api/save", {
        **TUBE, "bounds": cand, "reason": "doublets inside the band",
        "old": [{"gate": "singlets", "vertices": poly["vertices"]}],
        "expected": {"nk": hashlib.sha256(nk_path.read_bytes()).hexdigest()},
    })  # fmt: skip
    assert r.status_code == 200, r.text
    assert [s["gate"] for s in r.json()["saved"]] == ["singlets"]  # nk is as saved
    import yaml

    doc = yaml.safe_load((work / "review/overrides/P01-D14/nk/singlets.yaml").read_text())
    assert doc["vertices"]["new"] == moved and doc["vertices"]["old"] == poly["vertices"]
    assert "bounds" not in doc


def test_signing_needs_the_password_and_follows_the_two_person_rule(app):
    client, application, clock, work = app
    authed(client)

    def sign(meaning, password):
        return post(client, application, "/api/sign",
                    {"patient_id": "P01", "meaning": meaning, "password": password})  # fmt: skip

    login(client, application, "bob")
    r = sign("approved", "not-bobs")
    assert r.status_code == 400 and "wrong password for user 'bob'" in r.json()["error"]
    r = sign("approved", "bob-password")
    assert r.status_code == 400 and "two-person rule" in r.json()["error"]
    login(client, application, "alice")
    r = sign("reviewed", "alice-password")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["name"], doc["meaning"]) == ("Alice Example", "reviewed")
    assert doc["pending"] == ["P01-D14/nk"]  # the saved override is not applied by the run yet
    login(client, application, "bob")
    r = sign("approved", "bob-password")
    assert r.status_code == 200 and r.json()["review_status"] == "approved"
    assert audit.verify(work / "review/audit.jsonl") == []


def test_a_run_changed_on_disk_since_the_app_started_is_not_signed(app):
    """The app reads the run once: a rerun while it is open must not be signed unseen."""
    client, application, clock, work = app
    authed(client)
    endpoints = work / "results/cohort/endpoints.tsv"
    original = endpoints.read_bytes()
    entries_before = len(audit.read(work / "review/audit.jsonl"))
    login(client, application, "alice")
    try:
        endpoints.write_bytes(original.replace(b"PASS", b"FAIL", 1))  # a rerun with new numbers
        r = post(client, application, "/api/sign",
                 {"patient_id": "P02", "meaning": "reviewed", "password": "alice-password"})  # fmt: skip
        assert r.status_code == 400
        err = r.json()["error"]
        assert "cohort/endpoints.tsv: the run changed since 'nkflow review' read it" in err
        assert "restart 'nkflow review'" in err
        assert len(audit.read(work / "review/audit.jsonl")) == entries_before  # nothing signed
    finally:
        endpoints.write_bytes(original)
    r = post(client, application, "/api/sign",
             {"patient_id": "P02", "meaning": "reviewed", "password": "alice-password"})  # fmt: skip
    assert r.status_code == 200, r.text
