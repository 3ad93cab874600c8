"""A presented token read: its signature, its form, the credential it names.

Steps 1 and 2 of the verification pipeline (:func:`chatauth.tokens.verify_token`
runs them, then identity and revocation), with no I/O:

1. **signature** (:func:`decode`): PyJWT with exactly the configured algorithm,
   the current secret then ``PREVIOUS_SECRETS``, ``exp`` required;
2. **form** (:func:`classify`): the type, and the credentials the token descends
   from (its *lineage*, below): a :class:`VerifiedToken`.

simplejwt's own ``Token(raw)`` verification is not used: it has no notion of
several secrets, of Chainlit's token format or of revocation by lineage, and
parsing twice would cost more than the check itself on the hot path.

Lineage.  A token is refused when any credential it descends from has ended,
not only itself: each such credential has a denylist key, carried in a claim.

``fam``   the login (refresh-token family) of an access or refresh token:
          logging out ends the family, and reusing a rotated refresh token
          ends it too (RFC 9700 §4.14.2);
``sid``   the Django session a copilot token was minted for (the widget on a
          signed-in page): signing out of the site ends it;
``akey``  the API key that minted a copilot token: revoking the key ends it;
identifier  (Chainlit format, no claim needed): the identifier's tombstone,
          written when its user is deleted or renamed.

The keys are stored in denylist rows (:mod:`chatauth.revocation`): their forms
must not change between versions.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import jwt
from django.core.exceptions import ImproperlyConfigured

from chatauth.conf import settings
from chatauth.constants import TokenType
from chatauth.exceptions import TokenError, TokenExpired
from chatauth.identifiers import InvalidIdentifier, normalize
from chatauth.internal import signed

#: Longer input is refused before any parsing (a JWT of ours is well under 2 KB).
MAX_TOKEN_LENGTH = 8192
TYPE_CLAIM = "token_type"
#: The exact issue time (epoch seconds, to the millisecond) of a token whose
#: ``iat`` is backdated for other verifiers' sake (:class:`CopilotToken`).
#: Revocation compares this one; a token without it, its ``iat``.
ISSUED_AT_CLAIM = "chatauth_iat"
#: Lineage claims (see the module docstring).
FAMILY_CLAIM = "fam"
SESSION_CLAIM = "sid"
API_KEY_CLAIM = "akey"
_JTI_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: What a lineage claim may hold: exactly the key forms chatauth writes.
_LINEAGE_RE = {
    FAMILY_CLAIM: re.compile(r"f-[0-9a-f]{32}"),
    SESSION_CLAIM: re.compile(r"d-[0-9a-f]{40}"),
    API_KEY_CLAIM: re.compile(r"k-[0-9]{1,20}"),
}
# JWS compact serialization (RFC 7515 section 7.1) is three base64url segments
# "with all trailing '=' characters omitted" (section 2).  PyJWT also decodes
# padded segments, so ``token + "="`` would otherwise be a second spelling of the
# same token: a different string for the denylist of tokens without a ``jti``.
_COMPACT_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def get_secret() -> str:
    secret: str = settings.SECRET
    if not secret:
        raise ImproperlyConfigured(
            "chatauth has no signing secret: set CHATAUTH['SECRET'] or the "
            "CHATAUTH_SECRET (or CHAINLIT_AUTH_SECRET) environment variable."
        )
    return secret


# --- Lineage keys --------------------------------------------------------------------


def new_family() -> str:
    """The key of a new login: its access and refresh tokens share it."""
    return "f-" + secrets.token_hex(16)


def session_key_id(session_key: str) -> str:
    """The key of a Django session: its copilot tokens and the chat sockets
    opened with its cookie (a hash: the session key itself is a credential)."""
    return "d-" + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def api_key_id(api_key_pk: Any) -> str:
    """The key of an API key: the copilot tokens it minted."""
    return f"k-{int(api_key_pk)}"


def identifier_id(identifier: str) -> str:
    """The key of an identifier: tokens that name it instead of a user id.
    Of its normal form (``DEMO`` and ``demo`` name one user)."""
    try:
        identifier = normalize(identifier)
    except InvalidIdentifier:
        pass  # names nobody: keyed as it is
    return "i-" + hashlib.sha256(identifier.encode()).hexdigest()[:40]


# --- Verifying -----------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedToken:
    """A credential that passed every check; what routes and consumers work with.

    Also stands for a Django session behind a chat socket (``token_type``
    ``"session"``, see :mod:`chatauth.websessions`).
    """

    claims: dict[str, Any]
    token_type: str
    #: The denylist key: ``jti``, ``s-`` + SHA-256 of a token without one, or
    #: ``d-`` + SHA-256 of a Django session's key.
    key: str
    user_pk: Any
    issued_at: float
    expires_at: float
    #: Not in ``repr()``: it may hold a Django session key (a credential).
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: Denylist keys of the credentials this one descends from.
    lineage: tuple[str, ...] = ()
    #: The user's identifier now, when the revocation check found it differs
    #: from the one the token was minted with (the user was renamed since).
    renamed_to: str | None = field(default=None, compare=False)

    @property
    def identifier(self) -> str:
        """The identifier the token names (what a Chainlit server reads)."""
        # (a string: classify() checks a Chainlit token's, chatauth mints its own)
        identifier: str = self.claims.get("identifier", "")
        return identifier

    @property
    def current_identifier(self) -> str:
        """The user's identifier as of the revocation check: what a service
        that keys users by identifier must be told (see
        :mod:`chatauth.forwardauth`)."""
        return self.renamed_to or self.identifier

    @property
    def revocation_keys(self) -> tuple[str, ...]:
        """Its own key, then its lineage: denying any of them refuses it."""
        return (self.key, *self.lineage)

    @property
    def family(self) -> str | None:
        return next((k for k in self.lineage if k.startswith("f-")), None)

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


def _lineage(claims: dict[str, Any]) -> tuple[str, ...]:
    found = []
    for claim, pattern in _LINEAGE_RE.items():
        value = claims.get(claim)
        if value is None:
            continue
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise TokenError()
        found.append(value)
    return tuple(found)


def _issued_at(claims: dict[str, Any]) -> float | None:
    """When the token was issued: its ``iat``, or for a copilot token its exact
    :data:`ISSUED_AT_CLAIM` (its ``iat`` is backdated by ``LEEWAY`` for
    verifiers with no leeway, see :class:`CopilotToken`).  The exact time must
    be a finite number at most a minute (or ``LEEWAY``, if longer) after that
    ``iat``, and not in the future beyond ``LEEWAY``: nothing else may move a
    token's issue time past a logout everywhere."""
    iat = _number(claims, "iat")
    if iat is not None and not math.isfinite(iat):
        raise TokenError()
    exact = claims.get(ISSUED_AT_CLAIM)
    if exact is None:
        return iat
    exact = _number(claims, ISSUED_AT_CLAIM)
    leeway = settings.LEEWAY.total_seconds()
    if (
        claims.get(TYPE_CLAIM) != TokenType.COPILOT
        or exact is None
        or iat is None
        or not math.isfinite(exact)
        or not iat <= exact <= iat + max(leeway, 60) + 1
        or exact > time.time() + leeway
    ):
        raise TokenError()
    return exact


