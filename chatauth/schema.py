"""drf-spectacular descriptions of chatauth's authentication classes and views."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from drf_spectacular.extensions import OpenApiAuthenticationExtension

if TYPE_CHECKING:
    from drf_spectacular.openapi import AutoSchema

F = TypeVar("F", bound=Callable[..., Any])


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
