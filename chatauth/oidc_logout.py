"""OpenID Connect logout, both ways: the provider ends chatauth's logins, and
logging out of chatauth can end the provider's session.

**Back-Channel Logout 1.0** (``POST auth/oauth/<id>/backchannel-logout``).  The
provider POSTs a ``logout_token`` (a JWT, as a form field) when its session
ends.  It is verified as §2.6 of the spec requires -- signature from the
provider's JWKS with one of its ID-token algorithms, ``iss``, ``aud``, ``iat``
(no older than ``OAUTH_LOGOUT_TOKEN_MAX_AGE``, not in the future), ``exp`` if
present, the back-channel ``events`` member, a ``sid`` and/or ``sub``, no
``nonce``, a ``jti`` never seen before -- and then exactly what it names ends:

* ``sid``: the logins made in that provider session (each login records the
  ID token's ``sid``: :class:`~chatauth.models.ProviderLogin`);
* ``sub`` alone: every login of that subject through that provider;

each through :func:`chatauth.flows.logout`, as a user's own logout: the Django
session, the copilot tokens minted for it and every chat socket opened with
either close (4410) on every worker, ``on_logout`` hooks run (with ``request``
None), audited with the provider as actor (``provider:<id>``).  Logins the
user made otherwise (a password, another provider) stay.  Recording the
``jti`` and ending the logins are one transaction (:func:`apply_logout`): a
logout that fails leaves nothing behind, and the provider's retry is accepted.

Answers (§2.8): ``200`` with an empty body, or ``400`` with ``{"error":
"invalid_request", "error_description": ..., "detail": ...}`` (``detail`` as
every chatauth error has); always ``Cache-Control: no-store``.  Each refusal is
audited (``backchannel_refused``, counted like other refusals of unknown
clients) with a stable reason and ``provider:<id>`` as identifier -- as actor
only when the provider's signature on the refused token was verified; the
token itself is never logged or stored, only a hash of its ``jti`` (the
denylist row that refuses a replay).

**RP-Initiated Logout 1.0**.  For a provider configured with
``"rp_initiated_logout": True`` or a ``"post_logout_redirect_uri"``, the ID
token of each login is kept server side (on its ``ProviderLogin`` row,
encrypted, never logged) and ``POST auth/logout`` of such a login answers,
besides ending it, ``provider_logout_url``: the provider's
``end_session_endpoint`` with ``id_token_hint``, ``client_id`` and
``post_logout_redirect_uri``, for the front end to navigate to
(:func:`provider_logout_url`; it never asks the provider anything).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.contrib.auth import SESSION_KEY
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from drf_spectacular.utils import OpenApiResponse
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatauth import audit, flows, revocation, signals, websessions
from chatauth.conf import settings
from chatauth.constants import Method, TokenType
from chatauth.internal.apiview import AsyncAPIView
from chatauth.internal.cache import get_cache
from chatauth.models import AuditEvent, ProviderLogin, RevokedToken
from chatauth.oauth import (
    PROVIDER_ERRORS,
    UNAVAILABLE,
    Identity,
    Provider,
    Refusal,
    audience_accepted,
    expected_issuer,
    get_provider,
    leeway,
    with_query,
)
from chatauth.schema import documented
from chatauth.serializers import DetailSerializer
from chatauth.tokens import VerifiedToken, get_secret, session_key_id

logger = logging.getLogger("chatauth.oidc_logout")

#: The ``events`` member that makes a JWT a logout token (§2.4).
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: The form body, at most: a logout token is about 1 KB.  Past it: 400, unread.
#: (Smaller than the ``MAX_BODY_BYTES`` setting of the other routes.)
LOGOUT_BODY_LIMIT = 16 * 1024
#: The token itself, at most (as chatauth's own tokens).
MAX_TOKEN_LENGTH = 8192
#: ``sid``, ``sub`` and ``jti`` longer than this are not a provider's.
MAX_CLAIM_LENGTH = 255
#: An ID token kept for ``id_token_hint``, at most.  The hint travels in a URL
#: (the ``end_session_endpoint``'s query), and browsers, proxies and providers
#: cut URLs at about 8 KiB: a longer ID token is not kept, and the logout URL
#: names the client (``client_id``) instead.
MAX_ID_TOKEN_LENGTH = 6 * 1024
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
#: The HKDF label of the key that encrypts kept ID tokens (never the key of
#: anything else derived from the same secret).
_ID_TOKEN_PURPOSE = b"chatauth.oidc_logout.id_token_hint"


# --- Verifying a logout token ---------------------------------------------------


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


# --- Ending what a logout token names -----------------------------------------------


def actor(provider: Provider) -> str:
    return f"provider:{provider.id}"


def apply_logout(provider: Provider, token: LogoutToken) -> int:
    """Record ``token``'s ``jti`` and end the logins it names, as one unit:
    one transaction, so that if ending fails (a database error, a receiver of
    the logout that raises) the ``jti`` is not recorded either and the
    provider's retry of the same token is accepted.  The sockets are told to
    close once it has committed.  How many logins were still live; raises
    :class:`LogoutTokenRefused` (``replayed``) for a ``jti`` seen before."""
    with revocation.notifying_after(), transaction.atomic():
        if not _first_use(provider, token):
            raise LogoutTokenRefused(
                "replayed", "Logout token already used.", verified=True
            )
        return end_logins(provider, token)


def _first_use(provider: Provider, token: LogoutToken) -> bool:
    """Record ``token``'s ``jti``; False if it was seen before (a replay).

    A row of the denylist (its unique key decides, on every worker, whatever
    the cache), kept as long as the token could be accepted at all.
    """
    digest = hashlib.sha256(f"{provider.id}\0{token.jti}".encode()).hexdigest()
    until = (
        token.issued_at
        + settings.OAUTH_LOGOUT_TOKEN_MAX_AGE.total_seconds()
        + 2 * leeway()
    )
    try:
        with transaction.atomic():
            RevokedToken.objects.create(
                key=f"j-{digest[:40]}",
                token_type="logout_token",
                reason="used",
                expires_at=datetime.fromtimestamp(until, tz=UTC),
            )
    except IntegrityError:
        return False
    return True


def end_logins(provider: Provider, token: LogoutToken) -> int:
    """End the logins ``token`` names; how many were still live."""
    rows = ProviderLogin.objects.filter(provider=provider.id).select_related("user")
    if token.sid is not None:
        rows = rows.filter(sid=token.sid)
    if token.sub is not None:
        rows = rows.filter(subject=token.sub)
    ended = 0
    with audit.acting_as(actor(provider)):
        for row in rows:
            ended += _end(row)
        if not ended:
            # Nothing live (logged out already, or never here): the call is
            # still on record, as no user's logout (no user, its own reason).
            audit.record(
                AuditEvent.Event.LOGOUT,
                method=Method.BACKCHANNEL,
                reason="no_session",
            )
    return ended


def _end(row: ProviderLogin) -> bool:
    """End the Django session of ``row`` (and all that derives from it), as
    its user's own logout would; False if it had ended already."""
    session = websessions.store(row.session_key)
    if str(session.get(SESSION_KEY)) != str(row.user_id):
        if not session.session_key:  # (a missing session forgets its key)
            # Gone: whatever was derived from it is refused too, whichever way
            # it went (idempotent: a denial that exists is left as it is).
            websessions.end(row.session_key, reason="logout", user_pk=row.user_id)
        ProviderLogin.objects.filter(pk=row.pk).delete()
        return False
    credential = VerifiedToken(
        claims={},
        token_type=TokenType.SESSION,
        key=session_key_id(row.session_key),
        user_pk=row.user_id,
        issued_at=websessions.auth_time(session),
        expires_at=session.get_expiry_date().timestamp(),
        extra={"session_key": row.session_key},
    )
    flows.logout(None, row.user, credential=credential, method=Method.BACKCHANNEL)
    return True


