"""The qualification report in headless Chromium: it opens with the summary (status word,
counts, failed and not-run criteria) inside the first screen, every section link resolves, a
failed criterion is shown as FAIL, and the console is clean. Screenshots go to
``results/screenshots/qualification*.png`` for a person to look at."""

from __future__ import annotations

from pathlib import Path

import pytest

from nkflow import qualify
from nkflow.qualify._model import CheckResult, judged
from tests.browser.test_report_browser import LAPTOP, _open, _screenshot, _severe, driver

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]
__all__ = ["driver"]  # the Chromium fixture, shared with the report browser test


def _failing(ctx) -> CheckResult:
    return CheckResult(
        "reference", "Lab reference set (PQ)", "A criterion made to fail for this test.",
        (judged("reference.demo", "a value within its range", "[1, 2]", "3", False, "3 > 2"),),
    )  # fmt: skip


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("qualify_browser")
    with pytest.MonkeyPatch.context() as mp:
        checks = tuple(c if c[0] != "reference" else (c[0], c[1], _failing) for c in qualify.CHECKS)
        mp.setattr(qualify, "CHECKS", checks)
        doc = qualify.run_qualification(out, only=["gatingml", "flowjo", "precision", "reference"])
    _, page = qualify.write_qualification(doc, out)
    return page, doc


def test_the_report_opens_with_its_summary(driver, pack):
    page, doc = pack
    _open(driver, page)
    s = doc["summary"]
    assert driver.title == f"nkflow qualification: {s['status']}" == "nkflow qualification: FAIL"
    assert driver.find_element("css selector", "#summary .verdict-word").text == "FAIL"
    summary = driver.find_element("id", "summary")
    assert summary.location["y"] < LAPTOP[1] / 2  # on the first screen, near its top
    text = summary.text
    assert f"{s['criteria']} criteria: {s['passed']} passed, {s['failed']} failed" in text
    assert "reference.demo: 3 > 2" in text
    assert "truth_cohort.selected" in text  # not run, and listed as such
    tops = [
        driver.find_element("id", i).location["y"]
        for i in ("summary", "environment", "limits", "check-gatingml", "check-reference", "provenance", "signoff")
    ]  # fmt: skip
    assert tops == sorted(tops)
    assert _severe(driver) == []
    shot = _screenshot(driver, "qualification")
    assert shot.stat().st_size > 20_000


def test_every_section_link_resolves_and_badges_show_status(driver, pack):
    page, doc = pack
    _open(driver, page)
    hrefs = driver.execute_script(
        "return Array.from(document.querySelectorAll('nav a')).map(a => a.getAttribute('href'));"
    )
    assert len(hrefs) == 3 + len(doc["checks"]) + 2
    for href in hrefs:
        assert driver.execute_script(
            "return document.getElementById(arguments[0]) !== null", href[1:]
        ), href
    badge = driver.find_element("css selector", "#check-reference .badge.FAIL")
    assert badge.text == "FAIL"
    assert driver.find_elements("css selector", "#check-truth_cohort .badge.NOT_ASSESSED")
