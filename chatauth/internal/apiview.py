"""Base views: JSON only, clean 4xx for bad input, and an async-capable APIView."""

from __future__ import annotations

import inspect
import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpRequest
from drf_spectacular.openapi import AutoSchema
from rest_framework.exceptions import APIException
from rest_framework.metadata import SimpleMetadata
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatauth.conf import settings
from chatauth.exceptions import (
    BadRequest,
    ParseError,
    PayloadTooLarge,
    ServiceUnavailable,
)

logger = logging.getLogger("chatauth.views")


class Metadata(SimpleMetadata):
    """``OPTIONS``: the route's name, media types and fields, not its docstring
    (DRF's default shows it: implementation notes are not for every client)."""

    def determine_metadata(self, request: Request, view: APIView) -> dict[str, Any]:
        metadata: dict[str, Any] = super().determine_metadata(request, view)
        metadata.pop("description", None)
        return metadata


class ChatAuthAPIView(APIView):
    """What every chatauth route shares, independent of the project's DRF settings."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    throttle_classes: list[type] = []
    renderer_classes = [JSONRenderer]
    # JSON only (docs/http-api.md: "all JSON").  Accepting form posts would let any site
    # submit a cross-site <form> to auth/login without a CORS preflight and plant
    # its own account's auth cookie in the victim's browser (login CSRF).
    parser_classes = [JSONParser]
    metadata_class = Metadata
    schema = AutoSchema()  # drf-spectacular's, whatever DEFAULT_SCHEMA_CLASS says

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise ParseError(code="invalid_content_length") from None
        if length > settings.MAX_BODY_BYTES:
            raise PayloadTooLarge()
        super().initial(request, *args, **kwargs)

    def get_authenticate_header(self, request: Request) -> str:
        # A refused credential is a 401 with a challenge on every route, also on
        # the login routes that take no Authorization header (DRF would say 403).
        return super().get_authenticate_header(request) or 'Bearer realm="api"'

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        # Tokens, identities, login answers: never kept by a browser or a shared
        # cache (RFC 9111 §5.2.2.5; OAuth 2.0 token responses, RFC 6749 §5.1).
        response["Cache-Control"] = "no-store"
        return response

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, RequestDataTooBig):
            exc = PayloadTooLarge()
        elif isinstance(exc, UnicodeDecodeError):
            exc = ParseError(code="invalid_encoding")
        elif isinstance(exc, RecursionError):  # json.loads of "[[[[..." (DRF: 500)
            exc = ParseError(code="nested_too_deeply")
        elif isinstance(exc, DatabaseError):
            logger.exception("database error in %s", type(self).__name__)
            exc = ServiceUnavailable()
        return super().handle_exception(exc)

    def body(self, request: Request) -> dict[str, Any]:
        """``request.data`` as a dict (form data flattened), or a 400."""
        data = request.data
        if hasattr(data, "dict"):
            data = data.dict()
        if not isinstance(data, dict):
            raise ParseError(code="not_an_object")
        return data


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
    result: dict[str, Any] = serializer.validated_data
    return result


class AsyncAPIView(ChatAuthAPIView):
    """An APIView whose handlers may be ``async def``.

    Authentication, permissions and throttles run as in DRF (they must be cheap:
    they run on the event loop); the handler is awaited.  Used where the work is
    slow and parallel (password hashing), so it never holds Django's single
    thread for sync views.  Every handler of a subclass must be ``async def``
    (Django's ``View.view_is_async`` then marks the view as a coroutine).
    """

    # A coroutine where APIView.dispatch returns a response: Django's View.as_view
    # awaits it, the handlers being async (view_is_async).
    async def dispatch(  # type: ignore[override]
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> Response:
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            await self._aauthenticate(request)
            self.initial(request, *args, **kwargs)
            name = (request.method or "").lower()
            if name in self.http_method_names and hasattr(self, name):
                handler = getattr(self, name)
            else:
                handler = self.http_method_not_allowed
            response = handler(request, *args, **kwargs)
            if inspect.isawaitable(response):
                response = await response
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response

    async def _aauthenticate(self, request: Request) -> None:
        from asgiref.sync import sync_to_async

        # DRF's Request._authenticate, awaited; what it calls on the request is
        # DRF's private API, which its stubs leave out.
        for authenticator in request.authenticators or ():
            aauthenticate = _async_authenticate(authenticator)
            try:
                if aauthenticate is not None:
                    result = await aauthenticate(request)
                else:
                    result = await sync_to_async(authenticator.authenticate)(request)
            except APIException:
                request._not_authenticated()  # type: ignore[attr-defined]
                raise
            if result is not None:
                request._authenticator = authenticator  # type: ignore[attr-defined]
                request.user, request.auth = result
                return
        request._not_authenticated()  # type: ignore[attr-defined]


def _async_authenticate(authenticator: Any) -> Any:
    """``authenticator.aauthenticate`` if it belongs with the ``authenticate`` that
    would run: a subclass that overrides only ``authenticate`` (say, to read a
    cookie) must not have its parent's ``aauthenticate`` used instead."""
    for klass in type(authenticator).__mro__:
        if "aauthenticate" in vars(klass):
            return authenticator.aauthenticate
        if "authenticate" in vars(klass):
            return None
    return None