# --- Recording logins ---------------------------------------------------------------


def remember_login(
    request: HttpRequest, provider: Provider, identity: Identity, id_token: Any
) -> None:
    """Record the login ``request`` just made through ``provider`` (after
    ``login()``): its provider session and subject, for back-channel logout,
    and the ID token (encrypted) when RP-initiated logout needs it as a hint.
    The session holds the row's id (:data:`chatauth.websessions.SESSION_LOGIN`)."""
    session = request.session
    user_pk = session.get(SESSION_KEY)
    key = session.session_key
    if user_pk is None or not key or len(key) > websessions.MAX_SESSION_KEY:
        return  # no server-side session to name (signed cookies: check W012)
    keep = (
        provider.rp_initiated_logout
        and isinstance(id_token, str)
        and len(id_token) <= MAX_ID_TOKEN_LENGTH
    )
    with transaction.atomic():  # a failure leaves no half-done transaction
        row = ProviderLogin.objects.create(
            user_id=request.user.pk,
            provider=provider.id,
            subject=identity.subject,
            sid=identity.session_id or "",
            session_key=key,
            id_token=seal(id_token) if keep else "",
        )
    record: dict[str, Any] = {"id": row.pk, "key": key}
    if provider.rp_initiated_logout:
        endpoint = provider.app().server_metadata.get("end_session_endpoint")
        if _usable_endpoint(endpoint):
            record["end_session"] = endpoint
    session[websessions.SESSION_LOGIN] = record


