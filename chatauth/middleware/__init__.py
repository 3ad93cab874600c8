"""chatauth's middleware: Channels (ASGI) middleware for the chat socket, and
Django's (HTTP) for the request cycle.

``ChatAuthMiddlewareStack(inner)`` wraps any consumer the way Channels'
``AuthMiddlewareStack`` does::

    application = URLRouter([path("ws/chat/", ChatAuthMiddlewareStack(MyConsumer))])

It is :class:`OriginValidator` (:mod:`chatauth.middleware.origin`: a foreign
``Origin`` is refused at the handshake, HTTP 403, and audited) around
:class:`ChatAuthMiddleware` (:mod:`chatauth.middleware.auth`: who is at the
other end; ``scope["user"]`` and ``scope["chatauth"]``, a
:class:`~chatauth.identities.SocketAuth`).

:class:`SessionRevocationMiddleware` (:mod:`chatauth.middleware.http`) goes in
Django's ``MIDDLEWARE``: web sessions whose user's access ended are ended before
any view sees them.
"""

from __future__ import annotations

from chatauth.exceptions import close_code
from chatauth.identities import SocketAuth, Source, TokenAuth, WebSessionAuth
from chatauth.middleware.auth import (
    SUBPROTOCOL,
    ASGIApp,
    ChatAuthMiddleware,
    audit_refusal,
    authenticate,
    find_credential,
    header,
)
from chatauth.middleware.http import SessionRevocationMiddleware
from chatauth.middleware.origin import OriginValidator, allowed_origins, own_origin

__all__ = [
    "SUBPROTOCOL",
    "ChatAuthMiddleware",
    "ChatAuthMiddlewareStack",
    "OriginValidator",
    "SessionRevocationMiddleware",
    "SocketAuth",
    "Source",
    "TokenAuth",
    "WebSessionAuth",
    "allowed_origins",
    "audit_refusal",
    "authenticate",
    "close_code",
    "find_credential",
    "header",
    "own_origin",
]


def ChatAuthMiddlewareStack(inner: ASGIApp) -> ASGIApp:  # noqa: N802 (as Channels')
    """Origin check, then authentication, around ``inner``."""
    return OriginValidator(ChatAuthMiddleware(inner))
