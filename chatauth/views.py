"""The HTTP routes of ``DESIGN.md`` (mounted with ``path("auth/", include(...))``)."""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.signals import (
    user_logged_in,
    user_logged_out,
    user_login_failed,
)
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from django.utils.decorators import method_decorator
from drf_spectacular.renderers import OpenApiJsonRenderer
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework import exceptions, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from chatauth import copilot, hooks, revocation, signals, throttling
from chatauth.adapter import get_adapter
from chatauth.authentication import APIKeyAuthentication, JWTAuthentication, TokenUser
from chatauth.conf import settings
from chatauth.constants import Method, TokenType, token_group
from chatauth.exceptions import (
    HookError,
    InvalidCredentials,
    InvalidToken,
    Throttled,
    TokenError,
)
from chatauth.internal.apiview import AsyncAPIView, ChatAuthAPIView
from chatauth.internal.calls import call
from chatauth.internal.http import client_ip, is_trusted_proxy
from chatauth.models import APIKey, AuditEvent, ChatSession
from chatauth.serializers import (
    ChatSessionSerializer,
    ConfigSerializer,
    CopilotRequestSerializer,
    CopilotTokenSerializer,
    DetailSerializer,
    LoginSerializer,
    LogoutSerializer,
    RefreshSerializer,
    TokenPairSerializer,
    UserSerializer,
)
from chatauth.tokens import (
    TokenPair,
    issue_copilot_token,
    issue_pair,
    verify_token,
)

logger = logging.getLogger("chatauth.views")
ERRORS = {
    400: DetailSerializer,
    401: DetailSerializer,
    413: DetailSerializer,
    429: DetailSerializer,
}


