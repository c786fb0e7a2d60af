"""``nkflow review``: the local web app in which an analyst checks, corrects and signs gates.

Contract
--------
:func:`create_app` returns a Starlette application over a :class:`~nkflow.review.live.ReviewRun`.
Starlette (with uvicorn as the server) is used because it is small, well kept, has no template
engine, ORM or front-end bundle to trust, and its in-process ``TestClient`` lets every refusal
be tested without a browser; the pages are plain HTML with one packaged script and style sheet.

Security (the app is for one workstation):

* served on 127.0.0.1 only (:func:`serve`); requests whose ``Host`` is not that address and port
  are refused (DNS rebinding);
* a random token per start, given once in the printed URL; the first request carrying it sets
  an HttpOnly, SameSite=Strict cookie and is redirected to the same URL without it; any request
  without the token (query or cookie) is refused with 403;
* POSTs must be ``application/json``, carry the page's CSRF token in ``X-Nkflow-CSRF`` and,
  when the browser sends an ``Origin``, come from the app's own origin;
* saving and signing need a logged-in user (a session expires after ``review.session_minutes``
  of inactivity); signing asks for the password again;
* tube and patient ids are checked against the run (no path is built from an unchecked id);
  a save whose override file changed since the page opened it is refused with both versions;
* nothing is written into the run's results: overrides and the audit log live under the
  ``review:`` paths of the configuration.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import secrets
import time
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from nkflow.errors import AuditError, ConfigError, ReviewError
from nkflow.report._html import esc
from nkflow.review.live import ConflictError, ReviewRun, as_request

logger = logging.getLogger(__name__)

TOKEN_COOKIE = "nkflow_review_token"
SESSION_COOKIE = "nkflow_review_session"
CSRF_HEADER = "x-nkflow-csrf"
STATIC = ("review.js", "review.css")
RISK_WORDS = {
    "verdict_unstable": "verdict unstable",
    "not_evaluable": "NOT_EVALUABLE",
    "borderline": "borderline",
    "gate_fit_flag": "gate-fit flag",
    "qc_fail": "QC FAIL",
    "qc_warn": "QC WARN",
    "low_counts": "low counts",
}


def _asset(name: str) -> bytes:
    return resources.files("nkflow").joinpath("templates", "review", name).read_bytes()


class Sessions:
    """Logged-in users by session id, expiring after ``minutes`` of inactivity."""

    def __init__(self, minutes: int, clock: Any = time.monotonic) -> None:
        self.ttl = 60.0 * minutes
        self.clock = clock
        self.by_id: dict[str, dict[str, Any]] = {}

    def new(self, user: str) -> str:
        """Start a session for ``user``; returns its random id."""
        sid = secrets.token_urlsafe(32)
        self.by_id[sid] = {"user": user, "seen": self.clock()}
        return sid

    def user(self, sid: str | None) -> tuple[str | None, str]:
        """(user id, '') for a live session; (None, why) otherwise."""
        s = self.by_id.get(sid or "")
        if s is None:
            return None, "not logged in: log in with your user id and password first"
        if self.clock() - s["seen"] > self.ttl:
            self.by_id.pop(sid or "", None)
            return None, (
                f"your session expired after {int(self.ttl // 60)} minutes without activity; "
                "log in again (nothing was saved or signed)"
            )
        s["seen"] = self.clock()
        return str(s["user"]), ""


#: headers of every response
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def create_app(run: ReviewRun, *, token: str, port: int, clock: Any = time.monotonic) -> Any:
    """The Starlette application (see the module contract)."""
    handlers = _Handlers(run, token, port, clock)
    app = Starlette(routes=handlers.routes())
    app.state.csrf = handlers.csrf
    app.state.sessions = handlers.sessions
    return app


class _Handlers:
    """The app's pages and API over one run, with its token, CSRF token and sessions."""

    def __init__(self, run: ReviewRun, token: str, port: int, clock: Any) -> None:
        self.run = run
        self.token = token
        self.csrf = secrets.token_urlsafe(32)
        self.sessions = Sessions(run.rs.session_minutes, clock)
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}

    def routes(self) -> list[Route]:
        api = self.api
        return [
            Route("/", self.queue_page),
            Route("/favicon.ico", self.favicon),
            Route("/tube/{sample}/{tube}", self.tube_page),
            Route("/thumb/{sample}/{tube}/{gate}.png", self.thumb),
            Route("/static/{name}", self.static),
            Route("/api/login", api(self.login), methods=["POST"]),
            Route("/api/logout", api(self.logout), methods=["POST"]),
            Route("/api/preview", api(self.preview), methods=["POST"]),
            Route("/api/figure", api(self.figure), methods=["POST"]),
            Route("/api/save", api(self.save), methods=["POST"]),
            Route("/api/sign", api(self.sign), methods=["POST"]),
        ]

    # ------------------------------------------------------------------ every request

    def guard(self, request: Request) -> Response | None:
        """Host, token and (for POST) CSRF checks; None when the request may proceed."""
        why = _refusal(request, self.hosts, self.token, self.csrf)
        return None if why is None else _refuse(*why)

    def with_token(self, request: Request, response: Response) -> Response:
        for k, v in HEADERS.items():
            response.headers.setdefault(k, v)
        if request.query_params.get("token"):
            response.set_cookie(
                TOKEN_COOKIE, self.token, httponly=True, samesite="strict", path="/"
            )
        return response

    def user(self, request: Request) -> str | None:
        return self.sessions.user(request.cookies.get(SESSION_COOKIE))[0]

    def html(self, request: Request, title: str, body: str, data: dict[str, Any]) -> Response:
        doc = _page(
            title, body, {**data, "csrf": self.csrf}, self.user(request), str(self.run.rs.results)
        )
        return self.with_token(request, HTMLResponse(doc, headers=HEADERS))

    def tube_at(self, request: Request) -> tuple[str, str]:
        return self.run.check_tube(request.path_params["sample"], request.path_params["tube"])

    # ------------------------------------------------------------------ pages

    async def queue_page(self, request: Request) -> Response:
        if (bad := self.guard(request)) is not None:
            return bad
        if request.query_params.get("token"):
            return self.with_token(request, RedirectResponse(request.url.path, status_code=303))
        return self.html(request, "queue", _queue_body(self.run.queue()), {"view": "queue"})

    async def tube_page(self, request: Request) -> Response:
        if (bad := self.guard(request)) is not None:
            return bad
        if request.query_params.get("token"):
            return self.with_token(request, RedirectResponse(request.url.path, status_code=303))
        run = self.run
        try:
            sid, tube = self.tube_at(request)
            ot = run.open(sid, tube)
            candidate = as_request(dict(sorted(ot.on_disk.items())))  # as the page edits them
            preview = run.preview(sid, tube, candidate)
            png, layout = run.figure(sid, tube, candidate)
        except ReviewError as exc:
            return _refuse(404, str(exc))
        state = run.review_states().get(ot.patient_id)
        data = {
            "view": "tube",
            "sample_id": sid,
            "tube": tube,
            "patient_id": ot.patient_id,
            "expected": ot.file_sha,
            "candidate": candidate,
            "preview": preview,
            "layout": layout,
            "pending": run.pending(sid, tube),
            "review_status": state.status if state else "",
            "review_note": state.note if state else "",
        }
        return self.html(request, f"{sid} {tube}", _tube_body(sid, tube, ot.patient_id, png), data)

    async def thumb(self, request: Request) -> Response:
        if (bad := self.guard(request)) is not None:
            return bad
        try:
            sid, tube = self.tube_at(request)
            png = thumbnail(self.run, sid, tube, request.path_params["gate"])
        except ReviewError as exc:
            return _refuse(404, str(exc))
        return Response(png, media_type="image/png", headers=HEADERS)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return _refuse(404, f"no asset {name!r}")
        media = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(_asset(name), media_type=media, headers=HEADERS)

    async def favicon(self, request: Request) -> Response:
        return Response(status_code=204, headers=HEADERS)

    # ------------------------------------------------------------------ API (POST, JSON)

    def api(self, handler: Any) -> Any:
        """An endpoint: checks, the JSON body to ``handler``, its errors as JSON refusals."""

        async def endpoint(request: Request) -> Response:
            if (bad := self.guard(request)) is not None:
                return bad
            try:
                return self.with_token(request, await handler(request, await _body_of(request)))
            except _Unauthorized as exc:
                return _refuse(401, str(exc))
            except ConflictError as exc:
                return JSONResponse(
                    {"error": str(exc), "conflicts": exc.conflicts, "yours": exc.candidate},
                    status_code=409,
                    headers=HEADERS,
                )
            except (ReviewError, ConfigError, AuditError) as exc:
                return _refuse(400, str(exc))

        return endpoint

    def need_user(self, request: Request) -> str:
        user, why = self.sessions.user(request.cookies.get(SESSION_COOKIE))
        if user is None:
            raise _Unauthorized(why)
        return user

    def tube_of(self, doc: dict[str, Any]) -> tuple[str, str]:
        return self.run.check_tube(str(doc.get("sample_id", "")), str(doc.get("tube", "")))

    async def login(self, request: Request, doc: dict[str, Any]) -> Response:
        from nkflow.review.users import authenticate, load_users

        uid, pw = str(doc.get("user", "")), str(doc.get("password", ""))
        user = authenticate(load_users(self.run.rs.users), uid, pw)
        resp = JSONResponse({"user": user.id, "name": user.name, "role": user.role})
        resp.set_cookie(
            SESSION_COOKIE, self.sessions.new(user.id), httponly=True, samesite="strict", path="/"
        )
        return resp

    async def logout(self, request: Request, doc: dict[str, Any]) -> Response:
        self.sessions.by_id.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        resp = JSONResponse({"ok": True})
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    async def preview(self, request: Request, doc: dict[str, Any]) -> Response:
        sid, tube = self.tube_of(doc)
        return JSONResponse(self.run.preview(sid, tube, doc.get("bounds", [])))

    async def figure(self, request: Request, doc: dict[str, Any]) -> Response:
        sid, tube = self.tube_of(doc)
        png, layout = self.run.figure(sid, tube, doc.get("bounds", []))
        return JSONResponse({"png": base64.b64encode(png).decode(), "layout": layout})

    async def save(self, request: Request, doc: dict[str, Any]) -> Response:
        user = self.need_user(request)
        sid, tube = self.tube_of(doc)
        expected = doc.get("expected") or {}
        if not isinstance(expected, dict):
            raise ReviewError("expected: a mapping of gate -> sha256 (or null)")
        out = self.run.save(
            user,
            sid,
            tube,
            doc.get("bounds", []),
            str(doc.get("reason", "")),
            {str(k): (None if v is None else str(v)) for k, v in expected.items()},
            raw_old=doc.get("old", []),
        )
        return JSONResponse(out)

    async def sign(self, request: Request, doc: dict[str, Any]) -> Response:
        user = self.need_user(request)
        run = self.run
        pid = run.check_patient(str(doc.get("patient_id", "")))
        out = run.sign(user, str(doc.get("password", "")), pid, str(doc.get("meaning", "")))
        e = out["entry"]
        state = run.review_states().get(pid)
        return JSONResponse(
            {
                "seq": e["seq"],
                "name": e["data"]["name"],
                "meaning": e["data"]["meaning"],
                "time_utc": e["time_utc"],
                "time_local": e["data"]["time_local"],
                "pending": out["pending"],
                "review_status": state.status if state else "",
            }
        )


