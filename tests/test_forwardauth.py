"""``GET auth/verify``: forward auth for reverse proxies.

Over a real socket to the demo (uvicorn serving ``project.asgi``, where
``chatauth.asgi`` answers the route ahead of Django) and in process through
Django's own view: both must give the same answers, for every credential a
proxy forwards and every way one is bad.
"""

from __future__ import annotations

import time

import httpx
import jwt
import pytest

from chatauth import tokens
from chatauth.audit import refusals
from chatauth.models import AuditEvent
from tests.conftest import PASSWORD, bearer, chainlit_token
from tests.servers import SECRET, create_users

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def remote(demo_server):
    """An HTTP client of the demo, with a user of its own."""
    create_users(demo_server.env, ("fa-user", PASSWORD))
    with httpx.Client(base_url=demo_server.url, timeout=10) as client:
        yield client


def remote_login(remote) -> dict:
    response = remote.post(
        "/auth/login", json={"username": "fa-user", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return response.json()


def remote_chainlit_token(identifier: str = "fa-user", **claims) -> str:
    """Chainlit's way, with the demo server's secret."""
    payload = {"identifier": identifier, "metadata": {"role": "x"}}
    payload |= {"exp": int(time.time()) + 600, **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


# --- Over the wire, the lean path ------------------------------------------------


def test_a_valid_token_passes_with_the_identity(remote):
    pair = remote_login(remote)
    answer = remote.get(
        "/auth/verify", headers={"Authorization": f"Bearer {pair['access_token']}"}
    )
    assert answer.status_code == 200
    assert answer.headers["x-auth-user"] == "fa-user"
    assert answer.headers["x-auth-user-id"].isdigit()
    assert answer.headers["x-auth-metadata"] == "{}"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.content == b""
    # Answered ahead of Django's middleware (which would add these).
    assert "x-frame-options" not in answer.headers


def test_revocation_is_seen_by_the_very_next_check(remote):
    pair = remote_login(remote)
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    assert remote.get("/auth/verify", headers=auth).status_code == 200
    assert remote.post("/auth/logout", headers=auth).status_code == 200
    refused = remote.get("/auth/verify", headers=auth)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == (
        'Bearer realm="chatauth", error="invalid_token"'
    )
    assert refused.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("where", ["access_token", "chatauth_access", "chunks"])
def test_cookies_a_proxy_forwards(remote, where):
    token = remote_chainlit_token()
    if where == "chunks":  # Chainlit's cookies for a token too long for one
        cookie = "; ".join(
            f"access_token_{i}={token[i * 100 : (i + 1) * 100]}"
            for i in range(len(token) // 100 + 1)
        )
    else:
        cookie = f"{where}={token}"
    answer = remote.get("/auth/verify", headers={"Cookie": f"other=1; {cookie}"})
    assert answer.status_code == 200, answer.headers
    assert answer.headers["x-auth-user"] == "fa-user"
    assert answer.headers["x-auth-metadata"] == '{"role":"x"}'


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Basic ZmE6eA=="},
        {"Authorization": "Bearer " + "a" * 9000},
        {"Cookie": "access_token="},
        {"Cookie": "access_token_0=abc; access_token_2=def"},
        {"Cookie": 'access_token="unterminated; =; ;;; access_token_0=\\'},
        {"Cookie": "; ".join(f"access_token_{i}=x" for i in range(50))},
    ],
    ids=lambda h: repr(h)[:40],
)
def test_bad_or_missing_credentials_are_401_never_500(remote, headers):
    answer = remote.get("/auth/verify", headers=headers)
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"].startswith('Bearer realm="chatauth"')


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(
            jwt.encode(
                {"identifier": "fa-user", "exp": int(time.time()) + 60},
                "some-other-secret-" + "x" * 40,
                algorithm="HS256",
            ),
            id="forged",
        ),
        pytest.param(remote_chainlit_token(exp=int(time.time()) - 3600), id="expired"),
        pytest.param(remote_chainlit_token(identifier=""), id="no-identifier"),
    ],
)
def test_forged_and_expired_tokens_are_refused(remote, token):
    answer = remote.get("/auth/verify", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401


def test_only_get_and_head(remote):
    token = remote_chainlit_token()
    auth = {"Authorization": f"Bearer {token}"}
    assert remote.head("/auth/verify", headers=auth).status_code == 200
    posted = remote.post("/auth/verify", headers=auth)
    assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"


# --- In process: Django's view answers the same -----------------------------------


@pytest.fixture
def pair(user):
    """A token pair minted directly (no login route: no worker thread)."""
    return tokens.issue_pair(user).as_response()


@pytest.mark.django_db
def test_the_django_view_answers_the_same(client, pair, user):
    ok = client.get("/auth/verify", **bearer(pair["access_token"]))
    assert ok.status_code == 200 and ok["X-Auth-User"] == "alice"
    assert ok["X-Auth-User-Id"] == str(user.pk)
    assert ok["Cache-Control"] == "no-store"
    assert client.get("/auth/verify").status_code == 401
    assert client.post("/auth/verify").status_code == 405
    client.cookies["access_token"] = chainlit_token("alice")
    assert client.get("/auth/verify")["X-Auth-User"] == "alice"


@pytest.mark.django_db
def test_non_ascii_identity_is_sent_escaped(client, make_user):
    make_user("zoë")
    answer = client.get(
        "/auth/verify", **bearer(chainlit_token("zoë", {"city": "Zürich"}))
    )
    assert answer.status_code == 200
    assert answer["X-Auth-User"] == '"zo\\u00eb"'
    assert answer["X-Auth-Metadata"] == '{"city":"Z\\u00fcrich"}'


@pytest.mark.django_db
def test_metadata_too_big_for_a_proxy_header_is_left_out(client, make_user):
    make_user("big")
    token = chainlit_token("big", {"blob": "x" * 3000})
    answer = client.get("/auth/verify", **bearer(token))
    assert answer.status_code == 200 and "X-Auth-Metadata" not in answer


@pytest.mark.django_db(transaction=True)
def test_refusals_are_counted_in_the_audit_log_without_the_token(client):
    token = "not.a.token-" + "s" * 30
    refusals.flush()  # what earlier tests counted
    AuditEvent.objects.all().delete()
    for _ in range(3):
        client.get("/auth/verify", HTTP_AUTHORIZATION=f"Bearer {token}")
    refusals.flush()
    rows = list(AuditEvent.objects.filter(method="forward_auth"))
    assert sum(row.count for row in rows) == 3
    for row in rows:
        assert row.event == AuditEvent.Event.SESSION_REFUSED and not row.success
        assert row.reason == "token_not_valid"
        assert token not in str(vars(row)) and token[:20] not in str(vars(row))


def test_no_database_no_entry(tmp_path):
    """The revocation state cannot be read (the database is gone): 503, for a
    token the worker has never seen, and the same again once it is back."""
    import shutil

    from tests.servers import create_users, migrate, server_env, start_server

    db = tmp_path / "db.sqlite3"
    env = server_env(DATABASE_URL=f"sqlite:///{db}")
    migrate(env)
    create_users(env, ("fa-down", PASSWORD))
    server = start_server(env, tmp_path)
    try:
        token = remote_chainlit_token("fa-down")
        auth = {"Authorization": f"Bearer {token}"}
        shutil.move(db, tmp_path / "away.sqlite3")
        down = httpx.get(f"{server.url}/auth/verify", headers=auth, timeout=10)
        assert down.status_code == 503 and down.headers["retry-after"] == "5"
        assert down.headers["cache-control"] == "no-store"
        db.unlink(missing_ok=True)  # the empty file SQLite made meanwhile
        shutil.move(tmp_path / "away.sqlite3", db)
        up = httpx.get(f"{server.url}/auth/verify", headers=auth, timeout=10)
        assert up.status_code == 200 and up.headers["x-auth-user"] == "fa-down"
    finally:
        server.stop()


@pytest.mark.django_db
def test_a_renamed_users_older_token_names_them_as_they_are_now(client, pair, user):
    """Someone may hold the old identifier by now: the proxy's backend must be
    told who the token's user is today."""
    user.username = "alice-renamed"
    user.save()
    User = type(user)
    User.objects.create_user("alice", password=PASSWORD)  # the old name, taken
    answer = client.get("/auth/verify", **bearer(pair["access_token"]))
    assert answer.status_code == 200
    assert answer["X-Auth-User"] == "alice-renamed"
    assert answer["X-Auth-User-Id"] == str(user.pk)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("identifier", "sent"),
    [
        ("plain", "plain"),
        ('"zo\\u00eb"', '"\\"zo\\\\u00eb\\""'),  # an ASCII name that looks encoded
    ],
)
def test_identity_headers_read_back_one_way(client, make_user, identifier, sent):
    make_user(identifier)
    answer = client.get("/auth/verify", **bearer(chainlit_token(identifier)))
    assert answer.status_code == 200, answer.headers
    assert answer["X-Auth-User"] == sent


