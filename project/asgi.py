"""ASGI entry point: HTTP through Django, ``ws/chat/`` through chatauth's consumer
(:func:`chatauth.asgi.get_asgi_application`; any other WebSocket path is refused
at the handshake).

Scale-out: with ``REDIS_URL`` set, run several workers behind one port (e.g.
``uvicorn project.asgi:application --workers 4``, or several uvicorn/daphne
processes behind a proxy); channels_redis carries a logout on any of them to
the sockets on all of them.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from chatauth.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