def _refuse(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=HEADERS)


async def _body_of(request: Request) -> dict[str, Any]:
    try:
        doc = await request.json()
    except ValueError:
        raise ReviewError("the request body is not JSON") from None
    if not isinstance(doc, dict):
        raise ReviewError("the request body must be a JSON object")
    return doc


class _Unauthorized(ReviewError):
    pass


def _refusal(request: Request, hosts: set[str], token: str, csrf: str) -> tuple[int, str] | None:
    """Why (HTTP status, message) a request is refused; None when it may proceed.

    The checks are the Host, the token and (for a POST) CSRF, content type and origin.
    """
    if request.headers.get("host", "") not in hosts:
        return 403, "refused: this app answers only on 127.0.0.1 (Host header)"
    given = request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE, "")
    if not given or not hmac.compare_digest(given, token):
        return (
            403,
            "refused: the request does not carry this app's token; open the URL printed by "
            "'nkflow review' (the token changes at every start)",
        )
    if request.method == "POST":
        if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), csrf):
            return 403, "refused: missing or wrong CSRF token (reload the page)"
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return 415, "refused: POST bodies must be application/json"
        origin = request.headers.get("origin")
        if origin is not None and origin not in {f"http://{h}" for h in hosts}:
            return 403, f"refused: cross-site request from {origin}"
    return None


