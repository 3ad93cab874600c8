"""The providers: their configuration, built-in profiles and authlib clients.

Providers are configured in ``CHATAUTH["OAUTH_PROVIDERS"]``, a dict of provider id
to settings::

    CHATAUTH = {
        "OAUTH_PROVIDERS": {
            "google": {},                  # OAUTH_GOOGLE_CLIENT_ID / _SECRET from env
            "github": {"client_id": "...", "client_secret": "..."},
            "azure-ad": {"tenant": "contoso.onmicrosoft.com"},   # Microsoft Entra ID
            "sso": {                       # any OpenID provider, from its discovery URL
                "profile": "oidc",
                "server_metadata_url": "https://sso.example.com/.well-known/"
                "openid-configuration",
            },
        },
        "FRONTEND_URL": "https://chat.example.com/",
    }

The profile is ``config["profile"]``, else the id itself (``google``, ``github``,
``microsoft``/``azure-ad``/``entra``, ``oidc``); a config with a
``server_metadata_url`` and no known profile is a generic OIDC provider.  Every
URL of a profile can be overridden in the config (GitHub Enterprise, tests), and
``scope``, ``token_endpoint_auth_method`` and ``redirect_uri`` too.
Client ids and secrets may come from the environment as Chainlit names them
(``OAUTH_<ID>_CLIENT_ID``, ``OAUTH_<ID>_CLIENT_SECRET``, ``OAUTH_<ID>_TENANT_ID``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import ssl
import time
import warnings
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from authlib.integrations.base_client import BaseApp
from authlib.integrations.base_client.async_app import AsyncOAuth2Mixin
from authlib.integrations.base_client.async_openid import AsyncOpenIDMixin

with warnings.catch_warnings():
    # authlib >= 1.7 warns, at import, on every process start (every
    # manage.py command), that it runs on httpx rather than the httpx2 fork.
    # chatauth uses the httpx client on purpose (one HTTP stack); the warning
    # tells its users nothing they can act on.
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.httpx_client import AsyncOAuth2Client

from chatauth.conf import settings

logger = logging.getLogger("chatauth.oauth")

#: Discovery documents and JWKS are re-read this often (key rotation).
METADATA_TTL = 3600.0


@dataclass(frozen=True)
class Profile:
    """What is built in about one kind of provider."""

    name: str
    openid: bool
    scope: str
    server_metadata_url: str | None = None
    authorize_url: str | None = None
    access_token_url: str | None = None
    api_base_url: str | None = None
    token_endpoint_auth_method: str | None = None
    fetch_userinfo: bool = True


PROFILES: dict[str, Profile] = {
    "google": Profile(
        "google",
        openid=True,
        scope="openid email profile",
        server_metadata_url="https://accounts.google.com/.well-known/openid-configuration",
    ),
    "github": Profile(
        "github",
        openid=False,
        scope="read:user user:email",
        authorize_url="https://github.com/login/oauth/authorize",
        access_token_url="https://github.com/login/oauth/access_token",
        api_base_url="https://api.github.com/",
        token_endpoint_auth_method="client_secret_post",
    ),
    "microsoft": Profile(
        "microsoft",
        openid=True,
        scope="openid email profile",
        server_metadata_url=(
            "https://login.microsoftonline.com/{tenant}/v2.0/"
            ".well-known/openid-configuration"
        ),
        token_endpoint_auth_method="client_secret_post",
        # Microsoft's userinfo is a Graph endpoint; the ID token carries the claims.
        fetch_userinfo=False,
    ),
    "oidc": Profile("oidc", openid=True, scope="openid email profile"),
}
ALIASES = {"azure-ad": "microsoft", "entra": "microsoft", "generic": "oidc"}


def provider_config(provider_id: str) -> dict[str, Any] | None:
    """The settings of one provider, with client id/secret from the environment
    (``OAUTH_<ID>_CLIENT_ID`` / ``_CLIENT_SECRET``, as Chainlit names them)."""
    config = dict(settings.OAUTH_PROVIDERS.get(provider_id) or {})
    if not config and provider_id not in settings.OAUTH_PROVIDERS:
        return None
    env = provider_id.upper().replace("-", "_")
    config.setdefault("client_id", os.environ.get(f"OAUTH_{env}_CLIENT_ID"))
    config.setdefault("client_secret", os.environ.get(f"OAUTH_{env}_CLIENT_SECRET"))
    if os.environ.get(f"OAUTH_{env}_TENANT_ID"):
        config.setdefault("tenant", os.environ[f"OAUTH_{env}_TENANT_ID"])
    if os.environ.get(f"OAUTH_{env}_POST_LOGOUT_REDIRECT_URI"):
        config.setdefault(
            "post_logout_redirect_uri",
            os.environ[f"OAUTH_{env}_POST_LOGOUT_REDIRECT_URI"],
        )
    if not config.get("client_id"):
        return None
    return config


def provider_ids() -> list[str]:
    """Ids of the providers that are configured completely enough to use."""
    return [p for p in settings.OAUTH_PROVIDERS if get_provider(p) is not None]


@dataclass
class Provider:
    """One configured provider: its id, profile and settings."""

    id: str
    profile: Profile
    config: dict[str, Any]

    def setting(self, name: str) -> Any:
        return self.config.get(name) or getattr(self.profile, name, None)

    @property
    def server_metadata_url(self) -> str | None:
        url = self.config.get("server_metadata_url") or self.config.get("discovery_url")
        url = url or self.profile.server_metadata_url
        if url and "{tenant}" in url:
            url = url.replace("{tenant}", self.config.get("tenant") or "common")
        return url

    def app(self) -> OAuthApp:
        """The authlib client of this provider, cached with its discovery document
        and JWKS for :data:`METADATA_TTL` (per configuration, so a changed setting
        takes effect at once)."""
        key = json.dumps(
            [self.id, self.config, settings.OAUTH_TIMEOUT], sort_keys=True, default=str
        )
        cached = _apps.get(self.id)
        now = time.monotonic()
        if cached and cached[0] == key and now - cached[1] < METADATA_TTL:
            return cached[2]
        app = OAuthApp(
            None,
            name=self.id,
            client_id=self.config["client_id"],
            client_secret=self.config.get("client_secret"),
            authorize_url=self.setting("authorize_url"),
            access_token_url=self.setting("access_token_url"),
            api_base_url=self.setting("api_base_url"),
            server_metadata_url=self.server_metadata_url,
            client_kwargs={
                "scope": self.setting("scope"),
                # RFC 7636: the code is useless to whoever intercepts it.
                "code_challenge_method": "S256",
                "token_endpoint_auth_method": self.setting(
                    "token_endpoint_auth_method"
                ),
                # Every provider call is bounded: a hung provider is a refusal.
                "timeout": float(settings.OAUTH_TIMEOUT),
                "verify": tls_context(),
            },
        )
        _apps[self.id] = (key, now, app)
        return app

    @property
    def openid(self) -> bool:
        return "openid" in (self.setting("scope") or "").split()

    @property
    def backchannel_logout(self) -> bool:
        """Whether the provider may end logins with Back-Channel Logout tokens
        (OpenID providers: on unless ``"backchannel_logout": False``)."""
        return self.openid and self.config.get("backchannel_logout", True) is not False

    @property
    def rp_initiated_logout(self) -> bool:
        """Whether logging out of chatauth also ends the provider's session
        (RP-Initiated Logout): ``"rp_initiated_logout": True`` or a
        ``"post_logout_redirect_uri"``."""
        return self.openid and bool(
            self.config.get("rp_initiated_logout")
            or self.config.get("post_logout_redirect_uri")
        )


_apps: dict[str, tuple[str, float, OAuthApp]] = {}


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context (httpx's defaults: certifi's CAs) for every provider call.

    authlib opens a new httpx client per call, and each would otherwise parse the
    CA bundle again: ~50 ms of CPU, three times per login.
    """
    return httpx.create_ssl_context()


