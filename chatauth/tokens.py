"""Minting and verifying chatauth's JWTs.

Minting goes through djangorestframework-simplejwt's :class:`Token`.  Verifying goes
through one function, :func:`verify_token`, which every HTTP route and every
WebSocket calls: signature and algorithm, expiry, type, then the revocation check
in :mod:`chatauth.revocation`.  It also accepts tokens minted the way Chainlit
documents it (PyJWT, HS256, ``identifier``/``metadata``/``exp``) when
``ACCEPT_CHAINLIT_TOKENS`` is on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import jwt
from django.core.exceptions import ImproperlyConfigured
from rest_framework_simplejwt.backends import TokenBackend
from rest_framework_simplejwt.tokens import Token

from chatauth.conf import settings
from chatauth.constants import TokenType
from chatauth.exceptions import TokenError, TokenExpired
from chatauth.internal import signed

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

#: Longer input is refused before any parsing (a JWT of ours is well under 2 KB).
MAX_TOKEN_LENGTH = 8192
TYPE_CLAIM = "token_type"
_JTI_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# JWS compact serialization (RFC 7515 section 7.1) is three base64url segments
# "with all trailing '=' characters omitted" (section 2).  PyJWT also decodes
# padded segments, so ``token + "="`` would otherwise be a second spelling of the
# same token: a different string for the denylist of tokens without a ``jti``.
_COMPACT_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_backend: TokenBackend | None = None


def get_secret() -> str:
    secret = settings.SECRET
    if not secret:
        raise ImproperlyConfigured(
            "chatauth has no signing secret: set CHATAUTH['SECRET'] or the "
            "CHATAUTH_SECRET (or CHAINLIT_AUTH_SECRET) environment variable."
        )
    return secret


def get_backend() -> TokenBackend:
    """simplejwt's backend for chatauth's key and algorithm (one per settings)."""
    global _backend
    if _backend is None:
        _backend = TokenBackend(
            settings.ALGORITHM,
            signing_key=get_secret(),
            audience=settings.AUDIENCE,
            issuer=settings.ISSUER,
            leeway=settings.LEEWAY,
        )
    return _backend


def reset_backend() -> None:
    global _backend
    _backend = None


class ChatToken(Token):
    """A simplejwt token whose lifetime and key are read from ``CHATAUTH`` when used."""

    lifetime_setting = ""

    @property
    def lifetime(self) -> timedelta:  # type: ignore[override]
        return getattr(settings, self.lifetime_setting)

    @property
    def token_backend(self) -> TokenBackend:  # type: ignore[override]
        return get_backend()

    def set_iat(self, claim: str = "iat", at_time: Any = None) -> None:
        # Millisecond precision, which RFC 7519 allows ("NumericDate ... non-integer
        # values can be represented"): logout-everywhere compares ``iat`` with the
        # moment of logout, and whole seconds cannot tell a token minted just
        # before it from one minted just after.
        at_time = at_time or self.current_time
        self.payload[claim] = round(at_time.timestamp(), 3)

    @classmethod
    def for_claims(cls, user_pk: Any, claims: dict[str, Any]) -> ChatToken:
        token = cls()
        token["user_id"] = str(user_pk)
        token.payload.update(claims)
        return token


class AccessToken(ChatToken):
    token_type = TokenType.ACCESS
    lifetime_setting = "ACCESS_TOKEN_LIFETIME"


class RefreshToken(ChatToken):
    token_type = TokenType.REFRESH
    lifetime_setting = "REFRESH_TOKEN_LIFETIME"


class CopilotToken(ChatToken):
    token_type = TokenType.COPILOT
    lifetime_setting = "COPILOT_TOKEN_LIFETIME"

    def set_lifetime(self, lifetime: timedelta) -> None:
        self.set_exp(from_time=self.current_time, lifetime=lifetime)


@dataclass(frozen=True)
class TokenPair:
    access: AccessToken
    refresh: RefreshToken
    user: dict[str, Any]

    def as_response(self) -> dict[str, Any]:
        return {
            "access_token": str(self.access),
            "refresh_token": str(self.refresh),
            "token_type": "bearer",
            "expires_in": int(settings.ACCESS_TOKEN_LIFETIME.total_seconds()),
            "user": self.user,
        }


def issue_pair(user: AbstractBaseUser) -> TokenPair:
    """Mint an access/refresh pair for ``user`` with its identity claims."""
    from chatauth.adapter import get_adapter

    claims = get_adapter().user_claims(user)
    access = AccessToken.for_claims(user.pk, claims)
    refresh = RefreshToken.for_claims(user.pk, {"identifier": claims["identifier"]})
    return TokenPair(access, refresh, claims)


def issue_copilot_token(
    user: AbstractBaseUser, lifetime: timedelta | None = None
) -> CopilotToken:
    """Mint a copilot access token for ``user`` (default ``COPILOT_TOKEN_LIFETIME``)."""
    from chatauth.adapter import get_adapter

    token = CopilotToken.for_claims(user.pk, get_adapter().user_claims(user))
    if lifetime is not None:
        token.set_lifetime(lifetime)
    return token


@dataclass(frozen=True)
class VerifiedToken:
    """A token that passed every check; what routes and consumers work with."""

    claims: dict[str, Any]
    token_type: str
    key: str  # the denylist key: ``jti``, or ``s-`` + SHA-256 of the token
    user_pk: Any
    issued_at: float
    expires_at: float
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def identifier(self) -> str:
        return self.claims.get("identifier", "")

    def user_dict(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "display_name": self.claims.get("display_name"),
            "metadata": self.claims.get("metadata") or {},
        }


def decode(raw: Any) -> dict[str, Any]:
    """Check the signature, algorithm and time claims of ``raw``; return its claims.

    Raises :class:`TokenError` for every malformed input (never another exception),
    and :class:`TokenExpired` past ``exp`` + ``LEEWAY``.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError as e:
            raise TokenError() from e
    if not isinstance(raw, str) or not raw or len(raw) > MAX_TOKEN_LENGTH:
        raise TokenError()
    leeway = settings.LEEWAY
    claims = signed.get(raw, leeway.total_seconds())
    if claims is not None:
        return claims  # this exact string passed everything below, unexpired
    checked_in = signed.generation()
    if not _COMPACT_RE.fullmatch(raw):  # fullmatch: "$" would allow a "\n"
        raise TokenError()
    keys = [get_secret(), *settings.PREVIOUS_SECRETS]
    last_error: Exception | None = None
    for key in keys:
        try:
            # ``algorithms`` is exactly the configured one, so "none" and any
            # algorithm confusion (RS256 public key used as an HMAC secret, ...)
            # is refused by PyJWT before a signature is computed.
            claims = jwt.decode(
                raw,
                key,
                algorithms=[settings.ALGORITHM],
                audience=settings.AUDIENCE,
                issuer=settings.ISSUER,
                leeway=leeway,
                options={"require": ["exp"], "verify_aud": bool(settings.AUDIENCE)},
            )
        except jwt.InvalidSignatureError as e:
            last_error = e  # maybe signed with a previous secret
        except jwt.ExpiredSignatureError as e:
            raise TokenExpired() from e
        except (jwt.InvalidTokenError, ValueError, TypeError) as e:
            raise TokenError() from e
        else:
            signed.put(raw, claims, settings.VERIFIED_TOKEN_CACHE_SIZE, checked_in)
            return claims
    raise TokenError() from last_error


