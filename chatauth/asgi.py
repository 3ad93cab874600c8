"""The project's ASGI application in one call, as Django's own.

``mysite/asgi.py``::

    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

    from chatauth.asgi import get_asgi_application

    application = get_asgi_application()

The application routes HTTP to Django, ``ws/chat/`` to chatauth's chat consumer
(behind its origin check and authentication, see :mod:`chatauth.routing`),
any other WebSocket path to a refusal at the handshake (HTTP 403, not a 500),
and the lifespan protocol to :func:`chatauth.routing.lifespan`.  ``auth/verify``
(forward auth, :mod:`chatauth.forwardauth`) is answered ahead of Django's
request cycle.  In DEBUG, with ``django.contrib.staticfiles`` installed, static
files are served too (as ``runserver`` does), so ``copilot.js`` loads under
uvicorn as well.

A project's own WebSocket routes go in ``websocket_urlpatterns``: they are
tried before the refusal, each with whatever middleware the project wraps it
in.  ``http`` replaces Django's HTTP application (e.g. one wrapped in other
middleware).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.core.asgi import get_asgi_application as django_asgi_application

if TYPE_CHECKING:
    from channels.routing import ProtocolTypeRouter


def get_asgi_application(
    websocket_urlpatterns: Sequence[Any] = (), http: Any = None
) -> ProtocolTypeRouter:
    """Django set up, then the ``ProtocolTypeRouter`` described above."""
    http = http or django_asgi_application()  # sets Django up before the imports

    from channels.routing import ProtocolTypeRouter, URLRouter
    from channels.security.websocket import WebsocketDenier
    from django.apps import apps
    from django.conf import settings
    from django.urls import URLPattern, re_path

    from chatauth import routing

    if settings.DEBUG and apps.is_installed("django.contrib.staticfiles"):
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        http = ASGIStaticFilesHandler(http)
    verify = _verify_path()
    if verify is not None:
        from chatauth.forwardauth import ForwardAuthApp

        http = ForwardAuthApp(http, verify)
    # django-stubs types re_path() and path() for Django views only, not ASGI
    # applications, and types-channels' URLRouter takes patterns of a type
    # (one of ASGI applications) that neither returns.
    refusal = re_path(r"", WebsocketDenier.as_asgi())  # type: ignore[arg-type]
    patterns: list[URLPattern | URLRouter] = [
        *routing.websocket_urlpatterns,
        *websocket_urlpatterns,
        refusal,
    ]
    return ProtocolTypeRouter(
        {
            "http": http,
            "websocket": URLRouter(patterns),  # type: ignore[arg-type]
            "lifespan": routing.lifespan,
        }
    )


def _verify_path() -> str | None:
    """Where the project mounted ``auth/verify``, if it did."""
    from django.urls import NoReverseMatch, reverse

    try:
        return reverse("chatauth:verify")
    except NoReverseMatch:
        return None