def get_provider(provider_id: str) -> Provider | None:
    """The configured provider ``provider_id``, or None."""
    config = provider_config(provider_id)
    if config is None:
        return None
    name = config.get("profile") or provider_id
    name = ALIASES.get(name, name)
    profile = PROFILES.get(name)
    if profile is None:
        if not (config.get("server_metadata_url") or config.get("discovery_url")):
            logger.warning("OAuth provider %r has no known profile", provider_id)
            return None
        profile = PROFILES["oidc"]
    if profile.name == "oidc" and not (
        config.get("server_metadata_url") or config.get("discovery_url")
    ):
        logger.warning("OIDC provider %r has no server_metadata_url", provider_id)
        return None
    return Provider(provider_id, profile, config)


class OAuthApp(AsyncOAuth2Mixin, AsyncOpenIDMixin, BaseApp):
    """authlib's async OAuth 2.0 / OIDC client on httpx (as its Starlette
    integration builds it); chatauth keeps the state in a signed cookie."""

    client_cls = AsyncOAuth2Client

    if TYPE_CHECKING:
        # What authlib's async client returns, which types-authlib leaves
        # unannotated.
        def get(self, url: str, **kwargs: Any) -> Awaitable[httpx.Response]: ...

        async def fetch_access_token(
            self, redirect_uri: str | None = None, **kwargs: Any
        ) -> dict[str, Any]: ...

    async def load_server_metadata(self) -> dict[str, Any]:
        metadata = await super().load_server_metadata()
        # An unsigned ID token is never acceptable (RFC 8725 §3.1), whatever a
        # provider's discovery document lists.
        algs = metadata.get("id_token_signing_alg_values_supported")
        if algs and "none" in algs:
            metadata["id_token_signing_alg_values_supported"] = [
                a for a in algs if a != "none"
            ]
        return metadata
