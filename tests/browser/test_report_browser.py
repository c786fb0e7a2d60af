"""The HTML report in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``).

Checks, on the cohort index and one patient page: every ``<img>`` has loaded
(``naturalWidth > 0``), the browser console has no SEVERE entries, the verdict text is present,
every link from the index resolves (file exists and the page loads cleanly), clicking a
header sorts the table, each cohort figure (spaghetti, swimmer, Treg) has loaded, and the
index patient table and the visit table fit a 1,366-pixel window without horizontal scrolling.
Screenshots (1366 x 768 viewport and full page) go to ``results/screenshots/`` for a person to
look at.

Pages come from ``$NKFLOW_RESULTS/reports`` when ``NKFLOW_RESULTS`` points at a workflow run;
otherwise they are generated from the hand-built fixture of ``tests/unit/test_report.py``.
When Chromium or chromedriver is missing the tests FAIL with the reason (they are never skipped):
run ``scripts/install_browser.sh``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nkflow.config import Study
from nkflow.stages import run_report
from tests.unit.test_report import PATIENTS, build_fixture, report_paths

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "results" / "screenshots"
VERDICT_WORDS = ("PASS", "FAIL", "NOT_EVALUABLE")
LAPTOP = (1366, 768)

ALL_IMAGES_LOADED = """
return Array.from(document.images).map(function (im) {
  return [im.alt, im.complete, im.naturalWidth];
});
"""


@pytest.fixture(scope="module", params=["fixture", "workflow"])
def report_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory holding index.html and the patient pages under test.

    Two sets of pages: the hand-built fixture (exact numbers pinned below) and the pages of a
    real workflow run on data/sample (the session's ``sample_run``), or of ``$NKFLOW_RESULTS``.
    """
    if request.param == "workflow":
        env = os.environ.get("NKFLOW_RESULTS")
        return (
            Path(env) / "reports"
            if env
            else request.getfixturevalue("sample_run") / "results/reports"
        )
    env = os.environ.get("NKFLOW_RESULTS")
    if env:
        reports = Path(env) / "reports"
        if not (reports / "index.html").is_file():
            pytest.fail(
                f"NKFLOW_RESULTS={env}: {reports / 'index.html'} not found; run the workflow "
                "(make run) first or unset NKFLOW_RESULTS to test the built-in fixture"
            )
        return reports
    root = tmp_path_factory.mktemp("browser_report_fixture")
    config, results = build_fixture(root)
    out = root / "reports"
    run_report(Study(config, root), report_paths(results), out, "2031-05-06T07:08:09Z")
    return out


def _is_fixture(report_dir: Path) -> bool:
    """True for the hand-built fixture pages, whose exact contents the tests pin."""
    return "browser_report_fixture" in str(report_dir)


def require_chromium(chromium: Path, chromedriver: Path) -> None:
    """Fail the test (never skip it) with the reason when the browser is not installed."""
    missing = [str(p) for p in (chromium, chromedriver) if not p.is_file()]
    if missing:
        pytest.fail(
            f"Chromium is not installed ({', '.join(missing)} missing): the report browser test "
            "cannot run. Install it with scripts/install_browser.sh (apt-get install chromium "
            "chromium-driver); it is part of 'make test'."
        )


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Debian Chromium through selenium; fails (not skips) when it is missing."""
    require_chromium(CHROMIUM, CHROMEDRIVER)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--allow-file-access-from-files",
        f"--window-size={LAPTOP[0]},{LAPTOP[1]}",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        drv = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    except Exception as exc:  # noqa: BLE001 -- selenium raises several unrelated classes here
        pytest.fail(f"headless Chromium did not start: {type(exc).__name__}: {exc}")
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def _open(driver: Any, path: Path) -> None:
    driver.get_log("browser")  # drop entries from earlier pages
    driver.get(path.resolve().as_uri())


def _severe(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _check_images(driver: Any, page: str) -> int:
    images = driver.execute_script(ALL_IMAGES_LOADED)
    broken = [alt for alt, complete, width in images if not complete or width <= 0]
    assert not broken, f"{page}: images not loaded: {broken}"
    return len(images)


def _screenshot(driver: Any, name: str) -> Path:
    """A laptop-viewport screenshot and a full-page one; returns the full-page path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(*LAPTOP)
    driver.execute_script("window.scrollTo(0, 0);")
    driver.save_screenshot(str(SCREENSHOTS / f"{name}_viewport.png"))
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(LAPTOP[0], min(int(height) + 100, 16000))
    full = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(full))
    driver.set_window_size(*LAPTOP)
    return full


