"""The HTTP contract (docs/http-api.md) over a real socket, against the demo server.

The server is shared by the whole test session (``demo_server``): every test uses
its own users, and failed logins are kept to a handful, because the server's
per-address throttle counts every failure from 127.0.0.1 for five minutes.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid

import httpx
import jwt
import pytest

from tests.servers import SECRET, manage

PASSWORD = "contract-password-" + "p" * 10


@pytest.fixture(scope="module")
def http(demo_server):
    with httpx.Client(base_url=demo_server.url, timeout=20) as client:
        yield client


@pytest.fixture(scope="module")
def account(demo_server):
    """A password user of the demo server's database (made by a real process)."""
    name = f"contract-{uuid.uuid4().hex[:8]}"
    manage(
        demo_server.env,
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user({name!r}, password={PASSWORD!r})",
    )
    return name


def login(http, username, password=PASSWORD):
    return http.post("/auth/login", json={"username": username, "password": password})


def me(http, token):
    return http.get("/auth/me", headers={"Authorization": f"Bearer {token}"})


def header_login(http, name=None):
    """A fresh user through the demo's header callback (127.0.0.1 is trusted)."""
    name = name or f"hdr-{uuid.uuid4().hex[:8]}"
    response = http.post("/auth/header", headers={"X-Forwarded-User": name})
    assert response.status_code == 200, response.text
    return response.json()


def assert_detail(response, status):
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str), body


def test_config(http):
    response = http.get("/auth/config")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"password", "header", "oauth", "copilot"}
    assert body["password"] is True and body["header"] is True
    assert isinstance(body["oauth"], list)


def test_schema(http):
    response = http.get("/auth/schema")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")


def test_login_me_refresh_logout(http, account):
    response = login(http, account)
    assert response.status_code == 200, response.text
    pair = response.json()
    assert set(pair) == {
        "access_token",
        "refresh_token",
        "token_type",
        "expires_in",
        "user",
    }
    assert pair["user"]["identifier"] == account
    cookie = response.headers["set-cookie"]
    assert "chatauth_access=" in cookie and "HttpOnly" in cookie

    assert me(http, pair["access_token"]).json()["identifier"] == account
    rotated = http.post("/auth/token/refresh", json={"refresh": pair["refresh_token"]})
    assert rotated.status_code == 200
    new = rotated.json()
    assert me(http, new["access_token"]).status_code == 200

    new = login(http, account).json()  # another login, logged out below
    out = http.post(
        "/auth/logout",
        json={"refresh": new["refresh_token"]},
        headers={"Authorization": f"Bearer {new['access_token']}"},
    )
    assert out.status_code == 200
    cleared = out.headers.get_list("set-cookie")
    assert any(c.startswith("chatauth_access=") and "Max-Age=0" in c for c in cleared)
    assert_detail(me(http, new["access_token"]), 401)
    assert_detail(
        http.post("/auth/token/refresh", json={"refresh": new["refresh_token"]}), 401
    )
    # The first login was not logged out.
    assert me(http, rotated.json()["access_token"]).status_code == 200


def test_reused_refresh_token_ends_its_login(http, account):
    """RFC 9700 §4.14.2: a rotated-out refresh token presented again means two
    parties hold it; the whole login ends, the attacker's tokens with it."""
    pair = login(http, account).json()
    rotated = http.post("/auth/token/refresh", json={"refresh": pair["refresh_token"]})
    assert rotated.status_code == 200
    new = rotated.json()
    other = login(http, account).json()
    replay = http.post("/auth/token/refresh", json={"refresh": pair["refresh_token"]})
    assert_detail(replay, 401)
    assert_detail(me(http, new["access_token"]), 401)
    assert_detail(
        http.post("/auth/token/refresh", json={"refresh": new["refresh_token"]}), 401
    )
    assert me(http, other["access_token"]).status_code == 200  # another login


def test_concurrent_refreshes_exactly_one_succeeds(demo_server):
    pair = header_login(httpx.Client(base_url=demo_server.url))

    def rotate(_):
        with httpx.Client(base_url=demo_server.url, timeout=20) as client:
            return client.post(
                "/auth/token/refresh", json={"refresh": pair["refresh_token"]}
            ).status_code

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(rotate, range(6)))
    assert sorted(statuses) == [200] + [401] * 5


def test_logout_everywhere(http):
    name = f"hdr-{uuid.uuid4().hex[:8]}"
    first, second = header_login(http, name), header_login(http, name)
    other = header_login(http)
    out = http.post(
        "/auth/logout",
        json={"everywhere": True},
        headers={"Authorization": f"Bearer {first['access_token']}"},
    )
    assert out.status_code == 200
    for token in (first["access_token"], second["access_token"]):
        assert_detail(me(http, token), 401)
    assert_detail(
        http.post("/auth/token/refresh", json={"refresh": second["refresh_token"]}), 401
    )
    assert me(http, other["access_token"]).status_code == 200
    after = header_login(http, name)
    assert me(http, after["access_token"]).status_code == 200


