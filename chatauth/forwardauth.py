"""Forward auth: the token check a reverse proxy asks for before every request.

nginx ``auth_request``, Traefik ``ForwardAuth``, Caddy ``forward_auth`` and
Envoy ``ext_authz`` send the headers of each request (a WebSocket upgrade
included) to ``GET auth/verify``; a 2xx lets the request through, with the
identity headers copied onto it, anything else refuses it.  chatauth answers
with the same check as every other route (signature, type, expiry, the
denylist, the user still active and unchanged), so a logout, a password change
or a deactivation here refuses the very next request to the guarded backend --
a Chainlit server included, whose tokens have the same format.

The credential, first found wins: ``Authorization: Bearer``; chatauth's
``AUTH_COOKIE``; Chainlit's ``access_token`` cookie, or its chunks
``access_token_0``, ``access_token_1``, ... (what Chainlit sets for a token too
long for one cookie).

Answers: ``200`` with ``X-Auth-User`` (the identifier), ``X-Auth-User-Id``,
``X-Auth-Display-Name`` and ``X-Auth-Metadata`` (JSON, ASCII; left out above
:data:`MAX_HEADER_VALUE` bytes, which a proxy's header buffer may not
hold); ``401`` with ``WWW-Authenticate: Bearer``; ``503`` when the revocation
state cannot be read (fail closed); ``405`` for a method other than GET and
HEAD.  Every answer is ``Cache-Control: no-store``: a proxy that cached a
"yes" would let a revoked token through.

The check is served twice, with one implementation: :class:`ForwardAuthApp`,
an ASGI app that :func:`chatauth.asgi.get_asgi_application` puts in front of
Django (no middleware stack, no DRF negotiation), and :func:`verify_view`, the
Django view behind the same URL for projects that build their own ASGI
application (or run under WSGI).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from django.http.cookie import parse_cookie

from chatauth.authentication import bearer_token
from chatauth.conf import settings
from chatauth.constants import Method
from chatauth.exceptions import TokenError
from chatauth.tokens import MAX_TOKEN_LENGTH, averify_token

logger = logging.getLogger(__name__)

#: Chainlit's cookie, and the prefix of its chunks.
CHAINLIT_COOKIE = "access_token"
#: At most this many chunks are read (Chainlit cuts at 3,000 characters; a
#: token longer than MAX_TOKEN_LENGTH is refused anyway).
MAX_CHUNKS = MAX_TOKEN_LENGTH // 3000 + 1
#: ``X-Auth-Metadata`` and ``X-Auth-Display-Name`` are sent only up to this many
#: bytes: nginx reads an auth subrequest's headers into one 4-8 KiB buffer by
#: default.
MAX_HEADER_VALUE = 2048
NO_STORE = (b"cache-control", b"no-store")
#: The refusal of a request without any credential: answered 401 (the proxy
#: sends the visitor to log in) but not audited, as every anonymous request
#: through the proxy would be one.
MISSING = "missing_credentials"

Headers = list[tuple[bytes, bytes]]


def credential(authorization: str | None, cookie_header: str | None) -> str | None:
    """The token a proxied request carries, in the order above, or None."""
    token = bearer_token(authorization)
    if token is not None:
        return token
    if not cookie_header:
        return None
    cookies = parse_cookie(cookie_header)
    for name in (settings.AUTH_COOKIE, CHAINLIT_COOKIE):
        if cookies.get(name):
            return cookies[name]
    chunks = []
    for i in range(MAX_CHUNKS + 1):
        chunk = cookies.get(f"{CHAINLIT_COOKIE}_{i}")
        if not chunk:
            break
        chunks.append(chunk)
    return "".join(chunks) or None


async def check(
    authorization: str | None,
    cookie_header: str | None,
    *,
    thread_sensitive: bool = False,
) -> tuple[int, Headers, str]:
    """``(status, headers, refusal reason)`` for a proxied request's headers;
    ``thread_sensitive`` as :func:`~chatauth.tokens.averify_token` has it."""
    raw = credential(authorization, cookie_header)
    if not raw:
        return 401, _refused(MISSING), MISSING
    try:
        verified = await averify_token(raw, thread_sensitive=thread_sensitive)
    except TokenError as e:
        return 401, _refused("invalid_token"), e.code
    except Exception:
        # The cache or the database is down: nothing can say the token still
        # holds, so nobody passes (the throttle's rule too).
        logger.exception("forward auth could not check a token")
        return 503, [NO_STORE, (b"retry-after", b"5")], ""
    user = verified.user_dict()
    headers = [
        NO_STORE,
        # The identifier as of this check: a renamed user's older tokens name
        # the old one, which someone else may hold by now.
        (b"x-auth-user", _header_value(verified.current_identifier)),
        (b"x-auth-user-id", _header_value(str(verified.user_pk))),
    ]
    display_name = user["display_name"]
    if display_name:
        value = _header_value(str(display_name))
        if len(value) <= MAX_HEADER_VALUE:
            headers.append((b"x-auth-display-name", value))
    metadata = json.dumps(user["metadata"], separators=(",", ":")).encode()
    if len(metadata) <= MAX_HEADER_VALUE:
        headers.append((b"x-auth-metadata", metadata))
    return 200, headers, ""


def _refused(error: str) -> Headers:
    challenge = b'Bearer realm="chatauth"'
    if error != MISSING:
        challenge += b', error="invalid_token"'
    return [NO_STORE, (b"www-authenticate", challenge)]


def _header_value(value: str) -> bytes:
    """A header value that reads back unambiguously: printable ASCII without
    edge spaces and not starting with ``"`` as is, anything else as a JSON
    string (quoted and escaped: no CR/LF, no non-ASCII byte)."""
    if (
        value.isascii()
        and value.isprintable()
        and value == value.strip()
        and not value.startswith('"')
    ):
        return value.encode()
    return json.dumps(value).encode()


def _audit(reason: str, **where: Any) -> None:
    """Count a refusal (``scope=`` or ``request=``): one audit row per reason
    and address per ``AUDIT_REFUSAL_INTERVAL``, not one per request."""
    from chatauth.audit import refusals
    from chatauth.models import AuditEvent

    refusals.count(
        AuditEvent.Event.SESSION_REFUSED,
        reason=reason,
        method=Method.FORWARD_AUTH,
        **where,
    )


# --- Served lean, in front of Django ---------------------------------------------


class ForwardAuthApp:
    """ASGI: answer ``path`` here, pass everything else to ``app``."""

    def __init__(
        self, app: Callable[[dict[str, Any], Any, Any], Awaitable[None]], path: str
    ) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        if scope["method"] not in ("GET", "HEAD"):
            return await _answer(send, 405, [NO_STORE, (b"allow", b"GET, HEAD")])
        authorization, cookie = _headers(scope["headers"])
        status, headers, reason = await check(authorization, cookie)
        await _answer(send, status, headers)
        if reason not in ("", MISSING):  # an anonymous request is no event
            await sync_to_async(_audit, thread_sensitive=False)(reason, scope=scope)


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """``Authorization`` and ``Cookie`` of a request, each repeated header
    joined as Django joins it (two ``Authorization`` headers make one that no
    check accepts: the Django view and this path answer alike)."""
    authorization: list[str] = []
    cookies: list[str] = []
    for name, value in raw:
        if name == b"authorization":
            authorization.append(value.decode("latin-1"))
        elif name == b"cookie":
            cookies.append(value.decode("latin-1"))
    return ",".join(authorization) or None, "; ".join(cookies) or None


async def _answer(send: Any, status: int, headers: Headers) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


# --- The same check as a Django view --------------------------------------------


async def verify_view(request: HttpRequest) -> HttpResponse:
    """``auth/verify`` through Django: what :class:`ForwardAuthApp` answers."""
    if request.method not in ("GET", "HEAD"):
        status, headers, reason = 405, [NO_STORE, (b"allow", b"GET, HEAD")], ""
    else:
        status, headers, reason = await check(
            request.headers.get("Authorization"),
            request.headers.get("Cookie"),
            thread_sensitive=True,  # the request's thread and connection
        )
    response = HttpResponse(status=status)
    for name, value in headers:
        response.headers[name.decode()] = value.decode("latin-1")
    if reason not in ("", MISSING):
        # On the request's own thread and connection, as the check above.
        await sync_to_async(_audit)(reason, request=request)
    return response
