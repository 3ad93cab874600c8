"""DRF authentication classes: bearer JWTs and API keys."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.utils.functional import cached_property
from rest_framework import authentication
from rest_framework.request import Request

from chatauth import signals
from chatauth.credentials import VerifiedToken
from chatauth.exceptions import InvalidCredentials, InvalidToken, TokenError
from chatauth.models import APIKey
from chatauth.tokens import averify_token, verify_token


class TokenUser:
    """``request.user`` for a bearer token: the token's identity, no database hit.

    ``get_user()`` loads the model instance when a view really needs it.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True

    def __init__(self, token: VerifiedToken) -> None:
        self.token = token
        self.pk = self.id = token.user_pk
        self.identifier = token.identifier

    def __str__(self) -> str:
        return self.identifier

    @cached_property
    def _user(self) -> Any:
        return get_user_model()._default_manager.get(pk=self.pk)

    def get_user(self) -> Any:
        return self._user


def bearer_token(header: str | bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not header:
        return None
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class JWTAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <access or copilot token>``, checked by
    :func:`~chatauth.tokens.verify_token` (signature, type and revocation)."""

    www_authenticate_realm = "api"

    def authenticate(self, request: Request) -> tuple[TokenUser, VerifiedToken] | None:
        raw = self._raw_token(request)
        if raw is None:
            return None
        try:
            verified = verify_token(raw)
        except TokenError as e:
            raise InvalidToken(e.detail, code=e.code) from e
        return TokenUser(verified), verified

    async def aauthenticate(
        self, request: Request
    ) -> tuple[TokenUser, VerifiedToken] | None:
        """:meth:`authenticate` for async views: the same check, without
        blocking the event loop (:func:`~chatauth.tokens.averify_token`); a
        database read runs on the request's sync thread, as in a sync view."""
        raw = self._raw_token(request)
        if raw is None:
            return None
        try:
            verified = await averify_token(raw, thread_sensitive=True)
        except TokenError as e:
            raise InvalidToken(e.detail, code=e.code) from e
        return TokenUser(verified), verified

    @staticmethod
    def _raw_token(request: Request) -> str | None:
        header = request.META.get("HTTP_AUTHORIZATION")
        if not header or not header.lower().startswith("bearer"):
            return None  # not ours: the next authentication class may take it
        raw = bearer_token(header)
        if raw is None:
            raise InvalidToken(code="malformed_authorization")
        return raw

    def authenticate_header(self, request: Request) -> str:
        return f'Bearer realm="{self.www_authenticate_realm}"'


class APIKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Api-Key <key>`` for server-to-server calls.

    ``request.user`` stays anonymous; ``request.auth`` is the :class:`APIKey`.
    """

    keyword = "api-key"

    def authenticate(self, request: Request) -> tuple[Any, APIKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, raw = header.strip().partition(" ")
        if scheme.lower() != self.keyword:
            return None
        key = APIKey.objects.get_from_key(raw.strip()) if raw.strip() else None
        signals.api_key_used.send(
            sender=APIKey, api_key=key, request=request, success=key is not None
        )
        if key is None:
            raise InvalidCredentials(code="api_key_invalid")
        from chatauth import audit

        audit.set_actor(f"api_key:{key.name}")  # what this request does is the key's
        from django.contrib.auth.models import AnonymousUser
        from django.utils import timezone

        now = timezone.now()
        # At most one write a minute per key: a busy backend minting tokens must
        # not turn every request into an extra commit (the audit row has each use).
        if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
            APIKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return AnonymousUser(), key

    def authenticate_header(self, request: Request) -> str:
        return "Api-Key"
