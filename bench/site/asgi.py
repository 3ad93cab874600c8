"""The demo's ASGI application plus a bare consumer at ``/bench/ws/bare``.

Everything else goes to ``project.asgi.application`` unchanged, whatever routes it
grows, so the WebSocket benchmarks compare chatauth's socket with the bare one
on the same server process.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.site.settings")

# Django is set up by the project's ASGI module: it must be imported first.
from project.asgi import application as project_application  # noqa: E402

# isort: split
from bench.site.consumers import BareConsumer  # noqa: E402

BARE_WS_PATH = "/bench/ws/bare"
bare_consumer = BareConsumer.as_asgi()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket" and scope["path"] == BARE_WS_PATH:
        return await bare_consumer(scope, receive, send)
    return await project_application(scope, receive, send)
