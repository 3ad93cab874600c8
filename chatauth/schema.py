"""The OpenAPI schema: drf-spectacular descriptions of chatauth's
authentication classes and views, their error answers from
:data:`chatauth.exceptions.ERRORS`, and the ``auth/schema`` route."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from django.urls import include, path
from django.utils.text import format_lazy
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiJsonRenderer2
from drf_spectacular.utils import OpenApiResponse
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from chatauth.exceptions import ERRORS
from chatauth.serializers import DetailSerializer

if TYPE_CHECKING:
    from drf_spectacular.openapi import AutoSchema

F = TypeVar("F", bound=Callable[..., Any])
#: What every route with a JSON body may answer: a malformed or oversized body.
BODY_ERRORS = ("invalid", "payload_too_large")


class JWTScheme(OpenApiAuthenticationExtension):
    target_class = "chatauth.authentication.JWTAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


class APIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "chatauth.authentication.APIKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>`",
        }


def documented(**kwargs: Any) -> Callable[[F], F]:
    """drf-spectacular's ``extend_schema`` for a view method, built on
    drf-spectacular's ``AutoSchema`` whatever the project's
    ``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]`` says (``extend_schema`` on a
    method subclasses that setting's class, read at import: with DRF's own
    default, ``auth/schema`` would fail)."""
    from drf_spectacular.openapi import AutoSchema
    from drf_spectacular.utils import extend_schema

    decorate = extend_schema(**kwargs)

    def apply(method: F) -> F:
        if not hasattr(method, "schema") and not hasattr(method, "kwargs"):
            # (a function attribute, as extend_schema sets its own)
            method.schema = AutoSchema  # type: ignore[attr-defined]
        return decorate(method)

    return apply


def error_responses(*codes: str) -> dict[int, OpenApiResponse]:
    """The error answers of a route that may refuse with ``codes`` (rows of
    :data:`chatauth.exceptions.ERRORS`): ``{status: {"detail": ...}}``, each
    status described by its codes and their messages."""
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(ERRORS[code].status, []).append(code)
    responses = {}
    for status, found in sorted(by_status.items()):
        # Lazy: the messages are translated when the schema is rendered.
        template = "\n".join(f"- `{code}`: {{}}" for code in found)
        description = format_lazy(template, *(ERRORS[c].message for c in found))
        responses[status] = OpenApiResponse(DetailSerializer, description=description)
    return responses


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

        schema_class: type = api_settings.DEFAULT_SCHEMA_CLASS  # type: ignore[assignment]  # a class once DRF imported the setting
        match = request.resolver_match
        if match is not None and not issubclass(schema_class, AutoSchema):
            # Where chatauth's URLs are mounted: this route's, less its own part.
            mounted = match.route.removesuffix("schema")
            self.patterns = [path(mounted, include("chatauth.urls"))]
        # drf-spectacular's views are untyped.
        response: Response = super().get(request, *args, **kwargs)  # type: ignore[no-untyped-call]
        return response