class BadRequest(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Invalid request."
    default_code = "invalid"


def validated(serializer_class: type, data: Any) -> dict[str, Any]:
    """Validate ``data`` or raise a 400 whose body is ``{"detail": "field: why"}``."""
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        field, messages = next(iter(serializer.errors.items()))
        message = messages[0] if isinstance(messages, list) else messages
        if isinstance(message, dict):  # nested: take the first leaf
            message = next(iter(message.values()))
            message = message[0] if isinstance(message, list) else message
        prefix = "" if field == "non_field_errors" else f"{field}: "
        raise BadRequest(f"{prefix}{message}")
    return serializer.validated_data


def session_key_id(session_key: str) -> str:
    """The token key of a Django session (chat sessions opened with its cookie)."""
    return "d-" + hashlib.sha256(session_key.encode()).hexdigest()[:40]


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


@transaction.atomic  # last_login and the audit row: one commit, not two
def complete_login(request: HttpRequest, user: Any, method: str) -> TokenPair:
    """Mint the pair of a user who just proved who they are, and announce it."""
    pair = issue_pair(user)
    user_logged_in.send(
        sender=user.__class__,
        request=request,
        user=user,
        method=method,
        token_id=pair.access["jti"],
    )
    return pair


def login_failed(request: HttpRequest, username: str, method: str, reason: str) -> None:
    user_login_failed.send(
        sender=__name__,
        credentials={"username": username},
        request=request,
        method=method,
        reason=reason,
    )


def pair_response(pair: TokenPair) -> Response:
    payload = pair.as_response()
    response = Response(payload)
    set_auth_cookie(response, payload["access_token"])
    return response


class ConfigView(ChatAuthAPIView):
    """Which login methods are on, for a login page to draw itself."""

    @extend_schema(responses=ConfigSerializer, summary="Login methods")
    def get(self, request: Request) -> Response:
        from chatauth.oauth import provider_ids

        return Response(
            {
                "password": True,
                "header": hooks.get_hook("header_auth_callback") is not None,
                "oauth": provider_ids(),
                "copilot": True,
            }
        )


class LoginView(AsyncAPIView):
    """Password login: the ``password_auth_callback``, else ``authenticate()``."""

    @extend_schema(
        request=LoginSerializer,
        responses={200: TokenPairSerializer, **ERRORS},
        summary="Log in with username and password",
    )
    async def post(self, request: Request) -> Response:
        data = validated(LoginSerializer, self.body(request))
        username, password = data["username"], data["password"]
        django_request = request._request
        reservation = throttling.reserve(username, client_ip(django_request))
        if not reservation.allowed:
            await sync_to_async(login_failed)(
                django_request, username, Method.PASSWORD, "throttled"
            )
            raise Throttled(wait=reservation.retry_after)
        adapter = get_adapter()
        try:
            user = await adapter.authenticate_password(
                django_request, username, password
            )
        except HookError:
            user, reason = None, "hook_failed"
        else:
            reason = "invalid_credentials"
        if user is not None and not adapter.can_authenticate(user):
            user, reason = None, "user_inactive"
        if user is None:
            # Django's authenticate() has sent user_login_failed already.
            if hooks.get_hook("password_auth_callback") or reason != (
                "invalid_credentials"
            ):
                await sync_to_async(login_failed)(
                    django_request, username, Method.PASSWORD, reason
                )
            # One answer for unknown user, wrong password, inactive user and a
            # failing callback: nothing here tells an attacker which it was.
            raise InvalidCredentials()
        throttling.release(reservation)
        pair = await sync_to_async(complete_login)(
            django_request, user, Method.PASSWORD
        )
        return pair_response(pair)


class HeaderLoginView(AsyncAPIView):
    """Runs the ``header_auth_callback`` on the headers a trusted proxy set."""

    @extend_schema(
        request=None,
        responses={200: TokenPairSerializer, **ERRORS},
        summary="Log in with trusted proxy headers",
    )
    async def post(self, request: Request) -> Response:
        django_request = request._request
        callback = hooks.get_hook("header_auth_callback")
        if callback is None:
            raise InvalidCredentials("Header login is not enabled.", code="disabled")
        ip = client_ip(django_request)
        if not is_trusted_proxy(ip):
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
            await sync_to_async(login_failed)(
                django_request, name, Method.HEADER, reason
            )
            raise InvalidCredentials()
        pair = await sync_to_async(complete_login)(django_request, user, Method.HEADER)
        return pair_response(pair)


class TokenRefreshView(ChatAuthAPIView):
    """Trade a refresh token for a new pair; the old one is denied from then on."""

    @extend_schema(
        request=RefreshSerializer,
        responses={200: TokenPairSerializer, **ERRORS},
        summary="Rotate a refresh token",
    )
    def post(self, request: Request) -> Response:
        data = self.body(request)
        if "refresh" not in data and "refresh_token" in data:
            data = {"refresh": data["refresh_token"]}
        raw = validated(RefreshSerializer, data)["refresh"]
        try:
            old = verify_token(raw, expected={TokenType.REFRESH})
        except TokenError as e:
            raise InvalidToken(e.detail, code=e.code) from e
        # Rotation: the first request to deny the old token wins; a replay (or a
        # concurrent second use) finds it denied and gets nothing.
        if not revocation.revoke_token(old, reason="rotated"):
            raise InvalidToken("Token has been revoked.", code="token_revoked")
        user = get_user_model()._default_manager.filter(pk=old.user_pk).first()
        if user is None or not get_adapter().can_authenticate(user):
            raise InvalidToken("User is inactive.", code="user_inactive")
        pair = issue_pair(user)
        signals.token_refreshed.send(
            sender=type(self),
            user=user,
            old_jti=old.key,
            new_jti=pair.refresh["jti"],
            request=request._request,
        )
        return pair_response(pair)


class MeView(AsyncAPIView):
    """Who the bearer token belongs to, from its claims (no database hit)."""

    authentication_classes = [JWTAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: UserSerializer, 401: DetailSerializer})
    async def get(self, request: Request) -> Response:
        return Response(request.auth.user_dict())


class LogoutView(ChatAuthAPIView):
    """Revoke the presented tokens, run ``on_logout``, clear cookies, close sockets."""

    authentication_classes = [JWTAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=LogoutSerializer,
        # 400/413: a malformed or oversized body (found by schemathesis).
        responses={code: DetailSerializer for code in (200, 400, 401, 413)},
        summary="Log out (this token, or everywhere)",
    )
    def post(self, request: Request) -> Response:
        data = validated(LogoutSerializer, self.body(request))
        django_request = request._request
        verified = request.auth if isinstance(request.user, TokenUser) else None
        user = request.user.get_user() if verified is not None else request.user
        if verified is not None:
            revocation.revoke_token(verified, reason="logout")
        if data.get("refresh"):
            self._revoke_refresh(data["refresh"], user)
        if data["everywhere"]:
            revocation.revoke_user(user, reason="logout_everywhere")
        session_key = getattr(django_request, "session", None)
        session_key = session_key.session_key if session_key is not None else None
        if session_key:
            revocation.notify(token_group(session_key_id(session_key)), reason="logout")
        copilot.revoke_session_tokens(django_request)  # before the flush below
        if hasattr(django_request, "session"):
            # What django.contrib.auth.logout() does, minus its user_logged_out
            # signal: the one sent below carries the method and token id.
            django_request.session.flush()
            django_request.user = AnonymousUser()
        response = Response({"detail": "Logged out."})
        response.delete_cookie(settings.AUTH_COOKIE)
        response.delete_cookie(django_settings.SESSION_COOKIE_NAME)
        for hook in hooks.get_hooks("on_logout"):
            try:
                call(hook, django_request, response)
            except Exception:
                logger.exception("on_logout hook %s raised", hook.__qualname__)
        user_logged_out.send(
            sender=user.__class__,
            request=django_request,
            user=user,
            method=Method.SESSION if verified is None else Method.TOKEN,
            everywhere=data["everywhere"],
            token_id=verified.key if verified else "",
        )
        return response

    def _revoke_refresh(self, raw: str, user: Any) -> None:
        try:
            refresh = verify_token(raw, expected={TokenType.REFRESH})
        except TokenError:
            return  # already unusable: nothing to revoke
        if str(refresh.user_pk) == str(user.pk):
            revocation.revoke_token(refresh, reason="logout")


