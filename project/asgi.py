"""ASGI entry point: HTTP through Django, ``ws/chat/`` through chatauth's consumer.

Scale-out: with ``REDIS_URL`` set, run several workers behind one port (e.g.
``uvicorn project.asgi:application --workers 4``, or several uvicorn/daphne
processes behind a proxy); channels_redis carries a logout on any of them to
the sockets on all of them.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import WebsocketDenier  # noqa: E402
from django.urls import re_path  # noqa: E402

from chatauth.routing import lifespan, websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(
            [
                *websocket_urlpatterns,
                # Any other path: refused at the handshake (403), not a 500.
                re_path(r"", WebsocketDenier.as_asgi()),
            ]
        ),
        # Shutdown: chatauth writes what it counted (see chatauth.routing).
        "lifespan": lifespan,
    }
)
