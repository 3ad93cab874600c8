"""The HTTP routes (all but OAuth and the WebSocket), in process."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from django.middleware.csrf import _get_new_csrf_string
from django.test import override_settings
from rest_framework.test import APIClient

import chatauth
from chatauth import tokens
from chatauth.models import APIKey, AuditEvent, ChatSession, Profile, RevokedToken
from tests.conftest import PASSWORD, bearer, chainlit_token

# Transactional only where the login route runs (its password check uses the
# database from a worker thread) or where a test starts threads itself.
pytestmark = pytest.mark.django_db
THREADED = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pair(user):
    """A token pair minted directly (the login route has tests of its own)."""
    return tokens.issue_pair(user).as_response()


def me(api, token):
    return api.get("/auth/me", **bearer(token))


def refresh(api, token, key="refresh"):
    return api.post("/auth/token/refresh", {key: token}, format="json")


def assert_detail(response, status):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str), body
    return body["detail"]


# --- config, schema -------------------------------------------------------------------


def test_config(api):
    assert api.get("/auth/config").json() == {
        "password": True,
        "header": False,
        "oauth": [],
        "copilot": True,
    }

    @chatauth.header_auth_callback
    def by_header(headers):
        return None

    assert api.get("/auth/config").json()["header"] is True
    # Only to a request that came through a trusted proxy (the test client's
    # 127.0.0.1 is one in the test settings), and never with none trusted.
    outside = api.get("/auth/config", REMOTE_ADDR="198.51.100.9")
    assert outside.json()["header"] is False
    with override_settings(CHATAUTH={"TRUSTED_PROXIES": []}):
        assert api.get("/auth/config").json()["header"] is False


@pytest.mark.parametrize(
    "path",
    [
        "/auth/login",
        "/auth/header",
        "/auth/config",
        "/auth/me",
        "/auth/logout",
        "/auth/token/refresh",
        "/auth/copilot/token",
        "/auth/sessions",
    ],
)
def test_options_shows_no_docstring(api, path):
    response = api.options(path)
    body = response.json()
    if response.status_code == 401:  # routes that want a credential first
        assert set(body) == {"detail"}
        return
    assert response.status_code == 200, response.content
    assert "description" not in body
    assert set(body) <= {"name", "renders", "parses", "actions"}


def test_schema_is_openapi_3_with_every_route(api):
    response = api.get("/auth/schema")
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    for path in (
        "/auth/login",
        "/auth/header",
        "/auth/token/refresh",
        "/auth/copilot/token",
        "/auth/me",
        "/auth/logout",
        "/auth/sessions",
        "/auth/sessions/{session_id}",
        "/auth/config",
    ):
        assert path in schema["paths"], path


# --- login, me, refresh, logout -------------------------------------------------------


@THREADED
def test_login_me_refresh_logout_flow(api, user, login):
    response = login()
    assert response.status_code == 200
    pair = response.json()
    assert pair["token_type"] == "bearer" and pair["expires_in"] == 900
    assert pair["user"] == {"identifier": "alice", "display_name": None, "metadata": {}}
    assert me(api, pair["access_token"]).json()["identifier"] == "alice"

    rotated = refresh(api, pair["refresh_token"])
    assert rotated.status_code == 200, rotated.content
    new = rotated.json()
    assert new["access_token"] != pair["access_token"]
    assert new["refresh_token"] != pair["refresh_token"]
    assert me(api, new["access_token"]).status_code == 200

    other = login().json()  # another login of the same user
    out = api.post("/auth/logout", **bearer(new["access_token"]))
    assert out.json() == {"detail": "Logged out."}
    assert_detail(me(api, new["access_token"]), 401)
    # Logout ends the login the token belongs to: every access and refresh
    # token of it (its refresh family), not only the one presented ...
    assert_detail(me(api, pair["access_token"]), 401)
    assert_detail(refresh(api, new["refresh_token"]), 401)
    # ... and no other login.
    assert me(api, other["access_token"]).status_code == 200
    assert refresh(api, other["refresh_token"]).status_code == 200


def test_refresh_reuse_refused(api, pair):
    assert refresh(api, pair["refresh_token"]).status_code == 200
    assert_detail(refresh(api, pair["refresh_token"]), 401)
    assert RevokedToken.objects.filter(reason="rotated").count() == 1


def test_refresh_accepts_refresh_token_key(api, pair):
    assert refresh(api, pair["refresh_token"], key="refresh_token").status_code == 200


@THREADED
def test_concurrent_refreshes_exactly_one_succeeds(user, pair):
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def attempt():
        from django.db import connection

        try:
            barrier.wait(10)
            statuses.append(refresh(APIClient(), pair["refresh_token"]).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [200, 401, 401, 401]


def test_refresh_for_an_inactive_user_refused(api, user, pair):
    user.is_active = False
    user.save()
    assert_detail(refresh(api, pair["refresh_token"]), 401)


@THREADED
def test_logout_everywhere(api, user, make_user, login):
    first = login().json()
    second = login().json()
    copilot = str(tokens.issue_copilot_token(user))
    chainlit = chainlit_token("alice")
    bob = make_user("bob")
    bobs = str(tokens.issue_pair(bob).access)
    for token in (first["access_token"], second["access_token"], copilot, chainlit):
        assert me(api, token).status_code == 200

    out = api.post(
        "/auth/logout", {"everywhere": True}, format="json", **bearer(copilot)
    )
    assert out.status_code == 200
    for token in (first["access_token"], second["access_token"], copilot, chainlit):
        assert_detail(me(api, token), 401)
    for token in (first["refresh_token"], second["refresh_token"]):
        assert_detail(refresh(api, token), 401)
    assert me(api, bobs).status_code == 200

    again = login()  # a token minted right after works
    assert again.status_code == 200
    assert me(api, again.json()["access_token"]).status_code == 200
    row = AuditEvent.objects.get(event="logout")
    assert (row.reason, row.method) == ("everywhere", "token")


def test_logout_with_refresh_revokes_it(api, pair):
    out = api.post(
        "/auth/logout",
        {"refresh": pair["refresh_token"]},
        format="json",
        **bearer(pair["access_token"]),
    )
    assert out.status_code == 200
    assert_detail(refresh(api, pair["refresh_token"]), 401)
    # The two tokens, and the login they belong to (their refresh family).
    assert set(RevokedToken.objects.values_list("token_type", flat=True)) == {
        "access",
        "refresh",
        "family",
    }


def test_logout_does_not_revoke_another_users_refresh(api, pair, make_user):
    bob = make_user("bob")
    bobs = tokens.issue_pair(bob)
    api.post(
        "/auth/logout",
        {"refresh": str(bobs.refresh)},
        format="json",
        **bearer(pair["access_token"]),
    )
    assert refresh(api, str(bobs.refresh)).status_code == 200


def test_logout_ignores_an_unusable_refresh(api, pair):
    out = api.post(
        "/auth/logout",
        {"refresh": "not-a-token"},
        format="json",
        **bearer(pair["access_token"]),
    )
    assert out.status_code == 200


@THREADED
def test_login_sets_and_logout_clears_cookies(api, user, login):
    response = login()
    cookie = response.cookies["chatauth_access"]
    assert cookie.value == response.json()["access_token"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert cookie["max-age"] == 900
    out = api.post("/auth/logout", **bearer(response.json()["access_token"]))
    cleared = out.cookies["chatauth_access"]
    assert cleared.value == "" and cleared["max-age"] == 0
    assert out.cookies["sessionid"]["max-age"] == 0


def test_logout_needs_credentials(api):
    assert_detail(api.post("/auth/logout"), 401)
    assert_detail(api.post("/auth/logout", **bearer("garbage")), 401)


def test_logout_with_a_django_session_enforces_csrf(user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    refused = client.post("/auth/logout", {}, format="json")
    assert_detail(refused, 403)
    csrf = _get_new_csrf_string()
    client.cookies["csrftoken"] = csrf
    out = client.post("/auth/logout", {}, format="json", HTTP_X_CSRFTOKEN=csrf)
    assert out.status_code == 200
    assert client.get("/auth/sessions").status_code in (401, 403)
    assert AuditEvent.objects.get(event="logout").method == "session"


def test_me_without_credentials(api):
    assert_detail(api.get("/auth/me"), 401)


@THREADED
def test_unknown_user_and_wrong_password_look_the_same(api, user, login):
    unknown = login("nobody", PASSWORD)
    wrong = login("alice", "wrong password")
    blank = login("alice", "")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.content == wrong.content
    assert unknown["WWW-Authenticate"] == wrong["WWW-Authenticate"]
    assert blank.status_code == 400  # a blank password is a validation error


@THREADED
def test_inactive_user_cannot_log_in(api, make_user, login):
    make_user("ina", is_active=False)
    response = login("ina", PASSWORD)
    assert_detail(response, 401)
    assert response.content == login("nobody", PASSWORD).content


# --- Bad input: always a clean 4xx with {"detail": ...} -------------------------------


BAD_BODIES = {
    "malformed": b'{"username": "alice", "password": ',
    "array": b'["alice", "pw"]',
    "string": b'"alice"',
    "null": b"null",
    "number": b"42",
    "empty-object": b"{}",
    "missing-password": b'{"username": "alice"}',
    "missing-username": b'{"password": "pw"}',
    "int-username": b'{"username": 42, "password": "pw"}',
    "bool-password": b'{"username": "alice", "password": true}',
    "list-password": b'{"username": "alice", "password": ["pw"]}',
    "object-username": b'{"username": {"$ne": null}, "password": "pw"}',
    "null-username": b'{"username": null, "password": "pw"}',
    "nul-escaped": b'{"username": "ali\\u0000ce", "password": "pw"}',
    "nul-raw": b'{"username": "ali\x00ce", "password": "pw"}',
    "nul-password": b'{"username": "alice", "password": "p\\u0000w"}',
    "invalid-utf8": b'{"username": "\xff\xfe", "password": "pw"}',
    "deep": b"[" * 30000 + b"]" * 30000,
    "deep-object": b'{"a":' * 20000 + b"1" + b"}" * 20000,
    "huge-int": b'{"username": ' + b"9" * 5000 + b', "password": "pw"}',
    "long-username": json.dumps({"username": "a" * 300, "password": "pw"}).encode(),
    "long-password": json.dumps({"username": "alice", "password": "p" * 5000}).encode(),
    "one-megabyte": json.dumps({"username": "alice", "password": "p" * 2**20}).encode(),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_login_bad_input(api, user, name):
    response = api.generic(
        "POST", "/auth/login", BAD_BODIES[name], content_type="application/json"
    )
    assert 400 <= response.status_code < 500, (name, response.status_code)
    assert_detail(response, response.status_code)
    if name == "one-megabyte":
        assert response.status_code == 413


@pytest.mark.parametrize(
    "path", ["/auth/token/refresh", "/auth/logout", "/auth/copilot/token"]
)
@pytest.mark.parametrize("name", ["malformed", "array", "deep", "one-megabyte"])
def test_other_routes_bad_input(api, pair, path, name):
    _, raw = APIKey.objects.create_key("bad-input")
    headers = {
        "/auth/logout": bearer(pair["access_token"]),
        "/auth/copilot/token": {"HTTP_AUTHORIZATION": f"Api-Key {raw}"},
    }.get(path, {})
    response = api.generic(
        "POST", path, BAD_BODIES[name], content_type="application/json", **headers
    )
    assert 400 <= response.status_code < 500, (path, name, response.status_code)
    assert_detail(response, response.status_code)


@pytest.mark.parametrize(
    "body",
    [b"{}", b'{"refresh": 1}', b'{"refresh": null}', b'{"refresh": ""}'],
)
def test_refresh_bad_fields(api, body):
    response = api.generic(
        "POST", "/auth/token/refresh", body, content_type="application/json"
    )
    assert_detail(response, 400)


@pytest.mark.parametrize("everywhere", ['"yes"', "1", "null", "[]"])
def test_logout_everywhere_must_be_a_boolean(api, pair, everywhere):
    response = api.generic(
        "POST",
        "/auth/logout",
        f'{{"everywhere": {everywhere}}}',
        content_type="application/json",
        **bearer(pair["access_token"]),
    )
    assert_detail(response, 400)
    assert me(api, pair["access_token"]).status_code == 200  # nothing revoked


def test_form_posts_refused(api, user):
    multipart = api.post("/auth/login", {"username": "alice", "password": PASSWORD})
    assert_detail(multipart, 415)
    urlencoded = api.generic(
        "POST",
        "/auth/login",
        f"username=alice&password={PASSWORD}",
        content_type="application/x-www-form-urlencoded",
    )
    assert_detail(urlencoded, 415)
    text = api.generic("POST", "/auth/login", "alice", content_type="text/plain")
    assert_detail(text, 415)
    assert not AuditEvent.objects.filter(event="login").exists()


def test_bad_content_length(api):
    response = api.generic(
        "POST",
        "/auth/login",
        b"{}",
        content_type="application/json",
        CONTENT_LENGTH="abc",
    )
    assert_detail(response, 400)


def test_wrong_methods(api):
    assert_detail(api.get("/auth/login"), 405)
    assert_detail(api.put("/auth/token/refresh", {}, format="json"), 405)
    assert_detail(api.post("/auth/config"), 405)


# --- Copilot token --------------------------------------------------------------------


@pytest.fixture
def api_key():
    return APIKey.objects.create_key("host-site")


def copilot(api, raw_key, body):
    return api.post(
        "/auth/copilot/token",
        body,
        format="json",
        HTTP_AUTHORIZATION=f"Api-Key {raw_key}",
    )


def test_copilot_token_with_an_api_key_creates_then_updates(api, api_key):
    row, raw = api_key
    first = copilot(
        api, raw, {"identifier": "dana", "display_name": "Dana", "metadata": {"a": 1}}
    )
    assert first.status_code == 200, first.content
    body = first.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 86400
    assert body["user"] == {
        "identifier": "dana",
        "display_name": "Dana",
        "metadata": {"a": 1},
    }
    assert me(api, body["access_token"]).json()["metadata"] == {"a": 1}
    claims = tokens.verify_token(body["access_token"])
    assert claims.token_type == "copilot"

    # An existing user's profile (claims in their own tokens) is not the key's
    # to change, unless it may.
    second = copilot(api, raw, {"identifier": "dana", "metadata": {"role": "admin"}})
    assert second.status_code == 200
    assert second.json()["user"]["metadata"] == {"a": 1}
    assert Profile.objects.get(user__username="dana").metadata == {"a": 1}
    APIKey.objects.filter(pk=row.pk).update(may_update_profiles=True)
    third = copilot(api, raw, {"identifier": "dana", "metadata": {"b": 2}})
    assert third.json()["user"] == {
        "identifier": "dana",
        "display_name": "Dana",  # not given: kept
        "metadata": {"b": 2},
    }
    assert Profile.objects.filter(user__username="dana").count() == 1

    row.refresh_from_db()
    assert row.last_used_at is not None
    used = AuditEvent.objects.filter(event="api_key_used")
    assert used.count() == 3
    assert {(r.identifier, r.method, r.success) for r in used} == {
        ("host-site", "api_key", True)
    }
    issued = AuditEvent.objects.filter(event="token_issued")
    assert {(r.identifier, r.method, r.reason) for r in issued} == {
        ("dana", "api_key", "copilot")
    }


@pytest.mark.parametrize(
    "key",
    [
        "ca_00000000.wrong",
        "wrong",
        "",
        "ca_" + "x" * 200,
    ],
)
def test_copilot_token_wrong_api_key(api, api_key, key):
    response = copilot(api, key, {"identifier": "dana"})
    assert_detail(response, 401)
    assert not Profile.objects.filter(user__username="dana").exists()


def test_copilot_token_wrong_key_is_audited(api, api_key):
    _, raw = api_key
    assert_detail(copilot(api, raw[:-2] + "zz", {"identifier": "dana"}), 401)
    row = AuditEvent.objects.get(event="api_key_refused")
    assert (row.success, row.method) == (False, "api_key")


def test_copilot_token_revoked_api_key(api, api_key):
    row, raw = api_key
    assert copilot(api, raw, {"identifier": "dana"}).status_code == 200
    row.revoked_at = row.created_at
    row.save()
    assert_detail(copilot(api, raw, {"identifier": "dana"}), 401)


@pytest.mark.parametrize(
    "body",
    [
        {"identifier": "dana", "metadata": ["a"]},
        {"identifier": "dana", "metadata": "text"},
        {"identifier": "dana", "metadata": 3},
        {"identifier": "dana", "metadata": None},
        {"identifier": "dana", "metadata": {"blob": "x" * (17 * 1024)}},
        {"identifier": "dana", "metadata": {"nul": "a\x00b"}},
        {"identifier": "dana", "display_name": 5},
        {"identifier": ""},
        {"identifier": 5},
        {"identifier": "x" * 300},
        {"identifier": "x" * 200},  # under the field limit, over the username column
        {},
    ],
)
def test_copilot_token_bad_body(api, api_key, body):
    _, raw = api_key
    assert_detail(copilot(api, raw, body), 400)


def test_copilot_token_for_the_session_user_enforces_csrf(user):
    client = APIClient(enforce_csrf_checks=True)
    assert_detail(client.post("/auth/copilot/token", {}, format="json"), 401)
    client.force_login(user)
    assert_detail(client.post("/auth/copilot/token", {}, format="json"), 403)
    csrf = _get_new_csrf_string()
    client.cookies["csrftoken"] = csrf
    response = client.post(
        "/auth/copilot/token", {}, format="json", HTTP_X_CSRFTOKEN=csrf
    )
    assert response.status_code == 200, response.content
    token = response.json()["access_token"]
    assert tokens.verify_token(token).identifier == "alice"
    row = AuditEvent.objects.get(event="token_issued")
    assert (row.identifier, row.method) == ("alice", "session")


def test_copilot_token_for_an_inactive_user_refused(api, api_key, make_user):
    make_user("dana", is_active=False)
    _, raw = api_key
    assert_detail(copilot(api, raw, {"identifier": "dana"}), 401)


@THREADED
def test_copilot_token_from_an_access_token_ends_with_that_login(api, pair, login):
    """A user logged in through auth/login (no Django session) gets the widget's
    token with their access token; logging out of that login ends it."""
    other = login().json()  # a second login of the same user
    response = api.post(
        "/auth/copilot/token", {}, format="json", **bearer(pair["access_token"])
    )
    assert response.status_code == 200, response.content
    copilot = response.json()["access_token"]
    assert response.json()["user"]["identifier"] == "alice"
    claims = tokens.decode(copilot)
    assert claims["token_type"] == "copilot"
    assert claims["fam"] == tokens.decode(pair["access_token"])["fam"]
    assert api.get("/auth/me", **bearer(copilot)).status_code == 200
    event = AuditEvent.objects.filter(event="token_issued").latest("created_at")
    assert event.method == "token"
    assert (
        api.post(
            "/auth/logout",
            {"refresh": pair["refresh_token"]},
            format="json",
            **bearer(pair["access_token"]),
        ).status_code
        == 200
    )
    assert_detail(api.get("/auth/me", **bearer(copilot)), 401)
    # The other login, and a copilot token minted from it, are untouched.
    again = api.post(
        "/auth/copilot/token", {}, format="json", **bearer(other["access_token"])
    )
    assert (
        api.get("/auth/me", **bearer(again.json()["access_token"])).status_code == 200
    )


def test_copilot_token_cannot_mint_the_next_one(api, pair, user):
    """Else a copilot token would never expire: each one minting the next."""
    copilot = api.post(
        "/auth/copilot/token", {}, format="json", **bearer(pair["access_token"])
    ).json()["access_token"]
    for token in (copilot, chainlit_token("alice")):
        response = api.post("/auth/copilot/token", {}, format="json", **bearer(token))
        assert_detail(response, 403)
    refresh = api.post(
        "/auth/copilot/token", {}, format="json", **bearer(pair["refresh_token"])
    )
    assert_detail(refresh, 401)


# --- Sessions -------------------------------------------------------------------------


def test_sessions_need_credentials(api):
    assert_detail(api.get("/auth/sessions"), 401)
    assert_detail(api.delete(f"/auth/sessions/{uuid.uuid4()}"), 401)


def test_sessions_empty_for_a_new_user(api, pair):
    response = api.get("/auth/sessions", **bearer(pair["access_token"]))
    assert response.status_code == 200
    assert response.json() == []


def test_sessions_list_and_close(api, user, pair, make_user):
    verified = tokens.verify_token(pair["access_token"])
    mine = ChatSession.objects.create(
        user=user, token_key=verified.key, ip="127.0.0.1", user_agent="pytest"
    )
    other = ChatSession.objects.create(user=user, token_key="another")
    ChatSession.objects.create(user=user, closed_at=mine.opened_at)  # ended
    bobs = ChatSession.objects.create(user=make_user("bob"))

    listed = api.get("/auth/sessions", **bearer(pair["access_token"])).json()
    assert {row["id"]: row["current"] for row in listed} == {
        str(mine.id): True,
        str(other.id): False,
    }
    assert next(r for r in listed if r["id"] == str(mine.id))["ip"] == "127.0.0.1"

    gone = api.delete(f"/auth/sessions/{other.id}", **bearer(pair["access_token"]))
    assert gone.status_code == 204
    other.refresh_from_db()
    assert other.closed_at is not None and other.close_code == 4410
    again = api.delete(f"/auth/sessions/{other.id}", **bearer(pair["access_token"]))
    assert_detail(again, 404)
    not_mine = api.delete(f"/auth/sessions/{bobs.id}", **bearer(pair["access_token"]))
    assert_detail(not_mine, 404)
    bobs.refresh_from_db()
    assert bobs.closed_at is None


def test_body_limit_follows_settings(api, user):
    body = json.dumps({"username": "alice", "password": PASSWORD}).encode()
    with override_settings(CHATAUTH={"MAX_BODY_BYTES": 10}):
        assert_detail(
            api.generic("POST", "/auth/login", body, content_type="application/json"),
            413,
        )


@THREADED
def test_no_response_that_carries_a_token_is_cacheable(api, user, api_key):
    """RFC 9111 §5.2.2.5: no-store on every chatauth answer (token pairs,
    copilot tokens, identities, refusals), and on pages that embed a token."""
    from django.test import Client

    _, raw = api_key
    login = api.post(
        "/auth/login", {"username": "alice", "password": PASSWORD}, format="json"
    )
    pair = login.json()
    answers = [
        login,
        api.post("/auth/login", {"username": "alice", "password": "x"}, format="json"),
        refresh(api, pair["refresh_token"]),
        me(api, pair["access_token"]),
        copilot(api, raw, {"identifier": "bob"}),
        api.get("/auth/config"),
    ]
    for response in answers:
        assert response["Cache-Control"] == "no-store", response.request["PATH_INFO"]
    page = Client()
    page.force_login(user)
    home = page.get("/")
    assert (
        "no-store" in home["Cache-Control"] and "accessToken" in home.content.decode()
    )
    assert "no-store" in page.get("/chainlit/")["Cache-Control"]
    # The same page without a token (an anonymous visitor) is left alone.
    assert "no-store" not in Client().get("/").get("Cache-Control", "")


def test_api_key_scopes(api, make_user):
    """A key mints only within its scope: a pattern of identifiers, a group,
    and never for staff or superusers unless it may; 403, audited."""
    from django.contrib.auth.models import Group

    partners = Group.objects.create(name="partners")
    key, raw = APIKey.objects.create_key("partner", identifiers="*@partner.example")
    make_user("root@partner.example", is_superuser=True, is_staff=True)
    outsider = make_user("bob@partner.example")

    assert copilot(api, raw, {"identifier": "Ann@Partner.example"}).status_code == 200
    for identity in ("eve@other.example", "root@partner.example"):
        refused = copilot(api, raw, {"identifier": identity})
        assert refused.status_code == 403
        assert refused.json() == {
            "detail": "This API key may not mint tokens for this identity."
        }
    rows = AuditEvent.objects.filter(event="api_key_refused", reason="scope")
    assert {(r.identifier, r.actor) for r in rows} == {
        ("eve@other.example", "api_key:partner"),
        ("root@partner.example", "api_key:partner"),
    }
    APIKey.objects.filter(pk=key.pk).update(may_mint_for_staff=True, group=partners)
    # Now: members of the group only; the key's own new users join it.
    assert copilot(api, raw, {"identifier": "bob@partner.example"}).status_code == 403
    outsider.groups.add(partners)
    assert copilot(api, raw, {"identifier": "bob@partner.example"}).status_code == 200
    created = copilot(api, raw, {"identifier": "new@partner.example"})
    assert created.status_code == 200
    from django.contrib.auth import get_user_model

    new = get_user_model().objects.get(username="new@partner.example")
    assert new.groups.filter(pk=partners.pk).exists()
    assert copilot(api, raw, {"identifier": "root@partner.example"}).status_code == 403


def test_schema_with_drfs_own_defaults():
    """A project that never configured drf-spectacular (DRF's default schema
    class, drf-spectacular not installed as an app) and has DRF views of its
    own still gets the schema: chatauth's routes alone."""
    from tests.servers import run_manage, server_env

    code = (
        "from django.test import Client; "
        "r = Client(HTTP_HOST='localhost').get('/auth/schema'); "
        "print(r.status_code, r.headers['Content-Type']); "
        "import json; print(sorted(json.loads(r.content)['paths']))"
    )
    result = run_manage(
        server_env(DJANGO_SETTINGS_MODULE="tests.plain_drf_settings"),
        "shell",
        "-c",
        code,
    )
    assert "200 application/vnd.oai.openapi+json" in result.stdout, (
        result.stdout + result.stderr
    )
    assert "/auth/config" in result.stdout and "/auth/login" in result.stdout
    assert "/api/hello/" not in result.stdout  # not drf-spectacular's to describe
    check = run_manage(
        server_env(DJANGO_SETTINGS_MODULE="tests.plain_drf_settings"),
        "check",
        "--deploy",
    )
    assert "drf_spectacular" not in check.stdout + check.stderr


def test_schema_answers_plain_json_too(api):
    response = api.get("/auth/schema", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert json.loads(response.content)["openapi"].startswith("3.")
