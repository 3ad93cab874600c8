"""Verifying an OpenID Connect Back-Channel Logout 1.0 logout token.

The provider POSTs a ``logout_token`` (a JWT, as a form field) when its session
ends (:mod:`chatauth.oauth.backchannel`).  It is verified as §2.6 of the spec
requires -- signature from the provider's JWKS with one of its ID-token
algorithms, ``iss``, ``aud``, ``iat`` (no older than
``OAUTH_LOGOUT_TOKEN_MAX_AGE``, not in the future), ``exp`` if present, the
back-channel ``events`` member, a ``sid`` and/or ``sub``, no ``nonce`` -- and
every bad input is a :class:`LogoutTokenRefused` with a stable reason, never
another exception.  (That its ``jti`` was never seen before is checked when
the logout is applied, in the same transaction.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from chatauth.conf import settings
from chatauth.internal.cache import get_cache
from chatauth.oauth.errors import PROVIDER_ERRORS, UNAVAILABLE, Refusal
from chatauth.oauth.identity import audience_accepted, expected_issuer, leeway
from chatauth.oauth.providers import Provider

# The logger of the module this began in (logging configurations name it).
logger = logging.getLogger("chatauth.oidc_logout")

#: The ``events`` member that makes a JWT a logout token (§2.4).
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: The token itself, at most (as chatauth's own tokens).
MAX_TOKEN_LENGTH = 8192
#: ``sid``, ``sub`` and ``jti`` longer than this are not a provider's.
MAX_CLAIM_LENGTH = 255
#: A token naming an unknown key makes chatauth re-read the provider's JWKS
#: (key rotation), at most this often per provider across every worker (a mark
#: in chatauth's cache): a stream of made-up key ids must not turn into a
#: stream of requests to the provider.
JWKS_REFRESH_INTERVAL = 60
#: Asymmetric JWS algorithms only: the keys are the provider's public JWKS (an
#: ``HS256`` token would be checked against a public key used as a secret).
_ASYMMETRIC = re.compile(r"^(RS|PS|ES)(256|384|512)$|^EdDSA$|^Ed25519$|^ES256K$")
#: JWS compact form; an empty signature too, so that ``alg: none`` is refused
#: for its algorithm, like every other one not accepted.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
#: ``typ`` values a logout token may carry (§2.4: ``logout+jwt``; older
#: providers send ``JWT`` or none).
_TYPES = {"logout+jwt", "application/logout+jwt", "jwt"}


class LogoutTokenRefused(Refusal):
    """A logout token (or its request) that must be refused: ``reason`` is the
    stable code audited, ``description`` the answer's ``error_description``;
    ``verified``: the provider's signature on it was checked (the refusal is
    then the provider's doing, and audited with it as actor)."""

    def __init__(self, reason: str, description: str, *, verified: bool = False):
        super().__init__(reason)
        self.description = description
        self.verified = verified


@dataclass(frozen=True)
class LogoutToken:
    """What a verified logout token says."""

    jti: str
    issued_at: float
    sub: str | None = None
    sid: str | None = None


def _segment(raw: str) -> dict[str, Any]:
    """The JSON object of one base64url segment, or :class:`ValueError`."""
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, RecursionError) as e:
        raise ValueError("not base64url JSON") from e
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _algorithms(metadata: dict[str, Any]) -> list[str]:
    algs = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
    return [a for a in algs if isinstance(a, str) and _ASYMMETRIC.match(a)]


async def _key_set(provider: Provider, *, refresh: bool = False) -> KeySet:
    app = provider.app()
    try:
        jwks = await app.fetch_jwk_set(force=refresh)
        return KeySet.import_key_set(jwks)
    except UNAVAILABLE as e:
        logger.warning("JWKS of %s unavailable: %r", provider.id, e)
        raise LogoutTokenRefused(
            "provider_unavailable", "The provider's keys could not be read."
        ) from e
    except (*PROVIDER_ERRORS, RuntimeError, ValueError, TypeError, KeyError) as e:
        logger.warning("JWKS of %s unusable: %r", provider.id, e)
        raise LogoutTokenRefused(
            "provider_error", "The provider's keys could not be read."
        ) from e


def _may_refresh_jwks(provider: Provider) -> bool:
    """Whether this worker may re-read ``provider``'s JWKS now: the first to
    ask in each :data:`JWKS_REFRESH_INTERVAL`, of every worker sharing the
    cache.  Without a cache, no re-read (a flood must not reach the provider)."""
    digest = hashlib.sha256(provider.id.encode()).hexdigest()[:32]
    key = f"{settings.CACHE_PREFIX}:oidc-jwks-refresh:{digest}"
    try:
        return bool(get_cache().add(key, 1, JWKS_REFRESH_INTERVAL))
    except Exception:
        logger.warning("cache unavailable: the JWKS of %s is not re-read", provider.id)
        return False


async def _decode(provider: Provider, raw: str, algorithms: list[str]) -> Any:
    """Check the signature against the provider's JWKS; the decoded token."""
    registry = JWSRegistry(algorithms=algorithms)
    key_set = await _key_set(provider)
    try:
        return jwt.decode(raw, key_set, registry=registry)
    except InvalidKeyIdError:
        # Maybe a new key (rotation): read the JWKS again, not too often.
        if not await sync_to_async(_may_refresh_jwks)(provider):
            raise
        key_set = await _key_set(provider, refresh=True)
        return jwt.decode(raw, key_set, registry=registry)


