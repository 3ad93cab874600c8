"""OAuth 2.0 / OpenID Connect login through authlib.

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

The protocol is authlib's: the authorization-code flow with ``state``, PKCE
``S256`` (RFC 7636) and, for OpenID providers, a ``nonce``; the ID token is
verified against the provider's JWKS (signature, ``iss``, ``aud``, ``exp``,
``iat``, ``nonce``).  chatauth adds what authlib leaves to the framework: where
``state`` lives (a signed cookie of this browser, single use, bound to one
provider, expiring after ``OAUTH_STATE_LIFETIME``; an anonymous start writes
nothing on the server), which user a provider identity becomes, and the
refusals.

Refusals.  ``GET auth/oauth/<id>/callback`` is a browser navigation coming back
from the provider, so every refusal is a ``302`` to ``FRONTEND_URL`` with
``?error=<code>`` (and an ``oauth_refused`` audit row with the same reason); it is
never a 500.  Codes: ``invalid_state`` (missing, unknown, expired, replayed, or
issued for another provider), ``access_denied`` (the user or provider declined),
``provider_error`` (the provider answered with an error or garbage),
``provider_unavailable`` (timeout or connection error), ``invalid_issuer``
(RFC 9207 ``iss`` mismatch), ``invalid_id_token`` (missing, badly signed, wrong
issuer/audience/nonce, expired), ``callback_refused`` / ``callback_failed`` (the
``oauth_callback`` returned None / raised), ``account_exists`` (a local account
has this identifier or email and the provider did not verify the email),
``invalid_user`` (the user model cannot hold the identifier), ``invalid_claims``
(a claim too long for its column, or holding control characters or a NUL),
``user_inactive``, ``server_error`` (the login could not be recorded for the
provider's logout: it is undone).
An unknown provider id is a ``404`` JSON answer on both routes.

Logout (OpenID providers; :mod:`chatauth.oidc_logout`).  Each login through an
OpenID provider is recorded with the ID token's ``sid`` and ``sub``, so the
provider can end it: ``POST auth/oauth/<id>/backchannel-logout`` receives its
Back-Channel Logout tokens (on unless ``"backchannel_logout": False``;
``"backchannel_logout_session_required": True`` refuses tokens without a
``sid``, as the client registration says).  With ``"rp_initiated_logout":
True`` or a ``"post_logout_redirect_uri"`` (also ``OAUTH_<ID>_POST_LOGOUT_
REDIRECT_URI``), ``POST auth/logout`` of such a login also answers the
provider's ``end_session_endpoint`` URL (``provider_logout_url``), to end the
session at the provider too.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import ssl
import time
import unicodedata
import warnings
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from asgiref.sync import sync_to_async
from authlib.integrations.base_client import BaseApp, OAuthError
from authlib.integrations.base_client.async_app import AsyncOAuth2Mixin
from authlib.integrations.base_client.async_openid import AsyncOpenIDMixin

with warnings.catch_warnings():
    # authlib >= 1.7 warns, at import, on every process start (every
    # manage.py command), that it runs on httpx rather than the httpx2 fork.
    # chatauth uses the httpx client on purpose (one HTTP stack); the warning
    # tells its users nothing they can act on.
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.httpx_client import AsyncOAuth2Client
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from drf_spectacular.utils import OpenApiResponse
from joserfc.errors import JoseError
from rest_framework import exceptions
from rest_framework.request import Request

from chatauth import flows, hooks, signals
from chatauth.adapter import get_adapter
from chatauth.conf import settings
from chatauth.constants import Method
from chatauth.exceptions import HookError
from chatauth.identifiers import normalize
from chatauth.internal.apiview import AsyncAPIView
from chatauth.internal.models import has_field
from chatauth.models import AuditEvent, OAuthAccount
from chatauth.schema import documented
from chatauth.serializers import DetailSerializer

logger = logging.getLogger("chatauth.oauth")

try:  # authlib's httpx client runs on httpx2 when it is installed, else on httpx
    import httpx2
except ImportError:  # pragma: no cover - the usual case
    httpx2 = httpx
#: The provider could not be reached or did not answer in time.
UNAVAILABLE = (httpx.TransportError, httpx2.TransportError, TimeoutError)
#: The provider answered, but not with what the protocol says.
PROVIDER_ERRORS = (httpx.HTTPError, httpx2.HTTPError, OAuthError, JoseError)

#: The cookie of the logins in progress, one per provider (its path is the
#: provider's routes): ``{state: {...}}``, signed.  Like authlib's own
#: Starlette integration (a signed session cookie) it holds the PKCE verifier
#: and nonce, which only matter to whoever also holds the code; it is HttpOnly,
#: SameSite=Lax (the provider's redirect is a top-level GET) and Secure as
#: Django's session cookie is.  No server-side row per anonymous start.
STATE_COOKIE = "chatauth_oauth"
_STATE_SALT = "chatauth.oauth.state"
#: Logins a browser may have in progress at once (tabs); older ones are dropped.
MAX_PENDING = 5
#: Discovery documents and JWKS are re-read this often (key rotation).
METADATA_TTL = 3600.0
#: ``raw_user_data`` kept on the linked account, at most (bytes of JSON).
MAX_EXTRA_DATA = 16 * 1024


# --- Providers -------------------------------------------------------------------


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


# --- What a provider says about the user ----------------------------------------


@dataclass
class Identity:
    """A provider's user, normalised across profiles."""

    subject: str
    email: str | None = None
    email_verified: bool = False
    name: str | None = None
    image: str | None = None
    #: A provider-unique handle safe to use as identifier (GitHub login, UPN).
    username: str | None = None
    #: The provider's session of this login: the ID token's ``sid`` (OpenID
    #: Connect Back-Channel Logout 1.0 §2.1), which its logout tokens name.
    session_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


