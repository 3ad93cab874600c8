from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ChatAuthConfig(AppConfig):
    name = "chatauth"
    verbose_name = _("Chat authentication")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from chatauth import audit, checks, copilot, revocation, schema  # noqa: F401
        from chatauth.hooks import load_hooks

        load_hooks()