def forget_ended(batch: int = 500) -> int:
    """Delete the records of provider logins whose Django session no longer
    exists, or is no longer their user's (``chatauth_prune``); how many.
    Whether it exists, not when it was due to expire: a session's expiry
    slides (``SESSION_SAVE_EVERY_REQUEST``, ``set_expiry()``)."""
    deleted = 0
    last = 0
    while True:
        rows = list(
            ProviderLogin.objects.filter(pk__gt=last)
            .order_by("pk")
            .values_list("pk", "session_key", "user_id")[:batch]
        )
        if not rows:
            return deleted
        last = rows[-1][0]
        sessions = websessions.load_many([key for _, key, _ in rows])
        gone = [
            pk
            for pk, key, user_pk in rows
            if not sessions.get(key)
            or str(sessions[key].get(SESSION_KEY)) != str(user_pk)
        ]
        if gone:
            deleted += ProviderLogin.objects.filter(pk__in=gone).delete()[0]


# --- Keeping the ID token -----------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _fernet(secret: str) -> Fernet:
    """The key of kept ID tokens: HKDF-SHA256 of chatauth's signing secret,
    labelled for this use only."""
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=_ID_TOKEN_PURPOSE
    ).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal(id_token: str) -> str:
    """``id_token`` encrypted (Fernet: AES-128-CBC and HMAC-SHA256) with a key
    derived from the current secret."""
    return _fernet(get_secret()).encrypt(id_token.encode()).decode("ascii")


def unseal(stored: str) -> str | None:
    """The ID token :func:`seal` made, with the current secret or one of
    ``PREVIOUS_SECRETS``; None when none of them opens it (the secret was
    rotated out) or nothing was kept."""
    if not stored:
        return None
    secrets = [get_secret(), *settings.PREVIOUS_SECRETS]
    try:
        opened = MultiFernet([_fernet(s) for s in secrets]).decrypt(stored.encode())
        return opened.decode()
    except (InvalidToken, ValueError, UnicodeError):
        logger.info("a kept ID token could not be decrypted (secret rotated?)")
        return None


# --- RP-initiated logout ------------------------------------------------------------


def _usable_endpoint(endpoint: Any) -> bool:
    return isinstance(endpoint, str) and endpoint.startswith(("https:", "http:"))


def provider_logout_url(request: HttpRequest) -> str | None:
    """Where to send the browser to end, at the provider, the session whose
    login made ``request``'s Django session (RP-Initiated Logout 1.0 §2): the
    provider's ``end_session_endpoint`` with ``client_id``,
    ``post_logout_redirect_uri`` and the login's ID token as
    ``id_token_hint`` (when it was kept and can still be decrypted).  None
    unless that login came through a provider with RP-initiated logout on and
    the provider's endpoint is known without asking it: from its discovery
    document as this process last read it, else as it was at login.  Logging
    out never waits for the provider.

    Call it *before* the session ends (its record goes with it).
    """
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    if not key:
        return None
    record = session.get(websessions.SESSION_LOGIN)
    rows = ProviderLogin.objects.filter(session_key=key)
    if isinstance(record, dict) and isinstance(record.get("id"), int):
        rows = rows.filter(pk=record["id"])
    row = rows.order_by("-created_at").values_list("provider", "id_token").first()
    if row is None:
        return None
    provider = get_provider(row[0])
    if provider is None or not provider.rp_initiated_logout:
        return None
    endpoint = provider.app().server_metadata.get("end_session_endpoint")
    if not _usable_endpoint(endpoint) and isinstance(record, dict):
        endpoint = record.get("end_session")
    if not _usable_endpoint(endpoint):
        logger.warning("no end_session_endpoint known for %s", provider.id)
        return None
    redirect = provider.config.get("post_logout_redirect_uri") or str(
        settings.FRONTEND_URL
    )
    params = {"client_id": provider.config["client_id"]}
    hint = unseal(row[1])
    if hint is not None and len(hint) <= MAX_ID_TOKEN_LENGTH:
        params["id_token_hint"] = hint
    params["post_logout_redirect_uri"] = request.build_absolute_uri(redirect)
    return with_query(endpoint, **params)


