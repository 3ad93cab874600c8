"""The admin: every chatauth model, a read-only audit log, the user page's part."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chatauth import tokens
from chatauth.models import (
    APIKey,
    AuditEvent,
    ChatSession,
    OAuthAccount,
    Profile,
    RevokedToken,
)
from tests.conftest import bearer

pytestmark = pytest.mark.django_db

MODELS = [
    "profile",
    "oauthaccount",
    "apikey",
    "revokedtoken",
    "chatsession",
    "auditevent",
    "audittrail",
]


@pytest.fixture
def rows(user):
    """One row of every chatauth model, for alice."""
    Profile.objects.create(user=user, display_name="Alice", metadata={"x": 1})
    OAuthAccount.objects.create(
        user=user, provider="github", subject="1234", email="alice@example.com"
    )
    APIKey.objects.create_key("alice-key", user=user)
    RevokedToken.objects.create(
        key="jti-1",
        user=user,
        token_type="access",
        expires_at=timezone.now() + timedelta(hours=1),
    )
    ChatSession.objects.create(user=user, ip="127.0.0.1", user_agent="pytest")
    AuditEvent.objects.create(
        event="login", user=user, identifier="alice", method="password"
    )


@pytest.mark.parametrize("model", MODELS)
def test_changelists_render(admin_client, rows, model):
    from django.apps import apps

    response = admin_client.get(f"/admin/chatauth/{model}/")
    assert response.status_code == 200
    count = apps.get_model("chatauth", model).objects.count()
    assert count >= 1  # (the admin's own login is audited too)
    assert response.context["cl"].result_count == count


@pytest.mark.parametrize("model", MODELS)
def test_change_pages_render(admin_client, rows, model):
    from django.apps import apps

    obj = apps.get_model("chatauth", model).objects.order_by("pk").first()
    response = admin_client.get(f"/admin/chatauth/{model}/{obj.pk}/change/")
    assert response.status_code == 200


def test_audit_search_and_filters(admin_client, rows):
    found = admin_client.get("/admin/chatauth/auditevent/?q=alice")
    assert found.context["cl"].result_count == 1
    none = admin_client.get("/admin/chatauth/auditevent/?q=nobody-here")
    assert none.context["cl"].result_count == 0
    failed = admin_client.get("/admin/chatauth/auditevent/?success__exact=0")
    assert failed.status_code == 200 and failed.context["cl"].result_count == 0
    by_event = admin_client.get("/admin/chatauth/auditevent/?event__exact=logout")
    assert by_event.context["cl"].result_count == 0
    by_method = admin_client.get("/admin/chatauth/auditevent/?method__exact=password")
    assert by_method.context["cl"].result_count == 1


def test_audit_log_is_read_only(admin_client, rows):
    row = AuditEvent.objects.get(identifier="alice")
    listing = admin_client.get("/admin/chatauth/auditevent/")
    assert b"/admin/chatauth/auditevent/add/" not in listing.content
    assert admin_client.get("/admin/chatauth/auditevent/add/").status_code == 403
    change = admin_client.post(
        f"/admin/chatauth/auditevent/{row.pk}/change/",
        {"event": "logout", "identifier": "mallory"},
    )
    assert change.status_code == 403
    delete = admin_client.post(
        f"/admin/chatauth/auditevent/{row.pk}/delete/", {"post": "yes"}
    )
    assert delete.status_code == 403
    bulk = admin_client.post(
        "/admin/chatauth/auditevent/",
        {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    row.refresh_from_db()
    assert (row.event, row.identifier) == ("login", "alice")


def test_user_page_shows_the_inlines(admin_client, user, rows):
    response = admin_client.get(f"/admin/auth/user/{user.pk}/change/")
    assert response.status_code == 200
    content = response.content.decode()
    for prefix in (
        "chatauth_profile",
        "chatauth_oauth_accounts",
        "chatauth_api_keys",
        "chatauth_audit_events",
    ):
        assert f'id="{prefix}-group"' in content, prefix
    assert "alice@example.com" in content
    assert "alice-key" in content


def test_user_page_shows_the_users_own_recent_audit_rows(admin_client, user, make_user):
    AuditEvent.objects.create(event="login", user=user, reason="alice-marker")
    bob = make_user("bob")
    later = timezone.now() + timedelta(seconds=1)
    AuditEvent.objects.bulk_create(
        AuditEvent(event="login", user=bob, created_at=later) for _ in range(250)
    )
    content = admin_client.get(f"/admin/auth/user/{user.pk}/change/").content
    assert b"alice-marker" in content
    bobs = admin_client.get(f"/admin/auth/user/{bob.pk}/change/")
    assert bobs.context["inline_admin_formsets"]
    audit = next(
        f
        for f in bobs.context["inline_admin_formsets"]
        if f.formset.prefix == "chatauth_audit_events"
    )
    assert len(audit.formset.forms) == 20  # the most recent rows only


def user_action(admin_client, action, *users):
    return admin_client.post(
        "/admin/auth/user/",
        {"action": action, "_selected_action": [u.pk for u in users]},
        follow=True,
    )


def test_action_log_out_everywhere(admin_client, api, user, make_user):
    bob = make_user("bob")
    alices = [
        str(tokens.issue_pair(user).access),
        str(tokens.issue_copilot_token(user)),
    ]
    bobs = str(tokens.issue_pair(bob).access)
    for raw in [*alices, bobs]:
        assert api.get("/auth/me", **bearer(raw)).status_code == 200
    response = user_action(admin_client, "logout_users_everywhere", user)
    assert response.status_code == 200
    assert b"Logged 1 user(s) out everywhere." in response.content
    for raw in alices:
        assert api.get("/auth/me", **bearer(raw)).status_code == 401
    assert api.get("/auth/me", **bearer(bobs)).status_code == 200
    assert AuditEvent.objects.filter(event="revoke", reason="admin", user=user).exists()


def test_action_deactivate(admin_client, api, user):
    raw = str(tokens.issue_pair(user).access)
    assert api.get("/auth/me", **bearer(raw)).status_code == 200
    response = user_action(admin_client, "deactivate_users", user)
    assert b"Deactivated 1 user(s)." in response.content
    user.refresh_from_db()
    assert user.is_active is False
    assert api.get("/auth/me", **bearer(raw)).status_code == 401
    # Reactivating does not bring the old token back: it was revoked too.
    user.is_active = True
    user.save()
    assert api.get("/auth/me", **bearer(raw)).status_code == 401


def test_apikey_created_in_the_admin_is_shown_once(admin_client):
    """In the response's body, never in a cookie (Django's messages keep theirs
    in one), never again."""
    import re

    response = admin_client.post(
        "/admin/chatauth/apikey/add/",
        {"name": "from-admin", "identifiers": "*@partner.example"},
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    key = APIKey.objects.get(name="from-admin")
    raw = re.search(
        r'<code id="api-key"[^>]*>([^<]+)</code>', response.content.decode()
    )[1]
    assert APIKey.objects.get_from_key(raw) == key
    assert key.identifiers == "*@partner.example"
    assert all(raw not in morsel.value for morsel in response.cookies.values())
    assert all(raw not in morsel.value for morsel in admin_client.cookies.values())
    again = admin_client.get(f"/admin/chatauth/apikey/{key.pk}/change/")
    assert raw.encode() not in again.content


def test_apikey_revoke_action(admin_client):
    key, raw = APIKey.objects.create_key("to-revoke")
    admin_client.post(
        "/admin/chatauth/apikey/",
        {"action": "revoke_keys", "_selected_action": [key.pk]},
    )
    assert APIKey.objects.get_from_key(raw) is None


def test_session_actions(admin_client, user):
    session = ChatSession.objects.create(user=user)
    raw = str(tokens.issue_pair(user).access)
    admin_client.post(
        "/admin/chatauth/chatsession/",
        {"action": "close_sessions", "_selected_action": [session.pk]},
    )
    session.refresh_from_db()
    assert session.closed_at is not None
    admin_client.post(
        "/admin/chatauth/chatsession/",
        {"action": "logout_session_users", "_selected_action": [session.pk]},
    )
    with pytest.raises(tokens.TokenError):
        tokens.verify_token(raw)


# --- Permissions and actors ---------------------------------------------------------


def offered(listing) -> dict:
    """The actions a changelist offers (none at all: no action form)."""
    form = listing.context["action_form"]
    return dict(form.fields["action"].choices) if form is not None else {}


@pytest.fixture
def viewer(make_user):
    """A staff user who may only look at users, API keys and chat sessions."""
    from django.contrib.auth.models import Permission

    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.set(
        Permission.objects.filter(
            codename__in=["view_user", "view_apikey", "view_chatsession"]
        )
    )
    return viewer


def test_a_view_only_staff_user_runs_no_action(client, viewer, make_user):
    root = make_user("root", is_staff=True, is_superuser=True)
    key, raw = APIKey.objects.create_key("partner")
    session = ChatSession.objects.create(user=root)
    token = str(tokens.issue_pair(root).access)
    client.force_login(viewer)
    listing = client.get("/admin/auth/user/")
    assert listing.status_code == 200
    actions = offered(listing)
    assert "deactivate_users" not in actions
    assert "logout_users_everywhere" not in actions
    for url, action, pk in [
        ("/admin/auth/user/", "deactivate_users", root.pk),
        ("/admin/auth/user/", "logout_users_everywhere", root.pk),
        ("/admin/chatauth/apikey/", "revoke_keys", key.pk),
        ("/admin/chatauth/chatsession/", "close_sessions", session.pk),
        ("/admin/chatauth/chatsession/", "logout_session_users", session.pk),
    ]:
        client.post(url, {"action": action, "_selected_action": [pk]})
    root.refresh_from_db()
    session.refresh_from_db()
    assert root.is_active and session.closed_at is None
    assert APIKey.objects.get_from_key(raw) == key
    tokens.verify_token(token)
    assert not AuditEvent.objects.filter(event="revoke").exists()


def test_logging_session_users_out_needs_the_user_change_permission(
    client, viewer, user
):
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="change_chatsession"))
    client.force_login(viewer)
    listing = client.get("/admin/chatauth/chatsession/")
    actions = offered(listing)
    assert "close_sessions" in actions
    assert "logout_session_users" not in actions


def test_admin_actions_name_the_staff_member(admin_client, user):
    key, _ = APIKey.objects.create_key("partner")
    user_action(admin_client, "logout_users_everywhere", user)
    user_action(admin_client, "deactivate_users", user)
    admin_client.post(
        "/admin/chatauth/apikey/",
        {"action": "revoke_keys", "_selected_action": [key.pk]},
    )
    rows = AuditEvent.objects.filter(event="revoke")
    assert {r.reason for r in rows} == {"admin", "deactivated", "api_key_revoked"}
    assert {r.actor for r in rows} == {"user:admin"}


def test_changing_a_password_in_the_admin_ends_the_users_tokens(admin_client, user):
    raw = str(tokens.issue_pair(user).access)
    response = admin_client.post(
        f"/admin/auth/user/{user.pk}/password/",
        {
            "password1": "a brand new password 42",
            "password2": "a brand new password 42",
            "usable_password": "true",
        },
    )
    assert response.status_code == 302, response.content[:300]
    with pytest.raises(tokens.TokenError):
        tokens.verify_token(raw)
    row = AuditEvent.objects.get(event="revoke", reason="password_changed")
    assert (row.user_id, row.actor) == (user.pk, "user:admin")


def test_deleting_users_and_chat_sessions_in_the_admin(admin_client, user, make_user):
    bob = make_user("bob")
    raw = str(tokens.issue_pair(bob).access)
    session = ChatSession.objects.create(user=user)
    admin_client.post(
        "/admin/chatauth/chatsession/",
        {"action": "delete_selected", "_selected_action": [session.pk], "post": "yes"},
    )
    assert not ChatSession.objects.filter(pk=session.pk).exists()
    row = AuditEvent.objects.get(reason="chat_session_deleted")
    assert (row.token_id, row.actor) == (str(session.pk), "user:admin")
    admin_client.post(f"/admin/auth/user/{bob.pk}/delete/", {"post": "yes"})
    with pytest.raises(tokens.TokenError):
        tokens.verify_token(raw)
    assert AuditEvent.objects.get(reason="user_deleted").actor == "user:admin"


# --- Django sessions through the middleware ------------------------------------------


def test_logout_everywhere_ends_older_admin_sessions(client, make_user):
    from chatauth import flows

    root = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(root)
    assert client.get("/admin/").status_code == 200
    import time

    time.sleep(0.002)
    flows.logout_everywhere(root)
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    # The session was ended, not just refused once: a new login works.
    time.sleep(0.002)
    client.force_login(root)
    assert client.get("/admin/").status_code == 200


def test_requests_without_a_session_cookie_are_not_touched(api, user):
    raw = str(tokens.issue_pair(user).access)
    with CaptureQueriesContext(connection) as queries:
        response = api.get("/auth/me", **bearer(raw))
    assert response.status_code == 200
    assert not any("django_session" in q["sql"] for q in queries)
