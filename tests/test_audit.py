"""The audit log: one row per auth event, never a secret in a row or a log record."""

from __future__ import annotations

import logging
import os

import pytest
from django.forms.models import model_to_dict

import chatauth
from chatauth import audit, revocation, tokens
from chatauth.models import APIKey, AuditEvent
from tests.conftest import PASSWORD, bearer, chainlit_token

pytestmark = pytest.mark.django_db(transaction=True)


def rows(event):
    return list(AuditEvent.objects.filter(event=event).order_by("created_at", "pk"))


def test_login_success(api, user, login):
    pair = login(HTTP_USER_AGENT="pytest-agent/1.0").json()
    [row] = rows("login")
    assert row.user_id == user.pk
    assert (row.identifier, row.method, row.success) == ("alice", "password", True)
    assert row.ip == "127.0.0.1"
    assert row.user_agent == "pytest-agent/1.0"
    assert row.token_id == tokens.verify_token(pair["access_token"]).key


def test_login_failure_with_django_authenticate(api, user, login):
    login("alice", "wrong")
    login("nobody", "wrong")
    failed = rows("login_failed")
    assert [(r.identifier, r.method, r.success) for r in failed] == [
        ("alice", "password", False),
        (audit.typed_identifier("nobody"), "password", False),
    ]
    assert all(r.user_id is None for r in failed)


def test_a_typed_name_that_is_no_account_is_kept_as_a_keyed_hash(api, user, login):
    """People type their password into the username box: what names no
    account is never stored as typed, but the same name hashes the same."""
    login("correct horse battery staple", "x")
    login("correct horse battery staple", "y")
    first, second = rows("login_failed")
    assert first.identifier == second.identifier
    assert first.identifier.startswith("~") and len(first.identifier) == 25
    assert "correct" not in first.identifier
    assert audit.typed_identifier("alice") == "alice"


def test_login_failure_with_a_callback(api):
    @chatauth.password_auth_callback
    async def auth(username, password):
        return None

    api.post("/auth/login", {"username": "zed", "password": "x"}, format="json")
    [row] = rows("login_failed")
    assert (row.identifier, row.method, row.reason) == (
        audit.typed_identifier("zed"),  # no such account (yet)
        "password",
        "invalid_credentials",
    )


def test_refresh_logout_and_revocations(api, user, pair):
    new = api.post(
        "/auth/token/refresh", {"refresh": pair["refresh_token"]}, format="json"
    ).json()
    [refreshed] = rows("refresh")
    old_key = tokens.decode(pair["refresh_token"])["jti"]
    assert (refreshed.user_id, refreshed.token_id) == (user.pk, old_key)

    api.post(
        "/auth/logout",
        {"refresh": new["refresh_token"], "everywhere": True},
        format="json",
        **bearer(new["access_token"]),
    )
    [logout] = rows("logout")
    assert (logout.user_id, logout.method, logout.reason) == (
        user.pk,
        "token",
        "everywhere",
    )
    assert logout.token_id == tokens.decode(new["access_token"])["jti"]
    revokes = {(r.reason, r.token_id) for r in rows("revoke")}
    assert revokes == {
        ("rotated", old_key),
        ("logout", tokens.decode(new["access_token"])["jti"]),
        ("logout", tokens.decode(new["access_token"])["fam"]),  # the login
        ("logout", tokens.decode(new["refresh_token"])["jti"]),
        ("logout_everywhere", ""),
    }
    assert all(r.user_id == user.pk for r in rows("revoke"))


def test_api_key_use(api):
    key, raw = APIKey.objects.create_key("partner")
    auth = {"HTTP_AUTHORIZATION": f"Api-Key {raw}"}
    api.post("/auth/copilot/token", {"identifier": "eve"}, format="json", **auth)
    bad = {"HTTP_AUTHORIZATION": "Api-Key ca_nope.nope"}
    api.post("/auth/copilot/token", {"identifier": "eve"}, format="json", **bad)
    [used] = rows("api_key_used")
    assert (used.identifier, used.method, used.success) == ("partner", "api_key", True)
    [refused] = rows("api_key_refused")
    assert (refused.identifier, refused.success) == ("", False)


def test_admin_revocation_is_audited(user):
    revocation.revoke_user(user, reason="admin")
    [row] = rows("revoke")
    assert (row.user_id, row.reason, row.identifier) == (user.pk, "admin", "alice")


