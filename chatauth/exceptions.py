"""Errors with stable codes, and the one table that says what each code means.

:data:`ERRORS` maps every code to its default message (translated when shown),
the HTTP status an API answer has, and the WebSocket close code a socket ends
with, so a refusal reads the same on both transports and in the OpenAPI schema
(:func:`chatauth.schema.error_responses`).  Call sites pass a code, never a
message: ``raise InvalidToken(code="token_revoked")``.

Internal errors (:class:`TokenError` and its subclasses, :class:`HookError`)
are raised inside the library; the API exceptions below them are what HTTP
clients see, as in DRF and simplejwt (``status_code``, ``default_detail``,
``default_code``, all from the table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions

from chatauth.constants import CloseCode

if TYPE_CHECKING:
    # (the stubs' lazy string: Promise at runtime, and a str once translated)
    from django_stubs_ext import StrPromise


@dataclass(frozen=True)
class ErrorCode:
    """One row of :data:`ERRORS`: a code and what it means on each transport."""

    code: str
    #: The default message (lazy: translated into the language active when shown).
    message: StrPromise
    #: The HTTP status of an API answer with this code.
    status: int
    #: The WebSocket close code; None only for a route's 404, which no socket meets.
    close_code: CloseCode | None


# A credential that was good and has been ended (logout, an admin action, the
# user deactivated or deleted) closes a socket with 4410, "log in again"; a bad
# or expired one with 4401, "refresh".  The HTTP statuses and close codes are
# the contract's (docs/http-api.md, docs/websocket.md).
_ROWS = (
    # 400: malformed input (on a socket: a protocol error).
    ErrorCode("invalid", _("Invalid request."), 400, CloseCode.PROTOCOL_ERROR),
    ErrorCode("parse_error", _("Malformed request."), 400, CloseCode.PROTOCOL_ERROR),
    ErrorCode(
        "invalid_content_length",
        _("Invalid Content-Length."),
        400,
        CloseCode.PROTOCOL_ERROR,
    ),
    ErrorCode(
        "invalid_encoding",
        _("Request body is not valid UTF-8."),
        400,
        CloseCode.PROTOCOL_ERROR,
    ),
    ErrorCode(
        "nested_too_deeply",
        _("Request body is nested too deeply."),
        400,
        CloseCode.PROTOCOL_ERROR,
    ),
    ErrorCode(
        "not_an_object", _("Expected a JSON object."), 400, CloseCode.PROTOCOL_ERROR
    ),
    # A registered callback failed, or returned what cannot be a user: shown as
    # a 400 where the caller sent the identity (an API key's request).
    ErrorCode(
        "hook_failed", _("Authentication failed."), 400, CloseCode.PROTOCOL_ERROR
    ),
    ErrorCode(
        "invalid_identifier",
        _("Invalid identifier."),
        400,
        CloseCode.PROTOCOL_ERROR,
    ),
    # 401: missing, invalid or expired credentials.
    ErrorCode(
        "not_authenticated",
        _("Authentication credentials were not provided."),  # DRF's message
        401,
        CloseCode.UNAUTHORIZED,
    ),
    ErrorCode("token_not_valid", _("Token is invalid."), 401, CloseCode.UNAUTHORIZED),
    ErrorCode("token_expired", _("Token has expired."), 401, CloseCode.UNAUTHORIZED),
    ErrorCode(
        "malformed_authorization",
        _("Malformed Authorization header."),
        401,
        CloseCode.UNAUTHORIZED,
    ),
    ErrorCode(
        "invalid_credentials",
        _("Invalid credentials."),
        401,
        CloseCode.UNAUTHORIZED,
    ),
    ErrorCode("api_key_invalid", _("Invalid API key."), 401, CloseCode.UNAUTHORIZED),
    ErrorCode(
        "header_login_disabled",
        _("Header login is not enabled."),
        401,
        CloseCode.UNAUTHORIZED,
    ),
    # 401, and 4410 on a socket: a credential that was good has been ended.
    ErrorCode("token_revoked", _("Token has been revoked."), 401, CloseCode.REVOKED),
    ErrorCode("user_inactive", _("User is inactive."), 401, CloseCode.REVOKED),
    ErrorCode("user_not_found", _("User not found."), 401, CloseCode.REVOKED),
    # 403: authenticated, not allowed.
    ErrorCode(
        "permission_denied",
        _("You do not have permission to perform this action."),  # DRF's message
        403,
        CloseCode.FORBIDDEN,
    ),
    ErrorCode(
        "copilot_token_refused",
        _(
            "A copilot token is minted with an access token, a signed-in session "
            "or an API key."
        ),
        403,
        CloseCode.FORBIDDEN,
    ),
    ErrorCode(
        "api_key_scope",
        _("This API key may not mint tokens for this identity."),
        403,
        CloseCode.FORBIDDEN,
    ),
    # 404: routes only.
    ErrorCode("not_found", _("Not found."), 404, None),  # DRF's message
    ErrorCode("session_not_found", _("No such open session."), 404, None),
    ErrorCode("provider_not_found", _("Unknown OAuth provider."), 404, None),
    # 413, 429, 503.
    ErrorCode(
        "payload_too_large",
        _("Request body is too large."),
        413,
        CloseCode.TOO_LARGE,
    ),
    ErrorCode(
        "throttled",
        _("Too many failed attempts. Try again later."),
        429,
        CloseCode.RATE_LIMITED,
    ),
    # 1011, or 4503 from a server that cannot send 1011 (the middleware swaps it).
    ErrorCode(
        "service_unavailable",
        _("Service temporarily unavailable. Try again shortly."),
        503,
        CloseCode.SERVER_ERROR,
    ),
)

#: Every error code chatauth raises -> its :class:`ErrorCode` row.
ERRORS: dict[str, ErrorCode] = {row.code: row for row in _ROWS}


def message(code: str) -> StrPromise:
    """The default message of ``code`` (lazy)."""
    return ERRORS[code].message


def close_code(error: Any) -> int:
    """The WebSocket close code of a refusal: of an error's ``code`` (or of a
    code itself); 4401 for a code no socket refusal has."""
    code = getattr(error, "code", error)
    row = ERRORS.get(code) if isinstance(code, str) else None
    if row is None or row.close_code is None:
        return int(CloseCode.UNAUTHORIZED)
    return int(row.close_code)


# --- Internal errors ----------------------------------------------------------------


class ChatAuthError(Exception):
    """Base for chatauth's internal errors; ``code`` is stable and machine-readable.

    A subclass names its ``code``; its ``default_detail`` is that code's
    message in :data:`ERRORS`.  ``detail`` is the message shown (translated
    when the error is raised), ``code`` may name another row of the table.
    """

    code = "error"
    default_detail: str | StrPromise = _("Authentication failed.")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        row = ERRORS.get(vars(cls).get("code", ""))
        if row is not None:  # a code of its own, from the table
            cls.default_detail = row.message

    def __init__(self, detail: str | None = None, code: str | None = None) -> None:
        if code:
            self.code = code
        text: str | StrPromise | None = detail
        if not text:
            row = ERRORS.get(self.code)
            text = row.message if row is not None else self.default_detail
        self.detail = str(text)
        super().__init__(self.detail)


class TokenError(ChatAuthError):
    """A token is malformed, badly signed, of the wrong type or for no usable user."""

    code = "token_not_valid"


class TokenExpired(TokenError):
    code = "token_expired"


class TokenRevoked(TokenError):
    code = "token_revoked"


class HookError(ChatAuthError):
    """A registered callback raised; the original is chained, never shown."""

    code = "hook_failed"


# --- API exceptions -----------------------------------------------------------------


# Coded is a mixin put before one of DRF's exceptions: it is typed as one (the
# attributes it sets, the __init__ it calls), and is a plain class at runtime.
if TYPE_CHECKING:
    _APIExceptionMixin = exceptions.APIException
else:
    _APIExceptionMixin = object


class Coded(_APIExceptionMixin):
    """DRF's ``APIException`` with ``status_code`` and ``default_detail`` from the
    row of its ``default_code``; ``SomeError(code=...)`` answers with the
    message of that row (a code of the same status)."""

    default_code: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        row = ERRORS.get(vars(cls).get("default_code", ""))
        if row is not None:  # else (a project's subclass) as inherited
            cls.status_code = row.status
            cls.default_detail = row.message

    def __init__(self, detail: Any = None, code: str | None = None, **kwargs: Any):
        if detail is None and code in ERRORS:
            detail = ERRORS[code].message
        # Keywords: DRF's Throttled takes ``wait`` first.
        super().__init__(detail=detail, code=code, **kwargs)


class BadRequest(Coded, exceptions.APIException):
    default_code = "invalid"


class ParseError(Coded, exceptions.ParseError):
    default_code = "parse_error"


class NotAuthenticated(Coded, exceptions.NotAuthenticated):
    default_code = "not_authenticated"


class InvalidCredentials(Coded, exceptions.AuthenticationFailed):
    default_code = "invalid_credentials"


class InvalidToken(Coded, exceptions.AuthenticationFailed):
    default_code = "token_not_valid"


class PermissionDenied(Coded, exceptions.PermissionDenied):
    default_code = "permission_denied"


class NotFound(Coded, exceptions.NotFound):
    default_code = "not_found"


class PayloadTooLarge(Coded, exceptions.APIException):
    default_code = "payload_too_large"


class Throttled(Coded, exceptions.Throttled):
    default_code = "throttled"


class ServiceUnavailable(Coded, exceptions.APIException):
    default_code = "service_unavailable"
