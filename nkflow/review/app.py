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
import html
import json
import logging
import secrets
import time
from importlib import resources
from typing import Any

from nkflow.errors import AuditError, ConfigError, ReviewError
from nkflow.review.live import VERTICES, ConflictError, ReviewRun

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


def esc(v: object) -> str:
    """``v`` as HTML text (``None`` as empty), quotes escaped."""
    return html.escape("" if v is None else str(v), quote=True)


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


def create_app(run: ReviewRun, *, token: str, port: int, clock: Any = time.monotonic) -> Any:
    """The Starlette application (see the module contract)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Route

    csrf = secrets.token_urlsafe(32)
    sessions = Sessions(run.rs.session_minutes, clock)
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    origins = {f"http://{h}" for h in hosts}
    headers = {
        "Content-Security-Policy": (
            "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }

    def refuse(status: int, message: str) -> Response:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def guard(request: Request) -> Response | None:
        """Host, token and (for POST) CSRF checks; None when the request may proceed."""
        if request.headers.get("host", "") not in hosts:
            return refuse(403, "refused: this app answers only on 127.0.0.1 (Host header)")
        given = request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE, "")
        if not given or not hmac.compare_digest(given, token):
            return refuse(
                403,
                "refused: the request does not carry this app's token; open the URL printed by "
                "'nkflow review' (the token changes at every start)",
            )
        if request.method == "POST":
            if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), csrf):
                return refuse(403, "refused: missing or wrong CSRF token (reload the page)")
            if request.headers.get("content-type", "").split(";")[0] != "application/json":
                return refuse(415, "refused: POST bodies must be application/json")
            origin = request.headers.get("origin")
            if origin is not None and origin not in origins:
                return refuse(403, f"refused: cross-site request from {origin}")
        return None

    def with_token(request: Request, response: Response) -> Response:
        for k, v in headers.items():
            response.headers.setdefault(k, v)
        if request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    def page(title: str, body: str, data: dict[str, Any], user: str | None) -> str:
        who = (
            f'<span id="who">logged in as <b>{esc(user)}</b></span> '
            '<button id="logout" type="button">log out</button>'
            if user
            else '<form id="login" class="login"><input id="login-user" placeholder="user id" '
            'autocomplete="username"><input id="login-password" type="password" '
            'placeholder="password" autocomplete="current-password"><button id="login-go" '
            'type="submit">log in</button></form>'
        )
        payload = json.dumps({**data, "csrf": csrf}).replace("</", "<\\/")
        return (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{esc(title)} — nkflow review</title>"
            "<link rel='stylesheet' href='/static/review.css'></head><body>"
            f"<header><a href='/'>nkflow review</a> · {esc(run.rs.results)} {who}"
            "<span id='message' role='status'></span></header>"
            f"<main>{body}</main>"
            f"<script type='application/json' id='data'>{payload}</script>"
            "<script src='/static/review.js'></script></body></html>"
        )

    async def queue_page(request: Request) -> Response:
        if (bad := await guard(request)) is not None:
            return bad
        if request.query_params.get("token"):
            return with_token(request, RedirectResponse(request.url.path, status_code=303))
        user, _ = sessions.user(request.cookies.get(SESSION_COOKIE))
        items = run.queue()
        rows = []
        for it in items:
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
            rows.append(
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

        def options(key: str, label: str) -> str:
            vals = sorted({str(i[key]) for i in items})
            opts = "".join(f"<option value='{esc(v)}'>{esc(v)}</option>" for v in vals)
            return (
                f"<label>{label} <select class='filter' data-key='{key}'>"
                f"<option value=''>all</option>{opts}</select></label>"
            )

        body = (
            "<h1>Review queue</h1><p>Every tube, highest risk first: NOT_EVALUABLE, borderline, "
            "gate-fit flags, QC FAIL/WARN, low counts.</p><div class='filters'>"
            + options("patient_id", "patient")
            + options("sample_id", "visit")
            + options("tube", "tube")
            + options("qc_status", "QC status")
            + options("review_status", "review state")
            + "</div><table id='queue'><thead><tr><th>risk</th><th>patient</th><th>tube</th>"
            "<th>key gates</th><th>count</th><th>flags</th><th>day-14 verdict</th>"
            "<th>review</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        )
        return with_token(
            request, HTMLResponse(page("queue", body, {"view": "queue"}, user), headers=headers)
        )

    def _tube(request: Request) -> tuple[str, str]:
        return run.check_tube(request.path_params["sample"], request.path_params["tube"])

    async def tube_page(request: Request) -> Response:
        if (bad := await guard(request)) is not None:
            return bad
        if request.query_params.get("token"):
            return with_token(request, RedirectResponse(request.url.path, status_code=303))
        try:
            sid, tube = _tube(request)
            ot = run.open(sid, tube)
            candidate = [
                {"gate": g, "vertices": [list(x) for x in v]}
                if m == VERTICES
                else {"gate": g, "marker": m, "side": s, "value": v}
                for (g, m, s), v in sorted(ot.on_disk.items())
            ]
            preview = run.preview(sid, tube, candidate)
            png, layout = run.figure(sid, tube, candidate)
        except ReviewError as exc:
            return refuse(404, str(exc))
        user, _ = sessions.user(request.cookies.get(SESSION_COOKIE))
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
        body = (
            f"<h1>Tube {esc(sid)} / {esc(tube)} <small>patient {esc(ot.patient_id)}</small></h1>"
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
            f"<h2>Sign patient {esc(ot.patient_id)}</h2>"
            "<p id='review-state'></p>"
            "<select id='meaning'><option value='reviewed'>reviewed</option>"
            "<option value='approved'>approved</option></select>"
            "<input id='sign-password' type='password' placeholder='your password' "
            "autocomplete='current-password'><button id='sign' type='button'>sign</button>"
            "</div></div>"
        )
        return with_token(
            request, HTMLResponse(page(f"{sid} {tube}", body, data, user), headers=headers)
        )

    async def thumb(request: Request) -> Response:
        if (bad := await guard(request)) is not None:
            return bad
        try:
            sid, tube = _tube(request)
            gate = request.path_params["gate"]
            png = thumbnail(run, sid, tube, gate)
        except ReviewError as exc:
            return refuse(404, str(exc))
        return Response(png, media_type="image/png", headers=headers)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return refuse(404, f"no asset {name!r}")
        media = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(_asset(name), media_type=media, headers=headers)

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            doc = await request.json()
        except ValueError:
            raise ReviewError("the request body is not JSON") from None
        if not isinstance(doc, dict):
            raise ReviewError("the request body must be a JSON object")
        return doc

    def need_user(request: Request) -> str:
        user, why = sessions.user(request.cookies.get(SESSION_COOKIE))
        if user is None:
            raise _Unauthorized(why)
        return user

    def api(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            if (bad := await guard(request)) is not None:
                return bad
            try:
                return with_token(request, await handler(request, await body_of(request)))
            except _Unauthorized as exc:
                return refuse(401, str(exc))
            except ConflictError as exc:
                return JSONResponse(
                    {"error": str(exc), "conflicts": exc.conflicts, "yours": exc.candidate},
                    status_code=409,
                    headers=headers,
                )
            except (ReviewError, ConfigError, AuditError) as exc:
                return refuse(400, str(exc))

        return endpoint

    async def login(request: Request, doc: dict[str, Any]) -> Response:
        from nkflow.review.users import authenticate, load_users

        uid, pw = str(doc.get("user", "")), str(doc.get("password", ""))
        user = authenticate(load_users(run.rs.users), uid, pw)
        resp = JSONResponse({"user": user.id, "name": user.name, "role": user.role})
        resp.set_cookie(
            SESSION_COOKIE, sessions.new(user.id), httponly=True, samesite="strict", path="/"
        )
        return resp

    async def logout(request: Request, doc: dict[str, Any]) -> Response:
        sessions.by_id.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        resp = JSONResponse({"ok": True})
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    def tube_of(doc: dict[str, Any]) -> tuple[str, str]:
        return run.check_tube(str(doc.get("sample_id", "")), str(doc.get("tube", "")))

    async def preview(request: Request, doc: dict[str, Any]) -> Response:
        sid, tube = tube_of(doc)
        return JSONResponse(run.preview(sid, tube, doc.get("bounds", [])))

    async def figure(request: Request, doc: dict[str, Any]) -> Response:
        sid, tube = tube_of(doc)
        png, layout = run.figure(sid, tube, doc.get("bounds", []))
        return JSONResponse({"png": base64.b64encode(png).decode(), "layout": layout})

    async def save(request: Request, doc: dict[str, Any]) -> Response:
        user = need_user(request)
        sid, tube = tube_of(doc)
        expected = doc.get("expected") or {}
        if not isinstance(expected, dict):
            raise ReviewError("expected: a mapping of gate -> sha256 (or null)")
        out = run.save(
            user,
            sid,
            tube,
            doc.get("bounds", []),
            str(doc.get("reason", "")),
            {str(k): (None if v is None else str(v)) for k, v in expected.items()},
            raw_old=doc.get("old", []),
        )
        return JSONResponse(out)

    async def sign(request: Request, doc: dict[str, Any]) -> Response:
        user = need_user(request)
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

    async def favicon(request: Request) -> Response:
        return Response(status_code=204, headers=headers)

    routes = [
        Route("/", queue_page),
        Route("/favicon.ico", favicon),
        Route("/tube/{sample}/{tube}", tube_page),
        Route("/thumb/{sample}/{tube}/{gate}.png", thumb),
        Route("/static/{name}", static),
        Route("/api/login", api(login), methods=["POST"]),
        Route("/api/logout", api(logout), methods=["POST"]),
        Route("/api/preview", api(preview), methods=["POST"]),
        Route("/api/figure", api(figure), methods=["POST"]),
        Route("/api/save", api(save), methods=["POST"]),
        Route("/api/sign", api(sign), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.csrf = csrf
    app.state.sessions = sessions
    return app


class _Unauthorized(ReviewError):
    pass


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
