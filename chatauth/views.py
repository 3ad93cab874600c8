"""The HTTP routes of chatauth (``docs/http-api.md``), mounted with
``path("auth/", include("chatauth.urls"))``."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.urls import include, path
from django.utils import timezone
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiJsonRenderer2
from drf_spectacular.views import SpectacularAPIView
from rest_framework import exceptions, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from chatauth import audit, copilot, flows, hooks, signals
from chatauth.adapter import get_adapter
from chatauth.authentication import APIKeyAuthentication, JWTAuthentication, TokenUser
from chatauth.conf import settings
from chatauth.constants import Method, TokenType
from chatauth.exceptions import (
    HookError,
    InvalidCredentials,
)
from chatauth.identifiers import normalize
from chatauth.internal.apiview import AsyncAPIView, ChatAuthAPIView
from chatauth.internal.http import is_trusted_proxy, peer_ip
from chatauth.models import APIKey, AuditEvent, ChatSession
from chatauth.oauth.rp_logout import provider_logout_url
from chatauth.schema import documented
from chatauth.serializers import (
    ChatSessionSerializer,
    ConfigSerializer,
    CopilotRequestSerializer,
    CopilotTokenSerializer,
    DetailSerializer,
    LoginSerializer,
    LogoutResponseSerializer,
    LogoutSerializer,
    RefreshSerializer,
    TokenPairSerializer,
    UserSerializer,
)
from chatauth.tokens import TokenPair, VerifiedToken

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
        responses={200: TokenPairSerializer, **ERRORS},
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
        responses={200: TokenPairSerializer, **ERRORS},
        summary="Log in with trusted proxy headers",
    )
    async def post(self, request: Request) -> Response:
        django_request = request._request
        callback = hooks.get_hook("header_auth_callback")
        if callback is None:
            raise InvalidCredentials("Header login is not enabled.", code="disabled")
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
        responses={200: TokenPairSerializer, **ERRORS},
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

    @documented(responses={200: UserSerializer, 401: DetailSerializer})
    async def get(self, request: Request) -> Response:
        return Response(request.auth.user_dict())


class LogoutView(ChatAuthAPIView):
    """Revoke the presented tokens, run ``on_logout``, clear cookies, close sockets."""

    authentication_classes = [JWTAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]

    @documented(
        request=LogoutSerializer,
        # 400/413: a malformed or oversized body (found by schemathesis).
        responses={
            200: LogoutResponseSerializer,
            **{code: DetailSerializer for code in (400, 401, 413)},
        },
        summary="Log out (this token, or everywhere)",
    )
    def post(self, request: Request) -> Response:
        data = validated(LogoutSerializer, self.body(request))
        verified = request.auth if isinstance(request.user, TokenUser) else None
        user = request.user.get_user() if verified is not None else request.user
        body = {"detail": "Logged out."}
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


class CopilotTokenView(ChatAuthAPIView):
    """Mint a copilot token: for the session's user; for the user of a bearer
    access token (tied to that login: logging out of it ends the copilot token
    too); or, with an API key, for any ``{identifier, display_name?,
    metadata?}`` (created or updated)."""

    authentication_classes = [
        APIKeyAuthentication,
        JWTAuthentication,
        SessionAuthentication,
    ]

    @documented(
        request=CopilotRequestSerializer,
        responses={200: CopilotTokenSerializer, 403: DetailSerializer, **ERRORS},
        summary="Mint a copilot access token",
    )
    def post(self, request: Request) -> Response:
        adapter = get_adapter()
        api_key = request.auth if isinstance(request.auth, APIKey) else None
        bearer = request.auth if isinstance(request.auth, VerifiedToken) else None
        if api_key is not None:
            body = self.body(request)
            data = validated(CopilotRequestSerializer, body)
            existing = self._in_scope(api_key, data["identifier"], adapter, request)
        elif bearer is not None:
            if bearer.token_type != TokenType.ACCESS or bearer.family is None:
                # A copilot token minting the next one would never expire.
                raise exceptions.PermissionDenied(
                    "A copilot token is minted with an access token, a signed-in "
                    "session or an API key."
                )
        elif not (
            request.user
            and request.user.is_authenticated
            and copilot.session_is_current(request._request)
        ):
            raise exceptions.NotAuthenticated()
        with transaction.atomic():  # user, profile, token, audit: one commit
            if bearer is not None:
                user = get_user_model().objects.filter(pk=bearer.user_pk).first()
                if user is None:
                    raise exceptions.NotAuthenticated()
            elif api_key is None:
                user = request.user
            elif existing is None:  # the key's new user, in the key's group
                user = self._create(api_key, data, adapter)
            else:
                user = existing
                if api_key.may_update_profiles and (
                    {"display_name", "metadata"} & set(body)
                ):
                    adapter.save_profile(user, self._chat_user(data))
            if not adapter.can_authenticate(user):
                raise InvalidCredentials("User is inactive.", code="user_inactive")
            # Tied to what minted it: the session (ends with it) or the API key.
            token = copilot.mint(
                request._request,
                user,
                api_key=api_key,
                family=None if bearer is None else bearer.family,
            )
            claims = adapter.user_claims(user)
        return Response(
            {
                "access_token": str(token),
                "token_type": "bearer",
                "expires_in": copilot.expires_in(token),
                "user": claims,
            }
        )

    @staticmethod
    def _chat_user(data: dict[str, Any]) -> hooks.User:
        return hooks.User(
            data["identifier"], data.get("display_name"), data.get("metadata") or {}
        )

    @staticmethod
    def _in_scope(
        api_key: APIKey, identifier: str, adapter: Any, request: Request
    ) -> Any:
        """The existing user ``identifier`` names (None: nobody yet), if the
        key may mint for them; else a 403, audited."""
        try:
            identifier = normalize(identifier)
            existing = adapter.find_user(identifier)
        except HookError as e:
            raise BadRequest(e.detail) from e
        if not api_key.may_mint_for(identifier, existing):
            audit.record(
                AuditEvent.Event.API_KEY_REFUSED,
                identifier=identifier,
                method=Method.API_KEY,
                success=False,
                reason="scope",
                request=request,
            )
            raise exceptions.PermissionDenied(
                "This API key may not mint tokens for this identity."
            )
        return existing

    def _create(self, api_key: APIKey, data: dict[str, Any], adapter: Any) -> Any:
        try:
            user = adapter.get_or_create_user(self._chat_user(data))
        except HookError as e:
            raise BadRequest(e.detail) from e
        if api_key.group_id is not None:
            user.groups.add(api_key.group_id)
        return user


class SessionListView(ChatAuthAPIView):
    """The caller's open chat sessions."""

    authentication_classes = [JWTAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]

    @documented(
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

    @documented(responses={204: None, 401: DetailSerializer, 404: DetailSerializer})
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
    """The OpenAPI 3 schema, as JSON: of the project's whole API when the
    project describes its views with drf-spectacular (its
    ``DEFAULT_SCHEMA_CLASS``), else of chatauth's routes alone (DRF's own
    schema class cannot describe a view to drf-spectacular)."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    schema = None  # not a route of the API it describes
    # The OpenAPI media type, and plain JSON for clients that ask for that.
    renderer_classes = [OpenApiJsonRenderer, OpenApiJsonRenderer2]

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        from drf_spectacular.openapi import AutoSchema
        from rest_framework.settings import api_settings

        if not issubclass(api_settings.DEFAULT_SCHEMA_CLASS, AutoSchema):
            # Where chatauth's URLs are mounted: this route's, less its own part.
            mounted = request.resolver_match.route.removesuffix("schema")
            self.patterns = [path(mounted, include("chatauth.urls"))]
        return super().get(request, *args, **kwargs)