def _column(driver: Any, index: int) -> list[str]:
    return driver.execute_script(
        "var i = arguments[0];"
        "return Array.from(document.querySelectorAll('#cohort tbody tr'))"
        ".map(function (r) { return r.cells[i].textContent.trim(); });",
        index,
    )


def test_index_loads_with_images_verdicts_and_no_console_errors(driver, report_dir):
    _open(driver, report_dir / "index.html")
    assert "cohort report" in driver.title
    n_images = _check_images(driver, "index.html")
    assert n_images >= 1
    text = driver.find_element("tag name", "body").text
    assert any(w in text for w in VERDICT_WORDS), "no verdict word on the index"
    assert _severe(driver) == []
    shot = _screenshot(driver, "index")
    assert shot.stat().st_size > 10_000


def test_every_link_from_the_index_resolves(driver, report_dir):
    _open(driver, report_dir / "index.html")
    hrefs = driver.execute_script(
        "return Array.from(document.querySelectorAll('a')).map(function (a) {"
        " return a.getAttribute('href'); });"
    )
    anchors = [h for h in hrefs if h.startswith("#")]
    pages = sorted({h for h in hrefs if not h.startswith("#")})
    for a in anchors:
        assert driver.execute_script(
            "return document.getElementById(arguments[0]) !== null", a[1:]
        ), a
    assert pages, "the index links to no patient page"
    if _is_fixture(report_dir):
        assert pages == sorted(f"{p}.html" for p in PATIENTS)
    for href in pages:
        target = report_dir / href
        assert target.is_file(), f"index.html links to {href}, which does not exist"
        _open(driver, target)
        assert driver.title, href
        _check_images(driver, href)
        verdict = driver.find_element("css selector", ".verdict-word").text
        assert verdict.split()[0] in VERDICT_WORDS, f"{href}: verdict word {verdict!r}"
        assert _severe(driver) == [], href
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / f"linked_{Path(href).stem}_viewport.png"))


def test_patient_page_verdict_images_collapsed_visits_and_screenshot(driver, report_dir):
    _open(driver, report_dir / "index.html")
    first = driver.execute_script(
        "return document.querySelector('#cohort tbody a').getAttribute('href');"
    )
    _open(driver, report_dir / first)
    verdict = driver.find_element("css selector", ".verdict-word").text
    assert verdict.split()[0] in VERDICT_WORDS
    banner = driver.find_element("id", "verdict").text
    assert "Donor NK cells at day 14" in banner and "study day" in banner
    _check_images(driver, first)
    for href in driver.execute_script(
        "return Array.from(document.querySelectorAll('a')).map(function (a) {"
        " return a.getAttribute('href'); });"
    ):
        if href.startswith("#"):
            assert driver.execute_script(
                "return document.getElementById(arguments[0]) !== null", href[1:]
            ), f"{first}: anchor {href} has no target"
        else:
            assert (report_dir / href).is_file(), f"{first} links to missing {href}"
    closed = driver.execute_script(
        "return document.querySelectorAll('#gating details:not([open])').length;"
    )
    if _is_fixture(report_dir):
        assert first == "P01.html"
        assert "PASS" in verdict and "123.1 /µL" in banner and "actual study day 13" in banner
        assert closed == 3
    # other visits open with one click, and their figures are loaded images
    summaries = driver.find_elements("css selector", "#gating details > summary")
    if summaries:
        summaries[0].click()
        assert driver.execute_script(
            "var im = document.querySelector('#gating details[open] img');"
            "return im !== null && im.complete && im.naturalWidth > 0;"
        )
    assert _severe(driver) == []
    _screenshot(driver, f"patient_{Path(first).stem}")


def test_sorting_the_index_by_value_and_verdict(driver, report_dir):
    _open(driver, report_dir / "index.html")
    headers = driver.find_elements("css selector", "#cohort thead th")
    names = [th.text.rstrip(" ↕↑↓") for th in headers]
    value_col, verdict_col = names.index("donor NK/µL"), names.index("verdict")
    before = _column(driver, 0)
    headers[value_col].click()
    values = _column(driver, value_col)
    numbers = [float(v) for v in values if v]
    assert numbers == sorted(numbers), values
    assert values[len(numbers) :] == [""] * (len(values) - len(numbers)), "empty values sort last"
    assert headers[value_col].get_attribute("aria-sort") == "ascending"
    headers[value_col].click()
    values_desc = [float(v) for v in _column(driver, value_col) if v]
    assert values_desc == sorted(numbers, reverse=True)
    headers[verdict_col].click()
    verdicts = [v.split()[0] for v in _column(driver, verdict_col)]
    rank = {w: i for i, w in enumerate(VERDICT_WORDS)}
    assert [rank[v] for v in verdicts] == sorted(rank[v] for v in verdicts), verdicts
    if _is_fixture(report_dir):
        assert before == list(PATIENTS)
        assert _column(driver, 0) == ["P01", "P04", "P02", "P03"]  # PASS, FAIL, FAIL borderline, NE
    assert _severe(driver) == []


