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
user made otherwise (a password, another provider) stay.

Answers (§2.8): ``200`` with an empty body, or ``400`` with ``{"error":
"invalid_request", "error_description": ..., "detail": ...}`` (``detail`` as
every chatauth error has); always ``Cache-Control: no-store``.  Each refusal is
audited (``backchannel_refused``, counted like other refusals of unknown
clients) with a stable reason; the token itself is never logged or stored,
only a hash of its ``jti`` (the denylist row that refuses a replay).

**RP-Initiated Logout 1.0**.  For a provider configured with
``"rp_initiated_logout": True`` or a ``"post_logout_redirect_uri"``, the ID
token of each login is kept server side (on its ``ProviderLogin`` row, never
logged) and ``POST auth/logout`` of such a login answers, besides ending it,
``provider_logout_url``: the provider's ``end_session_endpoint`` with
``id_token_hint``, ``client_id`` and ``post_logout_redirect_uri``, for the
front end to navigate to (:func:`provider_logout_url`).
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
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth import SESSION_KEY
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from drf_spectacular.utils import OpenApiResponse
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatauth import audit, flows, signals, websessions
from chatauth.conf import settings
from chatauth.constants import Method, TokenType
from chatauth.internal.apiview import AsyncAPIView
from chatauth.models import AuditEvent, ProviderLogin, RevokedToken
from chatauth.oauth import (
    PROVIDER_ERRORS,
    UNAVAILABLE,
    Identity,
    Provider,
    get_provider,
    with_query,
)
from chatauth.schema import documented
from chatauth.serializers import DetailSerializer
from chatauth.tokens import VerifiedToken, session_key_id

logger = logging.getLogger("chatauth.oidc_logout")

#: The ``events`` member that makes a JWT a logout token (§2.4).
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: The form body, at most: a logout token is about 1 KB.  Past it: 400, unread.
MAX_BODY_BYTES = 16 * 1024
#: The token itself, at most (as chatauth's own tokens).
MAX_TOKEN_LENGTH = 8192
#: ``sid``, ``sub`` and ``jti`` longer than this are not a provider's.
MAX_CLAIM_LENGTH = 255
#: An ID token kept for ``id_token_hint``, at most; a longer one is not kept.
MAX_ID_TOKEN_LENGTH = 16 * 1024
#: A token naming an unknown key makes chatauth re-read the provider's JWKS
#: (key rotation), at most this often per provider: a stream of made-up key ids
#: must not turn into a stream of requests to the provider.
JWKS_REFRESH_INTERVAL = 60.0
#: Asymmetric JWS algorithms only: the keys are the provider's public JWKS (an
#: ``HS256`` token would be checked against a public key used as a secret).
_ASYMMETRIC = re.compile(r"^(RS|PS|ES)(256|384|512)$|^EdDSA$|^Ed25519$|^ES256K$")
#: JWS compact form; an empty signature too, so that ``alg: none`` is refused
#: for its algorithm, like every other one not accepted.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
#: ``typ`` values a logout token may carry (§2.4: ``logout+jwt``; older
#: providers send ``JWT`` or none).
_TYPES = {"logout+jwt", "application/logout+jwt", "jwt"}
_jwks_refreshed: dict[str, float] = {}


# --- Verifying a logout token ---------------------------------------------------


class LogoutTokenRefused(Exception):
    """A logout token (or its request) that must be refused: ``reason`` is the
    stable code audited, ``description`` the answer's ``error_description``."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


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


async def _decode(provider: Provider, raw: str, algorithms: list[str]) -> Any:
    """Check the signature against the provider's JWKS; the decoded token."""
    registry = JWSRegistry(algorithms=algorithms)
    key_set = await _key_set(provider)
    try:
        return jwt.decode(raw, key_set, registry=registry)
    except InvalidKeyIdError:
        # Maybe a new key (rotation): read the JWKS again, not too often.
        now = time.monotonic()
        if now - _jwks_refreshed.get(provider.id, -JWKS_REFRESH_INTERVAL) < (
            JWKS_REFRESH_INTERVAL
        ):
            raise
        _jwks_refreshed[provider.id] = now
        key_set = await _key_set(provider, refresh=True)
        return jwt.decode(raw, key_set, registry=registry)


