"""Channels middleware: who is at the other end of a chat WebSocket, and from where.

``ChatAuthMiddlewareStack(inner)`` wraps any consumer the way Channels'
``AuthMiddlewareStack`` does::

    application = URLRouter([path("ws/chat/", ChatAuthMiddlewareStack(MyConsumer))])

It is :class:`OriginValidator` (a foreign ``Origin`` is refused at the handshake,
HTTP 403, and audited) around :class:`ChatAuthMiddleware`, which resolves the
credentials in the contract's order and puts the result in the scope:

``scope["user"]``
    a :class:`~chatauth.authentication.TokenUser` (``pk``, ``identifier``,
    ``get_user()`` loads the model instance when needed);
``scope["chatauth"]``
    a :class:`SocketAuth`: the :class:`~chatauth.tokens.VerifiedToken` (claims,
    denylist key, expiry), where the credential came from, and the subprotocol
    the server answers with.

The inner application only ever sees an authenticated connection.  A credential
that is presented but bad (invalid, expired, revoked, a refresh token) is refused
by accepting and closing at once with 4401 or 4410: a browser cannot read the
HTTP status of a refused handshake (it only sees 1006), and the client must tell
"refresh the token" (4401) from "log in again" (4410).  Without any handshake
credential the socket is accepted and the first frame must be
``{"type": "auth", "token": ...}`` within ``AUTH_TIMEOUT`` seconds (else 4408);
the inner application then starts as if the connection had just arrived.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.http.cookie import parse_cookie

from chatauth import audit, signals, websessions
from chatauth.conf import settings
from chatauth.constants import CloseCode, Method
from chatauth.exceptions import TokenError, close_code
from chatauth.internal.http import (
    Origin,
    address_bucket,
    parse_origin,
    scope_client,
    split_host,
)
from chatauth.tokens import MAX_TOKEN_LENGTH, VerifiedToken, averify_token

logger = logging.getLogger("chatauth.middleware")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: ``new WebSocket(url, ["chatauth.bearer", token])``: browsers cannot set an
#: Authorization header on a WebSocket, but they can offer subprotocols.
SUBPROTOCOL = "chatauth.bearer"


class Source:
    """Where a socket's credential came from (``SocketAuth.source``, audit reason)."""

    HEADER = "header"
    SUBPROTOCOL = "subprotocol"
    QUERY = "query"
    COOKIE = "cookie"  # settings.AUTH_COOKIE: an access token
    SESSION = "session"  # Django's session cookie
    MESSAGE = "message"  # a first {"type": "auth"} frame


@dataclass(frozen=True, slots=True)
class SocketAuth:
    """``scope["chatauth"]`` of an authenticated socket."""

    token: VerifiedToken
    source: str
    subprotocol: str | None = None

    @property
    def claims(self) -> dict[str, Any]:
        return self.token.claims


@dataclass(frozen=True, slots=True)
class Credential:
    source: str
    value: str  # a raw token, or a session key for Source.SESSION
    fallback_session: str | None = None  # session key behind a bad auth cookie


# --- Reading the handshake --------------------------------------------------------


def header(scope: Scope, name: bytes) -> str | None:
    """The value of header ``name`` (lower case), several joined as RFC 9110 says."""
    values = [v for k, v in scope.get("headers", ()) if k == name]
    if not values:
        return None
    joiner = b"; " if name == b"cookie" else b", "
    return joiner.join(values).decode("latin-1")