@pytest.mark.django_db
def test_a_display_name_with_edge_spaces_is_sent_quoted(client, make_user):
    make_user("spaced")
    token = chainlit_token("spaced", display_name=" padded ")
    answer = client.get("/auth/verify", **bearer(token))
    assert answer["X-Auth-Display-Name"] == '" padded "'


@pytest.mark.django_db
def test_a_display_name_too_big_for_a_proxy_header_is_left_out(client, make_user):
    make_user("longname")
    token = chainlit_token("longname", display_name="n" * 3000)
    answer = client.get("/auth/verify", **bearer(token))
    assert answer.status_code == 200 and "X-Auth-Display-Name" not in answer
    short = client.get(
        "/auth/verify", **bearer(chainlit_token("longname", display_name=7))
    )
    assert short.status_code == 200  # not a string: never a 500


def test_two_authorization_headers_are_refused_on_both_paths(remote):
    pair = remote_login(remote)
    good = f"Bearer {pair['access_token']}"
    answer = remote.get(
        "/auth/verify", headers=[("Authorization", good), ("Authorization", good)]
    )
    assert answer.status_code == 401


@pytest.mark.django_db(transaction=True)
def test_a_request_without_credentials_is_not_an_audit_event(client):
    refusals.flush()
    AuditEvent.objects.all().delete()
    for _ in range(3):
        assert client.get("/auth/verify").status_code == 401
    refusals.flush()
    assert not AuditEvent.objects.filter(method="forward_auth").exists()