async def verify_logout_token(provider: Provider, raw: Any) -> LogoutToken:
    """Verify ``raw`` as a logout token of ``provider`` (Back-Channel Logout
    1.0 §2.6); raises :class:`LogoutTokenRefused` for every bad input, never
    another exception."""
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
    app = provider.app()
    try:
        metadata = await app.load_server_metadata()
    except UNAVAILABLE as e:
        raise LogoutTokenRefused(
            "provider_unavailable", "The provider's metadata could not be read."
        ) from e
    except (*PROVIDER_ERRORS, ValueError, TypeError) as e:
        raise LogoutTokenRefused(
            "provider_error", "The provider's metadata could not be read."
        ) from e
    algorithms = _algorithms(metadata)
    if not isinstance(header.get("alg"), str):
        raise LogoutTokenRefused("malformed", "logout_token has no algorithm.")
    # ``alg`` is checked before any key is touched: "none", HS256 against a
    # public key and every other algorithm confusion (RFC 8725 §2.1, §3.1).
    if header["alg"] not in algorithms:
        raise LogoutTokenRefused("bad_signature", "Algorithm not accepted.")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _TYPES):
        raise LogoutTokenRefused("malformed", "Not a logout token (typ).")
    if "crit" in header:  # no extension chatauth would understand (RFC 7515 §4.1.11)
        raise LogoutTokenRefused("malformed", "Unsupported critical header.")
    try:
        token = await _decode(provider, raw, algorithms)
    except (BadSignatureError, InvalidKeyIdError) as e:
        raise LogoutTokenRefused("bad_signature", "Signature not valid.") from e
    except LogoutTokenRefused:
        raise
    except (JoseError, ValueError, TypeError, KeyError, RecursionError) as e:
        raise LogoutTokenRefused("malformed", "logout_token is not a JWT.") from e
    claims = token.claims
    if not isinstance(claims, dict):
        raise LogoutTokenRefused("malformed", "logout_token has no claims.")
    return check_claims(provider, metadata, claims)


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
    if "{tenantid}" in issuer:  # Entra ID's multi-tenant template (see oauth)
        issuer = issuer.replace("{tenantid}", str(claims.get("tid", "")))
    if claims.get("iss") != issuer:
        raise LogoutTokenRefused("wrong_issuer", "Wrong issuer.")
    client_id = provider.config["client_id"]
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    # OIDC Core §3.1.3.7 (the ID token's rules, which §2.6 applies): this
    # client among the audiences, and the authorized party if one is named.
    if client_id not in audiences or claims.get("azp", client_id) != client_id:
        raise LogoutTokenRefused("wrong_audience", "Wrong audience.")
    now = time.time()
    leeway = settings.LEEWAY.total_seconds()
    issued_at = _number(claims.get("iat"))
    if issued_at is None:
        raise LogoutTokenRefused("invalid_iat", "Missing iat claim.")
    if issued_at > now + leeway:
        raise LogoutTokenRefused("invalid_iat", "Issued in the future.")
    if now - issued_at > settings.OAUTH_LOGOUT_TOKEN_MAX_AGE.total_seconds() + leeway:
        raise LogoutTokenRefused("stale", "Issued too long ago.")
    if "exp" in claims:
        expires_at = _number(claims["exp"])
        if expires_at is None or expires_at < now - leeway:
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


def first_use(provider: Provider, token: LogoutToken) -> bool:
    """Record ``token``'s ``jti``; False if it was seen before (a replay).

    A row of the denylist (its unique key decides, on every worker, whatever
    the cache), kept as long as the token could be accepted at all.
    """
    digest = hashlib.sha256(f"{provider.id}\0{token.jti}".encode()).hexdigest()
    until = (
        token.issued_at
        + settings.OAUTH_LOGOUT_TOKEN_MAX_AGE.total_seconds()
        + 2 * settings.LEEWAY.total_seconds()
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


# --- Ending what a logout token names -----------------------------------------------


def actor(provider: Provider) -> str:
    return f"provider:{provider.id}"


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
            # still on record.
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
        # Gone (its deletion ended it), or no longer this user's.
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
    and the ID token when RP-initiated logout needs it as a hint."""
    session = request.session
    user_pk = session.get(SESSION_KEY)
    if user_pk is None or not session.session_key:
        return
    keep = (
        provider.rp_initiated_logout
        and isinstance(id_token, str)
        and len(id_token) <= MAX_ID_TOKEN_LENGTH
    )
    ProviderLogin.objects.create(
        user_id=request.user.pk,
        provider=provider.id,
        subject=identity.subject,
        sid=identity.session_id or "",
        session_key=session.session_key,
        id_token=id_token if keep else "",
        expires_at=session.get_expiry_date(),
    )


# --- RP-initiated logout ------------------------------------------------------------


def provider_logout_url(request: HttpRequest) -> str | None:
    """Where to send the browser to end, at the provider, the session whose
    login made ``request``'s Django session (RP-Initiated Logout 1.0 §2): the
    provider's ``end_session_endpoint`` with ``id_token_hint``, ``client_id``
    and ``post_logout_redirect_uri``.  None unless that login came through a
    provider with RP-initiated logout on, and the provider has that endpoint.

    Call it *before* the session ends (its record goes with it).
    """
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    if not key:
        return None
    row = (
        ProviderLogin.objects.filter(session_key=key)
        .order_by("-created_at")
        .values_list("provider", "id_token")
        .first()
    )
    if row is None:
        return None
    provider = get_provider(row[0])
    if provider is None or not provider.rp_initiated_logout:
        return None
    try:
        metadata = async_to_sync(provider.app().load_server_metadata)()
    except (*PROVIDER_ERRORS, *UNAVAILABLE, ValueError, TypeError) as e:
        logger.warning("metadata of %s unavailable for logout: %r", provider.id, e)
        return None
    endpoint = metadata.get("end_session_endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith(("https:", "http:")):
        logger.warning("%s has no end_session_endpoint", provider.id)
        return None
    redirect = provider.config.get("post_logout_redirect_uri") or str(
        settings.FRONTEND_URL
    )
    params = {"client_id": provider.config["client_id"]}
    if row[1]:
        params["id_token_hint"] = row[1]
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
        length = MAX_BODY_BYTES + 1
    if length > MAX_BODY_BYTES:
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
    if len(body) > MAX_BODY_BYTES:  # no Content-Length (chunked): read, then bounded
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
        from rest_framework.exceptions import NotFound

        found = get_provider(provider)
        if found is None or not found.backchannel_logout:
            raise NotFound("Unknown OAuth provider.")
        django_request = request._request
        try:
            token = await verify_logout_token(found, _logout_token(django_request))
            if not await sync_to_async(first_use)(found, token):
                raise LogoutTokenRefused("replayed", "Logout token already used.")
        except LogoutTokenRefused as refused:
            await sync_to_async(signals.auth_refused.send)(
                sender=type(self),
                event=AuditEvent.Event.BACKCHANNEL_REFUSED,
                method=Method.BACKCHANNEL,
                reason=refused.reason,
                request=django_request,
                actor=actor(found),
            )
            return _refusal(refused.description)
        await sync_to_async(end_logins)(found, token)
        return Response(status=200)
