"""Socket authentication: who is at the other end of a chat WebSocket.

:class:`ChatAuthMiddleware` (inside :class:`~chatauth.middleware.OriginValidator`
in :func:`~chatauth.middleware.ChatAuthMiddlewareStack`) resolves the
credentials in the contract's order and puts the result in the scope:

``scope["user"]``
    a :class:`~chatauth.authentication.TokenUser` (``pk``, ``identifier``,
    ``get_user()`` loads the model instance when needed);
``scope["chatauth"]``
    a :class:`~chatauth.identities.SocketAuth` (a token's or a web session's):
    the :class:`~chatauth.tokens.VerifiedToken` (claims, denylist key, expiry),
    where the credential came from, and the subprotocol the server answers with.

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
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.http.cookie import parse_cookie

from chatauth import audit, signals, websessions
from chatauth.conf import settings
from chatauth.constants import CloseCode, Method
from chatauth.exceptions import TokenError, close_code
from chatauth.identities import SocketAuth, Source, TokenAuth, WebSessionAuth
from chatauth.internal.http import address_bucket, scope_client
from chatauth.tokens import MAX_TOKEN_LENGTH, averify_token

logger = logging.getLogger("chatauth.middleware")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: ``new WebSocket(url, ["chatauth.bearer", token])``: browsers cannot set an
#: Authorization header on a WebSocket, but they can offer subprotocols.
SUBPROTOCOL = "chatauth.bearer"


@dataclass(frozen=True, slots=True)
class TokenCredential:
    """A raw token from the handshake or a first ``{"type": "auth"}`` frame."""

    source: str
    value: str
    fallback_web_session: str | None = None  # session key behind a bad auth cookie


@dataclass(frozen=True, slots=True)
class WebSessionCredential:
    """Django's session cookie: the key of a web session."""

    session_key: str
    source = Source.WEB_SESSION


Credential = TokenCredential | WebSessionCredential


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
            return TokenCredential(Source.HEADER, token.strip())
    subprotocols = scope.get("subprotocols") or ()
    if SUBPROTOCOL in subprotocols:
        index = list(subprotocols).index(SUBPROTOCOL)
        token = subprotocols[index + 1] if index + 1 < len(subprotocols) else ""
        return TokenCredential(Source.SUBPROTOCOL, token)
    if settings.ALLOW_QUERY_STRING_TOKEN:
        # Opt-in only: query strings end up in access logs and browser history.
        query = scope.get("query_string", b"").decode("latin-1")
        tokens = parse_qs(query).get("token")
        if tokens:
            return TokenCredential(Source.QUERY, tokens[0])
    cookie_header = header(scope, b"cookie")
    if cookie_header:
        cookies = parse_cookie(cookie_header)
        session_key = cookies.get(django_settings.SESSION_COOKIE_NAME) or None
        access = cookies.get(settings.AUTH_COOKIE)
        if access:
            return TokenCredential(
                Source.COOKIE, access, fallback_web_session=session_key
            )
        if session_key:
            return WebSessionCredential(session_key)
    return None


# --- Checking a credential --------------------------------------------------------


async def authenticate(credential: Credential) -> SocketAuth:
    """Check ``credential``; raise :class:`TokenError` with the refusal's code."""
    if isinstance(credential, WebSessionCredential):
        return await _web_session(credential.session_key)
    try:
        verified = await averify_token(credential.value)
    except TokenError:
        if not credential.fallback_web_session:
            raise
        # An auth cookie left over from an expired or revoked login, next to a
        # live web session: the browser sent both without the user choosing.
        return await _web_session(credential.fallback_web_session)
    subprotocol = SUBPROTOCOL if credential.source == Source.SUBPROTOCOL else None
    return TokenAuth(verified, credential.source, subprotocol)


async def _web_session(session_key: str) -> WebSessionAuth:
    verified = await database_sync_to_async(websessions.identity)(session_key)
    return WebSessionAuth(verified)


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


async def audit_refusal(scope: Mapping[str, Any], reason: str, sender: type) -> None:
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
            await audit_refusal(scope, e.code, type(self))
            return None
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
            await audit_refusal(scope, "auth_timeout", type(self))
            return None
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
            await audit_refusal(scope, "missing_credentials", type(self))
            return None
        try:
            auth = await authenticate(TokenCredential(Source.MESSAGE, raw))
        except TokenError as e:
            await send({"type": "websocket.close", "code": close_code(e)})
            await audit_refusal(scope, e.code, type(self))
            return None
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