def _page(title: str, body: str, data: dict[str, Any], user: str | None, results: str) -> str:
    """A whole page: header (results directory, who is logged in), body and the page's data."""
    who = (
        f'<span id="who">logged in as <b>{esc(user)}</b></span> '
        '<button id="logout" type="button">log out</button>'
        if user
        else '<form id="login" class="login"><input id="login-user" placeholder="user id" '
        'autocomplete="username"><input id="login-password" type="password" '
        'placeholder="password" autocomplete="current-password"><button id="login-go" '
        'type="submit">log in</button></form>'
    )
    payload = json.dumps(data).replace("</", "<\\/")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(title)} — nkflow review</title>"
        "<link rel='stylesheet' href='/static/review.css'></head><body>"
        f"<header><a href='/'>nkflow review</a> · {esc(results)} {who}"
        "<span id='message' role='status'></span></header>"
        f"<main>{body}</main>"
        f"<script type='application/json' id='data'>{payload}</script>"
        "<script src='/static/review.js'></script></body></html>"
    )


def _queue_body(items: list[dict[str, Any]]) -> str:
    """The review queue: filters and one row per tube, highest risk first."""

    def options(key: str, label: str) -> str:
        vals = sorted({str(i[key]) for i in items})
        opts = "".join(f"<option value='{esc(v)}'>{esc(v)}</option>" for v in vals)
        return (
            f"<label>{label} <select class='filter' data-key='{key}'>"
            f"<option value=''>all</option>{opts}</select></label>"
        )

    return (
        "<h1>Review queue</h1><p>Every tube, highest risk first: NOT_EVALUABLE, borderline, "
        "gate-fit flags, QC FAIL/WARN, low counts.</p><div class='filters'>"
        + options("patient_id", "patient")
        + options("sample_id", "visit")
        + options("tube", "tube")
        + options("qc_status", "QC status")
        + options("review_status", "review state")
        + "</div><table id='queue'><thead><tr><th>risk</th><th>patient</th><th>tube</th>"
        "<th>key gates</th><th>count</th><th>flags</th><th>day-14 verdict</th>"
        "<th>review</th></tr></thead><tbody>"
        + "".join(_queue_row(it) for it in items)
        + "</tbody></table>"
    )


