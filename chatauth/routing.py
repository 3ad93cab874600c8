"""WebSocket routes of chatauth: include them in the project's ``URLRouter``.

Each route carries its own :func:`~chatauth.middleware.ChatAuthMiddlewareStack`,
so including the patterns cannot forget the origin check or authentication::

    application = ProtocolTypeRouter({
        "http": get_asgi_application(),
        "websocket": URLRouter(chatauth.routing.websocket_urlpatterns),
    })
"""

from django.urls import path

from chatauth.consumers import ChatConsumer
from chatauth.middleware import ChatAuthMiddlewareStack

websocket_urlpatterns = [
    path("ws/chat/", ChatAuthMiddlewareStack(ChatConsumer.as_asgi()), name="chat"),
]
