"""OpenID Connect Back-Channel Logout 1.0: ``POST
auth/oauth/<id>/backchannel-logout``, the provider ends chatauth's logins.

The ``logout_token`` is verified (:mod:`chatauth.oauth.logout_tokens`), its
``jti`` must never have been seen before, and then exactly what it names ends:

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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from django.contrib.auth import SESSION_KEY
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from drf_spectacular.utils import OpenApiResponse
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatauth import audit, flows, revocation, signals, websessions
from chatauth.conf import settings
from chatauth.constants import Method, TokenType
from chatauth.credentials import VerifiedToken, session_key_id
from chatauth.internal.apiview import AsyncAPIView
from chatauth.models import AuditEvent, ProviderLogin, RevokedToken
from chatauth.oauth.identity import leeway
from chatauth.oauth.logout_tokens import (
    LogoutToken,
    LogoutTokenRefused,
    verify_logout_token,
)
from chatauth.oauth.providers import Provider, get_provider
from chatauth.schema import documented
from chatauth.serializers import DetailSerializer

#: The form body, at most: a logout token is about 1 KB.  Past it: 400, unread.
#: (Smaller than the ``MAX_BODY_BYTES`` setting of the other routes.)
LOGOUT_BODY_LIMIT = 16 * 1024


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


# --- The route ----------------------------------------------------------------------


class _AnyAccept(BaseContentNegotiation):
    """JSON whatever the provider's ``Accept`` says (the answer's form is the
    spec's, not negotiable: a 406 would read as a failed logout)."""

    def select_parser(
        self, request: Request, parsers: Iterable[BaseParser]
    ) -> BaseParser | None:
        return None

    # DRF passes the view's renderers as a list (APIView.get_renderers); its
    # stubs say any iterable.
    def select_renderer(  # type: ignore[override]
        self,
        request: Request,
        renderers: list[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
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
