"""Chainlit-style callbacks: registration, signatures, sync/async, loading."""

from __future__ import annotations

import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import chatauth
from chatauth import audit, hooks
from chatauth.models import AuditEvent, Profile
from tests.conftest import PASSWORD, bearer

HOOK_SETTINGS = {"SECRET": None, "HOOKS": None, "AUTODISCOVER_HOOKS": False}


def test_user_is_chainlits_dataclass():
    user = chatauth.User("ann")
    assert user.display_name is None
    assert user.metadata == {}
    assert chatauth.User("bob").metadata is not user.metadata
    assert user.to_dict() == {"identifier": "ann", "display_name": None, "metadata": {}}


@pytest.mark.parametrize(
    "decorator",
    [
        chatauth.password_auth_callback,
        chatauth.header_auth_callback,
        chatauth.oauth_callback,
        chatauth.on_logout,
    ],
)
def test_wrong_signature_fails_at_registration(decorator):
    def takes_nothing():
        return None

    with pytest.raises(ImproperlyConfigured, match=decorator.__name__):
        decorator(takes_nothing)
    with pytest.raises(ImproperlyConfigured, match="takes_nothing"):
        decorator(takes_nothing)
    assert hooks.get_hooks(decorator.__name__) == []


def test_too_many_required_arguments_fail():
    with pytest.raises(ImproperlyConfigured, match="username, password"):

        @chatauth.password_auth_callback
        def auth(username, password, otp):
            return None


def test_not_callable_fails():
    with pytest.raises(ImproperlyConfigured):
        chatauth.on_logout(42)


def test_accepted_signatures():
    @chatauth.password_auth_callback
    async def auth(username, password):
        return None

    @chatauth.header_auth_callback
    def by_header(*args, **kwargs):
        return None

    # Chainlit still calls older OAuth callbacks without ``id_token``.
    @chatauth.oauth_callback
    def oauth(provider_id, token, raw_user_data, default_user):
        return default_user

    @chatauth.on_logout
    def bye(request, response, extra=None):
        return None

    assert hooks.get_hook("password_auth_callback") is auth
    assert hooks.get_hook("header_auth_callback") is by_header
    assert hooks.get_hook("oauth_callback") is oauth
    assert hooks.get_hooks("on_logout") == [bye]


def test_decorators_return_the_function_and_reregistering_replaces():
    def make():
        def auth(username, password):
            return None

        return auth

    first, second = make(), make()
    assert chatauth.password_auth_callback(first) is first
    chatauth.password_auth_callback(second)
    # Same module and qualname (a re-imported hooks module): registered once.
    assert hooks.get_hooks("password_auth_callback") == [second]