def token_key(claims: dict[str, Any], raw: str) -> str:
    jti = claims.get("jti")
    if isinstance(jti, str) and _JTI_RE.match(jti):
        return jti
    # The signed part only: the signature's own encoding is not part of what the
    # token says, so no re-spelling of it can dodge the denylist.
    signing_input = raw.rpartition(".")[0]
    return "s-" + hashlib.sha256(signing_input.encode()).hexdigest()[:64]


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def classify(claims: dict[str, Any], raw: str) -> VerifiedToken:
    """Work out the type, user and denylist key of decoded ``claims``."""
    token_type = claims.get(TYPE_CLAIM)
    expires_at = _number(claims, "exp")
    if expires_at is None:
        raise TokenError()
    issued_at = _number(claims, "iat")
    if token_type is None:
        # Chainlit's own format: {"identifier", "metadata", "exp"}, no type, no jti.
        if not settings.ACCEPT_CHAINLIT_TOKENS:
            raise TokenError("Chainlit tokens are not accepted.")
        identifier = claims.get("identifier")
        metadata = claims.get("metadata", {})
        # NUL: PostgreSQL text cannot hold it (the user lookup would be a 500).
        if (
            not isinstance(identifier, str)
            or not 0 < len(identifier) <= 255
            or "\x00" in identifier
        ):
            raise TokenError()
        if metadata is not None and not isinstance(metadata, dict):
            raise TokenError()
        if issued_at is None:
            issued_at = expires_at - settings.CHAINLIT_TOKEN_LIFETIME.total_seconds()
        return VerifiedToken(
            claims=claims,
            token_type=TokenType.CHAINLIT,
            key=token_key(claims, raw),
            user_pk=None,
            issued_at=issued_at,
            expires_at=expires_at,
        )
    if token_type not in (TokenType.ACCESS, TokenType.REFRESH, TokenType.COPILOT):
        raise TokenError()
    user_pk = claims.get("user_id")
    if not isinstance(claims.get("jti"), str) or not isinstance(user_pk, str | int):
        raise TokenError()
    return VerifiedToken(
        claims=claims,
        token_type=token_type,
        key=token_key(claims, raw),
        user_pk=user_pk,
        issued_at=issued_at if issued_at is not None else 0.0,
        expires_at=expires_at,
    )