def _check_header(raw: Any) -> dict[str, Any]:
    """The checks that need nothing of the provider: a signed JWT's compact
    form, an asymmetric ``alg``, a logout token's ``typ``, no ``crit``."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_TOKEN_LENGTH:
        raise LogoutTokenRefused("malformed", "logout_token is not a JWT.")
    if not _COMPACT_JWS.fullmatch(raw):
        # Five segments would be an encrypted token: chatauth registers no
        # encryption key, so none is expected.
        raise LogoutTokenRefused("malformed", "logout_token is not a signed JWT.")
    try:
        header = _segment(raw.split(".", 1)[0])
    except ValueError as e:
        raise LogoutTokenRefused("malformed", "logout_token is not a JWT.") from e
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise LogoutTokenRefused("malformed", "logout_token has no algorithm.")
    # ``alg`` is checked before any key is touched: "none", HS256 against a
    # public key and every other algorithm confusion (RFC 8725 §2.1, §3.1).
    if not _ASYMMETRIC.match(alg):
        raise LogoutTokenRefused("bad_signature", "Algorithm not accepted.")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _TYPES):
        raise LogoutTokenRefused("malformed", "Not a logout token (typ).")
    if "crit" in header:  # no extension chatauth would understand (RFC 7515 §4.1.11)
        raise LogoutTokenRefused("malformed", "Unsupported critical header.")
    return header


async def verify_logout_token(provider: Provider, raw: Any) -> LogoutToken:
    """Verify ``raw`` as a logout token of ``provider`` (Back-Channel Logout
    1.0 §2.6); raises :class:`LogoutTokenRefused` for every bad input, never
    another exception."""
    header = _check_header(raw)
    app = provider.app()
    try:
        metadata = await app.load_server_metadata()
    except UNAVAILABLE as e:
        logger.warning("metadata of %s unavailable: %r", provider.id, e)
        raise LogoutTokenRefused(
            "provider_unavailable", "The provider's metadata could not be read."
        ) from e
    except (*PROVIDER_ERRORS, ValueError, TypeError) as e:
        logger.warning("metadata of %s unusable: %r", provider.id, e)
        raise LogoutTokenRefused(
            "provider_error", "The provider's metadata could not be read."
        ) from e
    algorithms = _algorithms(metadata)
    if header["alg"] not in algorithms:  # asymmetric, but not one it signs with
        raise LogoutTokenRefused("bad_signature", "Algorithm not accepted.")
    try:
        token = await _decode(provider, raw, algorithms)
    except (BadSignatureError, InvalidKeyIdError) as e:
        raise LogoutTokenRefused("bad_signature", "Signature not valid.") from e
    except LogoutTokenRefused:
        raise
    except (JoseError, ValueError, TypeError, KeyError, RecursionError) as e:
        raise LogoutTokenRefused("malformed", "logout_token is not a JWT.") from e
    # From here on, the provider signed what is refused.
    claims = token.claims
    try:
        if not isinstance(claims, dict):
            raise LogoutTokenRefused("malformed", "logout_token has no claims.")
        return check_claims(provider, metadata, claims)
    except LogoutTokenRefused as refused:
        refused.verified = True
        raise


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _claim_text(claims: dict[str, Any], name: str) -> str | None:
    """A string claim as the provider wrote it; None when absent; refused when
    not a short string without control characters."""
    value = claims.get(name)
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_CLAIM_LENGTH
        or any(ord(c) < 32 or ord(c) == 127 for c in value)
    ):
        raise LogoutTokenRefused("malformed", f"Invalid {name} claim.")
    return value


def check_claims(
    provider: Provider, metadata: dict[str, Any], claims: dict[str, Any]
) -> LogoutToken:
    """The claim checks of §2.6 on a token whose signature was verified."""
    issuer = metadata.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        raise LogoutTokenRefused("provider_error", "The provider has no issuer.")
    if claims.get("iss") != expected_issuer(issuer, claims):
        raise LogoutTokenRefused("wrong_issuer", "Wrong issuer.")
    if not audience_accepted(claims, provider.config["client_id"]):
        raise LogoutTokenRefused("wrong_audience", "Wrong audience.")
    now = time.time()
    skew = leeway()
    issued_at = _number(claims.get("iat"))
    if issued_at is None:
        raise LogoutTokenRefused("invalid_iat", "Missing iat claim.")
    if issued_at > now + skew:
        raise LogoutTokenRefused("invalid_iat", "Issued in the future.")
    if now - issued_at > settings.OAUTH_LOGOUT_TOKEN_MAX_AGE.total_seconds() + skew:
        raise LogoutTokenRefused("stale", "Issued too long ago.")
    if "exp" in claims:
        expires_at = _number(claims["exp"])
        if expires_at is None or expires_at < now - skew:
            raise LogoutTokenRefused("expired", "Expired.")
    # §2.6 step 5: a nonce means an ID token presented as a logout token.
    if "nonce" in claims:
        raise LogoutTokenRefused("nonce", "A logout token has no nonce.")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(
        events.get(BACKCHANNEL_EVENT), dict
    ):
        raise LogoutTokenRefused("invalid_events", "Not a back-channel logout event.")
    jti = _claim_text(claims, "jti")
    if jti is None:
        raise LogoutTokenRefused("missing_jti", "Missing jti claim.")
    sub = _claim_text(claims, "sub")
    sid = _claim_text(claims, "sid")
    if sub is None and sid is None:
        raise LogoutTokenRefused("missing_sid_sub", "Neither sid nor sub.")
    if sid is None and provider.config.get("backchannel_logout_session_required"):
        raise LogoutTokenRefused("missing_sid", "Missing sid claim.")
    return LogoutToken(jti=jti, issued_at=issued_at, sub=sub, sid=sid)
