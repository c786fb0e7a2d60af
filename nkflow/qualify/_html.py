"""The qualification report: one self-contained HTML page a QA officer reads top to bottom.

Contract: :func:`render` is pure: the pack's dict (as written to qualification.json) in, HTML
text out. Order: the summary (criteria, passed, failed and which, not run and why), the
environment and date, the declared acceptance limits, one section per check (its criteria,
then its evidence), provenance, and a sign-off block. Styles are the patient reports'
(``nkflow/templates/report.css``); nothing is fetched from the network.
"""

from __future__ import annotations

from typing import Any

from nkflow.report import _html as h

#: evidence tables longer than this are folded (a click opens them)
FOLD_ROWS = 12

_STATUS_BADGE = {
    "pass": ("PASS", "PASS"),
    "fail": ("FAIL", "FAIL"),
    "not_run": ("NOT RUN", "NOT_ASSESSED"),
}
_EXTRA_CSS = """
.qsum { display: flex; gap: 2rem; flex-wrap: wrap; margin: 0.4rem 0; }
.qsum div { font-size: 1.05rem; } .qsum b { font-size: 1.5rem; display: block; }
.signoff td { min-width: 16rem; height: 2.2rem; }
ul.crit li { margin: 0.15rem 0; }
"""


def _badge(status: str) -> str:
    text, kind = _STATUS_BADGE.get(status, (status, "flag"))
    return h.badge(text, kind)


def _criteria_list(ids: list[str], crit: dict[str, dict[str, Any]]) -> str:
    items = "".join(f"<li><code>{h.esc(i)}</code>: {h.esc(crit[i]['reason'])}</li>" for i in ids)
    return f'<ul class="crit">{items}</ul>'


