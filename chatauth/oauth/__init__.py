"""OAuth 2.0 / OpenID Connect login through authlib, and OpenID Connect logout.

One module per part, each importing only those before it:

* :mod:`~chatauth.oauth.errors` -- :class:`Refusal` and its codes;
* :mod:`~chatauth.oauth.providers` -- ``CHATAUTH["OAUTH_PROVIDERS"]``, the
  built-in profiles, authlib's client of each provider;
* :mod:`~chatauth.oauth.identity` -- what a provider says about the user (ID
  token, userinfo, GitHub's API), checked;
* :mod:`~chatauth.oauth.state` -- the logins a browser has in progress;
* :mod:`~chatauth.oauth.redirects` -- where the browser is sent;
* :mod:`~chatauth.oauth.linking` -- which user an identity logs in as (the
  decisions are the adapter's: :class:`~chatauth.adapter.DefaultAdapter`);
* :mod:`~chatauth.oauth.rp_logout` -- the record of each OpenID login, and
  RP-Initiated Logout (``provider_logout_url``);
* :mod:`~chatauth.oauth.views` -- ``GET auth/oauth/<id>`` and its callback;
* :mod:`~chatauth.oauth.logout_tokens` and :mod:`~chatauth.oauth.backchannel`
  -- Back-Channel Logout: ``POST auth/oauth/<id>/backchannel-logout``.

Logout (OpenID providers).  Each login through an OpenID provider is recorded
with the ID token's ``sid`` and ``sub``, so the provider can end it: ``POST
auth/oauth/<id>/backchannel-logout`` receives its Back-Channel Logout tokens (on
unless ``"backchannel_logout": False``; ``"backchannel_logout_session_required":
True`` refuses tokens without a ``sid``, as the client registration says).
With ``"rp_initiated_logout": True`` or a ``"post_logout_redirect_uri"`` (also
``OAUTH_<ID>_POST_LOGOUT_REDIRECT_URI``), ``POST auth/logout`` of such a login
also answers the provider's ``end_session_endpoint`` URL
(``provider_logout_url``), to end the session at the provider too.

The names below are importable from ``chatauth.oauth`` itself.
"""

from chatauth.oauth.backchannel import BackchannelLogoutView, apply_logout, end_logins
from chatauth.oauth.errors import PROVIDER_ERRORS, UNAVAILABLE, Refusal
from chatauth.oauth.identity import (
    CLAIM_LIMITS,
    Identity,
    audience_accepted,
    checked,
    default_user,
    expected_issuer,
    fetch_identity,
    leeway,
)
from chatauth.oauth.linking import link_account
from chatauth.oauth.logout_tokens import (
    BACKCHANNEL_EVENT,
    LogoutToken,
    LogoutTokenRefused,
    check_claims,
    verify_logout_token,
)
from chatauth.oauth.providers import (
    ALIASES,
    METADATA_TTL,
    PROFILES,
    OAuthApp,
    Profile,
    Provider,
    get_provider,
    provider_config,
    provider_ids,
    tls_context,
)
from chatauth.oauth.redirects import no_store, safe_next, with_query
from chatauth.oauth.rp_logout import (
    forget_ended,
    provider_logout_url,
    remember_login,
    seal,
    unseal,
)
from chatauth.oauth.state import MAX_PENDING, STATE_COOKIE
from chatauth.oauth.views import OAuthCallbackView, OAuthStartView, refuse

__all__ = [
    "ALIASES",
    "BACKCHANNEL_EVENT",
    "CLAIM_LIMITS",
    "MAX_PENDING",
    "METADATA_TTL",
    "PROFILES",
    "PROVIDER_ERRORS",
    "STATE_COOKIE",
    "UNAVAILABLE",
    "BackchannelLogoutView",
    "Identity",
    "LogoutToken",
    "LogoutTokenRefused",
    "OAuthApp",
    "OAuthCallbackView",
    "OAuthStartView",
    "Profile",
    "Provider",
    "Refusal",
    "apply_logout",
    "audience_accepted",
    "check_claims",
    "checked",
    "default_user",
    "end_logins",
    "expected_issuer",
    "fetch_identity",
    "forget_ended",
    "get_provider",
    "leeway",
    "link_account",
    "no_store",
    "provider_config",
    "provider_ids",
    "provider_logout_url",
    "refuse",
    "remember_login",
    "safe_next",
    "seal",
    "tls_context",
    "unseal",
    "verify_logout_token",
    "with_query",
]
