"""The console's security over real HTTPS (``bodycam-receiver web`` in its own process, the
client verifying the dock-issued certificate): no session → redirect or 401 on every route
including media; forms without their CSRF token → 403; a clerk without an approval gets no
media by URL; ten wrong passwords → locked; every view, playback and download in the custody
log; the response headers; the message catalogue."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import Mount, Route

from receiver.config import ReceiverConfig
from receiver.web import i18n
from receiver.web.app import create_app
from receiver.web.backend import DEADLINE_STATES, REPORT_COLUMNS, Backend
from receiver.web.pages import STATUSES
from tests.support.console import CASE, PASSWORD, SENSITIVE_CASE, Site, build_site, rx

pytestmark = pytest.mark.slow

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = build_site(tmp_path_factory.mktemp("console"))
    s.start()
    try:
        yield s
    finally:
        s.stop()


def client(site: Site) -> httpx.Client:
    return httpx.Client(
        base_url=site.url, verify=ssl.create_default_context(cafile=str(site.ca)), timeout=60
    )


def sign_in(site: Site, user: str, password: str = PASSWORD) -> tuple[httpx.Client, str]:
    """A client with a session; returns it with the session's CSRF token."""
    c = client(site)
    form = c.get("/login")
    token = CSRF.search(form.text)
    assert token, form.text
    r = c.post("/login", data={"user": user, "password": password, "csrf": token.group(1)})
    assert r.status_code == 303, r.text
    page = c.get("/cases" if user != "tom" else "/devices")
    m = CSRF.search(page.text)
    assert m, page.text
    return c, m.group(1)