# --- The route ----------------------------------------------------------------------


class _AnyAccept(BaseContentNegotiation):
    """JSON whatever the provider's ``Accept`` says (the answer's form is the
    spec's, not negotiable: a 406 would read as a failed logout)."""

    def select_parser(self, request: Request, parsers: list) -> Any:
        return None

    def select_renderer(
        self, request: Request, renderers: list, format_suffix: str | None = None
    ) -> tuple[Any, str]:
        renderer = renderers[0]
        return renderer, renderer.media_type


def _refusal(description: str) -> Response:
    return Response(
        {
            "error": "invalid_request",
            "error_description": description,
            "detail": description,
        },
        status=400,
    )


def _logout_token(request: HttpRequest) -> str:
    """The ``logout_token`` of a form-encoded body of bounded size, or
    :class:`LogoutTokenRefused`."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = LOGOUT_BODY_LIMIT + 1
    if length > LOGOUT_BODY_LIMIT:
        raise LogoutTokenRefused("too_large", "Request body too large.")
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise LogoutTokenRefused(
            "malformed", "Expected application/x-www-form-urlencoded."
        )
    try:
        body = request.body
    except RequestDataTooBig as e:
        raise LogoutTokenRefused("too_large", "Request body too large.") from e
    if len(body) > LOGOUT_BODY_LIMIT:  # no Content-Length (chunked): read, then bounded
        raise LogoutTokenRefused("too_large", "Request body too large.")
    try:
        form = parse_qs(body.decode("ascii"), strict_parsing=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError) as e:
        raise LogoutTokenRefused("malformed", "Malformed form body.") from e
    tokens = form.get("logout_token") or []
    if len(tokens) != 1:
        raise LogoutTokenRefused("malformed", "Expected one logout_token.")
    return tokens[0]


class BackchannelLogoutView(AsyncAPIView):
    """``POST auth/oauth/<provider>/backchannel-logout``: the provider ends logins
    (OpenID Connect Back-Channel Logout 1.0)."""

    content_negotiation_class = _AnyAccept
    parser_classes: list[type] = []

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # DRF's own, without ChatAuthAPIView's 413 for a long body: the view
        # bounds and parses the body itself, and answers 400 as §2.8 wants.
        APIView.initial(self, request, *args, **kwargs)

    @documented(
        request={
            "application/x-www-form-urlencoded": {
                "type": "object",
                "properties": {"logout_token": {"type": "string"}},
                "required": ["logout_token"],
            }
        },
        responses={
            200: OpenApiResponse(description="The logins it names have ended."),
            400: OpenApiResponse(
                description='Refused: {"error": "invalid_request", '
                '"error_description": ...}.'
            ),
            404: DetailSerializer,
        },
        summary="OpenID Connect back-channel logout",
        auth=[],
    )
    async def post(self, request: Request, provider: str) -> Response:
        found = get_provider(provider)
        if found is None or not found.backchannel_logout:
            raise NotFound("Unknown OAuth provider.")
        django_request = request._request
        try:
            token = await verify_logout_token(found, _logout_token(django_request))
            await sync_to_async(apply_logout)(found, token)
        except LogoutTokenRefused as refused:
            # The provider is the actor only of what it signed: anyone can POST
            # garbage, and that is not the provider's doing.
            await sync_to_async(signals.auth_refused.send)(
                sender=type(self),
                event=AuditEvent.Event.BACKCHANNEL_REFUSED,
                method=Method.BACKCHANNEL,
                reason=refused.reason,
                request=django_request,
                identifier=actor(found),
                actor=actor(found) if refused.verified else "",
            )
            return _refusal(refused.description)
        return Response(status=200)
