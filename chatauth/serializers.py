"""Request and response shapes of the HTTP routes (also the OpenAPI schema's)."""

from __future__ import annotations

import json
from typing import Any

from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from chatauth.conf import settings

#: What these serializers describe: JSON objects (none wraps a model instance).
Shape = dict[str, Any]


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of casting them
    (NUL characters are refused by DRF's CharField already)."""

    default_error_messages = {"invalid": _("Must be a string.")}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class MetadataField(serializers.JSONField):
    """A JSON object no larger than ``MAX_METADATA_BYTES`` when serialised."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError(gettext("Must be a JSON object."))
        try:
            size = len(json.dumps(data, separators=(",", ":")).encode())
        except (TypeError, ValueError, RecursionError) as e:
            raise serializers.ValidationError(gettext("Must be plain JSON.")) from e
        if size > settings.MAX_METADATA_BYTES:
            raise serializers.ValidationError(
                gettext("Must be at most %(limit)d bytes.")
                % {"limit": settings.MAX_METADATA_BYTES}
            )
        return data


class UserSerializer(serializers.Serializer[Shape]):
    identifier = serializers.CharField()
    display_name = serializers.CharField(allow_null=True)
    metadata = serializers.DictField()


class LoginSerializer(serializers.Serializer[Shape]):
    username = StrictCharField(max_length=255, trim_whitespace=False)
    password = StrictCharField(max_length=4096, trim_whitespace=False)


class TokenPairSerializer(serializers.Serializer[Shape]):
    access_token = serializers.CharField()
    refresh_token = serializers.CharField()
    token_type = serializers.CharField(default="bearer")
    expires_in = serializers.IntegerField()
    user = UserSerializer()


class RefreshSerializer(serializers.Serializer[Shape]):
    refresh = StrictCharField(max_length=8192)


class LogoutSerializer(serializers.Serializer[Shape]):
    refresh = StrictCharField(max_length=8192, required=False)
    everywhere = serializers.BooleanField(required=False, default=False)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = data.get("everywhere") if isinstance(data, dict) else None
        if value is not None and not isinstance(value, bool):
            raise serializers.ValidationError(
                {"everywhere": [gettext("Must be a boolean.")]}
            )
        validated: dict[str, Any] = super().to_internal_value(data)
        return validated


class ConfigSerializer(serializers.Serializer[Shape]):
    password = serializers.BooleanField()
    header = serializers.BooleanField()
    oauth = serializers.ListField(child=serializers.CharField())
    copilot = serializers.BooleanField()


class CopilotRequestSerializer(serializers.Serializer[Shape]):
    identifier = StrictCharField(max_length=255)
    display_name = StrictCharField(
        max_length=255, required=False, allow_null=True, allow_blank=True
    )
    metadata = MetadataField(required=False, default=dict)


class CopilotTokenSerializer(serializers.Serializer[Shape]):
    access_token = serializers.CharField()
    token_type = serializers.CharField(default="bearer")
    expires_in = serializers.IntegerField()
    user = UserSerializer()


class DetailSerializer(serializers.Serializer[Shape]):
    detail = serializers.CharField()


class LogoutResponseSerializer(DetailSerializer):
    provider_logout_url = serializers.URLField(
        required=False,
        help_text="Only for a login through an OpenID provider with RP-initiated "
        "logout on: the provider's end_session_endpoint (with id_token_hint and "
        "post_logout_redirect_uri), to navigate to and end the provider's session.",
    )


class ChatSessionSerializer(serializers.Serializer[Shape]):
    id = serializers.UUIDField()
    opened_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()
    ip = serializers.IPAddressField(allow_null=True)
    user_agent = serializers.CharField()
    current = serializers.BooleanField()
