"""The HTTP routes of chatauth (``docs/http-api.md``), mounted with
``path("auth/", include("chatauth.urls"))``.

Logins, refresh, logout, ``auth/me``, ``auth/config`` and the caller's chat
sessions are here; ``auth/copilot/token`` is :mod:`chatauth.copilot_token`'s and
``auth/schema`` :mod:`chatauth.schema`'s (both views are named here too), the
OAuth routes :mod:`chatauth.oauth`'s and ``auth/verify``
:mod:`chatauth.forwardauth`'s.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.utils import timezone
from django.utils.translation import gettext
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from chatauth import flows, hooks, signals
from chatauth.adapter import get_adapter
from chatauth.authentication import JWTAuthentication, TokenUser
from chatauth.conf import settings
from chatauth.constants import Method
from chatauth.copilot_token import CopilotTokenView as CopilotTokenView
from chatauth.credentials import VerifiedToken
from chatauth.exceptions import BadRequest as BadRequest
from chatauth.exceptions import (
    HookError,
    InvalidCredentials,
    NotAuthenticated,
    NotFound,
)
from chatauth.internal.apiview import AsyncAPIView, ChatAuthAPIView, validated
from chatauth.internal.http import is_trusted_proxy, peer_ip
from chatauth.models import AuditEvent, ChatSession
from chatauth.oauth.rp_logout import provider_logout_url
from chatauth.schema import BODY_ERRORS, documented, error_responses
from chatauth.schema import SchemaView as SchemaView
from chatauth.serializers import (
    ChatSessionSerializer,
    ConfigSerializer,
    LoginSerializer,
    LogoutResponseSerializer,
    LogoutSerializer,
    RefreshSerializer,
    TokenPairSerializer,
    UserSerializer,
)
from chatauth.tokens import TokenPair

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

logger = logging.getLogger("chatauth.views")


def _caller(request: Request) -> AbstractBaseUser | AnonymousUser | TokenUser:
    """``request.user``: a bearer token's is a :class:`TokenUser` (DRF's stubs
    know Django's users only)."""
    return request.user


def _caller_pk(request: Request) -> str | int:
    """The pk of ``request.user`` in a view that requires it authenticated."""
    pk: str | int | None = _caller(request).pk
    if pk is None:  # (never: IsAuthenticated)
        raise NotAuthenticated()
    return pk


def set_auth_cookie(response: Response, access: str) -> None:
    secure = settings.AUTH_COOKIE_SECURE
    if secure is None:
        secure = not django_settings.DEBUG
    response.set_cookie(
        settings.AUTH_COOKIE,
        access,
        max_age=int(settings.ACCESS_TOKEN_LIFETIME.total_seconds()),
        httponly=True,
        secure=secure,
        samesite=settings.AUTH_COOKIE_SAMESITE,
    )


def pair_response(pair: TokenPair) -> Response:
    payload = pair.as_response()
    response = Response(payload)
    set_auth_cookie(response, payload["access_token"])
    return response


class ConfigView(ChatAuthAPIView):
    """Which login methods are on, for a login page to draw itself.  Header
    login only when a header callback is set and this request came through a
    trusted proxy (the only way ``auth/header`` can succeed)."""

    @documented(responses=ConfigSerializer, summary="Login methods")
    def get(self, request: Request) -> Response:
        from chatauth.oauth import provider_ids

        return Response(
            {
                "password": True,
                "header": hooks.get_hook("header_auth_callback") is not None
                and is_trusted_proxy(peer_ip(request._request)),
                "oauth": provider_ids(),
                "copilot": True,
            }
        )


class LoginView(AsyncAPIView):
    """Password login: the ``password_auth_callback``, else ``authenticate()``."""

    @documented(
        request=LoginSerializer,
        responses={
            200: TokenPairSerializer,
            **error_responses(*BODY_ERRORS, "invalid_credentials", "throttled"),
        },
        summary="Log in with username and password",
    )
    async def post(self, request: Request) -> Response:
        data = validated(LoginSerializer, self.body(request))
        django_request = request._request
        user = await flows.password_login(
            django_request, data["username"], data["password"]
        )
        pair = await sync_to_async(flows.complete_login)(
            django_request, user, Method.PASSWORD
        )
        return pair_response(pair)


class HeaderLoginView(AsyncAPIView):
    """Runs the ``header_auth_callback`` on the headers a trusted proxy set."""

    @documented(
        request=None,
        responses={
            200: TokenPairSerializer,
            **error_responses(
                *BODY_ERRORS,
                "header_login_disabled",
                "invalid_credentials",
                "throttled",
            ),
        },
        summary="Log in with trusted proxy headers",
    )
    async def post(self, request: Request) -> Response:
        django_request = request._request
        callback = hooks.get_hook("header_auth_callback")
        if callback is None:
            raise InvalidCredentials(code="header_login_disabled")
        # The peer itself, not the client behind it: only a trusted proxy may
        # assert who the user is.
        if not is_trusted_proxy(peer_ip(django_request)):
            await sync_to_async(signals.auth_refused.send)(
                sender=type(self),
                event=AuditEvent.Event.HEADER_REFUSED,
                method=Method.HEADER,
                reason="untrusted_proxy",
                request=django_request,
            )
            raise InvalidCredentials()
        adapter = get_adapter()
        try:
            chat_user = await adapter.run_callback(callback, django_request.headers)
        except HookError:
            chat_user, reason = None, "hook_failed"
        else:
            reason = "invalid_credentials"
        user = None
        if chat_user is not None:
            try:
                user = await sync_to_async(adapter.get_or_create_user)(chat_user)
            except HookError:  # e.g. an identifier the user model cannot hold
                reason = "hook_failed"
            else:
                if not adapter.can_authenticate(user):
                    user, reason = None, "user_inactive"
        if user is None:
            name = chat_user.identifier if chat_user else ""
            await sync_to_async(flows.login_failed)(
                django_request, name, Method.HEADER, reason
            )
            raise InvalidCredentials()
        pair = await sync_to_async(flows.complete_login)(
            django_request, user, Method.HEADER
        )
        return pair_response(pair)