class Refusal(Exception):
    """A login that must not go on; ``reason`` is the error code shown and audited."""

    def __init__(self, reason: str, identifier: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.identifier = identifier


def _true(value: Any) -> bool:
    # Some providers (Cognito, older Okta) send "true" as a string.
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _text(value: Any) -> str | None:
    """A claim that must be a non-empty string, else None (a provider's JSON is
    input like any other)."""
    return value.strip() or None if isinstance(value, str) else None


#: The longest each claim may be where it is stored (refused past it, never cut:
#: two subjects sharing their first 255 characters are two identities).
CLAIM_LIMITS = {
    "subject": 255,
    "email": 254,
    "name": 255,
    "username": 255,
    "image": 2048,
    "session_id": 255,
}


def checked(identity: Identity) -> Identity:
    """``identity`` if every claim can be stored as the provider said it:
    within its column, no control characters in the ones chatauth stores as
    text, no NUL anywhere in the raw data (PostgreSQL cannot hold one); else
    :class:`Refusal` (``invalid_claims``)."""
    for name, limit in CLAIM_LIMITS.items():
        value = getattr(identity, name)
        if value is None:
            continue
        if len(value) > limit or any(
            unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in value
        ):
            raise Refusal("invalid_claims")
    if not identity.subject or "\\u0000" in json.dumps(identity.raw, default=str):
        raise Refusal("invalid_claims")
    return identity


async def fetch_identity(
    provider: Provider, app: OAuthApp, token: dict[str, Any], nonce: str | None
) -> Identity:
    """Ask the provider who logged in: the verified ID token (+ userinfo) for
    OpenID providers, the REST API for GitHub."""
    if provider.profile.name == "github":
        return await _github_identity(app, token)
    if not provider.openid:
        raise Refusal("provider_error")  # an OAuth-only provider needs a profile
    claims = await _verified_id_token(provider, app, token, nonce)
    data = dict(claims)
    metadata = await app.load_server_metadata()
    if provider.profile.fetch_userinfo and metadata.get("userinfo_endpoint"):
        userinfo = dict(await app.userinfo(token=token))
        # OIDC Core §5.3.2: a userinfo response for another subject is an attack
        # (token substitution) and must not be used.
        if userinfo.get("sub") != claims["sub"]:
            raise Refusal("invalid_id_token")
        data.update(userinfo)
    if provider.profile.name == "microsoft":
        # "nOAuth": Entra ID's ``email`` claim is editable by tenant admins and
        # unverified; trust it only with ``xms_edov`` (email domain owner verified).
        verified = _true(data.get("xms_edov"))
        username = data.get("preferred_username")  # UPN: a verified tenant domain
    else:
        verified = _true(data.get("email_verified"))
        username = None
    email = _text(data.get("email"))
    sid = claims.get("sid")
    return Identity(
        subject=str(claims["sub"]),
        email=email,
        email_verified=verified and email is not None,
        name=_text(data.get("name")) or _text(data.get("preferred_username")),
        image=_text(data.get("picture")),
        username=_text(username),
        # As the provider wrote it (not stripped): its logout tokens must match.
        session_id=sid if isinstance(sid, str) and sid else None,
        raw=data,
    )


def expected_issuer(issuer: str, claims: dict[str, Any]) -> str:
    """The ``iss`` a token of a provider whose discovery says ``issuer`` must
    carry: ``issuer`` itself, or -- Entra ID's multi-tenant discovery has a
    template issuer -- that template filled in with the token's own tenant id
    (``tid``).  For ID tokens and logout tokens alike."""
    if "{tenantid}" in issuer:
        tenant = claims.get("tid")
        return issuer.replace("{tenantid}", tenant if isinstance(tenant, str) else "")
    return issuer


def audience_accepted(claims: dict[str, Any], client_id: str) -> bool:
    """OIDC Core §3.1.3.7 on ``aud``/``azp`` (for ID tokens and, by Back-Channel
    Logout §2.6, logout tokens): this client among the audiences; several
    audiences only with an authorized party (``azp``); an authorized party, if
    named, this client.  (authlib's own check of an ID token is the same.)"""
    aud = claims.get("aud")
    if isinstance(aud, str):
        audiences = [aud]
    elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        audiences = aud
    else:
        return False
    if client_id not in audiences:
        return False
    azp = claims.get("azp")
    if len(set(audiences)) > 1 and azp is None:
        return False
    return azp is None or azp == client_id


def leeway() -> float:
    """Clock skew allowed on a provider's ``iat``/``exp``, in seconds."""
    return settings.LEEWAY.total_seconds()


async def _verified_id_token(
    provider: Provider, app: OAuthApp, token: dict[str, Any], nonce: str | None
) -> dict[str, Any]:
    if not token.get("id_token") or not nonce:
        raise Refusal("invalid_id_token")
    metadata = await app.load_server_metadata()
    issuer = metadata.get("issuer")
    if not issuer:
        raise Refusal("invalid_id_token")
    # authlib checks the signature against the JWKS, exp/iat/nbf with the leeway,
    # the nonce and at_hash; it checks ``aud`` only when asked, so ask (OIDC Core
    # §3.1.3.7: the client MUST reject a token whose aud lacks its client_id).
    options: dict[str, Any] = {
        "aud": {"essential": True, "value": app.client_id},
        "sub": {"essential": True},
    }
    if "{tenantid}" in issuer:
        # Entra ID's multi-tenant discovery has a template issuer: the token's
        # must be that template filled in with the token's own tenant id.
        options["iss"] = {
            "essential": True,
            "validate": lambda claims, value: value == expected_issuer(issuer, claims),
        }
    else:
        options["iss"] = {"essential": True, "value": issuer}
    try:
        claims = await app.parse_id_token(
            token,
            nonce=nonce,
            claims_options=options,
            leeway=int(leeway()),
        )
    except (JoseError, ValueError) as e:
        logger.info("ID token from %s refused: %r", provider.id, e)
        raise Refusal("invalid_id_token") from e
    if claims is None:
        raise Refusal("invalid_id_token")
    return dict(claims)


async def _github_identity(app: OAuthApp, token: dict[str, Any]) -> Identity:
    response = await app.get("user", token=token)
    response.raise_for_status()
    user = response.json()
    # The ``email`` on /user is whatever the user made public; only the primary
    # *verified* address from /user/emails says who owns the mailbox.
    emails_response = await app.get("user/emails", token=token)
    emails = emails_response.json() if emails_response.status_code == 200 else []
    if not isinstance(emails, list):
        emails = []
    primary = next(
        (
            _text(e.get("email"))
            for e in emails
            if isinstance(e, dict) and e.get("primary") and e.get("verified") is True
        ),
        None,
    )
    login = _text(user.get("login"))
    return Identity(
        subject=str(user["id"]),
        email=primary,
        email_verified=primary is not None,
        name=_text(user.get("name")) or login,
        image=_text(user.get("avatar_url")),
        username=login,
        raw={**user, "emails": emails},
    )


def default_user(provider: Provider, identity: Identity) -> hooks.User:
    """Chainlit's ``default_user``: the verified email, else the provider's own
    handle, else ``<provider>:<subject>``.

    An unverified email is never the identifier: whoever typed someone else's
    address at a provider would otherwise pre-create (and later be merged into)
    that person's account ("pre-hijacking", Sudhodanan & Paverd 2022).
    """
    if identity.email and identity.email_verified:
        identifier = identity.email
    elif identity.username:
        identifier = identity.username
    else:
        identifier = f"{provider.id}:{identity.subject}"
    metadata: dict[str, Any] = {"provider": provider.id}
    if identity.image:
        metadata["image"] = identity.image
    return hooks.User(identifier, identity.name or identifier, metadata)


# --- Users and linked accounts ---------------------------------------------------


def link_account(
    provider: Provider,
    identity: Identity,
    chat_user: hooks.User,
    *,
    identifier_chosen: bool,
) -> Any:
    """The user this provider identity logs in as, creating or linking as needed.

    1. An account already linked to ``(provider, subject)`` wins.
    2. Else a local user the identity names -- by identifier, or by the email
       the provider verified -- is joined only if the adapter's policy says so
       (:meth:`~chatauth.adapter.DefaultAdapter.may_link_oauth`: by default,
       never); else the login is refused (``account_exists``).
    3. Else a new user is created.

    An inactive user is refused before anything is linked.
    """
    adapter = get_adapter()
    User = get_user_model()
    fields = {
        "email": identity.email or "",
        "email_verified": identity.email_verified,
        "extra_data": _extra_data(identity),
        "last_login_at": timezone.now(),
    }
    with transaction.atomic():
        account = (
            OAuthAccount.objects.select_for_update()
            .select_related("user")
            .filter(provider=provider.id, subject=identity.subject)
            .first()
        )
        if account is not None:
            if not adapter.can_authenticate(account.user):
                raise Refusal("user_inactive", chat_user.identifier)
            for name, value in fields.items():
                setattr(account, name, value)
            account.save(update_fields=[*fields])
            adapter.save_profile(account.user, chat_user)
            return account.user
        try:
            existing = _existing_user(adapter, identity, chat_user)
        except HookError as e:  # an identifier no user can have, or ambiguous
            raise Refusal("invalid_user", chat_user.identifier) from e
        if existing is not None:
            if not adapter.may_link_oauth(
                existing,
                provider=provider.id,
                email=identity.email if identity.email_verified else None,
                identifier_chosen=identifier_chosen,
            ):
                raise Refusal("account_exists", chat_user.identifier)
            if not adapter.can_authenticate(existing):
                raise Refusal("user_inactive", chat_user.identifier)
            user = existing
            adapter.save_profile(user, chat_user)
        else:
            try:
                user = adapter.get_or_create_user(chat_user)
            except HookError as e:  # e.g. an identifier the user model can't hold
                raise Refusal("invalid_user", chat_user.identifier) from e
            email_field = User.get_email_field_name()
            if (
                identity.email_verified
                and has_field(User, email_field)
                and not getattr(user, email_field, "")
            ):
                setattr(user, email_field, identity.email)
                user.save(update_fields=[email_field])
        try:
            with transaction.atomic():
                OAuthAccount.objects.create(
                    user=user, provider=provider.id, subject=identity.subject, **fields
                )
        except IntegrityError:  # linked concurrently by a parallel callback
            account = OAuthAccount.objects.get(
                provider=provider.id, subject=identity.subject
            )
            user = account.user
    return user


def _existing_user(adapter: Any, identity: Identity, chat_user: hooks.User) -> Any:
    """The local user the identity names: by identifier, else by the email the
    provider verified (one such user, not several)."""
    User = get_user_model()
    existing = adapter.find_user(normalize(chat_user.identifier))
    email_field = User.get_email_field_name()
    if existing is None and identity.email_verified and has_field(User, email_field):
        matches = list(
            User._default_manager.filter(**{f"{email_field}__iexact": identity.email})[
                :2
            ]
        )
        existing = matches[0] if len(matches) == 1 else None
    return existing


def _extra_data(identity: Identity) -> dict[str, Any]:
    """What the provider said, kept on the link (bounded)."""
    extra = identity.raw
    if len(json.dumps(extra, default=str)) > MAX_EXTRA_DATA:
        extra = {k: identity.raw.get(k) for k in ("sub", "id", "login", "email")}
    return json.loads(json.dumps(extra, default=str))


# --- Redirects --------------------------------------------------------------------


def _allowed_hosts(request: HttpRequest) -> set[str]:
    hosts = {request.get_host()}
    frontend = urlsplit(str(settings.FRONTEND_URL))
    if frontend.netloc:
        hosts.add(frontend.netloc)
    return hosts


def safe_next(request: HttpRequest, url: str | None) -> str | None:
    """``url`` if it stays on this site or the configured front end, else None.

    Django's check rejects the tricks (``//evil``, ``/\\evil``, ``https:evil``,
    control characters) an open redirect is built from (CWE-601).
    """
    if not url or len(url) > 2048:
        return None
    if url_has_allowed_host_and_scheme(
        url, allowed_hosts=_allowed_hosts(request), require_https=request.is_secure()
    ):
        return url
    return None


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit(parts._replace(query=query))


def no_store(response: HttpResponseRedirect) -> HttpResponseRedirect:
    response["Cache-Control"] = "no-store"
    return response


# --- Views ------------------------------------------------------------------------

UNKNOWN = "Unknown OAuth provider."


def _lookup(provider_id: str) -> Provider:
    provider = get_provider(provider_id)
    if provider is None:
        raise exceptions.NotFound(UNKNOWN)
    return provider


def _redirect_uri(request: HttpRequest, provider: Provider) -> str:
    configured = provider.config.get("redirect_uri")
    if configured:
        return configured
    path = reverse("chatauth:oauth-callback", kwargs={"provider": provider.id})
    return request.build_absolute_uri(path)


class OAuthStartView(AsyncAPIView):
    """``GET auth/oauth/<provider>``: 302 to the provider's consent page."""

    @documented(
        request=None,
        responses={
            302: OpenApiResponse(description="To the provider's login page."),
            404: DetailSerializer,
        },
        summary="Start an OAuth / OpenID Connect login",
    )
    async def get(self, request: Request, provider: str) -> HttpResponseRedirect:
        found = _lookup(provider)
        django_request = request._request
        app = found.app()
        redirect_uri = _redirect_uri(django_request, found)
        try:
            # authlib draws the state, the PKCE verifier and (openid) the nonce.
            started = await app.create_authorization_url(redirect_uri)
        except (*PROVIDER_ERRORS, TimeoutError, ValueError, RuntimeError) as e:
            unavailable = isinstance(e, UNAVAILABLE)
            reason = "provider_unavailable" if unavailable else "provider_error"
            return await refuse(django_request, found, Refusal(reason), e)
        pending = _read_pending(django_request)
        now = time.time()
        # Oldest first; expired ones go, and past MAX_PENDING the oldest too.
        pending = {
            s: f
            for s, f in sorted(pending.items(), key=lambda i: i[1].get("expires", 0))
            if f.get("expires", 0) > now
        }
        while len(pending) >= MAX_PENDING:
            pending.pop(next(iter(pending)))
        pending[started["state"]] = {
            "provider": found.id,
            "code_verifier": started.get("code_verifier"),
            "nonce": started.get("nonce"),
            "redirect_uri": redirect_uri,
            "next": safe_next(django_request, request.query_params.get("next")),
            "expires": now + settings.OAUTH_STATE_LIFETIME.total_seconds(),
        }
        response = no_store(HttpResponseRedirect(started["url"]))
        _write_pending(response, found, pending)
        return response


class OAuthCallbackView(AsyncAPIView):
    """``GET auth/oauth/<provider>/callback``: the provider sends the browser back."""

    @documented(
        request=None,
        responses={
            302: OpenApiResponse(
                description="To FRONTEND_URL, logged in; or with ?error=<code>."
            ),
            404: DetailSerializer,
        },
        summary="Finish an OAuth / OpenID Connect login",
    )
    async def get(self, request: Request, provider: str) -> HttpResponseRedirect:
        found = _lookup(provider)
        django_request = request._request
        pending = _read_pending(django_request)
        try:
            flow = await self._take_state(django_request, found, pending)
            user, identity, token = await self._login(django_request, found, flow)
        except Refusal as refusal:
            response = await refuse(django_request, found, refusal)
        except UNAVAILABLE as e:
            response = await refuse(
                django_request, found, Refusal("provider_unavailable"), e
            )
        except (*PROVIDER_ERRORS, ValueError, KeyError, TypeError) as e:
            response = await refuse(django_request, found, Refusal("provider_error"), e)
        else:
            await flows.web_login(django_request, user, Method.OAUTH)
            try:
                if found.openid:
                    # (Here: chatauth.oidc_logout imports this module.)
                    from chatauth.oidc_logout import remember_login

                    await sync_to_async(remember_login)(
                        django_request, found, identity, token.get("id_token")
                    )
            except Exception as e:
                # A login the provider could not end later is no login: undone
                # before its session cookie ever reaches the browser.
                await sync_to_async(_undo_login)(django_request)
                response = await refuse(
                    django_request, found, Refusal("server_error"), e
                )
            else:
                target = flow.get("next") or str(settings.FRONTEND_URL)
                response = no_store(HttpResponseRedirect(target))
        _write_pending(response, found, pending)  # the used state is gone
        return response

    async def _take_state(
        self, request: HttpRequest, provider: Provider, pending: dict[str, Any]
    ) -> dict[str, Any]:
        state = request.GET.get("state")
        flow = pending.pop(state, None) if isinstance(state, str) else None
        # CSRF on the redirect endpoint (RFC 6749 §10.12): the state must be one
        # this browser started, for this provider (mix-up, RFC 9207), unexpired,
        # and never used before (single use, whatever cookie is replayed).
        if (
            flow is None
            or flow.get("provider") != provider.id
            or flow.get("expires", 0) <= time.time()
            or not await _first_use(state)
        ):
            raise Refusal("invalid_state")
        return flow

    async def _login(
        self, request: HttpRequest, provider: Provider, flow: dict[str, Any]
    ) -> tuple[Any, Identity, dict[str, Any]]:
        """The user who logged in, what the provider said, and its token
        response."""
        error = request.GET.get("error")
        if error:
            raise Refusal(
                "access_denied" if error == "access_denied" else "provider_error"
            )
        code = request.GET.get("code")
        if not code:
            raise Refusal("provider_error")
        app = provider.app()
        metadata = await app.load_server_metadata()
        iss = request.GET.get("iss")
        if iss is None and metadata.get(
            "authorization_response_iss_parameter_supported"
        ):
            # RFC 9207 §2.4: a provider that says it always sends ``iss`` and a
            # response without it: the response may come from another provider.
            raise Refusal("invalid_issuer")
        if iss is not None and metadata.get("issuer") and iss != metadata["issuer"]:
            raise Refusal("invalid_issuer")  # RFC 9207 §2.4
        token = await app.fetch_access_token(
            redirect_uri=flow["redirect_uri"],
            code=code,
            code_verifier=flow.get("code_verifier"),
        )
        if not token.get("access_token"):
            raise Refusal("provider_error")
        identity = checked(
            await fetch_identity(provider, app, token, flow.get("nonce"))
        )
        chat_user = default_user(provider, identity)
        adapter = get_adapter()
        callback = hooks.get_hook("oauth_callback")
        identifier_chosen = False
        if callback is not None:
            args: list[Any] = [
                provider.id,
                token["access_token"],
                identity.raw,
                chat_user,
                token.get("id_token"),
            ]
            if not _takes(callback, len(args)):
                args.pop()  # Chainlit's older four-argument callbacks
            try:
                result = await adapter.run_callback(callback, *args)
            except HookError as e:
                raise Refusal("callback_failed", chat_user.identifier) from e
            if result is None:
                raise Refusal("callback_refused", chat_user.identifier)
            identifier_chosen = result.identifier != chat_user.identifier
            chat_user = result
        user = await sync_to_async(link_account)(
            provider, identity, chat_user, identifier_chosen=identifier_chosen
        )
        if not adapter.can_authenticate(user):
            raise Refusal("user_inactive", chat_user.identifier)
        return user, identity, token


def _undo_login(request: HttpRequest) -> None:
    """Take back the ``login()`` this request just made: the session emptied
    and deleted (what was derived from it ends with it), the user anonymous.
    The new session key was never sent: even if its deletion fails (the
    database is down), the emptied session sets no cookie."""
    try:
        request.session.flush()
    except Exception:
        logger.exception("could not delete the session of an undone OAuth login")
        request.session.clear()
    request.user = AnonymousUser()  # type: ignore[attr-defined]


def _read_pending(request: HttpRequest) -> dict[str, Any]:
    """The logins this browser has in progress with one provider (the cookie's
    path selects the provider); {} for a missing, forged or expired cookie."""
    raw = request.COOKIES.get(STATE_COOKIE)
    if not raw:
        return {}
    try:
        pending = signing.loads(
            raw,
            salt=_STATE_SALT,
            max_age=settings.OAUTH_STATE_LIFETIME.total_seconds(),
        )
    except signing.BadSignature:
        return {}
    if not isinstance(pending, dict):
        return {}
    return {s: f for s, f in pending.items() if isinstance(f, dict)}


def _write_pending(
    response: HttpResponseRedirect, provider: Provider, pending: dict[str, Any]
) -> None:
    path = reverse("chatauth:oauth-start", kwargs={"provider": provider.id})
    if not pending:
        response.delete_cookie(STATE_COOKIE, path=path)
        return
    response.set_cookie(
        STATE_COOKIE,
        signing.dumps(pending, salt=_STATE_SALT, compress=True),
        max_age=int(settings.OAUTH_STATE_LIFETIME.total_seconds()),
        path=path,  # the provider's start and callback routes only
        secure=django_settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )


async def _first_use(state: str) -> bool:
    """Record that ``state`` was used; False if it had been (a replayed cookie)."""
    from chatauth.internal.cache import get_cache

    digest = hashlib.sha256(state.encode()).hexdigest()
    key = f"{settings.CACHE_PREFIX}:oauth-used:{digest}"
    lifetime = int(settings.OAUTH_STATE_LIFETIME.total_seconds()) + 1
    try:
        return bool(await sync_to_async(get_cache().add)(key, 1, lifetime))
    except Exception:  # no cache: the cookie's own single use stands
        logger.warning("cache unavailable; an OAuth state's single use not recorded")
        return True


def _takes(func: Any, count: int) -> bool:
    try:
        inspect.signature(func).bind(*range(count))
    except TypeError:
        return False
    except ValueError:
        return True
    return True


async def refuse(
    request: HttpRequest,
    provider: Provider,
    refusal: Refusal,
    error: BaseException | None = None,
) -> HttpResponseRedirect:
    """Audit ``refusal`` and send the browser to the front end with ``?error=``."""
    if error is not None:
        # The exception's repr names its type and the provider's message; never a
        # token (authlib's errors carry the error code and description only).
        logger.warning("OAuth login with %s failed: %r", provider.id, error)
    await sync_to_async(signals.auth_refused.send)(
        sender=OAuthCallbackView,
        event=AuditEvent.Event.OAUTH_REFUSED,
        identifier=refusal.identifier,
        method=Method.OAUTH,
        reason=refusal.reason,
        request=request,
    )
    target = with_query(str(settings.FRONTEND_URL), error=refusal.reason)
    return no_store(HttpResponseRedirect(target))
