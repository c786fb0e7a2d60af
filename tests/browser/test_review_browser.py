"""The review app in a real headless Chromium, then the workflow rerun (issue 14 acceptance).

On a finished run of P01 and P02 (4 tubes per batch), ``nkflow review`` is started as a user
starts it (a subprocess printing its URL). Selenium drives the queue (risk order, filters), opens
P01's day-14 NK tube, logs in, drags the CD56 boundary (numbers update), types a boundary in the
numeric field (numbers update again), is refused a save without a reason, saves with one, signs
``reviewed``; a second user is refused with a wrong password and then signs ``approved``. The
app is stopped and snakemake reruns: only the batch holding that tube re-gates, endpoints.tsv and
the report show the value the app showed, with the override and both signatures holding, and
the audit log verifies. Chromium missing is a failure with the reason (never a skip).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nkflow.review import audit, users
from tests.browser import test_report_browser
from tests.conftest import run_snakemake, workflow_env
from tests.integration.test_review_overrides import batch_of, finished_subset, rows

pytestmark = [pytest.mark.browser, pytest.mark.workflow, pytest.mark.xdist_group("browser")]

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "results" / "screenshots"
TUBE = ("P01-D14", "nk")
PASSWORDS = {"alice": "alice-password", "bob": "bob-password"}


#: headless Debian Chromium, as the report browser test drives it (fails, never skips, when
#: Chromium is missing: scripts/install_browser.sh)
driver = test_report_browser.driver


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = finished_subset(tmp_path_factory.mktemp("review_browser") / "work")
    for uid, role in (("alice", "reviewer"), ("bob", "approver")):
        users.add_user(w / "review/users.yaml", w / "review/audit.jsonl", user_id=uid,
                       name=uid.title() + " Example", role=role, password=PASSWORDS[uid])  # fmt: skip
    return w


@pytest.fixture(scope="module")
def server(work: Path) -> Iterator[str]:
    """``nkflow review`` running on the run; yields the URL it printed (token included)."""
    proc = subprocess.Popen(
        [str(BIN / "nkflow"), "review", "--config", "config/config.yaml"],
        cwd=work,
        env=workflow_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        m = re.search(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", line)
        if m is None:
            proc.kill()
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"nkflow review printed {line!r}, no URL; stderr:\n{err[-3000:]}")
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait(driver: Any, cond: Any, what: str, timeout: float = 30.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: cond(d))
    except Exception:  # noqa: BLE001 -- any wait failure: keep a screenshot, then fail
        shot = SCREENSHOTS / f"review_timeout_{int(time.time())}.png"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shot))
        pytest.fail(
            f"timed out waiting for {what}; message: {_message(driver)!r}; screenshot {shot}"
        )


def _message(driver: Any) -> str:
    return driver.find_element("id", "message").text


def _severe(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _updated(driver: Any) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.updated || 0)"))


def _login(driver: Any, uid: str) -> None:
    driver.find_element("id", "login-user").send_keys(uid)
    driver.find_element("id", "login-password").send_keys(PASSWORDS[uid])
    driver.find_element("id", "login-go").click()
    _wait(driver, lambda d: d.find_elements("id", "who"), f"{uid} logged in")
    assert uid in driver.find_element("id", "who").text


def _text(driver: Any, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def _value(driver: Any, row_id: str) -> str:
    """The number in the value cell of one row of the numbers table."""
    return driver.find_element("css selector", f"#{row_id} td:nth-child(2)").text.split()[0]


def test_review_in_chromium_then_the_rerun_shows_override_and_signatures(work, server, driver):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    ep0 = next(r for r in rows(work / "results/cohort/endpoints.tsv") if r["patient_id"] == "P01")
    # ---- the queue: every tube, highest risk first, filters
    driver.get(server)
    assert "token=" not in driver.current_url  # the token moved into a cookie
    queue = driver.find_elements("css selector", "tr.qrow")
    assert len(queue) == len(rows(work / "results/cohort/tubes.tsv"))
    ranks = [int(r.find_element("css selector", "td").text) for r in queue]
    assert ranks == sorted(ranks)
    # thumbnails load lazily: those in view have loaded
    _wait(
        driver,
        lambda d: d.execute_script(
            "var v = Array.from(document.images).filter(function (i) {"
            " return i.getBoundingClientRect().top < window.innerHeight; });"
            "return v.length > 0 && v.every(function (i) { return i.complete && i.naturalWidth > 0; });"
        ),
        "the thumbnails in view",
    )
    Select(driver.find_element("css selector", "select[data-key=patient_id]")).select_by_value(
        "P01"
    )
    Select(driver.find_element("css selector", "select[data-key=tube]")).select_by_value("nk")
    shown = [r for r in driver.find_elements("css selector", "tr.qrow") if r.is_displayed()]
    assert shown and all(
        r.get_attribute("data-patient") == "P01" and r.get_attribute("data-tube") == "nk"
        for r in shown
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / "review_queue.png"))
    link = next(
        a for a in driver.find_elements("css selector", "a.open-tube")
        if a.get_attribute("href").endswith(f"/tube/{TUBE[0]}/{TUBE[1]}")
    )  # fmt: skip
    link.click()
    _wait(driver, lambda d: d.find_elements("id", "bounds"), "the tube view")
    assert _value(driver, "num-donor") == ep0["donor_nk_per_ul"]

    # ---- log in, drag the CD56 boundary, then type one
    _login(driver, "alice")
    field = "bound-nk-CD56-min"
    _wait(driver, lambda d: d.find_elements("css selector", ".handle[data-key='nk|CD56|min']"),
          "the CD56 drag handle")  # fmt: skip
    v0 = float(driver.find_element("id", field).get_attribute("value"))
    before, n = _text(driver, "num-donor"), _updated(driver)
    handle = driver.find_element("css selector", ".handle[data-key='nk|CD56|min']")
    ActionChains(driver).click_and_hold(handle).move_by_offset(0, -12).release().perform()
    _wait(driver, lambda d: _updated(d) > n, "numbers after the drag")
    dragged = float(driver.find_element("id", field).get_attribute("value"))
    assert dragged > v0 and _text(driver, "num-donor") != before
    target = round(v0 + 0.05, 3)
    n = _updated(driver)
    box = driver.find_element("id", field)
    box.clear()
    box.send_keys(f"{target}", Keys.TAB)
    _wait(driver, lambda d: _updated(d) > n, "numbers after typing the boundary")
    shown_value = _value(driver, "num-donor")
    assert float(shown_value) < float(ep0["donor_nk_per_ul"])
    assert "recomputed in" in _text(driver, "latency")

    # ---- save: refused without a reason, then saved
    driver.find_element("id", "save").click()
    _wait(driver, lambda d: "a reason is mandatory" in _message(d), "the missing-reason refusal")
    assert not (work / "review/overrides" / TUBE[0] / TUBE[1] / "nk.yaml").exists()
    driver.find_element("id", "reason").send_keys("CD56 cut in the dim tail of T cells")
    driver.find_element("id", "save").click()
    _wait(driver, lambda d: _message(d).startswith("saved:"), "the save")
    driver.save_screenshot(str(SCREENSHOTS / "review_tube.png"))

    # ---- sign: reviewed by alice; bob refused with a wrong password, then approves
    Select(driver.find_element("id", "meaning")).select_by_value("reviewed")
    driver.find_element("id", "sign-password").send_keys(PASSWORDS["alice"])
    driver.find_element("id", "sign").click()
    _wait(
        driver, lambda d: "signed 'reviewed' by Alice Example" in _message(d), "alice's signature"
    )
    driver.find_element("id", "logout").click()
    _wait(driver, lambda d: d.find_elements("id", "login-user"), "logged out")
    _login(driver, "bob")
    Select(driver.find_element("id", "meaning")).select_by_value("approved")
    driver.find_element("id", "sign-password").send_keys("not-bobs-password")
    driver.find_element("id", "sign").click()
    _wait(driver, lambda d: "wrong password for user 'bob'" in _message(d), "the wrong password")
    Select(driver.find_element("id", "meaning")).select_by_value("approved")
    driver.find_element("id", "sign-password").send_keys(PASSWORDS["bob"])
    driver.find_element("id", "sign").click()
    _wait(driver, lambda d: "signed 'approved' by Bob Example" in _message(d), "bob's approval")
    # no script error; the console shows only the two refusals provoked above (HTTP 400)
    severe = _severe(driver)
    refused = [m for m in severe if "status of 400" in m]
    assert [m for m in severe if m not in refused] == []
    assert [m.split()[0].rsplit("/", 1)[1] for m in refused] == ["save", "sign"]

    # ---- rerun: only the batch holding the tube re-gates
    batch = batch_of(work, *TUBE)
    others = {
        p: p.read_bytes()
        for p in (work / "results/tubes").glob("*/*/*/provenance.json")
        if p.parts[-4] != batch
    }
    dry = run_snakemake(work, "-n")
    assert re.findall(r"output: (results/tubes/\S+)", dry.stdout) == [f"results/tubes/{batch}"]
    run_snakemake(work)
    assert all(p.read_bytes() == b for p, b in others.items())
    ep = next(r for r in rows(work / "results/cohort/endpoints.tsv") if r["patient_id"] == "P01")
    assert ep["donor_nk_per_ul"] == shown_value  # what the app showed is what the run wrote
    assert ep["review_status"] == "approved", ep["review_note"]
    assert "reviewed by Alice Example (alice)" in ep["review_note"]
    assert "approved by Bob Example (bob)" in ep["review_note"]

    # ---- the report: the override beside its gate figure, the signatures
    driver.get((work / "results/reports/P01.html").as_uri())
    text = driver.find_element("tag name", "body").text
    assert "Gate overrides applied to P01-D14/nk" in text
    assert "CD56 cut in the dim tail of T cells" in text and "alice" in text
    assert "Bob Example" in text and "approved" in text
    driver.save_screenshot(str(SCREENSHOTS / "review_report.png"))

    # ---- the trail verifies and tells the story
    proc = subprocess.run(
        [str(BIN / "nkflow"), "audit", "verify", "--config", "config/config.yaml"],
        cwd=work, env=workflow_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    events = [e["event"] for e in audit.read(work / "review/audit.jsonl")]
    assert events.count("override") == 1 and events.count("signature") == 2
    assert "run" in events and os.path.exists(work / "review/users.yaml")