def classify(claims: dict[str, Any], raw: str) -> VerifiedToken:
    """Work out the type, user, denylist key and lineage of decoded ``claims``."""
    token_type = claims.get(TYPE_CLAIM)
    expires_at = _number(claims, "exp")
    if expires_at is None or not math.isfinite(expires_at):
        raise TokenError()
    issued_at = _issued_at(claims)
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
        longest = settings.CHAINLIT_TOKEN_MAX_LIFETIME.total_seconds()
        if issued_at is None:
            # No ``iat``: an ``exp`` further ahead than the longest lifetime
            # allowed cannot be placed in time, so it is refused, and the
            # token counts as issued as early as it can have been.
            leeway = settings.LEEWAY.total_seconds()
            if expires_at - time.time() > longest + leeway:
                raise TokenError("Token lives longer than allowed.")
            issued_at = expires_at - longest
        return VerifiedToken(
            claims=claims,
            token_type=TokenType.CHAINLIT,
            key=token_key(claims, raw),
            user_pk=None,
            issued_at=issued_at,
            expires_at=expires_at,
            lineage=(*_lineage(claims), identifier_id(identifier)),
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
        lineage=_lineage(claims),
    )


def verify_signed(
    raw: Any, expected: Collection[str] = TokenType.ACCESS_LIKE
) -> VerifiedToken:
    """Steps 1 and 2 of the pipeline: signature, time claims, form and type (no
    I/O).  Revocation is not checked: never accept a token on this alone."""
    verified = classify(decode(raw), raw)
    if verified.token_type not in expected:
        raise TokenError("Token has wrong type.")
    return verified
