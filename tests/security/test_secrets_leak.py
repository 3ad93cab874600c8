"""Secrets never leak: run every path, then scan everything a secret could end up in.

A real server (DEBUG off, every log record at DEBUG and up written to a file)
goes through password logins (good, wrong password, unknown user), refresh,
logout (one token, everywhere, a Django session), header login, API-key use
(good and bad), copilot tokens (API key and session), chat sockets (a session,
a message, a logout over the socket, refused tokens) and every admin changelist
and change page of chatauth's models and of users.  Then no log line (the
server's file and its stdout), no audit row, no error body and no admin page
contains a password, a whole token (access, refresh, copilot, Chainlit), an API
key, the signing secret or Django's secret key.

The same HTTP paths run in process too, scanned in the ``django.request`` and
``chatauth`` log records (the ``logs`` capture) and the admin as the test
client's ``admin_client`` shows it.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import PASSWORD
from tests.servers import (
    SECRET,
    create_users,
    manage,
    migrate,
    server_env,
    start_server,
)

pytestmark = pytest.mark.timeout(150)

ADMIN_PASSWORD = "admin-pass-" + "Q" * 16
WRONG_PASSWORDS = ["wrong-guess-Zq81x", "hunter2-Y7#wrong"]
DJANGO_SECRET = "e2e-django-secret-" + "d" * 40


class Secrets:
    """Everything that must never be found, with where it was seen."""

    def __init__(self, *fixed: str) -> None:
        self.items: set[str] = set(fixed)

    def token(self, raw: str) -> str:
        # The whole token, and the token without its (predictable) header.
        self.items.update({raw, raw.split(".", 1)[1]})
        return raw

    def key(self, raw: str) -> str:
        self.items.update({raw, raw.split(".", 1)[1]})  # the prefix is not secret
        return raw

    def scan(self, where: str, text: str) -> None:
        found = [s for s in self.items if s in text]
        assert not found, f"{where} contains a secret: {found[0][:12]}..."


def csrf(client: httpx.Client) -> str:
    return client.cookies.get("csrftoken", "")


def admin_login(client: httpx.Client, base: str) -> None:
    page = client.get(f"{base}/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
    response = client.post(
        f"{base}/admin/login/?next=/admin/",
        data={
            "csrfmiddlewaretoken": token,
            "username": "root",
            "password": ADMIN_PASSWORD,
            "next": "/admin/",
        },
        headers={"Referer": f"{base}/admin/login/"},
    )
    assert response.status_code == 302, response.text[:500]


def admin_pages(client: httpx.Client, base: str) -> dict[str, str]:
    """Every changelist linked from the admin index, and up to 3 change pages each."""
    pages = {}
    index = client.get(f"{base}/admin/").text
    lists = sorted(set(re.findall(r'href="(/admin/[a-z_]+/[a-z_]+/)"', index)))
    assert any("chatauth/auditevent" in url for url in lists), lists
    for url in lists:
        response = client.get(base + url)
        assert response.status_code == 200, (url, response.status_code)
        pages[url] = response.text
        escaped = re.escape(url)
        changes = re.findall(rf'href="({escaped}[^"/]+/change/[^"]*)"', response.text)
        for change in list(dict.fromkeys(changes))[:3]:
            response = client.get(base + change.replace("&amp;", "&"))
            assert response.status_code == 200, (change, response.status_code)
            pages[change] = response.text
    return pages


async def chat_sessions(server, secrets: Secrets, access: str, copilot: str) -> None:
    # A session with a message and a logout over the socket.
    headers = {"Authorization": f"Bearer {access}"}
    async with connect(f"{server.ws_url}/ws/chat/", additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["type"] == "session"
        await ws.send(json.dumps({"type": "message", "content": "hello"}))
        assert json.loads(await ws.recv())["type"] == "message"
        await ws.send(json.dumps({"type": "logout"}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 4410
    # The revoked token again; a forged one; the first-frame auth with a copilot token.
    forged = secrets.token(jwt.encode({"exp": 2**31}, "x" * 32, algorithm="HS256"))
    for token in (access, forged):
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(
            f"{server.ws_url}/ws/chat/", additional_headers=headers
        ) as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
    async with connect(f"{server.ws_url}/ws/chat/") as ws:
        await ws.send(json.dumps({"type": "auth", "token": copilot}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session"


def http_paths(call, secrets: Secrets, api_key: str) -> None:
    """Every HTTP path that handles a secret; ``call(method, path, json, headers)``
    returns ``(status, body)`` and error bodies are scanned by the caller."""

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    for wrong in WRONG_PASSWORDS:
        assert (
            call("POST", "/auth/login", {"username": "alice", "password": wrong})[0]
            == 401
        )
        assert (
            call("POST", "/auth/login", {"username": "ghost", "password": wrong})[0]
            == 401
        )
    status, body = call(
        "POST", "/auth/login", {"username": "alice", "password": PASSWORD}
    )
    assert status == 200, body
    pair = json.loads(body)
    secrets.token(pair["access_token"])
    refresh = secrets.token(pair["refresh_token"])
    status, body = call("POST", "/auth/token/refresh", {"refresh": refresh})
    assert status == 200, body
    pair2 = json.loads(body)
    access2 = secrets.token(pair2["access_token"])
    refresh2 = secrets.token(pair2["refresh_token"])
    assert call("POST", "/auth/token/refresh", {"refresh": access2})[0] == 401
    assert call("GET", "/auth/me", None, bearer(access2))[0] == 200
    assert call("GET", "/auth/me", None, bearer(access2[:-3]))[0] == 401
    assert call("GET", "/auth/me", None, bearer(refresh2))[0] == 401
    # A replay of the rotated refresh token ends the whole login (its family).
    assert call("POST", "/auth/token/refresh", {"refresh": refresh})[0] == 401
    assert call("GET", "/auth/me", None, bearer(access2))[0] == 401
    status, body = call(
        "POST", "/auth/login", {"username": "alice", "password": PASSWORD}
    )
    assert status == 200, body
    access2 = secrets.token(json.loads(body)["access_token"])
    refresh2 = secrets.token(json.loads(body)["refresh_token"])
    # API keys, good and bad.
    status, body = call(
        "POST",
        "/auth/copilot/token",
        {"identifier": "bob", "metadata": {"team": "x"}},
        {"Authorization": f"Api-Key {api_key}"},
    )
    assert status == 200, body
    copilot = secrets.token(json.loads(body)["access_token"])
    bad_key = secrets.key(api_key[:-4] + "AAAA")
    assert (
        call(
            "POST",
            "/auth/copilot/token",
            {"identifier": "bob"},
            {"Authorization": f"Api-Key {bad_key}"},
        )[0]
        == 401
    )
    assert call("GET", "/auth/sessions", None, bearer(copilot))[0] == 200
    # Header login (the demo trusts X-Forwarded-User from loopback).
    status, body = call("POST", "/auth/header", None, {"X-Forwarded-User": "carol"})
    assert status == 200, body
    secrets.token(json.loads(body)["access_token"])
    secrets.token(json.loads(body)["refresh_token"])
    # A Chainlit-minted token, used then logged out.
    chainlit = secrets.token(
        jwt.encode(
            {"identifier": "dave", "metadata": {}, "exp": int(time.time()) + 600},
            secrets.signing_secret,
            algorithm="HS256",
        )
    )
    assert call("GET", "/auth/me", None, bearer(chainlit))[0] == 200
    assert call("POST", "/auth/logout", {}, bearer(chainlit))[0] == 200
    assert call("GET", "/auth/me", None, bearer(chainlit))[0] == 401
    # Logout with the refresh token, then everywhere.
    assert (
        call("POST", "/auth/logout", {"refresh": refresh2}, bearer(access2))[0] == 200
    )
    assert call("GET", "/auth/me", None, bearer(access2))[0] == 401
    status, body = call(
        "POST", "/auth/login", {"username": "alice", "password": PASSWORD}
    )
    access3 = secrets.token(json.loads(body)["access_token"])
    secrets.token(json.loads(body)["refresh_token"])
    assert call("POST", "/auth/logout", {"everywhere": True}, bearer(access3))[0] == 200
    assert call("GET", "/auth/me", None, bearer(access3))[0] == 401
    return copilot


# --- Against a real server ------------------------------------------------------------


@pytest.fixture(scope="module")
def leak_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("leaks")
    db, log = tmp / "db.sqlite3", tmp / "all.log"
    env = server_env(
        DATABASE_URL=f"sqlite:///{db}",
        DJANGO_SETTINGS_MODULE="tests.security.server_settings",
        CHATAUTH_TEST_BCRYPT_ROUNDS="8",
        CHATAUTH_TEST_LOG_FILE=str(log),
        CHATAUTH_TRUSTED_PROXIES="127.0.0.1",  # header login on (loopback proxy)
    )
    migrate(env)
    create_users(env, ("alice", PASSWORD), ("root", ADMIN_PASSWORD), admin=True)
    api_key = manage(env, "chatauth_apikey", "create", "leaks").strip()
    server = start_server(env, tmp)
    yield server, db, log, api_key
    server.stop()


def test_nothing_secret_anywhere_after_every_path(leak_server):
    server, db, log, api_key = leak_server
    secrets = Secrets(SECRET, DJANGO_SECRET, PASSWORD, ADMIN_PASSWORD, *WRONG_PASSWORDS)
    secrets.signing_secret = SECRET
    secrets.key(api_key)
    error_bodies: list[str] = []

    with httpx.Client(base_url=server.url, timeout=30) as client:

        def call(method, path, data=None, headers=None):
            response = client.request(method, path, json=data, headers=headers)
            if response.status_code >= 400:
                error_bodies.append(f"{method} {path}: {response.text}")
            return response.status_code, response.content

        copilot = http_paths(call, secrets, api_key)
        asyncio.run(_socket_part(server, secrets, call, copilot))

    with httpx.Client(base_url=server.url, timeout=30) as admin:
        admin_login(admin, server.url)
        # A copilot token for the session's user, and a session logout.
        response = admin.post(
            f"{server.url}/auth/copilot/token", headers={"X-CSRFToken": csrf(admin)}
        )
        assert response.status_code == 200, response.text
        secrets.token(response.json()["access_token"])
        pages = admin_pages(admin, server.url)
        response = admin.post(
            f"{server.url}/auth/logout", json={}, headers={"X-CSRFToken": csrf(admin)}
        )
        assert response.status_code == 200, response.text

    server.stop()  # flushes its logs
    for where, text in pages.items():
        secrets.scan(f"admin page {where}", text)
    for body in error_bodies:
        secrets.scan("error body", body)
    server_log = log.read_text(errors="replace")
    assert "login_failed" in server_log or "Unauthorized" in server_log  # it logged
    for number, line in enumerate(server_log.splitlines(), 1):
        secrets.scan(f"server log line {number}", line)
    secrets.scan("server output", server.output())
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        # The audit log with the chat sessions' openings and ends among it.
        rows = conn.execute("SELECT * FROM chatauth_audittrail").fetchall()
    events = {row["event"] for row in rows}
    expected = {"login_failed", "login", "logout", "refresh", "api_key_refused"}
    assert expected | {"session_opened", "session_refused"} <= events, events
    for row in rows:
        secrets.scan(f"audit row {row['id']} ({row['event']})", json.dumps(dict(row)))
    print(
        f"\nscanned {len(secrets.items)} secrets in {len(pages)} admin pages, "
        f"{len(error_bodies)} error bodies, {len(server_log.splitlines())} log "
        f"lines, {len(rows)} audit rows ({len(events)} kinds)"
    )


async def _socket_part(server, secrets: Secrets, call, copilot: str) -> None:
    status, body = await asyncio.to_thread(
        call, "POST", "/auth/login", {"username": "alice", "password": PASSWORD}
    )
    assert status == 200, body
    access = secrets.token(json.loads(body)["access_token"])
    secrets.token(json.loads(body)["refresh_token"])
    await chat_sessions(server, secrets, access, copilot)


# --- In process: the log records themselves, and the admin_client ---------------------


@pytest.mark.django_db(transaction=True)
def test_nothing_secret_in_log_records_or_admin_in_process(
    logs, admin_client, make_user
):
    from django.test import Client

    import chatauth
    from chatauth.models import APIKey, AuditEvent
    from chatauth.tokens import get_secret

    @chatauth.header_auth_callback
    def from_proxy(headers):  # as the demo's chat_hooks
        user = headers.get("x-forwarded-user")
        return chatauth.User(user) if user else None

    make_user("alice")
    _, api_key = APIKey.objects.create_key("in-process")
    secrets = Secrets(get_secret(), PASSWORD, *WRONG_PASSWORDS, "password")
    secrets.items.discard("password")  # a field name, not a secret
    secrets.signing_secret = get_secret()
    secrets.key(api_key)
    client = Client()
    error_bodies = []

    def call(method, path, data=None, headers=None):
        meta = {
            "HTTP_" + k.upper().replace("-", "_"): v for k, v in (headers or {}).items()
        }
        body = json.dumps(data) if data is not None else ""
        response = client.generic(
            method, path, body, content_type="application/json", **meta
        )
        if response.status_code >= 400:
            error_bodies.append(response.content.decode())
        return response.status_code, response.content

    http_paths(call, secrets, api_key)
    for body in error_bodies:
        secrets.scan("error body", body)
    assert logs.records
    for number, line in enumerate(logs.lines()):
        secrets.scan(f"log record {number}", line)
    for row in AuditEvent.objects.values():
        secrets.scan(f"audit row {row['id']}", json.dumps(row, default=str))
    for model in ("auditevent", "revokedtoken", "apikey", "chatsession", "profile"):
        page = admin_client.get(f"/admin/chatauth/{model}/")
        assert page.status_code == 200
        secrets.scan(f"admin {model} changelist", page.content.decode())