# --- Every kind, sync and async, through the routes ---------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_password_callback(kind, api):
    seen = []

    if kind == "sync":

        @chatauth.password_auth_callback
        def auth(username, password):
            seen.append((username, password))
            if password == "open sesame":
                return chatauth.User(username, "Ann Example", {"role": "admin"})
            return None

    else:

        @chatauth.password_auth_callback
        async def auth(username, password):
            seen.append((username, password))
            if password == "open sesame":
                return chatauth.User(username, "Ann Example", {"role": "admin"})
            return None

    ok = api.post(
        "/auth/login", {"username": "ann", "password": "open sesame"}, format="json"
    )
    assert ok.status_code == 200, ok.content
    body = ok.json()
    assert body["user"] == {
        "identifier": "ann",
        "display_name": "Ann Example",
        "metadata": {"role": "admin"},
    }
    assert Profile.objects.get(user__username="ann").metadata == {"role": "admin"}
    me = api.get("/auth/me", **bearer(body["access_token"]))
    assert me.json()["display_name"] == "Ann Example"

    refused = api.post(
        "/auth/login", {"username": "ann", "password": "nope"}, format="json"
    )
    assert refused.status_code == 401
    assert seen == [("ann", "open sesame"), ("ann", "nope")]
    row = AuditEvent.objects.filter(event="login_failed").get()
    assert (row.identifier, row.method, row.success) == ("ann", "password", False)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_raising_password_callback_is_a_401_and_audited(kind, api):
    if kind == "sync":

        @chatauth.password_auth_callback
        def auth(username, password):
            raise RuntimeError("directory down")

    else:

        @chatauth.password_auth_callback
        async def auth(username, password):
            raise RuntimeError("directory down")

    response = api.post(
        "/auth/login", {"username": "ann", "password": "x"}, format="json"
    )
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid credentials."}
    row = AuditEvent.objects.get(event="login_failed")
    assert (row.reason, row.method, row.identifier) == (
        "hook_failed",
        "password",
        audit.typed_identifier("ann"),  # names no account
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "bad",
    [
        chatauth.User(""),
        chatauth.User("x" * 300),
        chatauth.User("ok", None, [1]),
        chatauth.User("ok", None, {"when": object()}),
        chatauth.User("ok", None, {"nul": "a\x00b"}),
        chatauth.User("nul\x00byte"),
    ],
    ids=["empty", "too-long", "metadata-list", "not-json", "nul-meta", "nul-id"],
)
def test_password_callback_returning_a_bad_user_is_a_401(bad, api):
    @chatauth.password_auth_callback
    def auth(username, password):
        return bad

    response = api.post(
        "/auth/login", {"username": "ann", "password": "x"}, format="json"
    )
    assert response.status_code == 401
    assert AuditEvent.objects.filter(
        event="login_failed", reason="hook_failed"
    ).exists()