class CopilotTokenView(ChatAuthAPIView):
    """Mint a copilot token: for the session's user, or, with an API key, for any
    ``{identifier, display_name?, metadata?}`` (created or updated)."""

    authentication_classes = [APIKeyAuthentication, SessionAuthentication]

    @extend_schema(
        request=CopilotRequestSerializer,
        responses={200: CopilotTokenSerializer, **ERRORS},
        summary="Mint a copilot access token",
    )
    @method_decorator(transaction.atomic)  # user, profile, audit: one commit
    def post(self, request: Request) -> Response:
        adapter = get_adapter()
        if isinstance(request.auth, APIKey):
            data = validated(CopilotRequestSerializer, self.body(request))
            chat_user = hooks.User(
                data["identifier"], data.get("display_name"), data.get("metadata") or {}
            )
            try:
                user = adapter.get_or_create_user(chat_user)
            except HookError as e:
                raise BadRequest(e.detail) from e
            method = Method.API_KEY
        elif (
            request.user
            and request.user.is_authenticated
            and copilot.session_is_current(request._request)
        ):
            user, method = request.user, Method.SESSION
        else:
            raise exceptions.NotAuthenticated()
        if not adapter.can_authenticate(user):
            raise InvalidCredentials("User is inactive.", code="user_inactive")
        token = issue_copilot_token(user)
        if method == Method.SESSION:
            copilot.remember(request._request, token, user)  # ends with the session
        signals.token_issued.send(
            sender=type(self),
            user=user,
            token_type=TokenType.COPILOT,
            jti=token["jti"],
            method=method,
            request=request._request,
        )
        return Response(
            {
                "access_token": str(token),
                "token_type": "bearer",
                "expires_in": int(settings.COPILOT_TOKEN_LIFETIME.total_seconds()),
                "user": adapter.user_claims(user),
            }
        )


class SessionListView(ChatAuthAPIView):
    """The caller's open chat sessions."""

    authentication_classes = [JWTAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(
        responses={200: ChatSessionSerializer(many=True), 401: DetailSerializer}
    )
    def get(self, request: Request) -> Response:
        current = request.auth.key if isinstance(request.user, TokenUser) else None
        # A session whose worker missed three heartbeats is gone (killed worker)
        # even before ``chatauth_prune`` marks its row closed.
        alive_after = timezone.now() - timedelta(
            seconds=3 * settings.HEARTBEAT_INTERVAL
        )
        rows = ChatSession.objects.filter(
            user_id=request.user.pk,
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

    @extend_schema(responses={204: None, 401: DetailSerializer, 404: DetailSerializer})
    def delete(self, request: Request, session_id: Any) -> Response:
        from chatauth.sessions import close_session

        try:
            # Any string reaches this view (a JSON 404 for a malformed id, not
            # the HTML one the <uuid:> converter would give).
            session_id = uuid.UUID(str(session_id))
        except ValueError:
            raise exceptions.NotFound("No such open session.") from None
        row = ChatSession.objects.filter(
            pk=session_id, user_id=request.user.pk, closed_at__isnull=True
        ).first()
        if row is None:
            raise exceptions.NotFound("No such open session.")
        close_session(row, reason="revoked")
        return Response(status=status.HTTP_204_NO_CONTENT)


class SchemaView(SpectacularAPIView):
    """The OpenAPI 3 schema of the project's API (chatauth's routes too), as JSON."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    renderer_classes = [OpenApiJsonRenderer]
