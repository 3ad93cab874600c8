from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ChatAuthConfig(AppConfig):
    name = "chatauth"
    verbose_name = _("Chat authentication")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Modules whose receivers and checks register on import.
        from chatauth import accesslog, audit, checks, lifecycle, schema, websessions  # noqa: F401
        from chatauth.hooks import load_hooks

        lifecycle.connect()
        accesslog.install()
        load_hooks()
        default_channel_layer()


def default_channel_layer() -> None:
    """In DEBUG, with no ``CHANNEL_LAYERS`` at all, Channels' in-memory layer,
    so a development server's chat sockets work (and are revoked) without
    Redis.  Outside DEBUG there is no default: check ``chatauth.E013`` says
    what to set."""
    from django.conf import settings

    if settings.DEBUG and not getattr(settings, "CHANNEL_LAYERS", None):
        settings.CHANNEL_LAYERS = {
            "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
        }
