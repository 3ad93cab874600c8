"""Checks of ``OAUTH_PROVIDERS``: provider logout settings that cannot work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Warning, register

from chatauth.conf import settings


@register()
def check_provider_logout(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Provider logout settings that cannot work: back-channel or RP-initiated
    logout asked of a provider that is not an OpenID provider (no ID token, so
    no ``sid``, no keys, no ``end_session_endpoint``), a
    ``post_logout_redirect_uri`` that is no URL, and back-channel logout with
    sessions in signed cookies (nothing on the server to end)."""
    from urllib.parse import urlsplit

    from chatauth.oauth import get_provider

    errors: list[CheckMessage] = []
    providers = settings.OAUTH_PROVIDERS
    if not isinstance(providers, dict):
        return errors
    signed_cookies = django_settings.SESSION_ENGINE.endswith(".signed_cookies")
    for provider_id, config in providers.items():
        if not isinstance(config, dict):
            continue
        provider = get_provider(provider_id)
        if signed_cookies and provider is not None and provider.backchannel_logout:
            errors.append(
                Warning(
                    f"OAuth provider {provider_id!r} may end logins with "
                    "back-channel logout, but SESSION_ENGINE keeps sessions in "
                    "signed cookies: there is no session on the server to end, "
                    "so its logout tokens end nothing.",
                    hint="Use 'django.contrib.sessions.backends.db' or "
                    "'cached_db' (or set \"backchannel_logout\": False for "
                    "this provider).",
                    id="chatauth.W020",
                )
            )
        asked = [
            name
            for name in (
                "backchannel_logout",
                "backchannel_logout_session_required",
                "rp_initiated_logout",
                "post_logout_redirect_uri",
            )
            if config.get(name)
        ]
        if asked and provider is not None and not provider.openid:
            errors.append(
                Error(
                    f"OAuth provider {provider_id!r} sets {', '.join(asked)}, but "
                    "it is not an OpenID Connect provider.",
                    hint="Provider logout needs OpenID Connect: ID tokens (their "
                    "sid), the provider's keys and its end_session_endpoint, "
                    "from its discovery document (server_metadata_url) and the "
                    "'openid' scope.  Remove these keys for an OAuth-only "
                    "provider such as GitHub.",
                    id="chatauth.E014",
                )
            )
        redirect = config.get("post_logout_redirect_uri")
        if redirect is not None:
            parts = urlsplit(str(redirect))
            absolute = parts.scheme in ("http", "https") and parts.netloc
            if not (absolute or (str(redirect).startswith("/") and not parts.netloc)):
                errors.append(
                    Error(
                        f"OAUTH_PROVIDERS[{provider_id!r}]['post_logout_redirect_"
                        f"uri'] = {redirect!r} is not a URL.",
                        hint="An absolute https:// URL, or a path of this site "
                        "('/'); it must be registered at the provider exactly as "
                        "chatauth sends it.",
                        id="chatauth.E015",
                    )
                )
    return errors
