"""startproject's asgi.py: Django's application alone, no chat socket (W019)."""

from django.core.asgi import get_asgi_application

application = get_asgi_application()
