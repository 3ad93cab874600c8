"""Run by tests/test_custom_user_model.py with ``--ds tests.customuser.settings``
(not collected by the main run: its user model is Django's)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chatauth import revocation, tokens
from chatauth.exceptions import TokenRevoked
from tests.conftest import PASSWORD, bearer

pytestmark = pytest.mark.django_db


def test_the_user_model_has_no_is_active_field():
    from chatauth.internal.models import has_field

    assert get_user_model().__name__ == "ChatUser"
    assert not has_field(get_user_model(), "is_active")


def test_a_user_without_is_active_is_active():
    user = get_user_model().objects.create_user("alice", PASSWORD)
    state = revocation.load_user_state(user.pk)
    assert state != revocation.GONE and state.active
    access = str(tokens.issue_pair(user).access)
    assert tokens.verify_token(access).user_pk == str(user.pk)
    revocation.revoke_user(user)
    with pytest.raises(TokenRevoked):
        tokens.verify_token(access)


@pytest.mark.django_db(transaction=True)  # the login checks in a worker thread
def test_login_and_me_with_a_user_without_is_active():
    get_user_model().objects.create_user("alice", PASSWORD)
    client = Client()
    response = client.post(
        "/auth/login",
        {"username": "alice", "password": PASSWORD},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    me = client.get("/auth/me", **bearer(response.json()["access_token"]))
    assert me.status_code == 200, me.content


def test_the_admin_offers_no_deactivation_without_is_active(admin_site_user):
    # Deactivating sets is_active: with no such field its save() would fail
    # (update_fields names a field the model does not have), so the action is
    # not offered; logging out everywhere still is.
    from chatauth.admin import deactivate_users, logout_users_everywhere

    actions = admin_site_user.actions
    assert logout_users_everywhere in actions
    assert deactivate_users not in actions


@pytest.fixture
def admin_site_user():
    """The user admin as chatauth extends it, for this user model."""
    from django.contrib import admin

    from chatauth.admin import extend_user_admin

    User = get_user_model()
    admin.site.register(User)
    try:
        extend_user_admin()
        yield admin.site.get_model_admin(User)
    finally:
        admin.site.unregister(User)
