"""Exceptions with stable codes.

Internal errors (:class:`TokenError` and its subclasses) are raised inside the
library; the API exceptions below are what HTTP clients see.  Every code maps to a
WebSocket close code in :mod:`chatauth.constants`, so a refusal reads the same on
both transports.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions, status


class ChatAuthError(Exception):
    """Base for chatauth's internal errors; ``code`` is stable and machine-readable."""

    code = "error"
    default_detail = _("Authentication failed.")

    def __init__(self, detail: str | None = None, code: str | None = None) -> None:
        self.detail = detail or str(self.default_detail)
        if code:
            self.code = code
        super().__init__(self.detail)


class TokenError(ChatAuthError):
    """A token is malformed, badly signed, of the wrong type or for no usable user."""

    code = "token_not_valid"
    default_detail = _("Token is invalid.")


class TokenExpired(TokenError):
    code = "token_expired"
    default_detail = _("Token has expired.")


class TokenRevoked(TokenError):
    code = "token_revoked"
    default_detail = _("Token has been revoked.")


class HookError(ChatAuthError):
    """A registered callback raised; the original is chained, never shown."""

    code = "hook_failed"


class InvalidCredentials(exceptions.AuthenticationFailed):
    default_detail = _("Invalid credentials.")
    default_code = "invalid_credentials"


class InvalidToken(exceptions.AuthenticationFailed):
    default_detail = _("Token is invalid or expired.")
    default_code = "token_not_valid"


class Throttled(exceptions.Throttled):
    default_detail = _("Too many failed attempts. Try again later.")
    default_code = "throttled"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = _("Service temporarily unavailable. Try again shortly.")
    default_code = "service_unavailable"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = _("Request body is too large.")
    default_code = "payload_too_large"
