"""OAuth / OIDC providers configured in ``CHATAUTH["OAUTH_PROVIDERS"]``."""

from __future__ import annotations

import os
from typing import Any

from chatauth.conf import settings


def provider_config(provider_id: str) -> dict[str, Any] | None:
    """The settings of one provider, with client id/secret from the environment
    (``OAUTH_<ID>_CLIENT_ID`` / ``_CLIENT_SECRET``, as Chainlit names them)."""
    config = dict(settings.OAUTH_PROVIDERS.get(provider_id) or {})
    if not config and provider_id not in settings.OAUTH_PROVIDERS:
        return None
    env = provider_id.upper().replace("-", "_")
    config.setdefault("client_id", os.environ.get(f"OAUTH_{env}_CLIENT_ID"))
    config.setdefault("client_secret", os.environ.get(f"OAUTH_{env}_CLIENT_SECRET"))
    if not config.get("client_id"):
        return None
    return config


def provider_ids() -> list[str]:
    """Ids of the providers that are configured completely enough to use."""
    return [p for p in settings.OAUTH_PROVIDERS if provider_config(p) is not None]
