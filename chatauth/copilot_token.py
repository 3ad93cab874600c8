"""``POST auth/copilot/token``: a copilot token, the token the widget connects
with, for a Django session's user, for the user of a bearer access token, or,
with an API key, for any user in the key's scope (created or updated).

Minting itself, and the token's end with its session, is :mod:`chatauth.copilot`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response

from chatauth import audit, copilot, hooks
from chatauth.adapter import get_adapter
from chatauth.authentication import APIKeyAuthentication, JWTAuthentication
from chatauth.constants import Method, TokenType
from chatauth.credentials import VerifiedToken
from chatauth.exceptions import (
    BadRequest,
    HookError,
    InvalidCredentials,
    NotAuthenticated,
    PermissionDenied,
)
from chatauth.identifiers import normalize
from chatauth.internal.apiview import ChatAuthAPIView, validated
from chatauth.models import APIKey, AuditEvent
from chatauth.schema import BODY_ERRORS, documented, error_responses
from chatauth.serializers import CopilotRequestSerializer, CopilotTokenSerializer

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


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
        responses={
            200: CopilotTokenSerializer,
            **error_responses(
                *BODY_ERRORS,
                "hook_failed",
                "not_authenticated",
                "api_key_invalid",
                "user_inactive",
                "copilot_token_refused",
                "api_key_scope",
                "throttled",
            ),
        },
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
                raise PermissionDenied(code="copilot_token_refused")
        elif not (
            request.user
            and request.user.is_authenticated
            and copilot.session_is_current(request._request)
        ):
            raise NotAuthenticated()
        with transaction.atomic():  # user, profile, token, audit: one commit
            user: AbstractBaseUser | None
            if bearer is not None:
                user = get_user_model().objects.filter(pk=bearer.user_pk).first()
                if user is None:
                    raise NotAuthenticated()
            elif api_key is None:
                if isinstance(request.user, AnonymousUser):  # (never: checked above)
                    raise NotAuthenticated()
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
                raise InvalidCredentials(code="user_inactive")
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
            raise PermissionDenied(code="api_key_scope")
        return existing

    def _create(self, api_key: APIKey, data: dict[str, Any], adapter: Any) -> Any:
        try:
            user = adapter.get_or_create_user(self._chat_user(data))
        except HookError as e:
            raise BadRequest(e.detail) from e
        if api_key.group_id is not None:
            user.groups.add(api_key.group_id)
        return user