def verify_token(
    raw: Any,
    expected: Collection[str] = TokenType.ACCESS_LIKE,
    *,
    cache_only: bool = False,
) -> VerifiedToken:
    """The one check of a presented token: valid, of an ``expected`` type, not revoked.

    Every route and every WebSocket calls this (the async side through
    :func:`averify_token`).  Raises :class:`TokenError` (``token_not_valid``),
    :class:`TokenExpired` or :class:`~chatauth.exceptions.TokenRevoked`.
    """
    from chatauth import revocation

    verified = _verify_signed(raw, expected)
    return revocation.check(verified, cache_only=cache_only)


def _verify_signed(raw: Any, expected: Collection[str]) -> VerifiedToken:
    """Everything but revocation: signature, time claims, form and type."""
    verified = classify(decode(raw), raw)
    if verified.token_type not in expected:
        raise TokenError("Token has wrong type.")
    return verified


async def averify_token(
    raw: Any,
    expected: Collection[str] = TokenType.ACCESS_LIKE,
    *,
    thread_sensitive: bool = False,
) -> VerifiedToken:
    """:func:`verify_token` for async code, without blocking the event loop.

    The signature check (CPU only) runs on the loop.  The revocation check runs
    there too when the cache can decide it without blocking: a local-memory
    cache (no I/O), or Django's Redis cache read through ``redis.asyncio``.  A
    cache miss, a cache failure or another cache backend goes to a worker
    thread (database and sync cache), as :func:`verify_token` would:
    ``thread_sensitive`` as in :func:`asgiref.sync.sync_to_async` (True in a
    Django request: the request's own sync thread and database connection).
    """
    from asgiref.sync import sync_to_async

    from chatauth import revocation
    from chatauth.internal.cache import is_local

    verified = _verify_signed(raw, expected)
    try:
        if is_local():
            return revocation.check(verified, cache_only=True)
        return await revocation.acheck_cached(verified)
    except revocation.NeedsDatabase:
        pass
    if thread_sensitive:
        return await sync_to_async(revocation.check)(verified)
    return await sync_to_async(_check_in_worker, thread_sensitive=False)(verified)


def _check_in_worker(verified: VerifiedToken) -> VerifiedToken:
    from django.db import close_old_connections

    from chatauth import revocation

    try:
        return revocation.check(verified)
    finally:
        # A worker thread is not a request thread: nothing else ever closes its
        # connection once obsolete or broken (e.g. after a database restart).
        close_old_connections()
