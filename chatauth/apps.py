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
