"""The console's pages: cases, a case with its timeline, playback and media, inbox and filing,
assignments, approvals, export, the accountability report, devices, quarantine and the custody
log. Each handler is short: parse the request, call the backend, render a template.

Failure posture: see :mod:`receiver.web.app` (errors become short pages; media need a role and,
where the case requires it, an approval, checked per request and logged).
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import date
from typing import Any
from urllib.parse import quote

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from receiver.errors import InvalidInputError, NotFoundError
from receiver.store.console import CaseFilter
from receiver.web.app import Console, form_of, guarded, principal, text
from receiver.web.backend import Forbidden
from receiver.web.security import Session

STATUSES = ("with_sessions", "no_sessions", "quarantine")


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "0")
    return int(raw) if raw.isdigit() and len(raw) < 6 else 0


def _date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        raise InvalidInputError("date", f"{text[:20]!r} is not YYYY-MM-DD") from None


def routes(console: Console) -> list[Route]:
    b = console.backend

    async def cases(request: Request, session: Session) -> Response:
        p = request.query_params
        deadline = p.get("deadline", "")
        f = CaseFilter(
            query=p.get("q", "").strip()[:200],
            enforcement_type=p.get("type", "") if p.get("type") in b.enforcement_types else "",
            status=p.get("status", "") if p.get("status") in STATUSES else "",
            officer=p.get("officer", "").strip()[:200],
            numbers=await asyncio.to_thread(b.cases_in_deadline_state, deadline),
        )
        page = _page_number(request)
        rows, total = await asyncio.to_thread(b.cases, f, page)
        return console.render(
            request,
            "cases.html",
            session,
            rows=rows,
            total=total,
            f=f,
            page=page,
            types=b.enforcement_types,
            statuses=STATUSES,
            officers=await asyncio.to_thread(b.officers),
            deadline=deadline,
            deadline_states=b.deadline_states(),
        )

    async def case(request: Request, session: Session) -> Response:
        number = request.path_params["number"]
        info = await asyncio.to_thread(b.case, number)
        sessions = await asyncio.to_thread(b.case_sessions, number)
        await asyncio.to_thread(b.log_access, principal(session), "case page (console)", number)
        return console.render(
            request,
            "case.html",
            session,
            case=info,
            sessions=sessions,
            deadlines=await asyncio.to_thread(b.case_deadlines, number, sessions),
            media_ok=await asyncio.to_thread(b.media_allowed, principal(session), number),
        )

    async def play(request: Request, session: Session) -> Response:
        sid = request.path_params["session"]
        view, number = await asyncio.to_thread(b.session, sid)
        if not await asyncio.to_thread(b.media_allowed, principal(session), number):
            raise Forbidden("needs an approval to view this case's media")
        remuxed = await asyncio.to_thread(b.playback, view)
        at, seg = request.query_params.get("t", ""), request.query_params.get("segment", "")
        start = float(at) if at.replace(".", "", 1).isdigit() and len(at) < 12 else 0.0
        if seg.isdigit() and int(seg) < len(remuxed.starts_s):
            start = remuxed.starts_s[int(seg)]
        return console.render(
            request,
            "play.html",
            session,
            s=view,
            case_number=number,
            starts=remuxed.starts_s,
            duration=remuxed.duration_s,
            src=f"/media/{quote(sid)}.mp4#t={start:.3f}",
        )

    async def media_file(request: Request, session: Session) -> Response:
        sid = request.path_params["session"]
        try:
            view, number = await asyncio.to_thread(lambda: b.session(sid, verify=False))
        except NotFoundError:
            return Response("not found\n", status_code=404, media_type="text/plain")
        if number is None or not await asyncio.to_thread(
            b.media_allowed, principal(session), number
        ):
            return Response("forbidden\n", status_code=403, media_type="text/plain")
        remuxed = await asyncio.to_thread(b.playback, view)
        rng = request.headers.get("range", "")
        if not rng or rng.replace(" ", "").startswith("bytes=0-"):
            # custody entries per playback start, not per range request of the same one
            await asyncio.to_thread(b.log_playback, principal(session), number, view)
        return FileResponse(
            remuxed.path, media_type="video/mp4", headers={"cache-control": "private, no-store"}
        )

    async def inbox(request: Request, session: Session) -> Response:
        return console.render(
            request,
            "inbox.html",
            session,
            rows=await asyncio.to_thread(b.inbox),
            cases=await asyncio.to_thread(b.all_case_numbers),
            done=request.query_params.get("filed", ""),
        )

    async def file_post(request: Request, session: Session) -> Response:
        form = await form_of(request)
        sid, number = text(form, "session"), text(form, "case")
        await asyncio.to_thread(b.file_session, principal(session), sid, number)
        return RedirectResponse(f"/inbox?filed={quote(sid)}", 303)

    async def assignments(request: Request, session: Session) -> Response:
        return console.render(
            request,
            "assignments.html",
            session,
            rows=await asyncio.to_thread(b.assignments),
            cases=await asyncio.to_thread(b.all_case_numbers),
            stages=b.stages,
            done=request.query_params.get("done", ""),
        )

    async def assign_post(request: Request, session: Session) -> Response:
        form = await form_of(request)
        officers = [o.strip() for o in text(form, "officers").splitlines() if o.strip()]
        await asyncio.to_thread(
            b.assign,
            principal(session),
            text(form, "device"),
            text(form, "case"),
            officers=officers,
            place=text(form, "place"),
            reason=text(form, "reason"),
            target=text(form, "target"),
            stage=text(form, "stage"),
        )
        return RedirectResponse("/assignments?done=1", 303)

    async def unassign_post(request: Request, session: Session) -> Response:
        form = await form_of(request)
        await asyncio.to_thread(b.unassign, principal(session), text(form, "device"))
        return RedirectResponse("/assignments", 303)

    async def approvals(request: Request, session: Session) -> Response:
        return console.render(
            request,
            "approvals.html",
            session,
            rows=await asyncio.to_thread(b.approvals, principal(session)),
            purposes=b.approval_purposes(),
            case_number=request.query_params.get("case", ""),
        )

    async def approval_request(request: Request, session: Session) -> Response:
        form = await form_of(request)
        await asyncio.to_thread(
            b.request_approval,
            principal(session),
            text(form, "case"),
            text(form, "purpose"),
            text(form, "reason"),
        )
        return RedirectResponse("/approvals", 303)

    async def approval_decide(request: Request, session: Session) -> Response:
        form = await form_of(request)
        raw = request.path_params["approval"]
        decision = text(form, "decision")
        if decision not in ("grant", "refuse"):
            raise InvalidInputError("decision", "grant or refuse")
        await asyncio.to_thread(
            b.decide_approval, principal(session), raw, decision == "grant", text(form, "note")
        )
        return RedirectResponse("/approvals", 303)

    async def export_page(request: Request, session: Session) -> Response:
        number = request.path_params["number"]
        return console.render(
            request,
            "export.html",
            session,
            case=await asyncio.to_thread(b.case, number),
            allowed=await asyncio.to_thread(b.export_allowed, principal(session), number),
        )

    async def export_post(request: Request, session: Session) -> Response:
        number = request.path_params["number"]
        path = await asyncio.to_thread(b.export, principal(session), number)
        return FileResponse(
            path,
            media_type="application/zip",
            filename=path.name,
            headers={"cache-control": "private, no-store"},
            # a downloaded case file is not kept on the console (its export is in the custody log)
            background=BackgroundTask(shutil.rmtree, path.parent, ignore_errors=True),
        )

    async def report(request: Request, session: Session) -> Response:
        p = request.query_params
        scope = {
            "period_from": _date(p.get("from", "")),
            "period_to": _date(p.get("to", "")),
            "case": p.get("case", "").strip()[:100] or None,
            "officer": p.get("officer", "").strip()[:100] or None,
        }
        data = await asyncio.to_thread(b.report, principal(session), **scope)
        return console.render(request, "report.html", session, report=data, scope=scope)

    async def devices(request: Request, session: Session) -> Response:
        rows = await asyncio.to_thread(b.devices)
        return console.render(request, "devices.html", session, rows=rows)

    async def quarantine(request: Request, session: Session) -> Response:
        rows = await asyncio.to_thread(b.quarantine)
        return console.render(request, "quarantine.html", session, rows=rows)

    async def custody(request: Request, session: Session) -> Response:
        number = request.path_params["number"]
        info = await asyncio.to_thread(b.case, number)
        entries = await asyncio.to_thread(b.custody_log, principal(session), number)
        return console.render(
            request, "custody.html", session, case=info, entries=entries, verified=None
        )

    async def custody_verify(request: Request, session: Session) -> Response:
        number = request.path_params["number"]
        info = await asyncio.to_thread(b.case, number)
        result = await asyncio.to_thread(b.verify_custody, principal(session), number)
        entries = await asyncio.to_thread(b.custody_log, principal(session), number)
        return console.render(
            request, "custody.html", session, case=info, entries=entries, verified=result
        )

    def r(path: str, page: str, handler: Any, method: str = "GET") -> Route:
        return Route(path, guarded(console, page, handler), methods=[method])

    # Case numbers may hold "/" (2026/017): {number:path}, and the pages under a case are
    # matched before the case itself, which would otherwise take ".../export" as its number.
    return [
        r("/cases", "cases", cases),
        r("/cases/{number:path}/export", "export", export_page),
        r("/cases/{number:path}/export", "export", export_post, "POST"),
        r("/cases/{number:path}/custody", "custody", custody),
        r("/cases/{number:path}/custody/verify", "custody", custody_verify, "POST"),
        r("/cases/{number:path}", "cases", case),
        r("/sessions/{session}", "cases", play),
        r("/media/{session}.mp4", "cases", media_file),
        r("/inbox", "inbox", inbox),
        r("/inbox/file", "inbox", file_post, "POST"),
        r("/assignments", "assignments", assignments),
        r("/assignments/assign", "assignments", assign_post, "POST"),
        r("/assignments/unassign", "assignments", unassign_post, "POST"),
        r("/approvals", "approvals", approvals),
        r("/approvals/request", "approvals", approval_request, "POST"),
        r("/approvals/{approval}/decide", "decide", approval_decide, "POST"),
        r("/report", "report", report),
        r("/devices", "devices", devices),
        r("/quarantine", "quarantine", quarantine),
    ]


__all__ = ["routes"]