def _summary(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    kind = {"PASS": "PASS", "FAIL": "FAIL"}.get(s["status"], "NOT_EVALUABLE")
    crit = {c["id"]: c for ch in doc["checks"] for c in ch["criteria"]}
    head = (
        f'<div class="banner v-{kind}"><div class="verdict-word">{h.esc(s["status"])}</div>'
        f'<div class="headline">{s["criteria"]} criteria: {s["passed"]} passed, '
        f"{s['failed']} failed, {s['not_run']} not run</div></div>"
    )
    body = head + (
        '<div class="qsum">'
        f"<div><b>{s['criteria']}</b>criteria</div><div><b>{s['passed']}</b>passed</div>"
        f"<div><b>{s['failed']}</b>failed</div><div><b>{s['not_run']}</b>not run</div></div>"
    )
    if s["failed_criteria"]:
        body += "<h3>Failed</h3>" + _criteria_list(s["failed_criteria"], crit)
    else:
        body += h.note("No criterion failed.")
    if s["not_run_criteria"]:
        body += "<h3>Not run (never counted as passed)</h3>"
        body += _criteria_list(s["not_run_criteria"], crit)
    rows = [
        [f'<a href="#check-{h.esc(ch["id"])}">{h.esc(ch["title"])}</a>', _badge(ch["status"]),
         f"{sum(c['status'] == 'pass' for c in ch['criteria'])}/{len(ch['criteria'])}",
         str(sum(c["status"] == "fail" for c in ch["criteria"])),
         str(sum(c["status"] == "not_run" for c in ch["criteria"]))]
        for ch in doc["checks"]
    ]  # fmt: skip
    body += "<h3>Checks</h3>" + h.table(
        ["check", "status", "passed", "failed", "not run"], rows, raw_columns=(0, 1)
    )
    return h.section("summary", "Summary", body)


def _environment(doc: dict[str, Any]) -> str:
    run = doc["run"]
    pairs = [
        ("date (UTC)", run["date"]),
        ("mode", doc["mode"]),
        ("nkflow", doc["nkflow_version"]),
        *((k, str(v)) for k, v in run["environment"].items()),
        ("configuration", doc["inputs"]["config"]),
        ("reference set", doc["inputs"]["reference"] or "none given"),
        ("workflow directory", run["workflow_dir"] or "none found"),
        ("command", run["command"]),
        ("duration", f"{run['seconds']:.0f} s"),
    ]
    return h.section("environment", "Environment and date", h.key_value_table(pairs))


def _limits(doc: dict[str, Any]) -> str:
    rows = [
        [x["id"], f"{x['value']:g}", x["unit"], x["applies_to"], x["source"]]
        for x in doc["acceptance_limits"]
    ]
    body = h.note(
        "Declared before anything is measured; the lab's own limits (reference set, replicate "
        "CVs) are in its reference file and shown in that section."
    ) + h.table(["limit", "value", "unit", "applies to", "source"], rows)
    return h.section("limits", "Acceptance limits", body)


def _evidence(ev: dict[str, Any]) -> str:
    table = h.table(ev["columns"], ev["rows"])
    note = h.note(ev["note"]) if ev["note"] else ""
    if len(ev["rows"]) > FOLD_ROWS:
        return h.details(f"{ev['title']} ({len(ev['rows'])} rows)", note + table)
    return f"<h3>{h.esc(ev['title'])}</h3>" + note + table


def _check(ch: dict[str, Any], seconds: float | None) -> str:
    rows = [
        [f"<code>{h.esc(c['id'])}</code>", h.esc(c["criterion"]), h.esc(c["limit"]),
         h.esc(c["measured"]), _badge(c["status"]), h.esc(c["reason"])]
        for c in ch["criteria"]
    ]  # fmt: skip
    took = f" ({seconds:.0f} s)" if seconds is not None else ""
    body = (
        f"<p>{_badge(ch['status'])} {h.esc(ch['description'])}{h.esc(took)}</p>"
        + h.table(["id", "criterion", "limit", "measured", "status", "reason"], rows,
                  raw_columns=range(6))
        + "".join(_evidence(ev) for ev in ch["evidence"])
    )  # fmt: skip
    return h.section(f"check-{ch['id']}", ch["title"], body)


def _provenance(doc: dict[str, Any]) -> str:
    prov = doc["provenance"]
    body = "<h3>Input files (sha256)</h3>" + h.table(
        ["role", "path", "sha256"], [[r["role"], r["path"], r["sha256"]] for r in prov["inputs"]]
    )
    body += "<h3>Software versions</h3>" + h.table(
        ["package", "version"], [[k, v] for k, v in prov["software_versions"].items()]
    )
    body += "<h3>Configuration</h3>" + h.key_value_table(
        [("config digest (sha256 of canonical JSON)", prov["config_digest"] or "not computed")]
    )
    body += "<h3>Run</h3>" + h.key_value_table(
        [("qualification run date", doc["run"]["date"]),
         ("qualification.json", "beside this page; the same content, machine-readable")]
    )  # fmt: skip
    return h.section("provenance", "Provenance", body)


def _signoff() -> str:
    rows = [[role, "", "", ""] for role in ("Performed by", "Reviewed by (QA)", "Approved by")]
    body = h.note(
        "Sign on a printout (or in the lab's document system) after reading every section."
    ) + h.table(["role", "name", "signature", "date"], rows, css_class="signoff")
    return h.section("signoff", "Sign-off", body)


def render(doc: dict[str, Any]) -> str:
    """The qualification page for a pack dict (see :func:`nkflow.qualify.qualification_dict`)."""
    seconds = doc["run"].get("check_seconds", {})
    nav = '<nav class="sections">' + "".join(
        f'<a href="#{a}">{h.esc(t)}</a>'
        for a, t in [("summary", "summary"), ("environment", "environment"), ("limits", "limits"),
                     *((f"check-{c['id']}", c["id"]) for c in doc["checks"]),
                     ("provenance", "provenance"), ("signoff", "sign-off")]
    ) + "</nav>"  # fmt: skip
    body = (
        _summary(doc)
        + _environment(doc)
        + _limits(doc)
        + "".join(_check(ch, seconds.get(ch["id"])) for ch in doc["checks"])
        + _provenance(doc)
        + _signoff()
    )
    status = doc["summary"]["status"]
    page = h.page(
        f"nkflow qualification: {status}",
        f"nkflow {h.esc(doc['nkflow_version'])} qualification: {h.esc(status)}",
        nav,
        body,
    )
    return page.replace("</style>", _EXTRA_CSS + "</style>", 1)
