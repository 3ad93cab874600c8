"""The ``Origin`` check of a chat WebSocket's handshake (:class:`OriginValidator`).

The first layer of :func:`chatauth.middleware.ChatAuthMiddlewareStack`: a page
from a foreign origin is refused before any credential is looked at (HTTP 403,
audited).
"""

from __future__ import annotations

import functools
import logging

from django.conf import settings as django_settings

from chatauth.conf import settings
from chatauth.internal.http import Origin, parse_origin, split_host
from chatauth.middleware.auth import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    audit_refusal,
    header,
)

logger = logging.getLogger("chatauth.middleware")


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