@pytest.mark.django_db(transaction=True)
def test_long_display_name_from_callback_is_cut_to_the_column(api):
    @chatauth.password_auth_callback
    def auth(username, password):
        return chatauth.User(username, "D" * 400)

    response = api.post(
        "/auth/login", {"username": "ann", "password": "x"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["user"]["display_name"] == "D" * 255


@pytest.mark.django_db(transaction=True)
def test_inactive_user_from_callback_is_refused(api, make_user):
    make_user("ann", is_active=False)

    @chatauth.password_auth_callback
    def auth(username, password):
        return chatauth.User(username)

    response = api.post(
        "/auth/login", {"username": "ann", "password": "x"}, format="json"
    )
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid credentials."}
    assert AuditEvent.objects.get(event="login_failed").reason == "user_inactive"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_header_callback(kind, api):
    if kind == "sync":

        @chatauth.header_auth_callback
        def auth(headers):
            name = headers.get("x-forwarded-user")
            return chatauth.User(name, metadata={"via": "sync"}) if name else None

    else:

        @chatauth.header_auth_callback
        async def auth(headers):
            name = headers.get("X-FORWARDED-USER")  # case-insensitive
            return chatauth.User(name, metadata={"via": "async"}) if name else None

    ok = api.post("/auth/header", HTTP_X_FORWARDED_USER="hank")
    assert ok.status_code == 200, ok.content
    assert ok.json()["user"]["metadata"] == {"via": kind}
    assert api.get("/auth/me", **bearer(ok.json()["access_token"])).status_code == 200
    row = AuditEvent.objects.get(event="login")
    assert (row.identifier, row.method) == ("hank", "header")

    assert api.post("/auth/header").status_code == 401
    assert AuditEvent.objects.get(event="login_failed").method == "header"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_raising_header_callback_is_a_401_and_audited(kind, api):
    if kind == "sync":

        @chatauth.header_auth_callback
        def auth(headers):
            raise KeyError("boom")

    else:

        @chatauth.header_auth_callback
        async def auth(headers):
            raise KeyError("boom")

    response = api.post("/auth/header", HTTP_X_FORWARDED_USER="hank")
    assert response.status_code == 401
    assert "detail" in response.json()
    assert AuditEvent.objects.get(event="login_failed").reason == "hook_failed"


@pytest.mark.django_db(transaction=True)
def test_header_callback_returning_an_unstorable_user_is_a_401(api):
    @chatauth.header_auth_callback
    def auth(headers):
        return chatauth.User("h" * 200)  # longer than User.username allows

    response = api.post("/auth/header")
    assert response.status_code == 401
    assert AuditEvent.objects.get(event="login_failed").method == "header"


@pytest.mark.django_db(transaction=True)
def test_header_login_disabled_without_a_callback(api):
    response = api.post("/auth/header", HTTP_X_FORWARDED_USER="hank")
    assert response.status_code == 401
    assert api.get("/auth/config").json()["header"] is False


@pytest.mark.django_db(transaction=True)
def test_header_login_refused_from_an_untrusted_address(api):
    @chatauth.header_auth_callback
    def auth(headers):
        return chatauth.User("hank")

    response = api.post("/auth/header", REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 401
    row = AuditEvent.objects.get(event="header_refused")
    assert (row.ip, row.success) == ("203.0.113.9", False)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_on_logout_gets_the_django_request_and_drf_response(kind, api, pair):
    from django.http import HttpRequest
    from rest_framework.response import Response

    calls = []

    if kind == "sync":

        @chatauth.on_logout
        def bye(request, response):
            calls.append((request, response))

    else:

        @chatauth.on_logout
        async def bye(request, response):
            calls.append((request, response))

    response = api.post("/auth/logout", **bearer(pair["access_token"]))
    assert response.status_code == 200
    [(request, hook_response)] = calls
    assert isinstance(request, HttpRequest)
    assert request.path == "/auth/logout"
    assert isinstance(hook_response, Response)
    assert hook_response.data == {"detail": "Logged out."}


@pytest.mark.django_db(transaction=True)
def test_every_on_logout_hook_runs_even_if_one_raises(api, pair):
    calls = []

    @chatauth.on_logout
    def first(request, response):
        raise RuntimeError("broken hook")

    @chatauth.on_logout
    async def second(request, response):
        calls.append("second")

    response = api.post("/auth/logout", **bearer(pair["access_token"]))
    assert response.status_code == 200
    assert calls == ["second"]


# --- Loading -------------------------------------------------------------------------


def test_hooks_module_from_settings():
    sys.modules.pop("tests.hookmodule", None)
    with override_settings(CHATAUTH={**HOOK_SETTINGS, "HOOKS": "tests.hookmodule"}):
        hooks.load_hooks()
    from tests import hookmodule

    assert hooks.get_hook("password_auth_callback") is hookmodule.auth
    assert hooks.get_hooks("on_logout") == [hookmodule.bye]


def test_missing_hooks_module_is_improperly_configured():
    with override_settings(CHATAUTH={**HOOK_SETTINGS, "HOOKS": "tests.no_such_hooks"}):
        with pytest.raises(ImproperlyConfigured, match="tests.no_such_hooks"):
            hooks.load_hooks()


def test_chat_hooks_are_autodiscovered():
    # The demo app ``project`` ships a chat_hooks.py; the test settings turn
    # discovery off, so turning it on must find it.
    sys.modules.pop("project.chat_hooks", None)
    with override_settings(CHATAUTH={**HOOK_SETTINGS, "AUTODISCOVER_HOOKS": True}):
        hooks.load_hooks()
    header = hooks.get_hook("header_auth_callback")
    assert header is not None and header.__module__ == "project.chat_hooks"
    assert [h.__module__ for h in hooks.get_hooks("on_logout")] == [
        "project.chat_hooks"
    ]


def test_autodiscovery_off_loads_nothing():
    sys.modules.pop("project.chat_hooks", None)
    with override_settings(CHATAUTH={**HOOK_SETTINGS, "AUTODISCOVER_HOOKS": False}):
        hooks.load_hooks()
    assert hooks.get_hook("header_auth_callback") is None


@pytest.mark.django_db(transaction=True)
def test_default_password_login_uses_django_authenticate(api, user):
    ok = api.post(
        "/auth/login", {"username": "alice", "password": PASSWORD}, format="json"
    )
    assert ok.status_code == 200
    assert ok.json()["user"]["identifier"] == "alice"
