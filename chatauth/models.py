"""chatauth's tables: profiles, OAuth accounts, API keys, the denylist, live chat
sessions and the audit log.  Every model works with any ``AUTH_USER_MODEL``."""

from __future__ import annotations

import fnmatch
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
    #: Tokens issued before this instant are refused (logout everywhere,
    #: password change, deactivation).
    tokens_not_before = models.DateTimeField(null=True, blank=True)
    #: Django sessions logged in before this instant are refused (logout
    #: everywhere, deactivation).
    sessions_not_before = models.DateTimeField(null=True, blank=True)
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


class ProviderLogin(models.Model):
    """A login made through an OpenID provider: which provider session (``sid``)
    and subject it came from, and the Django session it opened.

    The provider's back-channel logout names a ``sid`` or a ``sub``; these rows
    say which Django sessions that is (:mod:`chatauth.oauth.backchannel`).  A row goes
    when its session is logged out, or (``chatauth_prune``) once its session no
    longer exists; it follows its session to a new key (``cycle_key()``).
    ``session_key`` is a credential and ``id_token`` (kept only for an
    RP-initiated logout's ``id_token_hint``, encrypted with a key derived from
    chatauth's secret) is the provider's: neither is shown in the admin,
    logged or audited.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="chatauth_provider_logins",
    )
    provider = models.CharField(max_length=64)
    subject = models.CharField(max_length=255)
    #: The ID token's ``sid`` claim; empty when the provider sent none.
    sid = models.CharField(max_length=255, blank=True, default="")
    session_key = models.CharField(max_length=64, db_index=True)
    id_token = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("provider login")
        indexes = [
            models.Index(
                fields=["provider", "sid"], name="chatauth_plogin_provider_sid"
            ),
            models.Index(
                fields=["provider", "subject"], name="chatauth_plogin_provider_sub"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.subject}"


class APIKeyQuerySet(models.QuerySet["APIKey"]):
    def revoke(self) -> int:
        """Revoke the active keys of this queryset; returns how many.

        One ``save()`` per key, not an ``update()``: the save signal ends the
        copilot tokens each key minted, and closes their chats
        (:mod:`chatauth.lifecycle`).
        """
        count = 0
        for key in self.filter(revoked_at__isnull=True):
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            count += 1
        return count


class APIKeyManager(models.Manager["APIKey"]):
    def get_queryset(self) -> APIKeyQuerySet:
        return APIKeyQuerySet(self.model, using=self._db)

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
    # --- Scope: who this key may mint copilot tokens for ---------------------
    identifiers = models.CharField(
        max_length=255,
        default="*",
        help_text=_(
            "Identifiers this key may mint for, as a shell pattern on the "
            "normalised identifier (e.g. '*@partner.example'); '*' for any."
        ),
    )
    group = models.ForeignKey(
        "auth.Group",
        on_delete=models.PROTECT,  # deleting it must not widen the key's scope
        null=True,
        blank=True,
        related_name="+",
        help_text=_(
            "If set, only members of this group (users the key creates join it)."
        ),
    )
    may_mint_for_staff = models.BooleanField(
        default=False,
        help_text=_("May mint for staff members and superusers."),
    )
    may_update_profiles = models.BooleanField(
        default=False,
        help_text=_(
            "May set the display name and metadata of users that exist already "
            "(those become claims in their tokens)."
        ),
    )

    objects = APIKeyManager()
    #: The secret of a key the admin has just created, for its response only
    #: (chatauth.admin; never stored, and absent on every other instance).
    _raw_key: str

    class Meta:
        verbose_name = _("API key")

    def __str__(self) -> str:
        return f"{self.name} (ca_{self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def may_mint_for(self, identifier: str, user: Any = None) -> bool:
        """Whether this key may mint for normalised ``identifier``, which names
        ``user`` (None: nobody yet; the key would create them)."""
        if not fnmatch.fnmatchcase(identifier, self.identifiers or "*"):
            return False
        if user is None:
            return True
        if (
            getattr(user, "is_staff", False) or getattr(user, "is_superuser", False)
        ) and not self.may_mint_for_staff:
            return False
        if self.group_id is not None:
            groups = getattr(user, "groups", None)
            return groups is not None and groups.filter(pk=self.group_id).exists()
        return True


class RevokedToken(models.Model):
    """The denylist: one row per revoked token, kept until the token expires."""

    #: ``jti`` or, for a token without one, ``s-`` + its SHA-256; or the key of
    #: a credential tokens descend from (``f-`` login, ``d-`` Django session,
    #: ``k-`` API key, ``i-`` identifier); or ``j-`` a used logout token's
    #: ``jti`` (hashed; see ``chatauth.oauth.backchannel``).
    key = models.CharField(max_length=80, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        # A revocation must never fail because its user is gone (a session of
        # a deleted user ended later): no database constraint; the ORM still
        # deletes these rows with the user.
        db_constraint=False,
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
        REFRESH_REUSED = "refresh_reused", _("rotated refresh token reused")
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
        BACKCHANNEL_REFUSED = "backchannel_refused", _("provider logout refused")

    event = models.CharField(max_length=32, choices=Event.choices, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="chatauth_audit_events",
        # An audit row must never fail (nor fail its caller's commit) because
        # its user was deleted meanwhile: no database constraint; the ORM still
        # nulls the link when a user is deleted, and ``identifier`` stays.
        db_constraint=False,
    )
    identifier = models.CharField(max_length=255, blank=True, default="")
    method = models.CharField(max_length=16, blank=True, default="")
    success = models.BooleanField(default=True)
    reason = models.CharField(max_length=64, blank=True, default="")
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True, default="")
    token_id = models.CharField(max_length=80, blank=True, default="")
    #: Who caused it, when not the user themselves: ``user:<identifier>`` (a
    #: request's authenticated user, e.g. a staff member in the admin),
    #: ``command:<name>``, ``provider:<id>`` (an identity provider's
    #: back-channel logout) or ``system``.
    actor = models.CharField(max_length=150, blank=True, default="")
    #: How many times it happened: refusals of unknown clients are counted and
    #: written one row per interval (see ``chatauth.audit.Refusals``).
    count = models.PositiveIntegerField(default=1)
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


class AuditTrail(models.Model):
    """The audit log with the chat sessions' openings and ends among its events:
    a read-only database view over :class:`AuditEvent` and :class:`ChatSession`
    (a session's row is the record of both; see :mod:`chatauth.chatsessions`)."""

    #: ``e<audit event id>``, ``o<session id>`` (opened) or ``c<session id>``.
    id = models.CharField(primary_key=True, max_length=41)
    created_at = models.DateTimeField()
    event = models.CharField(max_length=32, choices=AuditEvent.Event.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        null=True,
        db_constraint=False,
        related_name="+",
    )
    identifier = models.CharField(max_length=255)
    method = models.CharField(max_length=16)
    success = models.BooleanField()
    reason = models.CharField(max_length=64)
    ip = models.GenericIPAddressField(null=True)
    user_agent = models.CharField(max_length=512)
    token_id = models.CharField(max_length=80)
    actor = models.CharField(max_length=150)
    count = models.PositiveIntegerField()

    class Meta:
        managed = False
        db_table = "chatauth_audittrail"
        ordering = ["-created_at"]
        verbose_name = _("audit trail entry")
        verbose_name_plural = _("audit trail")

    def __str__(self) -> str:
        return f"{self.event} {self.identifier or self.user_id}"
