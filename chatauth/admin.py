"""Admin for every chatauth model, and chatauth's part of the user's own page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from chatauth import revocation
from chatauth.models import (
    APIKey,
    AuditEvent,
    ChatSession,
    OAuthAccount,
    Profile,
    RevokedToken,
)
from chatauth.sessions import close_session

RECENT_AUDIT_ROWS = 20


class ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Actions shared by the user page and the session list -------------------------


def logout_everywhere(users: Any, request: HttpRequest) -> int:
    count = 0
    for user in users:
        revocation.revoke_user(user, reason="admin")
        count += 1
    return count


@admin.action(description=_("Log selected users out everywhere"))
def logout_users_everywhere(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> None:
    count = logout_everywhere(queryset, request)
    modeladmin.message_user(request, f"Logged {count} user(s) out everywhere.")


@admin.action(description=_("Deactivate selected users (their tokens stop at once)"))
def deactivate_users(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> None:
    count = 0
    for user in queryset:
        if hasattr(user, "is_active"):
            user.is_active = False
            user.save(update_fields=["is_active"])  # post_save drops cached state
            revocation.revoke_user(user, reason="deactivated")
            count += 1
    modeladmin.message_user(request, f"Deactivated {count} user(s).")


# --- Inlines on the user page ------------------------------------------------------


class ProfileInline(admin.StackedInline):
    model = Profile
    can_delete = False
    fields = ("display_name", "metadata", "tokens_not_before")
    readonly_fields = ("tokens_not_before",)


class OAuthAccountInline(ReadOnlyMixin, admin.TabularInline):
    model = OAuthAccount
    extra = 0
    fields = ("provider", "subject", "email", "email_verified", "last_login_at")
    readonly_fields = fields


class APIKeyInline(ReadOnlyMixin, admin.TabularInline):
    model = APIKey
    extra = 0
    fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields


class RecentAuditInline(ReadOnlyMixin, admin.TabularInline):
    model = AuditEvent
    extra = 0
    verbose_name_plural = _("recent audit events")
    fields = ("created_at", "event", "method", "success", "reason", "ip")
    readonly_fields = fields

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)

        class RecentAuditFormSet(formset):  # type: ignore[valid-type, misc]
            def get_queryset(self) -> QuerySet:
                # The most recent rows of *this* user (the queryset is already
                # filtered by the inline's foreign key here, not in the admin's
                # get_queryset).  Restricted by id: the formset needs an unsliced
                # queryset.
                if not hasattr(self, "_recent"):
                    qs = super().get_queryset()
                    recent = qs.order_by("-created_at").values_list("pk", flat=True)
                    ids = list(recent[:RECENT_AUDIT_ROWS])
                    self._recent = qs.filter(pk__in=ids).order_by("-created_at")
                return self._recent

        return RecentAuditFormSet


def extend_user_admin() -> None:
    """Add chatauth's inlines and actions to the registered user admin, if any."""
    User = get_user_model()
    base = admin.site._registry.get(User)
    if base is None:
        return
    base_class = type(base)

    class ChatAuthUserAdmin(base_class):  # type: ignore[valid-type, misc]
        inlines = [
            *getattr(base_class, "inlines", []),
            ProfileInline,
            OAuthAccountInline,
            APIKeyInline,
            RecentAuditInline,
        ]
        actions = [
            *(getattr(base_class, "actions", None) or []),
            logout_users_everywhere,
            deactivate_users,
        ]

    admin.site.unregister(User)
    admin.site.register(User, ChatAuthUserAdmin)


# --- chatauth's own models ---------------------------------------------------------


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "display_name", "tokens_not_before", "updated_at")
    search_fields = ("display_name",)
    raw_id_fields = ("user",)


@admin.register(OAuthAccount)
class OAuthAccountAdmin(admin.ModelAdmin):
    list_display = ("provider", "subject", "user", "email", "email_verified")
    list_filter = ("provider", "email_verified")
    search_fields = ("subject", "email")
    raw_id_fields = ("user",)


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "user", "created_at", "last_used_at", "active")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("name", "user", *readonly_fields)
    search_fields = ("name", "prefix")
    raw_id_fields = ("user",)
    actions = ["revoke_keys"]

    @admin.display(boolean=True)
    def active(self, obj: APIKey) -> bool:
        return obj.is_active

    def save_model(self, request: HttpRequest, obj: APIKey, form: Any, change: bool):
        if change:
            return super().save_model(request, obj, form, change)
        key, raw = APIKey.objects.create_key(obj.name, user=obj.user)
        obj.pk, obj.prefix, obj.hashed_key = key.pk, key.prefix, key.hashed_key
        obj.created_at = key.created_at
        # Shown once, to the admin who created it; only its hash is stored.
        self.message_user(
            request,
            f"API key for {key.name}: {raw} — copy it now, it will not be shown again.",
            messages.WARNING,
        )

    @admin.action(description=_("Revoke selected keys"))
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        self.message_user(request, f"Revoked {count} key(s).")


@admin.register(RevokedToken)
class RevokedTokenAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("key", "token_type", "user", "reason", "revoked_at", "expires_at")
    list_filter = ("token_type", "reason")
    search_fields = ("key",)
    date_hierarchy = "revoked_at"


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "ip", "opened_at", "last_seen_at", "closed_at")
    list_filter = (("closed_at", admin.EmptyFieldListFilter), "worker")
    search_fields = ("id", "ip", "user_agent")
    readonly_fields = [f.name for f in ChatSession._meta.fields]
    actions = ["close_sessions", "logout_session_users"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description=_("Close selected sessions"))
    def close_sessions(self, request: HttpRequest, queryset: QuerySet) -> None:
        rows = list(queryset.filter(closed_at__isnull=True))
        for row in rows:
            close_session(row, reason="admin")
        self.message_user(request, f"Closed {len(rows)} session(s).")

    @admin.action(description=_("Log the sessions' users out everywhere"))
    def logout_session_users(self, request: HttpRequest, queryset: QuerySet) -> None:
        users = get_user_model()._default_manager.filter(
            pk__in=queryset.values("user_id")
        )
        count = logout_everywhere(users, request)
        self.message_user(request, f"Logged {count} user(s) out everywhere.")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "event",
        "identifier",
        "method",
        "success",
        "reason",
        "ip",
    )
    list_filter = ("event", "method", "success", "created_at")
    search_fields = ("identifier", "ip", "token_id", "reason")
    date_hierarchy = "created_at"
    list_select_related = ("user",)


extend_user_admin()
