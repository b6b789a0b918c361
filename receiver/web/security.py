"""The console's security baseline: sessions, CSRF tokens, login throttling, response headers.

- Sessions live on the server (a random 256-bit id in an ``HttpOnly; Secure; SameSite=Strict``
  cookie); signing out or an idle timeout ends them for good, and a stolen cookie cannot be
  replayed after that.
- Every form carries the session's CSRF token; a POST without the right one is refused (403)
  before its handler runs. SameSite=Strict is the second line, not the only one.
- Failed sign-ins are counted per account and per client address; after
  :data:`FREE_ATTEMPTS` failures each further attempt waits out a lock that doubles up to
  :data:`MAX_LOCK_S` (the right password is refused too while locked), so guessing is slowed to
  a crawl without a permanent lock-out an attacker could use against a clerk.
- Every response gets a CSP without inline scripts or styles, ``frame-ancestors 'none'``,
  ``nosniff``, ``no-referrer`` and HSTS.

Failure posture: state is in memory and bounded (old sessions and counters are swept); a
restart signs everybody out, which is the safe direction. Core logic is I/O-free: times come
from the caller's clock.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

SESSION_COOKIE = "bodycam_session"
IDLE_TIMEOUT_S = 30 * 60
MAX_SESSIONS = 10_000
FREE_ATTEMPTS = 5
MAX_LOCK_S = 15 * 60
MAX_TRACKED = 10_000

HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "strict-transport-security": "max-age=31536000",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


@dataclass
class Session:
    id: str
    user: str
    role: str
    display: str
    csrf: str
    last_used: float


@dataclass
class SessionStore:
    clock: Callable[[], float] = time.monotonic
    _sessions: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, user: str, role: str, display: str) -> Session:
        with self._lock:
            self._sweep()
            token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
            s = Session(token, user, role, display, csrf, self.clock())
            self._sessions[s.id] = s
            return s

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None:
                return None
            now = self.clock()
            if now - s.last_used > IDLE_TIMEOUT_S:
                del self._sessions[session_id]
                return None
            s.last_used = now
            return s

    def end(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def _sweep(self) -> None:
        now = self.clock()
        for sid in [k for k, s in self._sessions.items() if now - s.last_used > IDLE_TIMEOUT_S]:
            del self._sessions[sid]
        while len(self._sessions) >= MAX_SESSIONS:  # oldest first
            oldest = min(self._sessions.values(), key=lambda s: s.last_used)
            del self._sessions[oldest.id]


def csrf_ok(session: Session | None, token: object) -> bool:
    return (
        session is not None
        and isinstance(token, str)
        and hmac.compare_digest(session.csrf.encode(), token.encode())
    )


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0


@dataclass
class LoginThrottle:
    """Failure counters keyed by account and by client address (both must be free)."""

    clock: Callable[[], float] = time.monotonic
    _keys: dict[str, _Failures] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_s(self, user: str, client: str) -> float:
        """Seconds until a sign-in for this account from this address may be tried; 0: now."""
        now = self.clock()
        with self._lock:
            found = [self._keys.get(k) for k in self._names(user, client)]
        return max([0.0, *(f.locked_until - now for f in found if f is not None)])

    def failed(self, user: str, client: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._keys) >= MAX_TRACKED:
                self._keys = {k: f for k, f in self._keys.items() if f.locked_until > now}
            for key in self._names(user, client):
                f = self._keys.setdefault(key, _Failures())
                f.count += 1
                if f.count >= FREE_ATTEMPTS:
                    lock = min(2.0 ** (f.count - FREE_ATTEMPTS), MAX_LOCK_S)
                    f.locked_until = now + lock
                    log.warning("sign-in %s: %d failures, locked for %.0f s", key, f.count, lock)

    def succeeded(self, user: str, client: str) -> None:
        with self._lock:
            self._keys.pop(f"user:{user}", None)

    @staticmethod
    def _names(user: str, client: str) -> tuple[str, str]:
        return (f"user:{user}", f"addr:{client}")


class SecurityHeaders:
    """ASGI middleware adding :data:`HEADERS` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                for name, value in HEADERS.items():
                    if name.encode() not in have:
                        headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