def all_routes(site: Site) -> list[tuple[str, str]]:
    """Every (method, path) the application serves, with real parameter values."""
    app = create_app(Backend(ReceiverConfig(data_dir=site.data)))
    values = {"number": CASE, "session": site.sessions[1], "approval": "1"}
    out = []
    for route in app.routes:
        if isinstance(route, Mount) or not isinstance(route, Route):
            continue
        path = route.path_format.format(**{k: values[k] for k in route.param_convertors})
        out += [(m, path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return out


def test_without_a_session_every_route_redirects_to_sign_in_or_answers_401(site: Site) -> None:
    routes = all_routes(site)
    assert ("GET", f"/media/{site.sessions[1]}.mp4") in routes
    assert len(routes) >= 20
    with client(site) as c:
        for method, path in routes:
            if path == "/login":
                continue
            r = c.request(method, path, data={"csrf": "x"} if method == "POST" else None)
            if path.startswith("/media/"):
                assert r.status_code == 401, path
                assert not r.content.startswith(b"\x00\x00"), path
            else:
                assert r.status_code == 303, (method, path, r.status_code)
                assert r.headers["location"].startswith("/login"), (method, path)
        # an unknown address tells a stranger nothing either
        assert c.get("/no/such/page").headers["location"].startswith("/login")


def test_forms_without_their_csrf_token_are_refused(site: Site) -> None:
    c, token = sign_in(site, "clara")
    for data in ({}, {"csrf": "forged"}, {"csrf": token[:-1] + "x"}):
        r = c.post(
            "/approvals/request", data={**data, "case": CASE, "purpose": "view", "reason": "court"}
        )
        assert r.status_code == 403, r.text
    assert "court" not in c.get("/approvals").text  # nothing was requested
    # the sign-in form is protected too (double-submit cookie)
    fresh = client(site)
    r = fresh.post("/login", data={"user": "clara", "password": PASSWORD})
    assert r.status_code == 403
    assert "bodycam_session" not in r.headers.get("set-cookie", "")
    # with the token the same request goes through
    r = c.post(
        "/approvals/request",
        data={"csrf": token, "case": CASE, "purpose": "view", "reason": "court"},
    )
    assert r.status_code == 303


def test_a_clerk_without_approval_gets_no_media_by_url(site: Site) -> None:
    sensitive = site.sessions[1]
    c, token = sign_in(site, "clara")
    assert c.get(f"/media/{sensitive}.mp4").status_code == 403
    assert c.get(f"/media/{sensitive}.mp4", headers={"range": "bytes=100-"}).status_code == 403
    assert c.get(f"/sessions/{sensitive}").status_code == 403
    assert c.get("/media/no-such-session.mp4").status_code == 404
    # a request is not a grant; a supervisor may not grant on a personal-privacy case
    c.post(
        "/approvals/request",
        data={"csrf": token, "case": SENSITIVE_CASE, "purpose": "view", "reason": "hearing"},
    )
    s, s_token = sign_in(site, "sven")
    approval = max(int(a) for a in re.findall(r"/approvals/(\d+)/decide", s.get("/approvals").text))
    r = s.post(f"/approvals/{approval}/decide", data={"csrf": s_token, "decision": "grant"})
    assert r.status_code == 403
    assert c.get(f"/media/{sensitive}.mp4").status_code == 403
    # the head may; then the clerk (only she) gets the media
    h, h_token = sign_in(site, "hanna")
    r = h.post(f"/approvals/{approval}/decide", data={"csrf": h_token, "decision": "grant"})
    assert r.status_code == 303
    media = c.get(f"/media/{sensitive}.mp4")
    assert media.status_code == 200
    assert media.headers["content-type"] == "video/mp4"
    assert media.content[4:8] == b"ftyp"
    assert h.get(f"/media/{sensitive}.mp4").status_code == 403  # not her approval
    a, _ = sign_in(site, "audrey")
    assert a.get(f"/media/{sensitive}.mp4").status_code == 403  # auditors see no media


def test_ten_wrong_passwords_lock_the_account(site: Site, tmp_path: Path) -> None:
    # its own console process, so the lock does not spill into the other tests
    other = Site(tmp_path, site.data, site.ca, site.cert, site.key, site.port + 1, site.sessions)
    from tests.support.broker import free_port

    other.port = free_port()
    other.start()
    try:
        c = client(other)
        statuses = []
        for _ in range(10):
            token = CSRF.search(c.get("/login").text)
            assert token
            r = c.post(
                "/login",
                data={"user": "clara", "password": "wrong password!", "csrf": token.group(1)},
            )
            statuses.append(r.status_code)
        assert statuses[:5] == [401] * 5, statuses
        assert statuses[-1] == 429, statuses
        token = CSRF.search(c.get("/login").text)
        assert token
        r = c.post("/login", data={"user": "clara", "password": PASSWORD, "csrf": token.group(1)})
        assert r.status_code == 429
        assert "bodycam_session" not in r.headers.get("set-cookie", "")
    finally:
        other.stop()
    # sign-in refusals are not about a case: the whole log holds them
    whole = rx(site.data, "custody", "log", "--json", user="audrey")
    assert whole.count('"action": "log in"') >= 5


def test_each_view_playback_and_download_is_in_the_custody_log(site: Site) -> None:
    session = site.sessions[0]
    c, token = sign_in(site, "clara")
    # file the inbox session through the console, then ask for view and export
    r = c.post("/inbox/file", data={"csrf": token, "session": session, "case": CASE})
    assert r.status_code == 303
    for purpose in ("view", "export"):
        c.post(
            "/approvals/request",
            data={"csrf": token, "case": CASE, "purpose": purpose, "reason": "court"},
        )
    s, s_token = sign_in(site, "sven")
    for approval in re.findall(r"/approvals/(\d+)/decide", s.get("/approvals").text):
        s.post(f"/approvals/{approval}/decide", data={"csrf": s_token, "decision": "grant"})
    before = len(site.custody(CASE))
    assert c.get(f"/cases/{CASE}").status_code == 200
    assert c.get(f"/media/{session}.mp4").status_code == 200
    r = c.post(f"/cases/{CASE}/export", data={"csrf": token})
    assert r.status_code == 200
    assert r.content[:2] == b"PK"
    entries = site.custody(CASE)[before:]
    kinds = [(e["kind"], e.get("actor")) for e in entries]
    assert ("view", "clara") in kinds
    assert ("playback", "clara") in kinds
    assert ("export", "clara") in kinds
    played = {e.get("seq") for e in entries if e["kind"] == "playback"}
    assert len(played) >= 3  # every segment of the session, each with its approval
    assert all(e.get("approval") for e in entries if e["kind"] == "playback")


def test_headers_and_cookie_flags(site: Site) -> None:
    with client(site) as c:
        page = c.get("/login")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "<script" not in page.text
        assert "style=" not in page.text
        token = CSRF.search(page.text)
        assert token
        r = c.post("/login", data={"user": "clara", "password": PASSWORD, "csrf": token.group(1)})
        cookie = r.headers["set-cookie"].lower()
        assert "bodycam_session=" in cookie
        assert "httponly" in cookie
        assert "secure" in cookie
        assert "samesite=strict" in cookie


def test_every_message_the_templates_use_is_in_both_languages() -> None:
    templates = Path(i18n.__file__).parent / "templates"
    used = set()
    for path in templates.glob("*.html"):
        used |= set(re.findall(r't\("([a-z_.]+)"', path.read_text()))
    used = {k for k in used if not k.endswith(".")}
    # keys the templates build from a prefix and a value
    used |= {f"deadline.{k}" for k in DEADLINE_STATES} | {f"status.{k}" for k in STATUSES}
    used |= {f"approvals.{k}" for k in ("view", "export")}
    used |= {f"report.col.{k}" for k in REPORT_COLUMNS} | {"deadline.ok", "deadline.late"}
    used |= {f"deadline.{p}.{k}" for p in ("kind", "when") for k in ("file", "store")}
    missing = sorted(k for k in used if k not in i18n.CATALOGUE)
    assert not missing
    assert all(zh and en and zh != en for zh, en in i18n.CATALOGUE.values() if zh != "-")


def test_roles_open_only_their_pages(site: Site) -> None:
    tech, _ = sign_in(site, "tom")
    assert tech.get("/").headers["location"] == "/devices"
    assert tech.get("/devices").status_code == 200
    for path in ("/cases", f"/cases/{CASE}", "/inbox", "/approvals", "/report"):
        assert tech.get(path).status_code == 403, path
    assert tech.get(f"/media/{site.sessions[0]}.mp4").status_code == 403
    auditor, a_token = sign_in(site, "audrey")
    assert auditor.get(f"/cases/{CASE}/custody").status_code == 200
    assert auditor.get("/report").status_code == 200
    assert auditor.get("/inbox").status_code == 403
    r = auditor.post("/inbox/file", data={"csrf": a_token, "session": "x", "case": CASE})
    assert r.status_code == 403


def test_a_case_number_with_a_slash_opens_with_its_pages(site: Site) -> None:
    number = "2026/017"
    rx(site.data, "case", "create", "--number", number, "--type", "inspection",
       "--title", "斜杠案号", "--party", "某学校", user="clara")  # fmt: skip
    clerk, _ = sign_in(site, "clara")
    listing = clerk.get("/cases").text
    assert 'href="/cases/2026/017"' in listing
    for path in ("/cases/2026/017", "/cases/2026%2F017"):
        page = clerk.get(path)
        assert page.status_code == 200, path
        assert "斜杠案号" in page.text
    auditor, token = sign_in(site, "audrey")
    custody = auditor.get("/cases/2026/017/custody")
    assert custody.status_code == 200
    assert "斜杠案号" in custody.text or number in custody.text
    verified = auditor.post("/cases/2026/017/custody/verify", data={"csrf": token})
    assert verified.status_code == 200
    assert clerk.get("/cases/2026/999").status_code == 404


def test_hostile_requests_get_short_answers(site: Site) -> None:
    c, token = sign_in(site, "clara")
    for path in (
        "/media/..%2F..%2Fetc%2Fpasswd.mp4",
        "/media/%00.mp4",
        "/sessions/nope",
        "/cases/%3Cscript%3E",
        "/cases/x/export",
    ):
        r = c.get(path)
        assert r.status_code in (403, 404), (path, r.status_code)
        assert "Traceback" not in r.text
        assert "<script>" not in r.text
    r = c.post(
        "/approvals/request",
        data={"csrf": token, "case": CASE, "purpose": "view", "reason": "x" * 100_000},
    )
    assert r.status_code in (400, 409)
    assert "Traceback" not in r.text
    r = c.post("/approvals/not-a-number/decide", data={"csrf": token, "decision": "grant"})
    assert r.status_code in (403, 404)
    r = c.get("/report?from=yesterday")
    assert r.status_code == 409
    assert "YYYY-MM-DD" in r.text
    # after signing in, "next" never leads off the site
    fresh = client(site)
    token2 = CSRF.search(fresh.get("/login").text)
    assert token2
    r = fresh.post(
        "/login",
        data={
            "user": "clara",
            "password": PASSWORD,
            "csrf": token2.group(1),
            "next": "//evil.example/",
        },
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/cases"
    assert site.proc is not None
    assert site.proc.poll() is None


def test_a_refused_request_gives_nothing(site: Site) -> None:
    c, token = sign_in(site, "clara")
    c.post(
        "/approvals/request",
        data={
            "csrf": token,
            "case": SENSITIVE_CASE,
            "purpose": "export",
            "reason": "for the party",
        },
    )
    h, h_token = sign_in(site, "hanna")
    pending = re.findall(r"/approvals/(\d+)/decide", h.get("/approvals").text)
    assert pending
    latest = max(int(a) for a in pending)
    r = h.post(f"/approvals/{latest}/decide", data={"csrf": h_token, "decision": "refuse"})
    assert r.status_code == 303
    row = re.search(rf'<tr class="(\w+)"><td>{latest}</td>', c.get("/approvals").text)
    assert row
    assert row.group(1) == "refused"
    assert "download" not in c.get(f"/cases/{SENSITIVE_CASE}/export").text
    r = c.post(f"/cases/{SENSITIVE_CASE}/export", data={"csrf": token})
    assert r.status_code == 403
    assert r.content[:2] != b"PK"
    refused = [e for e in site.custody(SENSITIVE_CASE) if e["kind"] == "approval-refusal"]
    assert refused
    assert refused[-1]["actor"] == "hanna"
