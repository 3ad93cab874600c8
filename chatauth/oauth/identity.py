"""What a provider says about the user: :class:`Identity`, read from a
verified ID token (and userinfo) or GitHub's API, its claims checked before
they reach the database, and the ``default_user`` an ``oauth_callback`` gets.

ID tokens are verified as OpenID Connect Core §3.1.3.7 says (signature from the
provider's JWKS, ``iss``, ``aud``/``azp``, ``exp``, ``iat``, ``nonce``);
:func:`expected_issuer`, :func:`audience_accepted` and :func:`leeway` serve the
logout tokens of :mod:`chatauth.oauth.logout_tokens` too.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from joserfc.errors import JoseError

from chatauth import hooks
from chatauth.conf import settings
from chatauth.oauth.errors import Refusal
from chatauth.oauth.providers import OAuthApp, Provider

logger = logging.getLogger("chatauth.oauth")


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
    seconds: float = settings.LEEWAY.total_seconds()
    return seconds


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
