"""Admin for every chatauth model, and chatauth's part of the user's own page.

Every action declares the permission it needs (a view-only staff user sees
none of them) and ends credentials through the same code as every other path,
so the audit log names the staff member who ran it (its ``actor``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.auth import get_permission_codename, get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Model, QuerySet
from django.forms.models import BaseInlineFormSet, ModelForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext_lazy as _

from chatauth import flows
from chatauth.chatsessions import close_session
from chatauth.internal.models import has_field
from chatauth.models import (
    APIKey,
    APIKeyQuerySet,
    AuditEvent,
    AuditTrail,
    ChatSession,
    OAuthAccount,
    Profile,
    ProviderLogin,
    RevokedToken,
)

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin, StackedInline, TabularInline
else:

    class _Generic:
        """``ModelAdmin[M]`` is Django's ModelAdmin itself: it and the inlines are
        generic in django-stubs only.  The class statements below keep exactly
        Django's classes as their bases, and nothing of Django's is patched."""

        def __init__(self, cls: type) -> None:
            self.cls = cls

        def __getitem__(self, _model: object) -> type:
            return self.cls

    ModelAdmin = _Generic(admin.ModelAdmin)
    StackedInline = _Generic(admin.StackedInline)
    TabularInline = _Generic(admin.TabularInline)

RECENT_AUDIT_ROWS = 20
#: What an API key may mint for (see ``APIKey.may_mint_for``).
SCOPE_FIELDS = ("identifiers", "group", "may_mint_for_staff", "may_update_profiles")


class ReadOnlyMixin:
    def has_add_permission(
        self, request: HttpRequest, obj: Model | None = None
    ) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: Model | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: Model | None = None
    ) -> bool:
        return False


# --- Actions shared by the user page and the session list -------------------------


def can_change_users(request: HttpRequest) -> bool:
    """Logging users out or deactivating them changes users: the user model's
    ``change`` permission."""
    opts = get_user_model()._meta
    codename = get_permission_codename("change", opts)
    return request.user.has_perm(f"{opts.app_label}.{codename}")


def logout_everywhere(users: Iterable[Model]) -> int:
    count = 0
    for user in users:
        flows.logout_everywhere(user, reason="admin")
        count += 1
    return count


@admin.action(
    description=_("Log selected users out everywhere"), permissions=["change"]
)
def logout_users_everywhere(
    modeladmin: ModelAdmin[Model], request: HttpRequest, queryset: QuerySet[Model]
) -> None:
    count = logout_everywhere(queryset)
    modeladmin.message_user(request, f"Logged {count} user(s) out everywhere.")


@admin.action(
    description=_("Deactivate selected users (their tokens stop at once)"),
    permissions=["change"],
)
def deactivate_users(
    modeladmin: ModelAdmin[Model],
    request: HttpRequest,
    queryset: QuerySet[AbstractBaseUser],
) -> None:
    count = 0
    for user in queryset:
        if getattr(user, "is_active", False):
            user.is_active = False
            # save(), not update(): chatauth.lifecycle ends the user's tokens,
            # web sessions and sockets on the save signal, as for any path.
            # (AbstractBaseUser's is_active is a plain attribute: the action is
            # offered only for a user model where it is a field, see
            # extend_user_admin.)
            user.save(update_fields=["is_active"])  # type: ignore[misc]
            count += 1
    modeladmin.message_user(request, f"Deactivated {count} user(s).")


# --- Inlines on the user page ------------------------------------------------------


#: Set by revocations only: clearing them would bring ended credentials back.
NOT_BEFORE = ("tokens_not_before", "sessions_not_before")


class ProfileInline(StackedInline[Profile, Model]):
    model = Profile
    can_delete = False
    fields = ("display_name", "metadata", *NOT_BEFORE)
    readonly_fields = NOT_BEFORE


class OAuthAccountInline(ReadOnlyMixin, TabularInline[OAuthAccount, Model]):
    model = OAuthAccount
    extra = 0
    fields = ("provider", "subject", "email", "email_verified", "last_login_at")
    readonly_fields = fields


class APIKeyInline(ReadOnlyMixin, TabularInline[APIKey, Model]):
    model = APIKey
    extra = 0
    fields = ("name", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields


class RecentAuditInline(ReadOnlyMixin, TabularInline[AuditEvent, Model]):
    model = AuditEvent
    extra = 0
    verbose_name_plural = _("recent audit events")
    fields = ("created_at", "event", "method", "success", "reason", "ip")
    readonly_fields = fields

    def get_formset(
        self, request: HttpRequest, obj: Model | None = None, **kwargs: Any
    ) -> type[BaseInlineFormSet[AuditEvent, Model, ModelForm[AuditEvent]]]:
        formset = super().get_formset(request, obj, **kwargs)

        # The base is the class the admin builds for this inline at run time,
        # which mypy cannot take as a base (a variable, not a class).
        class RecentAuditFormSet(formset):  # type: ignore[valid-type, misc]
            _recent: QuerySet[AuditEvent]

            def get_queryset(self) -> QuerySet[AuditEvent]:
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
    """Add chatauth's inlines and actions to the registered user admin, if any.

    Deactivating is offered only when the user model has an ``is_active``
    field: without one every user is active (``AbstractBaseUser``), and there
    is nothing to save."""
    User = get_user_model()
    base = admin.site._registry.get(User)
    if base is None:
        return
    base_class = type(base)

    # The base is whichever admin the project registered for its user model.
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
            *([deactivate_users] if has_field(User, "is_active") else []),
        ]

    admin.site.unregister(User)
    admin.site.register(User, ChatAuthUserAdmin)


# --- chatauth's own models ---------------------------------------------------------


@admin.register(Profile)
class ProfileAdmin(ModelAdmin[Profile]):
    list_display = ("user", "display_name", "tokens_not_before", "updated_at")
    search_fields = ("display_name",)
    raw_id_fields = ("user",)
    readonly_fields = NOT_BEFORE


@admin.register(OAuthAccount)
class OAuthAccountAdmin(ModelAdmin[OAuthAccount]):
    list_display = ("provider", "subject", "user", "email", "email_verified")
    list_filter = ("provider", "email_verified")
    search_fields = ("subject", "email")
    raw_id_fields = ("user",)


@admin.register(APIKey)
class APIKeyAdmin(ModelAdmin[APIKey]):
    list_display = (
        "name",
        "prefix",
        "identifiers",
        "group",
        "may_mint_for_staff",
        "may_update_profiles",
        "last_used_at",
        "active",
    )
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    fields = (
        "name",
        "user",
        "identifiers",
        "group",
        "may_mint_for_staff",
        "may_update_profiles",
        *readonly_fields,
    )
    search_fields = ("name", "prefix")
    raw_id_fields = ("user",)
    actions = ["revoke_keys"]

    @admin.display(boolean=True)
    def active(self, obj: APIKey) -> bool:
        return obj.is_active

    def save_model(
        self, request: HttpRequest, obj: APIKey, form: ModelForm[APIKey], change: bool
    ) -> None:
        if change:
            return super().save_model(request, obj, form, change)
        scope = {name: getattr(obj, name) for name in SCOPE_FIELDS}
        key, raw = APIKey.objects.create_key(obj.name, user=obj.user, **scope)
        obj.pk, obj.prefix, obj.hashed_key = key.pk, key.prefix, key.hashed_key
        obj.created_at = key.created_at
        obj._raw_key = raw  # for response_add, this response only

    def response_add(
        self, request: HttpRequest, obj: APIKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        """The new key, once, in this response's body: not through Django's
        messages, which the default storage keeps in a (signed, readable)
        cookie; only its hash is stored."""
        raw = getattr(obj, "_raw_key", None)
        if raw is None:
            return super().response_add(request, obj, post_url_continue)
        response = TemplateResponse(
            request,
            "admin/chatauth/apikey/created.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "key": obj,
                "raw": raw,
                "title": _("API key created"),
            },
        )
        add_never_cache_headers(response)
        return response

    @admin.action(description=_("Revoke selected keys"), permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: APIKeyQuerySet) -> None:
        count = queryset.revoke()
        self.message_user(request, f"Revoked {count} key(s).")


@admin.register(RevokedToken)
class RevokedTokenAdmin(ReadOnlyMixin, ModelAdmin[RevokedToken]):
    list_display = ("key", "token_type", "user", "reason", "revoked_at", "expires_at")
    list_filter = ("token_type", "reason")
    search_fields = ("key",)
    date_hierarchy = "revoked_at"


@admin.register(ProviderLogin)
class ProviderLoginAdmin(ReadOnlyMixin, ModelAdmin[ProviderLogin]):
    """Logins made through OpenID providers (what a back-channel logout ends).
    The Django session key and the ID token are never shown."""

    fields = ("user", "provider", "subject", "sid", "created_at")
    readonly_fields = fields
    list_display = ("user", "provider", "subject", "sid", "created_at")
    list_filter = ("provider",)
    search_fields = ("subject", "sid")
    list_select_related = ("user",)


@admin.register(ChatSession)
class ChatSessionAdmin(ModelAdmin[ChatSession]):
    list_display = ("id", "user", "ip", "opened_at", "last_seen_at", "closed_at")
    list_filter = (("closed_at", admin.EmptyFieldListFilter), "worker")
    search_fields = ("id", "ip", "user_agent")
    readonly_fields = [f.name for f in ChatSession._meta.fields]
    actions = ["close_sessions", "logout_session_users"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description=_("Close selected sessions"), permissions=["change"])
    def close_sessions(
        self, request: HttpRequest, queryset: QuerySet[ChatSession]
    ) -> None:
        rows = list(queryset.filter(closed_at__isnull=True))
        for row in rows:
            close_session(row, reason="admin")
        self.message_user(request, f"Closed {len(rows)} session(s).")

    @admin.action(
        description=_("Log the sessions' users out everywhere"),
        permissions=["logout"],
    )
    def logout_session_users(
        self, request: HttpRequest, queryset: QuerySet[ChatSession]
    ) -> None:
        users = get_user_model()._default_manager.filter(
            pk__in=queryset.values("user_id")
        )
        count = logout_everywhere(users)
        self.message_user(request, f"Logged {count} user(s) out everywhere.")

    def has_logout_permission(self, request: HttpRequest) -> bool:
        return can_change_users(request)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyMixin, ModelAdmin[AuditEvent]):
    list_display = (
        "created_at",
        "event",
        "identifier",
        "method",
        "success",
        "reason",
        "ip",
        "count",
        "actor",
    )
    list_filter = ("event", "method", "success", "created_at")
    search_fields = ("identifier", "ip", "token_id", "reason", "actor")
    date_hierarchy = "created_at"
    list_select_related = ("user",)


@admin.register(AuditTrail)
class AuditTrailAdmin(ReadOnlyMixin, ModelAdmin[AuditTrail]):
    """The audit log with every chat session's opening and end among its
    events (a database view: nothing here is stored twice)."""

    list_display = (
        "created_at",
        "event",
        "user",
        "identifier",
        "method",
        "success",
        "reason",
        "ip",
        "count",
        "actor",
    )
    list_filter = ("event", "method", "success")
    search_fields = ("identifier", "ip", "token_id", "reason", "actor")
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    show_full_result_count = False  # a COUNT over the whole view on every page


extend_user_admin()