def find_credential(scope: Scope) -> Credential | None:
    """The first credential of the handshake in the contract's order, or None.

    Explicit credentials (header, subprotocol, query string) come before ambient
    ones (cookies): a widget handed a token must not be overridden by whatever
    cookie the browser also holds.  The first one present decides; a bad one is
    not silently replaced by the next.
    """
    authorization = header(scope, b"authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            return Credential(Source.HEADER, token.strip())
    subprotocols = scope.get("subprotocols") or ()
    if SUBPROTOCOL in subprotocols:
        index = list(subprotocols).index(SUBPROTOCOL)
        token = subprotocols[index + 1] if index + 1 < len(subprotocols) else ""
        return Credential(Source.SUBPROTOCOL, token)
    if settings.ALLOW_QUERY_STRING_TOKEN:
        # Opt-in only: query strings end up in access logs and browser history.
        query = scope.get("query_string", b"").decode("latin-1")
        tokens = parse_qs(query).get("token")
        if tokens:
            return Credential(Source.QUERY, tokens[0])
    cookie_header = header(scope, b"cookie")
    if cookie_header:
        cookies = parse_cookie(cookie_header)
        session_key = cookies.get(django_settings.SESSION_COOKIE_NAME) or None
        access = cookies.get(settings.AUTH_COOKIE)
        if access:
            return Credential(Source.COOKIE, access, fallback_session=session_key)
        if session_key:
            return Credential(Source.SESSION, session_key)
    return None


# --- Checking a credential --------------------------------------------------------


async def authenticate(credential: Credential) -> SocketAuth:
    """Check ``credential``; raise :class:`TokenError` with the refusal's code."""
    if credential.source == Source.SESSION:
        verified = await database_sync_to_async(websessions.identity)(credential.value)
        return SocketAuth(verified, Source.SESSION)
    try:
        verified = await averify_token(credential.value)
    except TokenError:
        if not credential.fallback_session:
            raise
        # An auth cookie left over from an expired or revoked login, next to a
        # live Django session: the browser sent both without the user choosing.
        verified = await database_sync_to_async(websessions.identity)(
            credential.fallback_session
        )
        return SocketAuth(verified, Source.SESSION)
    subprotocol = SUBPROTOCOL if credential.source == Source.SUBPROTOCOL else None
    return SocketAuth(verified, credential.source, subprotocol)


def auth_message_token(text: str | None) -> str | None:
    """The token of a ``{"type": "auth", "token": "..."}`` frame, else None."""
    if text is None or len(text) > MAX_TOKEN_LENGTH + 256:
        return None
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[...", 8 KB of it
        return None
    if not isinstance(payload, dict) or payload.get("type") != "auth":
        return None
    token = payload.get("token")
    return token if isinstance(token, str) else None


async def audit_refusal(scope: Scope, reason: str, sender: type) -> None:
    """Send ``auth_refused`` (audited as ``session_refused``); never raises."""
    from chatauth.models import AuditEvent

    try:
        await database_sync_to_async(signals.auth_refused.send)(
            sender=sender,
            event=AuditEvent.Event.SESSION_REFUSED,
            identifier="",
            method=Method.WEBSOCKET,
            reason=reason,
            request=None,
            scope=scope,
        )
    except Exception:  # the refusal stands whether or not it could be recorded
        logger.exception("could not audit a refused chat session")


# --- The middleware ---------------------------------------------------------------


class ChatAuthMiddleware:
    """Authenticate a WebSocket before the inner application sees it."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or "chatauth" in scope:
            return await self.inner(scope, receive, send)  # not ours, or done
        scope = dict(scope)  # as channels.middleware.BaseMiddleware: never upstream
        send = _closing_anyhow(send)
        address = address_bucket(scope_client(scope)[0])
        if _pending[address] >= settings.MAX_PENDING_SOCKETS_PER_ADDRESS:
            # Sockets of this address not authenticated yet: a flood of them
            # would hold the worker's memory (and the auth timeout's tasks).
            if await _accept(receive, send, None):
                await send(_too_many("pending_sockets_per_address"))
            return await audit_refusal(scope, "too_many_pending", type(self))
        _pending[address] += 1
        try:
            inner = await self._authenticate(scope, receive, send)
        finally:
            _pending[address] -= 1
            if not _pending[address]:
                del _pending[address]
        if inner is not None:
            await inner()

    async def _authenticate(
        self, scope: Scope, receive: Receive, send: Send
    ) -> Callable[[], Awaitable[None]] | None:
        """Authenticate the socket; what runs next (the inner application), or
        None when it was refused."""
        credential = find_credential(scope)
        if credential is None:
            return await self._first_message(scope, receive, send)
        try:
            auth = await authenticate(credential)
        except TokenError as e:
            subprotocol = (
                SUBPROTOCOL if credential.source == Source.SUBPROTOCOL else None
            )
            if await _accept(receive, send, subprotocol):
                await send({"type": "websocket.close", "code": close_code(e)})
            return await audit_refusal(scope, e.code, type(self))
        except Exception:
            logger.exception("could not check a chat session's credentials")
            if await _accept(receive, send, None):
                await send({"type": "websocket.close", "code": CloseCode.SERVER_ERROR})
            return None
        _authenticated(scope, auth)
        if auth.subprotocol:
            send = _answering(send, auth.subprotocol)
        return functools.partial(self.inner, scope, receive, send)

    async def _first_message(
        self, scope: Scope, receive: Receive, send: Send
    ) -> Callable[[], Awaitable[None]] | None:
        """Accept, then wait ``AUTH_TIMEOUT`` for a ``{"type": "auth"}`` frame."""
        if not await _accept(receive, send, None):
            return None
        try:
            async with asyncio.timeout(settings.AUTH_TIMEOUT):
                message = await receive()
        except TimeoutError:
            await send({"type": "websocket.close", "code": CloseCode.AUTH_TIMEOUT})
            return await audit_refusal(scope, "auth_timeout", type(self))
        if message["type"] != "websocket.receive":
            return None  # the client went away
        text = message.get("text")
        raw = auth_message_token(text)
        if raw is None:
            oversized = len(text or message.get("bytes") or b"") > (
                settings.MAX_MESSAGE_BYTES
            )
            code = CloseCode.TOO_LARGE if oversized else CloseCode.UNAUTHORIZED
            await send({"type": "websocket.close", "code": code})
            return await audit_refusal(scope, "missing_credentials", type(self))
        try:
            auth = await authenticate(Credential(Source.MESSAGE, raw))
        except TokenError as e:
            await send({"type": "websocket.close", "code": close_code(e)})
            return await audit_refusal(scope, e.code, type(self))
        _authenticated(scope, auth)
        return functools.partial(
            self.inner, scope, _replaying_connect(receive), _accepted(send)
        )


#: Sockets per client address still being authenticated, in this process.
_pending: Counter[str | None] = Counter()


def _too_many(cap: str) -> dict[str, Any]:
    """The close message of a socket over one of the ``MAX_*SOCKETS*`` caps."""
    return {"type": "websocket.close", "code": CloseCode.RATE_LIMITED, "reason": cap}


def _authenticated(scope: Scope, auth: SocketAuth) -> None:
    from chatauth.authentication import TokenUser

    user = TokenUser(auth.token)
    loaded = auth.token.extra.get("user")
    if loaded is not None:
        user.__dict__["_user"] = loaded  # prime get_user(): no second query
    scope["user"] = user
    scope["chatauth"] = auth
    # What the socket's user does from now on (its logout) is theirs.
    audit.set_actor(audit.actor_of(user))


async def _accept(receive: Receive, send: Send, subprotocol: str | None) -> bool:
    """Take the client's ``websocket.connect`` and accept; False if it left."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return False
    await send({"type": "websocket.accept", "subprotocol": subprotocol})
    return True


def _answering(send: Send, subprotocol: str) -> Send:
    """Answer the handshake with ``subprotocol`` unless the application chose one:
    a browser fails a connection whose offered subprotocols get no answer."""

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": subprotocol}
        await send(message)

    return wrapped


def _closing_anyhow(send: Send) -> Send:
    """``send`` whose close codes every ASGI server can send: a plain ``int``
    (daphne's autobahn refuses an ``IntEnum``), and 4503 instead of 1011 on a
    server that refuses to send 1011 (daphne again).  Either refusal raises in
    the server, and the client would wait for a close frame that never comes."""

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] != "websocket.close" or message.get("code") is None:
            return await send(message)
        message = {**message, "code": int(message["code"])}
        try:
            await send(message)
        except Exception:
            if message["code"] != CloseCode.SERVER_ERROR:
                raise
            await send({**message, "code": int(CloseCode.UNAVAILABLE)})

    return wrapped


def _replaying_connect(receive: Receive) -> Receive:
    """``receive`` that first replays the ``websocket.connect`` already consumed."""
    replayed = False

    async def wrapped() -> dict[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "websocket.connect"}
        return await receive()

    return wrapped


def _accepted(send: Send) -> Send:
    """``send`` for a socket this middleware has already accepted.

    The application's own accept is dropped; a refusal before it (a handshake
    403 is no longer possible) becomes close code 4403.
    """
    app_accepted = False

    async def wrapped(message: dict[str, Any]) -> None:
        nonlocal app_accepted
        kind = message["type"]
        if kind == "websocket.accept":
            app_accepted = True
            return
        if kind == "websocket.close" and not app_accepted and "code" not in message:
            message = {**message, "code": CloseCode.FORBIDDEN}
        await send(message)

    return wrapped


# --- Origin -----------------------------------------------------------------------


class OriginValidator:
    """Refuse a browser page from a foreign origin at the handshake (HTTP 403).

    Cross-Site WebSocket Hijacking: a page on any site can open a WebSocket to
    this server, and the browser attaches this site's cookies; unlike HTTP there
    is no CORS preflight, so the ``Origin`` header is the only defence.  An
    origin is the triple (scheme, host, port) of RFC 6454, compared exactly:

    * the listed ``CHATAUTH["ALLOWED_ORIGINS"]`` (``https://app.example.com``,
      ``http://localhost:3000``; no wildcards: ``manage.py check`` reports an
      entry that is not exactly an origin, ``chatauth.E008``);
    * the server's own origin: the socket's scheme (``wss`` is ``https``) with
      the ``Host`` header, when ``ALLOWED_HOSTS`` allows that host (``"*"``
      there allows any ``Host``, never any ``Origin``).

    Another port or scheme of an allowed host is another origin (another app on
    the same machine), and anything that does not parse as an origin --
    ``null`` (sandboxed frames, ``file://``), ``http://127.0.0.1:8765.evil.com``
    -- is refused.  A handshake without ``Origin`` is allowed: browsers always
    send one, and non-browser clients hold their own credentials.
    """

    def __init__(self, application: ASGIApp) -> None:
        self.application = application

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or scope.get("chatauth.origin_checked"):
            return await self.application(scope, receive, send)
        origin = header(scope, b"origin")
        if origin is None or self.origin_allowed(origin, scope):
            scope = {**scope, "chatauth.origin_checked": True}
            return await self.application(scope, receive, send)
        logger.warning(
            "refused a chat WebSocket from origin %.100r: neither in "
            "CHATAUTH['ALLOWED_ORIGINS'] nor this server's own origin (its Host "
            "allowed by ALLOWED_HOSTS)",
            origin,
        )
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close"})  # before accept: HTTP 403
        await audit_refusal(scope, "origin", type(self))

    def origin_allowed(self, origin: str, scope: Scope) -> bool:
        parsed = parse_origin(origin.strip())
        if parsed is None:
            return False
        if parsed in allowed_origins(tuple(settings.ALLOWED_ORIGINS)):
            return True
        return parsed == own_origin(scope)


@functools.lru_cache(maxsize=8)
def allowed_origins(entries: tuple[str, ...]) -> frozenset[Origin]:
    """The configured origins that parse (check E008 reports the others)."""
    return frozenset(o for o in map(parse_origin, entries) if o is not None)


def own_origin(scope: Scope) -> Origin | None:
    """The origin a page of this server has: the socket's scheme and its
    ``Host`` header, if ``ALLOWED_HOSTS`` allows that host (as Django's
    ``HttpRequest.get_host()`` decides, localhost included in DEBUG)."""
    from django.http.request import validate_host

    scheme = "https" if scope.get("scheme") == "wss" else "http"
    host = header(scope, b"host")
    found = split_host(host, scheme) if host else None
    if found is None:
        return None
    allowed = django_settings.ALLOWED_HOSTS
    if django_settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    if not validate_host(found[0], allowed):
        return None
    return scheme, *found


def ChatAuthMiddlewareStack(inner: ASGIApp) -> ASGIApp:  # noqa: N802 (as Channels')
    """Origin check, then authentication, around ``inner``."""
    return OriginValidator(ChatAuthMiddleware(inner))


# --- Django (HTTP) middleware ---------------------------------------------------------


class SessionRevocationMiddleware:
    """chatauth's guard on Django's own request cycle; put it in ``MIDDLEWARE``
    after ``AuthenticationMiddleware`` (``manage.py check``: ``chatauth.E007``).

    * A Django session logged in before its user's last logout everywhere or
      deactivation is ended (flushed) before any view sees it: the admin, the
      project's pages and chatauth's routes alike refuse it, whichever worker
      or process ended the user's access.
    * A login form whose attempt ``chatauth.backends`` throttled is answered
      ``429`` with ``Retry-After`` (the form shows its own error).
    * A page that embeds a copilot token (the template tags) is sent with
      ``Cache-Control: no-store``: no browser or shared cache keeps the token.
    * Whatever the request changes is audited with its user as actor (a staff
      member deactivating a user in the admin is named on that row).

    Requests without a session cookie (API clients with bearer tokens) cost
    nothing here.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        token = audit.set_actor(lambda: audit.actor_of(getattr(request, "user", None)))
        try:
            has_session = self._has_session(request)
            if has_session:
                self._check(request)
            response = self.get_response(request)
            if has_session:
                websessions.follow_key(request)
        finally:
            audit.reset_actor(token)
        return _finish(request, response)

    async def __acall__(self, request: Any) -> Any:
        token = audit.set_actor(lambda: audit.actor_of(getattr(request, "user", None)))
        try:
            has_session = self._has_session(request)
            if has_session:
                await sync_to_async(self._check)(request)
            response = await self.get_response(request)
            if has_session:
                await sync_to_async(websessions.follow_key)(request)
        finally:
            audit.reset_actor(token)
        return _finish(request, response)

    @staticmethod
    def _has_session(request: Any) -> bool:
        return (
            hasattr(request, "session")
            and django_settings.SESSION_COOKIE_NAME in request.COOKIES
        )

    @staticmethod
    def _check(request: Any) -> None:
        if not websessions.end_if_revoked(request):
            websessions.follow_key(request)


def _finish(request: Any, response: Any) -> Any:
    from django.utils.cache import add_never_cache_headers

    from chatauth.backends import RETRY_AFTER, UNAVAILABLE
    from chatauth.copilot import EMBEDS_TOKEN

    retry_after = getattr(request, RETRY_AFTER, None)
    if response.status_code == 200 and retry_after:
        response.status_code = 429
        response["Retry-After"] = str(retry_after)
    elif response.status_code == 200 and getattr(request, UNAVAILABLE, False):
        response.status_code = 503  # the throttle could not count: try again
        response["Retry-After"] = "30"
    if getattr(request, EMBEDS_TOKEN, False):
        add_never_cache_headers(response)
    return response