def _queue_row(it: dict[str, Any]) -> str:
    thumbs = "".join(
        f"<img class='thumb' loading='lazy' alt='{esc(g)}' title='{esc(g)}' "
        f"src='/thumb/{esc(it['sample_id'])}/{esc(it['tube'])}/{esc(g)}.png'>"
        for g in it["key_gates"]
    )
    risks = "".join(
        f"<span class='badge risk-{esc(r)}'>{esc(RISK_WORDS[r])}</span>"
        for r in it["risks"]
        if r not in ("qc_fail", "qc_warn")  # the QC badge says it
    ) or ("" if it["risks"] else "<span class='badge ok'>no risk flag</span>")
    if it["overridden"]:
        risks += (
            "<span class='badge override'>override"
            + (" (not yet applied)" if it["pending"] else "")
            + "</span>"
        )
    pct = f"{float(it['pct_of_parent']):.2f} %" if it["pct_of_parent"] else ""
    return (
        f"<tr class='qrow' data-patient='{esc(it['patient_id'])}' "
        f"data-visit='{esc(it['sample_id'])}' data-tube='{esc(it['tube'])}' "
        f"data-status='{esc(it['qc_status'])}' data-review='{esc(it['review_status'])}'>"
        f"<td>{it['rank'] + 1}</td><td>{esc(it['patient_id'])}</td>"
        f"<td><a class='open-tube' href='/tube/{esc(it['sample_id'])}/{esc(it['tube'])}'>"
        f"{esc(it['sample_id'])} / {esc(it['tube'])}</a>"
        f"{' <b>day 14</b>' if it['day14'] else ''}<br>day {esc(it['study_day'])}</td>"
        f"<td class='thumbs'>{thumbs}</td>"
        f"<td>{esc(it['population'])}: {esc(it['events'])} events<br>{esc(pct)} of parent</td>"
        f"<td><span class='badge qc-{esc(it['qc_status'])}'>QC {esc(it['qc_status'])}</span>"
        f"{risks}</td><td>{esc(it['verdict'])} {esc(it['donor_nk_per_ul'])}</td>"
        f"<td><span class='badge review-{esc(it['review_status'])}'>"
        f"{esc(it['review_status'])}</span></td></tr>"
    )