def test_chainlit_token(http):
    name = f"cl-{uuid.uuid4().hex[:8]}"
    token = jwt.encode(
        {"identifier": name, "metadata": {"k": "v"}, "exp": int(time.time()) + 600},
        SECRET,
        algorithm="HS256",
    )
    response = me(http, token)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "identifier": name,
        "display_name": None,
        "metadata": {"k": "v"},
    }
    assert (
        http.post(
            "/auth/logout", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 200
    )
    assert_detail(me(http, token), 401)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_forged_tokens_refused(http):
    pair = header_login(http)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    forged = [
        jwt.encode(claims, None, algorithm="none"),
        jwt.encode(claims, SECRET, algorithm="HS512"),
        jwt.encode(claims, "wrong-" + SECRET, algorithm="HS256"),
        jwt.encode(
            {**claims, "exp": int(time.time()) - 120}, SECRET, algorithm="HS256"
        ),
        pair["refresh_token"],
        "garbage",
    ]
    for token in forged:
        response = me(http, token)
        assert_detail(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_unknown_user_and_wrong_password_identical(http, account):
    unknown = login(http, f"nobody-{uuid.uuid4().hex[:6]}", "wrong-password")
    wrong = login(http, account, "wrong-password")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.content == wrong.content


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"username": "a", "password": ', "application/json"),
        (b'["a", "b"]', "application/json"),
        (b'{"username": "a\\u0000", "password": "b"}', "application/json"),
        (b'{"username": 1, "password": 2}', "application/json"),
        (b'{"username": "\xff", "password": "b"}', "application/json"),
        (b"[" * 30000 + b"]" * 30000, "application/json"),
        (b"username=a&password=b", "application/x-www-form-urlencoded"),
        (b"{}", "text/plain"),
    ],
    ids=["malformed", "array", "nul", "numbers", "utf8", "deep", "form", "text"],
)
def test_bad_login_bodies(http, body, content_type):
    response = http.post(
        "/auth/login", content=body, headers={"Content-Type": content_type}
    )
    assert 400 <= response.status_code < 500
    assert_detail(response, response.status_code)


def test_one_megabyte_body(http):
    body = json.dumps({"username": "a", "password": "p" * 2**20}).encode()
    response = http.post(
        "/auth/login", content=body, headers={"Content-Type": "application/json"}
    )
    assert_detail(response, 413)

    def chunks():  # no Content-Length: the size is only known by reading
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    chunked = http.post(
        "/auth/login", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert 400 <= chunked.status_code < 500
    assert_detail(chunked, chunked.status_code)


def test_management_commands_against_the_server(http, demo_server):
    name = f"cmd-{uuid.uuid4().hex[:8]}"
    token = manage(demo_server.env, "chatauth_token", name, "--ttl", "300").strip()
    assert me(http, token).json()["identifier"] == name

    key_name = f"key-{uuid.uuid4().hex[:8]}"
    # A key that may set existing users' profiles (the user exists already).
    raw = manage(
        demo_server.env, "chatauth_apikey", "create", key_name, "--profiles"
    ).strip()
    minted = http.post(
        "/auth/copilot/token",
        json={"identifier": name, "metadata": {"plan": "x"}},
        headers={"Authorization": f"Api-Key {raw}"},
    )
    assert minted.status_code == 200, minted.text
    assert me(http, minted.json()["access_token"]).json()["metadata"] == {"plan": "x"}
    assert_detail(
        http.post(
            "/auth/copilot/token",
            json={"identifier": name, "metadata": [1]},
            headers={"Authorization": f"Api-Key {raw}"},
        ),
        400,
    )
    assert_detail(
        http.post(
            "/auth/copilot/token",
            json={"identifier": name},
            headers={"Authorization": f"Api-Key {raw[:-4]}AAAA"},
        ),
        401,
    )


def test_sessions_routes(http):
    assert_detail(http.get("/auth/sessions"), 401)
    pair = header_login(http)
    listed = http.get(
        "/auth/sessions", headers={"Authorization": f"Bearer {pair['access_token']}"}
    )
    assert listed.status_code == 200 and listed.json() == []
    gone = http.delete(
        f"/auth/sessions/{uuid.uuid4()}",
        headers={"Authorization": f"Bearer {pair['access_token']}"},
    )
    assert_detail(gone, 404)