def test_nothing_secret_in_rows_or_logs(api, user, caplog):
    """Run every route with real secrets; no row and no log record holds one."""
    caplog.set_level(logging.DEBUG)
    secrets = [PASSWORD, "wrong-password-s3cret", os.environ["CHATAUTH_SECRET"]]

    @chatauth.on_logout
    def broken(request, response):
        raise RuntimeError("hook failed")

    login = lambda u, p: api.post(  # noqa: E731
        "/auth/login", {"username": u, "password": p}, format="json"
    )
    pair = login("alice", PASSWORD).json()
    login("alice", "wrong-password-s3cret")
    login("nobody", "wrong-password-s3cret")
    new = api.post(
        "/auth/token/refresh", {"refresh": pair["refresh_token"]}, format="json"
    ).json()
    api.post("/auth/token/refresh", {"refresh": pair["refresh_token"]}, format="json")
    api.get("/auth/me", **bearer(new["access_token"]))
    key, raw_key = APIKey.objects.create_key("partner")
    copilot = api.post(
        "/auth/copilot/token",
        {"identifier": "eve"},
        format="json",
        HTTP_AUTHORIZATION=f"Api-Key {raw_key}",
    ).json()
    chainlit = chainlit_token("carl")
    api.get("/auth/me", **bearer(chainlit))
    api.post("/auth/logout", **bearer(chainlit))
    api.get("/auth/me", **bearer(chainlit))
    api.post(
        "/auth/logout",
        {"refresh": new["refresh_token"], "everywhere": True},
        format="json",
        **bearer(new["access_token"]),
    )
    api.get("/auth/me", **bearer(new["access_token"]))

    @chatauth.password_auth_callback
    def failing(username, password):
        raise ValueError("directory unavailable")

    login("alice", "wrong-password-s3cret")

    secrets += [
        pair["access_token"],
        pair["refresh_token"],
        new["access_token"],
        new["refresh_token"],
        copilot["access_token"],
        chainlit,
        raw_key,
    ]
    # Also the signature alone (the part that makes a token usable).
    secrets += [t.rsplit(".", 1)[1] for t in secrets[3:9]]

    audit = AuditEvent.objects.all()
    assert {r.event for r in audit} >= {
        "login",
        "login_failed",
        "refresh",
        "logout",
        "revoke",
        "api_key_used",
        "token_issued",
    }
    for row in audit:
        text = repr(model_to_dict(row))
        for secret in secrets:
            assert secret not in text, (row.event, secret[:12])

    assert caplog.records  # the failing hooks and 4xx responses were logged
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        for secret in secrets:
            assert secret not in text, (record.name, secret[:12])


def test_refusals_of_unknown_clients_are_counted_not_stored_one_row_each(api, settings):
    settings.CHATAUTH = {**settings.CHATAUTH, "AUDIT_REFUSAL_INTERVAL": 3600}
    bad = {"HTTP_AUTHORIZATION": "Api-Key ca_nope.nope"}
    try:
        for i in range(200):
            api.post(
                "/auth/copilot/token",
                {"identifier": "eve"},
                format="json",
                REMOTE_ADDR=f"203.0.113.{i % 2 + 1}",
                **bad,
            )
        assert not rows("api_key_refused")  # nothing written yet
    finally:
        assert audit.refusals.flush() == 200
    counted = rows("api_key_refused")
    assert sorted((r.ip, r.count) for r in counted) == [
        ("203.0.113.1", 100),
        ("203.0.113.2", 100),
    ]
    assert all(not r.success for r in counted)


def test_refusal_keys_are_bounded(settings):
    settings.CHATAUTH = {**settings.CHATAUTH, "AUDIT_REFUSAL_INTERVAL": 3600}
    counter = audit.Refusals()
    counter.MAX_KEYS = 10
    for i in range(50):
        counter.count("session_refused", reason="origin", identifier=f"x{i}")
    assert counter.flush() == 50
    assert AuditEvent.objects.filter(event="session_refused").count() == 11


def test_refusals_are_written_when_the_interval_ends(settings):
    import time

    settings.CHATAUTH = {**settings.CHATAUTH, "AUDIT_REFUSAL_INTERVAL": 0.2}
    counter = audit.Refusals()
    counter.count("header_refused", reason="untrusted_proxy")
    counter.count("header_refused", reason="untrusted_proxy")
    for _ in range(50):
        if AuditEvent.objects.filter(event="header_refused").exists():
            break
        time.sleep(0.05)
    [row] = AuditEvent.objects.filter(event="header_refused")
    assert row.count == 2


def test_prune_ages_audit_rows_out(settings, user):
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    old = timezone.now() - timedelta(days=200)
    AuditEvent.objects.create(event="login", user=user, created_at=old)
    AuditEvent.objects.create(event="login", user=user)
    call_command("chatauth_prune", stdout=None)
    assert AuditEvent.objects.count() == 1
    settings.CHATAUTH = {**settings.CHATAUTH, "AUDIT_RETENTION": None}
    AuditEvent.objects.create(event="login", user=user, created_at=old)
    call_command("chatauth_prune", stdout=None)
    assert AuditEvent.objects.count() == 2