def _tube_body(sid: str, tube: str, patient_id: str, png: bytes) -> str:
    """A tube's page: its gating figure, boundaries, numbers, saving and signing."""
    return (
        f"<h1>Tube {esc(sid)} / {esc(tube)} <small>patient {esc(patient_id)}</small></h1>"
        "<div class='tube'><div class='figure'><div id='figure-wrap'>"
        f"<img id='figure' alt='gating of {esc(sid)} {esc(tube)}' "
        f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        "<div id='handles'></div></div></div>"
        "<div class='side'><h2>Boundaries</h2><p class='hint'>Gate units (the figure's "
        "axes). Type a value or drag a red handle; numbers update on release.</p>"
        "<table id='bounds'></table><table id='polygons'></table>"
        "<h2>Numbers <small id='latency'></small></h2><table id='numbers'></table>"
        "<h2>Populations</h2><table id='populations'></table>"
        "<h2>Save the correction</h2><textarea id='reason' rows='3' placeholder='reason "
        "(mandatory): why the boundary is moved'></textarea>"
        "<button id='save' type='button'>save correction</button>"
        "<div id='conflict'></div>"
        f"<h2>Sign patient {esc(patient_id)}</h2>"
        "<p id='review-state'></p>"
        "<select id='meaning'><option value='reviewed'>reviewed</option>"
        "<option value='approved'>approved</option></select>"
        "<input id='sign-password' type='password' placeholder='your password' "
        "autocomplete='current-password'><button id='sign' type='button'>sign</button>"
        "</div></div>"
    )


_THUMBS: dict[tuple[str, str, str], bytes] = {}


def thumbnail(run: ReviewRun, sample_id: str, tube: str, gate: str) -> bytes:
    """One gate's panel of the run's gating.png, half size (the queue's thumbnails)."""
    from io import BytesIO

    from PIL import Image

    from nkflow.figures import NCOLS, PANEL_H, PANEL_W, TITLE_H

    gates = run.figure_gates(sample_id, tube)
    if gate not in gates:
        raise ReviewError(f"gate {gate!r} is not drawn for tube {sample_id}/{tube}")
    key = (sample_id, tube, gate)
    if key not in _THUMBS:
        rec = run.tube_records[(sample_id, tube)]
        k = gates.index(gate)
        with Image.open(rec.directory / "gating.png") as im:
            x, y = (k % NCOLS) * PANEL_W, TITLE_H + (k // NCOLS) * PANEL_H
            crop = im.convert("RGB").crop((x, y, x + PANEL_W, y + PANEL_H))
            crop = crop.resize((PANEL_W // 2, PANEL_H // 2), Image.Resampling.LANCZOS)
            buf = BytesIO()
            crop.save(buf, format="PNG")
        _THUMBS[key] = buf.getvalue()
    return _THUMBS[key]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the app binds to loopback only)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(run: ReviewRun, port: int = 0, out: Any = None) -> None:
    """Serve the app on 127.0.0.1 until interrupted, printing the URL with its token."""
    import sys

    import uvicorn

    port = port or free_port()
    token = secrets.token_urlsafe(24)
    app = create_app(run, token=token, port=port)
    stream = out or sys.stdout
    stream.write(f"nkflow review: open http://127.0.0.1:{port}/?token={token}\n")
    stream.flush()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
