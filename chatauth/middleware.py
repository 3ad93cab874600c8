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
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator as ChannelsOriginValidator
from django.conf import settings as django_settings
from django.http.cookie import parse_cookie

from chatauth import signals
from chatauth.conf import settings
from chatauth.constants import CLOSE_CODE_FOR, CloseCode, Method
from chatauth.exceptions import TokenError
from chatauth.tokens import MAX_TOKEN_LENGTH, VerifiedToken, averify_token

logger = logging.getLogger("chatauth.middleware")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: ``new WebSocket(url, ["chatauth.bearer", token])``: browsers cannot set an
#: Authorization header on a WebSocket, but they can offer subprotocols.
SUBPROTOCOL = "chatauth.bearer"
#: Token type of a session opened with a Django session cookie (no JWT).
SESSION_TOKEN_TYPE = "session"


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


def session_identity(session_key: str) -> VerifiedToken:
    """The logged-in user of Django session ``session_key``, as a token-like record.

    Django's own ``get_user()`` decides (backend, session hash, fallbacks), so a
    password change or ``logout()`` ends the session here exactly as over HTTP.
    Its key is :func:`chatauth.views.session_key_id`, the group HTTP logout of
    that session notifies.
    """
    from importlib import import_module
    from types import SimpleNamespace

    from django.contrib.auth import get_user

    from chatauth import revocation
    from chatauth.adapter import get_adapter
    from chatauth.views import session_key_id

    if len(session_key) > 64:  # Django's keys are 32 characters
        raise TokenError("Not logged in.", code="not_authenticated")
    store = import_module(django_settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(SimpleNamespace(session=store))
    adapter = get_adapter()
    if not user.is_authenticated or not adapter.can_authenticate(user):
        raise TokenError("Not logged in.", code="not_authenticated")
    # Logged out everywhere since this session logged in: refused (4410).
    revocation.check_session(user.pk, store)
    claims = adapter.user_claims(user)
    claims["user_id"] = str(user.pk)
    key = store.session_key or session_key
    return VerifiedToken(
        claims=claims,
        token_type=SESSION_TOKEN_TYPE,
        key=session_key_id(key),
        user_pk=user.pk,
        issued_at=time.time(),
        expires_at=store.get_expiry_date().timestamp(),
        extra={"session_key": key, "user": user},
    )


async def authenticate(credential: Credential) -> SocketAuth:
    """Check ``credential``; raise :class:`TokenError` with the refusal's code."""
    if credential.source == Source.SESSION:
        verified = await database_sync_to_async(session_identity)(credential.value)
        return SocketAuth(verified, Source.SESSION)
    try:
        verified = await averify_token(credential.value)
    except TokenError:
        if not credential.fallback_session:
            raise
        # An auth cookie left over from an expired or revoked login, next to a
        # live Django session: the browser sent both without the user choosing.
        verified = await database_sync_to_async(session_identity)(
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


def close_code(error: TokenError) -> int:
    return int(CLOSE_CODE_FOR.get(error.code, CloseCode.UNAUTHORIZED))


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
                await send({"type": "websocket.close", "code": 1011})
            return None
        _authenticated(scope, auth)
        if auth.subprotocol:
            send = _answering(send, auth.subprotocol)
        return await self.inner(scope, receive, send)

    async def _first_message(self, scope: Scope, receive: Receive, send: Send) -> None:
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
        return await self.inner(scope, _replaying_connect(receive), _accepted(send))


def _authenticated(scope: Scope, auth: SocketAuth) -> None:
    from chatauth.authentication import TokenUser

    user = TokenUser(auth.token)
    loaded = auth.token.extra.get("user")
    if loaded is not None:
        user.__dict__["_user"] = loaded  # prime get_user(): no second query
    scope["user"] = user
    scope["chatauth"] = auth


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


class OriginValidator(ChannelsOriginValidator):
    """Refuse a browser page from a foreign origin at the handshake (HTTP 403).

    Cross-Site WebSocket Hijacking: a page on any site can open a WebSocket to
    this server, and the browser attaches this site's cookies; unlike HTTP there
    is no CORS preflight, so the ``Origin`` header is the only defence.  Allowed
    are ``CHATAUTH["ALLOWED_ORIGINS"]`` and Django's ``ALLOWED_HOSTS``, matched
    as Channels' own ``OriginValidator`` does (scheme and port when the pattern
    has them, ``.example.com`` for subdomains, ``*`` for any).

    Two deliberate differences: a handshake without ``Origin`` is allowed,
    since browsers always send one and non-browser clients hold their own
    credentials; and ``"*"`` in ``ALLOWED_HOSTS`` (common behind a proxy that
    checks hosts) does not mean "any origin" but "same origin as the ``Host``
    header", so it cannot silently open the door to every site.
    """

    def __init__(self, application: ASGIApp) -> None:
        super().__init__(application, allowed_origins=())

    @property
    def allowed_origins(self) -> tuple[str, ...]:  # type: ignore[override]
        return _patterns(
            tuple(settings.ALLOWED_ORIGINS), tuple(django_settings.ALLOWED_HOSTS)
        )[0]

    @allowed_origins.setter
    def allowed_origins(self, value: Any) -> None:
        pass  # read from settings when used

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or scope.get("chatauth.origin_checked"):
            return await self.application(scope, receive, send)
        origin = header(scope, b"origin")
        if origin is None or self.origin_allowed(origin, scope):
            scope = {**scope, "chatauth.origin_checked": True}
            return await self.application(scope, receive, send)
        logger.warning("refused a chat WebSocket from origin %.100r", origin)
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close"})  # before accept: HTTP 403
        await audit_refusal(scope, "origin", type(self))

    def origin_allowed(self, origin: str, scope: Scope) -> bool:
        parsed = urlparse(origin.strip())
        if self.valid_origin(parsed):
            return True
        same_origin = _patterns(
            tuple(settings.ALLOWED_ORIGINS), tuple(django_settings.ALLOWED_HOSTS)
        )[1]
        if not same_origin or not parsed.hostname:
            return False
        host = header(scope, b"host")
        if not host:
            return False
        netloc = parsed.netloc.lower()
        # An explicit default port equals no port (RFC 6454 origin tuple).
        default = {"http": ":80", "https": ":443"}.get(parsed.scheme, "")
        return host.lower().removesuffix(default) == netloc.removesuffix(default)

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None or not parsed_origin.hostname:
            return False  # "null" (sandboxed frame, file://) and garbage
        try:
            return self.validate_origin(parsed_origin)
        except ValueError:  # a malformed port
            return False


@functools.lru_cache(maxsize=8)
def _patterns(
    allowed_origins: tuple[str, ...], allowed_hosts: tuple[str, ...]
) -> tuple[tuple[str, ...], bool]:
    """``(patterns, same_origin_allowed)`` for these settings."""
    hosts = tuple(h for h in allowed_hosts if h != "*")
    return (*allowed_origins, *hosts), "*" in allowed_hosts


def ChatAuthMiddlewareStack(inner: ASGIApp) -> ASGIApp:  # noqa: N802 (as Channels')
    """Origin check, then authentication, around ``inner``."""
    return OriginValidator(ChatAuthMiddleware(inner))
