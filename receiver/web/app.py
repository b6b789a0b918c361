"""The review console's routes: server-rendered pages (Starlette + Jinja2), no page script.

Every route except the sign-in page and the static files needs a signed-in user whose role may
open it (:data:`PAGE_NEEDS`); media additionally need an approval where the case requires one,
checked on every request, so a guessed or shared media URL gets nothing. Every POST is checked
for the session's CSRF token before its handler runs. Views, playbacks and downloads are
written to the custody log through the backend.

Failure posture: a user's mistake is a page with one line (400/403/404/409), never a traceback;
an unexpected error is logged with its traceback and answered 500 without detail.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from receiver.access import PERMISSIONS, AccessDenied
from receiver.errors import ConflictError, InvalidInputError, NotFoundError, ReceiverError
from receiver.web import i18n
from receiver.web.backend import Backend, Forbidden, Principal, Unavailable
from receiver.web.media import PlaybackError
from receiver.web.security import (
    SESSION_COOKIE,
    LoginThrottle,
    SecurityHeaders,
    Session,
    SessionStore,
    csrf_ok,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
LANG_COOKIE = "bodycam_lang"
LOGIN_COOKIE = "bodycam_login"
MAX_FORM_FIELDS = 50
MAX_FIELD_CHARS = 2000
MAX_FORM_BYTES = 64 * 1024

#: which permissions (receiver.access.PERMISSIONS) open which part of the console; media need
#: a granted approval on top, per case and per request
PAGE_NEEDS: dict[str, frozenset[str]] = {
    "cases": frozenset({"read-cases"}),
    "inbox": frozenset({"manage-cases"}),
    "assignments": frozenset({"manage-cases"}),
    "approvals": frozenset({"request", "approve", "audit"}),
    "decide": frozenset({"approve"}),
    "export": frozenset({"request"}),
    "report": frozenset({"read-cases", "audit"}),
    "devices": frozenset({"manage-devices", "read-cases"}),
    "quarantine": frozenset({"manage-devices", "read-cases"}),
    "custody": frozenset({"read-custody", "read-cases"}),
}


def may_open(role: str, page: str) -> bool:
    return bool(PERMISSIONS.get(role, frozenset()) & PAGE_NEEDS[page])


Handler = Callable[[Request, Session], Awaitable[Response]]


class Console:
    """The application object: templates, sessions, throttle and the backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.sessions = SessionStore()
        self.throttle = LoginThrottle()
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["localtime"] = backend.local_time

    # -- rendering -------------------------------------------------------------------------
    def render(
        self,
        request: Request,
        template: str,
        session: Session | None,
        status: int = 200,
        **ctx: Any,
    ) -> HTMLResponse:
        lang = language(request)
        t = i18n.translator(lang)
        csrf = ctx.pop("csrf", session.csrf if session else "")
        html = self.env.get_template(template).render(
            t=t,
            name=i18n.namer(lang),
            lang=lang,
            user=session,
            csrf=csrf,
            can=lambda page: session is not None and may_open(session.role, page),
            other_lang="en" if lang == "zh" else "zh",
            path=request.url.path,
            **ctx,
        )
        return HTMLResponse(html, status_code=status)

    def error(
        self, request: Request, session: Session | None, status: int, message: str
    ) -> HTMLResponse:
        return self.render(request, "error.html", session, status=status, message=message)


def language(request: Request) -> str:
    lang = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE, "")
    return lang if lang in i18n.LANGUAGES else i18n.DEFAULT_LANGUAGE


def principal(session: Session) -> Principal:
    return Principal(session.user, session.role, session.display)


async def form_of(request: Request) -> FormData:
    """The request's form, bounded: no files, few fields, short values (a console form is
    small; anything else is refused before a handler sees it)."""
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        raise InvalidInputError("form", f"larger than {MAX_FORM_BYTES} bytes")
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    for value in form.values():
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            raise InvalidInputError("form", f"a field is longer than {MAX_FIELD_CHARS} characters")
    return form


