"""chatauth's tables: profiles, OAuth accounts, API keys, the denylist, live chat
sessions and the audit log.  Every model works with any ``AUTH_USER_MODEL``."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext_lazy as _


class Profile(models.Model):
    """Display name and metadata of a user, and their logout-everywhere time."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="chatauth_profile",
    )
    display_name = models.CharField(max_length=255, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    #: Tokens issued before this instant are refused (logout everywhere).
    tokens_not_before = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("chat profile")

    def __str__(self) -> str:
        return self.display_name or str(self.user)


class OAuthAccount(models.Model):
    """A provider identity linked to a user; ``(provider, subject)`` is unique."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="chatauth_oauth_accounts",
    )
    provider = models.CharField(max_length=64)
    subject = models.CharField(max_length=255)
    email = models.EmailField(blank=True, default="")
    email_verified = models.BooleanField(default=False)
    extra_data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("OAuth account")
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "subject"], name="chatauth_oauth_provider_subject"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.subject}"


class APIKeyManager(models.Manager["APIKey"]):
    def create_key(self, name: str, **fields: Any) -> tuple[APIKey, str]:
        """Create a key; return the row and the secret, which is never stored."""
        prefix = secrets.token_hex(4)
        raw = f"ca_{prefix}.{secrets.token_urlsafe(32)}"
        key = self.create(name=name, prefix=prefix, hashed_key=hash_key(raw), **fields)
        return key, raw

    def get_from_key(self, raw: str) -> APIKey | None:
        """The active key matching ``raw``, compared in constant time, or None."""
        if not raw.startswith("ca_") or "." not in raw or len(raw) > 128:
            return None
        prefix = raw[3:].split(".", 1)[0]
        digest = hash_key(raw)
        match = None
        for key in self.filter(prefix=prefix, revoked_at__isnull=True):
            if constant_time_compare(key.hashed_key, digest):
                match = key
        return match


def hash_key(raw: str) -> str:
    # API keys are 256-bit random strings, so a fast hash is enough: there is
    # nothing to brute-force, and a slow one would cost every request.
    return hashlib.sha256(raw.encode()).hexdigest()


class APIKey(models.Model):
    """A server-to-server key for minting copilot tokens; stored hashed, shown once."""

    name = models.CharField(max_length=100, unique=True)
    #: Who the key belongs to, if anyone (shown on their admin page).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="chatauth_api_keys",
    )
    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = APIKeyManager()

    class Meta:
        verbose_name = _("API key")

    def __str__(self) -> str:
        return f"{self.name} (ca_{self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class RevokedToken(models.Model):
    """The denylist: one row per revoked token, kept until the token expires."""

    #: ``jti`` or, for a token without one, ``s-`` + its SHA-256.
    key = models.CharField(max_length=80, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True
    )
    token_type = models.CharField(max_length=16)
    reason = models.CharField(max_length=32, default="logout")
    revoked_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = _("revoked token")

    def __str__(self) -> str:
        return f"{self.token_type} {self.key}"


class ChatSession(models.Model):
    """One live (or ended) WebSocket chat session."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="chatauth_sessions",
    )
    token_key = models.CharField(max_length=80, blank=True, default="")
    channel_name = models.CharField(max_length=255, blank=True, default="")
    worker = models.CharField(max_length=64, blank=True, default="")
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True, default="")
    opened_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    close_code = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        verbose_name = _("chat session")
        indexes = [
            models.Index(fields=["user", "closed_at"], name="chatauth_sess_user_open"),
            models.Index(fields=["closed_at"], name="chatauth_sess_closed"),
        ]

    def __str__(self) -> str:
        return str(self.id)

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class AuditEvent(models.Model):
    """One auth event.  Never holds a password, a whole token or a key."""

    class Event(models.TextChoices):
        LOGIN = "login", _("login")
        LOGIN_FAILED = "login_failed", _("login failed")
        REFRESH = "refresh", _("token refresh")
        LOGOUT = "logout", _("logout")
        REVOKE = "revoke", _("revocation")
        TOKEN_ISSUED = "token_issued", _("token issued")
        API_KEY_USED = "api_key_used", _("API key used")
        API_KEY_REFUSED = "api_key_refused", _("API key refused")
        SESSION_OPENED = "session_opened", _("chat session opened")
        SESSION_REFUSED = "session_refused", _("chat session refused")
        SESSION_CLOSED = "session_closed", _("chat session closed")
        HEADER_REFUSED = "header_refused", _("untrusted header login")
        OAUTH_REFUSED = "oauth_refused", _("OAuth login refused")

    event = models.CharField(max_length=32, choices=Event.choices, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="chatauth_audit_events",
    )
    identifier = models.CharField(max_length=255, blank=True, default="")
    method = models.CharField(max_length=16, blank=True, default="")
    success = models.BooleanField(default=True)
    reason = models.CharField(max_length=64, blank=True, default="")
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True, default="")
    token_id = models.CharField(max_length=80, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("audit event")
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="chatauth_audit_user"),
        ]

    def __str__(self) -> str:
        outcome = "ok" if self.success else "failed"
        return f"{self.event} {self.identifier} ({outcome})"