def test_a_missing_browser_fails_with_the_reason(tmp_path):
    with pytest.raises(
        pytest.fail.Exception,
        match=r"Chromium is not installed \(.*/nope/chromium missing\): .*install_browser\.sh",
    ):
        require_chromium(tmp_path / "nope" / "chromium", CHROMEDRIVER)


def test_each_page_shows_the_verdict_of_the_endpoint_table(driver, report_dir):
    """What a reader sees in the banner is what endpoints.tsv says, patient by patient."""
    import csv

    table = next(
        t
        for t in (
            report_dir.parent / "cohort" / "endpoints.tsv",  # a workflow run: results/reports
            report_dir.parent / "results" / "cohort" / "endpoints.tsv",  # the fixture layout
        )
        if t.is_file()
    )
    with table.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert rows
    for row in rows:
        _open(driver, report_dir / f"{row['patient_id']}.html")
        word = driver.find_element("css selector", ".verdict-word").text.split()[0]
        assert word == row["verdict"], (row["patient_id"], word, row["verdict"])
        if row.get("borderline") == "true":
            assert "borderline" in driver.find_element("id", "verdict").text.lower()
        assert _severe(driver) == []


COHORT_FIGURES = {
    "spaghetti": "donor NK cells per µL against study day, every patient",
    "swimmer": "swimmer plot of every patient",
    "treg": "Treg and Ki-67+ Treg percent of CD4 against study day, every patient",
}

#: [table, its width, the width its box may use] of every table of the page that overflows
OVERFLOWING = """
return Array.from(document.querySelectorAll(arguments[0])).map(function (t) {
  var box = t.closest('.scroll') || t.parentElement;
  return [t.id || t.className, t.scrollWidth, box.clientWidth];
}).filter(function (x) { return x[1] > x[2] + 1; });
"""


def test_each_cohort_figure_loads(driver, report_dir):
    _open(driver, report_dir / "index.html")
    for anchor, alt in COHORT_FIGURES.items():
        state = driver.execute_script(
            "var im = document.querySelector('#' + arguments[0] + ' img');"
            "return im === null ? null : [im.alt, im.complete, im.naturalWidth, im.naturalHeight];",
            anchor,
        )
        assert state is not None, f"index.html: section #{anchor} has no figure"
        assert state[0] == alt and state[1] and state[2] > 400 and state[3] > 150, (anchor, state)
        driver.execute_script("document.getElementById(arguments[0]).scrollIntoView();", anchor)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / f"index_{anchor}_viewport.png"))
    summary = driver.find_element("id", "kinetics-summary").text
    assert "Cmax" in summary and "median" in summary.lower()
    driver.execute_script("document.getElementById('kinetics-summary').scrollIntoView();")
    driver.save_screenshot(str(SCREENSHOTS / "index_kinetics-summary_viewport.png"))
    assert _severe(driver) == []


def test_patient_and_visit_tables_fit_a_laptop_window(driver, report_dir):
    driver.set_window_size(*LAPTOP)
    _open(driver, report_dir / "index.html")
    width = driver.execute_script("return document.documentElement.clientWidth")
    assert width <= LAPTOP[0]
    assert driver.execute_script(OVERFLOWING, "#cohort") == [], "index patient table scrolls"
    assert driver.execute_script("return document.documentElement.scrollWidth") <= width
    pages = sorted(p for p in report_dir.glob("*.html") if p.name != "index.html")
    assert pages
    for page in pages:
        _open(driver, page)
        over = driver.execute_script(OVERFLOWING, "#kinetics table.visits")
        assert over == [], f"{page.name}: visit table wider than the window: {over}"
        assert driver.execute_script("return document.documentElement.scrollWidth") <= width, page
        driver.execute_script("document.getElementById('kinetics').scrollIntoView();")
        driver.save_screenshot(str(SCREENSHOTS / f"visits_{page.stem}_viewport.png"))
