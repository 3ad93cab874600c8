"""The demo's ASGI application plus a bare consumer at ``/bench/ws/bare``.

The bare consumer is the first route of the demo's own WebSocket ``URLRouter``
(behind the same ``ProtocolTypeRouter``), so both sockets pay the same routing
and only what chatauth adds (origin check, authentication, the session) tells
them apart.  Everything else is ``project.asgi.application`` unchanged,
whatever routes it grows.  With ``BENCH_SWEEP_PROBE=1`` the heartbeat is
instrumented (:mod:`bench.site.probe`).
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.site.settings")

# Django is set up by the project's ASGI module: it must be imported first.
from project.asgi import application as project_application  # noqa: E402

# isort: split
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bench.site.constants import BARE_WS_PATH  # noqa: E402
from bench.site.consumers import BareConsumer  # noqa: E402

if os.environ.get("BENCH_SWEEP_PROBE") == "1":
    from bench.site import probe

    probe.install()

_project_websocket: URLRouter = project_application.application_mapping["websocket"]

application = ProtocolTypeRouter(
    {
        **project_application.application_mapping,
        "websocket": URLRouter(
            [
                path(BARE_WS_PATH.lstrip("/"), BareConsumer.as_asgi()),
                *_project_websocket.routes,
            ]
        ),
    }
)
