"""The demo's ASGI application plus a project's own subclass of ``ChatConsumer``
at ``ws/sub/``, as docs/websocket.md ("Extending the consumer") shows: each of
Channels' hooks overridden, calling ``super()``."""

import os

from django.core.asgi import get_asgi_application as django_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
http = django_asgi_application()  # Django set up before the imports below

from django.urls import path  # noqa: E402

from chatauth.asgi import get_asgi_application  # noqa: E402
from chatauth.consumers import ChatConsumer  # noqa: E402
from chatauth.middleware import ChatAuthMiddlewareStack  # noqa: E402


class ProjectConsumer(ChatConsumer):
    async def connect(self):
        await super().connect()
        if not self.closing:
            await self.send_json(
                {"type": "motd", "user": self.scope["user"].identifier}
            )

    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and content.get("type") == "shout":
            return await self.send_json(
                {"type": "shout", "text": content["text"].upper()}
            )
        await super().receive_json(content, **kwargs)

    async def disconnect(self, code):
        await super().disconnect(code)
        # The server's output (tests.servers captures it): the hook ran, after
        # the session's end was recorded with the code it closed with.
        print(f"project consumer disconnected: {self.close_code}", flush=True)


application = get_asgi_application(
    websocket_urlpatterns=[
        path("ws/sub/", ChatAuthMiddlewareStack(ProjectConsumer.as_asgi()))
    ],
    http=http,
)
