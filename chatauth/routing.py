"""ASGI routes of chatauth.  :func:`chatauth.asgi.get_asgi_application` builds a
project's whole application with them; a project that builds its own includes
them in its ``ProtocolTypeRouter``.

Each WebSocket route carries its own
:func:`~chatauth.middleware.ChatAuthMiddlewareStack`, so including the patterns
cannot forget the origin check or authentication; :func:`lifespan` lets the
server tell chatauth it is stopping::

    application = ProtocolTypeRouter({
        "http": get_asgi_application(),
        "websocket": URLRouter(chatauth.routing.websocket_urlpatterns),
        "lifespan": chatauth.routing.lifespan,
    })
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.urls import path

from chatauth.consumers import ChatConsumer
from chatauth.middleware import ChatAuthMiddlewareStack

websocket_urlpatterns = [
    # django-stubs types path() for Django views only, not ASGI applications;
    # chatauth.middleware's ASGI types are plain dicts where types-channels has
    # asgiref's typed messages (to align when the middleware is typed).
    path(
        "ws/chat/",
        ChatAuthMiddlewareStack(ChatConsumer.as_asgi()),  # type: ignore[arg-type]
        name="chat",
    ),
]


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI lifespan protocol: on shutdown, write what this worker has
    counted but not written yet (refusals for the audit log, see
    :class:`chatauth.audit.Refusals`).  uvicorn ends a worker by re-raising
    SIGTERM after its graceful shutdown, so ``atexit`` never runs there."""

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await sync_to_async(_flush, thread_sensitive=False)()
            except Exception:  # shutting down all the same
                logging.getLogger("chatauth.routing").exception("shutdown flush")
            await send({"type": "lifespan.shutdown.complete"})
            return


def _flush() -> None:
    from django.db import close_old_connections

    from chatauth import audit

    try:
        audit.refusals.flush()
    finally:
        close_old_connections()