def text(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def guarded(console: Console, page: str | None, handler: Handler) -> Callable[..., Any]:
    """Sign-in, role and CSRF checks around a handler; ReceiverErrors become short pages."""

    async def endpoint(request: Request) -> Response:
        session = console.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            if request.url.path.startswith("/media/"):
                return Response("sign in first\n", status_code=401, media_type="text/plain")
            return RedirectResponse("/login?" + urlencode({"next": request.url.path}), 303)
        fresh = await asyncio.to_thread(console.backend.current, session.user)
        if fresh is None:  # disabled or removed since signing in
            console.sessions.end(session.id)
            return RedirectResponse("/login", 303)
        session.role = fresh.role
        t = i18n.translator(language(request))
        if page is not None and not may_open(session.role, page):
            return console.error(request, session, 403, t("error.forbidden"))
        try:
            if request.method == "POST":
                form = await form_of(request)
                if not csrf_ok(session, form.get("csrf")):
                    log.warning(
                        "CSRF token missing or wrong for %s on %s", session.user, request.url
                    )
                    return console.error(request, session, 403, t("error.csrf"))
            response = await handler(request, session)
        except HTTPException as exc:  # e.g. a form the parser refuses (too many fields, too big)
            return console.error(request, session, 400, str(exc.detail))
        except PlaybackError as exc:  # a stored segment PyAV cannot read: say which, once
            log.warning("playback of %s refused: %s", request.url.path, exc)
            return console.error(request, session, 422, f"{t('error.playback')}: {exc}")
        except AccessDenied as exc:
            return console.error(request, session, 403, f"{t('error.forbidden')}: {exc.reason}")
        except Forbidden as exc:
            return console.error(request, session, 403, f"{t('error.forbidden')}: {exc.reason}")
        except NotFoundError as exc:
            return console.error(request, session, 404, f"{t('error.notfound')}: {exc}")
        except Unavailable as exc:
            return console.error(request, session, 501, f"{t('error.unavailable')}: {exc.what}")
        except (ConflictError, InvalidInputError) as exc:
            return console.error(request, session, 409, str(exc))
        except ReceiverError as exc:
            return console.error(request, session, 400, str(exc))
        if request.query_params.get("lang") in i18n.LANGUAGES:
            response.set_cookie(
                LANG_COOKIE, language(request), secure=True, httponly=True, samesite="strict"
            )
        return response

    return endpoint


# -- sign-in -------------------------------------------------------------------------------


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _safe_next(target: str) -> str:
    """A local path to go to after signing in, or "" (the role's landing page); never an open
    redirect to another site (``//host`` and ``/\\host`` are other sites to a browser)."""
    local = target.startswith("/") and not target.startswith(("//", "/\\"))
    return target if local and len(target) < 500 else ""


def landing(role: str) -> str:
    """The first page this role may open."""
    for page in ("cases", "devices", "approvals"):
        if may_open(role, page):
            return f"/{page}"
    return "/cases"


def sign_in_routes(console: Console) -> list[Route]:
    def login_form(request: Request, status: int = 200, **ctx: Any) -> Response:
        # double-submit token: a sign-in form posted from another site lacks the cookie. An
        # existing token is kept, so a second sign-in page loaded alongside (another tab, the
        # browser's favicon request redirected here) does not invalidate the first form.
        token = request.cookies.get(LOGIN_COOKIE, "")
        if not (32 <= len(token) <= 64 and token.replace("-", "").replace("_", "").isalnum()):
            token = secrets.token_urlsafe(32)
        response = console.render(request, "login.html", None, status=status, csrf=token, **ctx)
        response.set_cookie(
            LOGIN_COOKIE, token, secure=True, httponly=True, samesite="strict", path="/login"
        )
        return response

    async def login_page(request: Request) -> Response:
        return login_form(request, next=_safe_next(request.query_params.get("next", "")))

    async def login(request: Request) -> Response:
        t = i18n.translator(language(request))
        try:
            form = await form_of(request)
        except (InvalidInputError, HTTPException):
            return console.error(request, None, 400, t("login.failed"))
        name, password, client = text(form, "user"), form.get("password"), _client(request)
        target = _safe_next(text(form, "next"))
        cookie, token = request.cookies.get(LOGIN_COOKIE, ""), form.get("csrf")
        if not (cookie and isinstance(token, str) and hmac.compare_digest(cookie, token)):
            return console.error(request, None, 403, t("error.csrf"))
        wait = console.throttle.wait_s(name, client)
        if wait > 0:
            return login_form(request, 429, next=target, message=t("login.locked", s=int(wait) + 1))
        who = None
        if isinstance(password, str) and name:
            who = await asyncio.to_thread(console.backend.authenticate, name, password, client)
        if who is None:
            console.throttle.failed(name, client)
            return login_form(request, 401, next=target, message=t("login.failed"))
        console.throttle.succeeded(name, client)
        session = console.sessions.create(who.name, who.role, who.display)
        response = RedirectResponse(target or landing(who.role), 303)
        response.set_cookie(
            SESSION_COOKIE, session.id, secure=True, httponly=True, samesite="strict", path="/"
        )
        return response

    async def logout(request: Request, session: Session) -> Response:
        console.sessions.end(session.id)
        console.backend.signed_out(principal(session))
        response = RedirectResponse("/login", 303)
        response.delete_cookie(
            SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict"
        )
        return response

    return [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", guarded(console, None, logout), methods=["POST"]),
    ]


def create_app(backend: Backend) -> Starlette:
    from receiver.web import pages

    console = Console(backend)

    async def home(request: Request, session: Session) -> Response:
        return RedirectResponse(landing(session.role), 303)

    async def not_found(request: Request, exc: Exception) -> Response:
        session = console.sessions.get(request.cookies.get(SESSION_COOKIE))
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        if session is None:  # nothing about the site's shape for strangers
            return RedirectResponse("/login", 303)
        return console.error(request, session, status, str(getattr(exc, "detail", "")))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s", request.url.path, exc_info=exc)
        return HTMLResponse("internal error\n", status_code=500)

    routes = [
        Route("/", guarded(console, None, home), methods=["GET"]),
        *sign_in_routes(console),
        *pages.routes(console),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={
            404: not_found,
            405: not_found,
            500: server_error,
        },
    )
    app.state.console = console
    return app