class TokenRefreshView(ChatAuthAPIView):
    """Trade a refresh token for a new pair; the old one is denied from then on."""

    @documented(
        request=RefreshSerializer,
        responses={
            200: TokenPairSerializer,
            **error_responses(
                *BODY_ERRORS, "token_not_valid", "token_revoked", "throttled"
            ),
        },
        summary="Rotate a refresh token",
    )
    def post(self, request: Request) -> Response:
        data = self.body(request)
        if "refresh" not in data and "refresh_token" in data:
            data = {"refresh": data["refresh_token"]}
        raw = validated(RefreshSerializer, data)["refresh"]
        return pair_response(flows.refresh(request._request, raw))


class MeView(AsyncAPIView):
    """Who the bearer token belongs to, from its claims (no database hit)."""

    authentication_classes = [JWTAuthentication]
    permission_classes = [IsAuthenticated]

    @documented(
        responses={
            200: UserSerializer,
            **error_responses("token_not_valid", "token_expired", "token_revoked"),
        }
    )
    async def get(self, request: Request) -> Response:
        verified = request.auth
        if not isinstance(verified, VerifiedToken):  # (never: JWTAuthentication)
            raise NotAuthenticated()
        return Response(verified.user_dict())


class LogoutView(ChatAuthAPIView):
    """Revoke the presented tokens, run ``on_logout``, clear cookies, close sockets."""

    authentication_classes = [JWTAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]

    @documented(
        request=LogoutSerializer,
        # 400/413: a malformed or oversized body (found by schemathesis).
        responses={
            200: LogoutResponseSerializer,
            **error_responses(*BODY_ERRORS, "not_authenticated", "token_not_valid"),
        },
        summary="Log out (this token, or everywhere)",
    )
    def post(self, request: Request) -> Response:
        data = validated(LogoutSerializer, self.body(request))
        caller = _caller(request)
        # (a bearer token's user holds the token, request.auth)
        verified = caller.token if isinstance(caller, TokenUser) else None
        user = caller.get_user() if isinstance(caller, TokenUser) else caller
        body = {"detail": gettext("Logged out.")}
        if verified is None:
            # A login through an OpenID provider with RP-initiated logout on:
            # where the front end sends the browser to end the provider's
            # session too (read before this session, and its record, end;
            # from what is known already: logging out never waits for the
            # provider).
            url = provider_logout_url(request._request)
            if url is not None:
                body["provider_logout_url"] = url
        response = Response(body)
        response.delete_cookie(settings.AUTH_COOKIE)
        response.delete_cookie(django_settings.SESSION_COOKIE_NAME)
        flows.logout(
            request._request,
            user,
            credential=verified,
            refresh_token=data.get("refresh"),
            everywhere=data["everywhere"],
            method=Method.SESSION if verified is None else Method.TOKEN,
            response=response,
        )
        return response


class SessionListView(ChatAuthAPIView):
    """The caller's open chat sessions."""

    authentication_classes = [JWTAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]

    @documented(
        responses={
            200: ChatSessionSerializer(many=True),
            **error_responses("not_authenticated"),
        }
    )
    def get(self, request: Request) -> Response:
        caller = _caller(request)
        # (a bearer token's user holds the token, request.auth)
        current = caller.token.key if isinstance(caller, TokenUser) else None
        # A session whose worker missed three heartbeats is gone (killed worker)
        # even before ``chatauth_prune`` marks its row closed.
        alive_after = timezone.now() - timedelta(
            seconds=3 * settings.HEARTBEAT_INTERVAL
        )
        rows = ChatSession.objects.filter(
            user_id=_caller_pk(request),
            closed_at__isnull=True,
            last_seen_at__gte=alive_after,
        ).order_by("-opened_at")[:500]
        return Response(
            [
                {
                    "id": str(row.id),
                    "opened_at": row.opened_at.isoformat(),
                    "last_seen_at": row.last_seen_at.isoformat(),
                    "ip": row.ip,
                    "user_agent": row.user_agent,
                    "current": bool(current) and row.token_key == current,
                }
                for row in rows
            ]
        )


class SessionDetailView(ChatAuthAPIView):
    """Close one of the caller's chat sessions (its socket closes with 4410)."""

    authentication_classes = [JWTAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]

    @documented(
        responses={
            204: None,
            **error_responses("not_authenticated", "session_not_found"),
        }
    )
    def delete(self, request: Request, session_id: Any) -> Response:
        from chatauth.chatsessions import close_session

        try:
            # Any string reaches this view (a JSON 404 for a malformed id, not
            # the HTML one the <uuid:> converter would give).
            session_id = uuid.UUID(str(session_id))
        except ValueError:
            raise NotFound(code="session_not_found") from None
        row = ChatSession.objects.filter(
            pk=session_id, user_id=_caller_pk(request), closed_at__isnull=True
        ).first()
        if row is None:
            raise NotFound(code="session_not_found")
        close_session(row, reason="revoked")
        return Response(status=status.HTTP_204_NO_CONTENT)
