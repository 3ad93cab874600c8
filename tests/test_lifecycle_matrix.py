"""The lifecycle matrix: every event that ends a credential × every credential
kind × every surface, over real servers, on one worker and on two.

Deployments
    ``one``: one uvicorn worker with the demo's embedded defaults (SQLite, the
    file cache next to it, the in-memory channel layer), a 1 s heartbeat.  An
    event caused by *another process* (a ``manage.py`` command, the ORM in a
    shell) cannot reach the sockets through the in-memory layer: the
    heartbeat's sweep closes them.
    ``two``: two uvicorn workers sharing PostgreSQL and Redis (cache and
    ``channels_redis``), the default 30 s heartbeat (so the sweep cannot stand
    in for the fan-out): sockets live on worker A, every event is caused on
    worker B or by another process.

Credential kinds: an access token and its refresh token (``auth/login``), a
copilot token minted for a Django session (the widget's), one minted with that
access token (tied to its login), a copilot token minted with an API key, a
Chainlit-format token (PyJWT, no ``iat``/``jti``), and the Django session
cookie itself.

Surfaces: an HTTP request (``auth/me``; for the session cookie, minting a
copilot token with it), a socket opened before the event, a socket opened
after it, and a refresh (the refresh token).

Each cell is asserted: ended (HTTP 401; the open socket closes 4410 within the
bound; a new socket is refused with the contract's close code; refresh 401) or
deliberately kept (200; the open socket still answers after the bound; a new
socket opens; refresh 200).  The close times are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import PASSWORD, require_service
from tests.servers import Server, manage, migrate, server_env, start_server
from tests.web import Browser

pytestmark = pytest.mark.timeout(300)

PG_ADMIN = "postgresql://root@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
HEARTBEAT = 1.0
#: A close caused through the channel layer arrives within this.
LAYER_BOUND = 2.0
#: One caused where the layer cannot reach: within a heartbeat and a second.
SWEEP_BOUND = HEARTBEAT + 1.0 + 1.0  # (+1 s: a loaded CI machine)
ADMIN = "root"

KINDS = (
    "access",
    "refresh",
    "copilot_session",
    "copilot_access",
    "copilot_api_key",
    "chainlit",
    "web_session",
)
SOCKET_KINDS = tuple(k for k in KINDS if k != "refresh")
ALL = frozenset(KINDS)
#: event -> the credential kinds it ends (every other kind is kept).
ENDS: dict[str, frozenset[str]] = {
    "password_changed": ALL,
    "deactivated": ALL,
    "deleted": ALL,
    "django_logout": frozenset({"copilot_session", "web_session"}),
    "web_session_deleted": frozenset({"copilot_session", "web_session"}),
    "chat_session_deleted": frozenset(),  # only the one socket: see below
    "logout_everywhere": ALL,
    "api_key_revoked": frozenset({"copilot_api_key"}),
    "secret_rotated_out": ALL - {"web_session"},
    "secret_rotated_in": frozenset(),
}
#: (event, door): "http" runs in worker B, "process" in another process.
SCENARIOS = [
    ("password_changed", "admin"),
    ("password_changed", "orm"),
    ("deactivated", "admin"),
    ("deactivated", "orm"),
    ("deleted", "admin"),
    ("deleted", "orm"),
    ("django_logout", "view"),
    ("web_session_deleted", "orm"),
    ("chat_session_deleted", "admin"),
    ("chat_session_deleted", "orm"),
    ("logout_everywhere", "api"),
    ("logout_everywhere", "admin"),
    ("logout_everywhere", "command"),
    ("api_key_revoked", "admin"),
    ("api_key_revoked", "command"),
]
IN_PROCESS_DOORS = {"admin", "view", "api"}
#: The Django session is Django's credential: where Django itself refuses it
#: (gone, or no longer matching the user), a new socket is "not logged in".
DJANGO_REFUSES = {
    "password_changed",
    "deactivated",
    "deleted",
    "django_logout",
    "web_session_deleted",
}


def new_socket_code(event: str, kind: str) -> int:
    if event == "secret_rotated_out":
        return 4401  # a signature no secret verifies: invalid, not revoked
    if kind == "web_session" and event in DJANGO_REFUSES:
        return 4401
    return 4410


# --- Deployments ------------------------------------------------------------------


@dataclass
class Deployment:
    name: str
    env: dict[str, str]
    tmp: Any
    servers: list[Server] = field(default_factory=list)
    users: dict[str, dict] = field(default_factory=dict)
    closes: list[tuple[str, str, str, float]] = field(default_factory=list)

    @property
    def a(self) -> Server:
        return self.servers[0]

    @property
    def b(self) -> Server:
        return self.servers[-1]

    def start(self, count: int, **env: str) -> None:
        self.env.update(env)
        self.servers = [
            start_server(self.env, self.tmp, ready_path="/auth/config")
            for _ in range(count)
        ]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
            assert "Traceback" not in server.output(), server.output()[-3000:]

    def shell(self, code: str) -> str:
        return manage(self.env, "shell", "-c", code)


def prepare(deployment: Deployment, count: int) -> None:
    """Users (one per scenario, and the admin) and an API key each."""
    migrate(deployment.env)
    names = [f"u{i}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    code = (
        "import json; from django.contrib.auth import get_user_model as m; "
        "from chatauth.models import APIKey; out = {}\n"
        f"m().objects.create_superuser({ADMIN!r}, password={PASSWORD!r})\n"
        f"for name in {names!r}:\n"
        f"    u = m().objects.create_user(name, password={PASSWORD!r})\n"
        "    key, raw = APIKey.objects.create_key('key-' + name)\n"
        "    out[name] = {'pk': u.pk, 'key_pk': key.pk, 'key': raw}\n"
        "print(json.dumps(out))"
    )
    output = deployment.shell(code).strip().splitlines()[-1]
    deployment.users = json.loads(output)


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("matrix-one")
    env = server_env(
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        DJANGO_SETTINGS_MODULE="tests.security.server_settings",
        CHATAUTH_TEST_BCRYPT_ROUNDS="4",
        CHATAUTH_TEST_HEARTBEAT=str(HEARTBEAT),
    )
    deployment = Deployment("one", env, tmp)
    prepare(deployment, len(SCENARIOS) + 2)
    deployment.start(1)
    yield deployment
    deployment.stop()
    report(deployment)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    import psycopg

    name = f"chatauth_matrix_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    tmp = tmp_path_factory.mktemp("matrix-two")
    env = server_env(
        DATABASE_URL=f"postgres://root@127.0.0.1:5432/{name}",
        REDIS_URL=REDIS_URL,
        REDIS_PREFIX=f"chatauth-matrix-{uuid.uuid4().hex[:12]}",
        DJANGO_SETTINGS_MODULE="tests.security.server_settings",
        CHATAUTH_TEST_BCRYPT_ROUNDS="4",
    )
    deployment = Deployment("two", env, tmp)
    try:
        prepare(deployment, len(SCENARIOS) + 2)
        deployment.start(2)
        yield deployment
        deployment.stop()
        report(deployment)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def report(deployment: Deployment) -> None:
    print(f"\n== close times, deployment {deployment.name!r} ==")
    for event, door, kind, seconds in deployment.closes:
        print(f"{event:>22} via {door:<8} {kind:<16} {seconds * 1000:8.1f} ms")


# --- Credentials ------------------------------------------------------------------


@dataclass
class Holder:
    """One user's credentials of every kind, and the sockets opened with them."""

    username: str
    pk: int
    key_pk: int
    browser: Browser
    tokens: dict[str, str]
    sockets: dict[str, ClientConnection] = field(default_factory=dict)
    session_ids: dict[str, str] = field(default_factory=dict)

    @property
    def cookie(self) -> str:
        return f"sessionid={self.browser.session_key}"


def mint(deployment: Deployment, index: int, server: Server) -> Holder:
    username = sorted(deployment.users)[index]
    user = deployment.users[username]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        pair = http.post(
            "/auth/login", json={"username": username, "password": PASSWORD}
        ).json()
        by_key = http.post(
            "/auth/copilot/token",
            json={"identifier": username},
            headers={"Authorization": f"Api-Key {user['key']}"},
        ).json()
        by_access = http.post(
            "/auth/copilot/token",
            json={},
            headers={"Authorization": f"Bearer {pair['access_token']}"},
        ).json()
    browser = Browser(server.url)
    browser.login("/accounts/login/", username, PASSWORD)
    minted = browser.api("POST", "/auth/copilot/token", json={})
    assert minted.status_code == 200, minted.text
    chainlit = jwt.encode(
        {
            "identifier": username,
            "metadata": {"source": "matrix"},
            "exp": int(time.time()) + 15 * 86400 - 60,
        },
        deployment.env["CHATAUTH_SECRET"],
        algorithm="HS256",
    )
    tokens = {
        "access": pair["access_token"],
        "refresh": pair["refresh_token"],
        "copilot_session": minted.json()["access_token"],
        "copilot_access": by_access["access_token"],
        "copilot_api_key": by_key["access_token"],
        "chainlit": chainlit,
    }
    return Holder(username, user["pk"], user["key_pk"], browser, tokens)


async def open_socket(server: Server, holder: Holder, kind: str):
    """A socket with the credential ``kind``, each the way its clients send it."""
    url = f"{server.ws_url}/ws/chat/"
    if kind == "web_session":
        return await connect(url, additional_headers={"Cookie": holder.cookie})
    if kind == "copilot_session":  # the widget: the subprotocol pair
        return await connect(url, subprotocols=["chatauth.bearer", holder.tokens[kind]])
    headers = {"Authorization": f"Bearer {holder.tokens[kind]}"}
    return await connect(url, additional_headers=headers)


async def first_frame(ws) -> dict | int:
    """The session frame, or the close code if the socket was refused."""
    try:
        return json.loads(await asyncio.wait_for(ws.recv(), 10))
    except ConnectionClosed as e:
        assert e.rcvd is not None, "no close frame"
        return e.rcvd.code


async def closed_within(ws, bound: float) -> tuple[int, float]:
    started = time.monotonic()
    try:
        async with asyncio.timeout(bound):
            while True:
                await ws.recv()
    except ConnectionClosed as e:
        assert e.rcvd is not None, "no close frame"
        return e.rcvd.code, time.monotonic() - started
    except TimeoutError:
        raise AssertionError(f"still open {bound:.1f} s after the event") from None


async def answers(ws) -> None:
    await ws.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}


def http_status(server: Server, holder: Holder, kind: str) -> int:
    if kind == "web_session":
        browser = Browser(server.url)
        browser.client.cookies.set("sessionid", holder.browser.session_key)
        try:
            return browser.api("POST", "/auth/copilot/token", json={}).status_code
        finally:
            browser.close()
    if kind == "refresh":
        return httpx.post(
            f"{server.url}/auth/token/refresh",
            json={"refresh": holder.tokens["refresh"]},
            timeout=30,
        ).status_code
    return httpx.get(
        f"{server.url}/auth/me",
        headers={"Authorization": f"Bearer {holder.tokens[kind]}"},
        timeout=30,
    ).status_code


async def wait_for_row(server: Server, holder: Holder, session_id: str) -> None:
    """Until the session's row is written (rows are written in batches)."""
    headers = {"Authorization": f"Bearer {holder.tokens['access']}"}
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(100):
            listed = await http.get(f"{server.url}/auth/sessions", headers=headers)
            if session_id in {s["id"] for s in listed.json()}:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("the session's row was never written")


# --- Events -----------------------------------------------------------------------


def cause(deployment: Deployment, event: str, door: str, holder: Holder) -> None:
    """Cause ``event`` through ``door``: on worker B, or in another process."""
    b = deployment.b
    pk, name = holder.pk, holder.username
    if door in ("orm", "command"):
        code = {
            "password_changed": (
                "from django.contrib.auth import get_user_model as m; "
                f"u = m().objects.get(pk={pk}); "
                "u.set_password('other 123456'); u.save()"
            ),
            "deactivated": (
                "from django.contrib.auth import get_user_model as m; "
                f"u = m().objects.get(pk={pk}); u.is_active = False; u.save()"
            ),
            "deleted": (
                "from django.contrib.auth import get_user_model as m; "
                f"m().objects.get(pk={pk}).delete()"
            ),
            "web_session_deleted": (
                "from django.contrib.sessions.models import Session; "
                f"Session.objects.filter(session_key={holder.browser.session_key!r})"
                ".delete()"
            ),
            "chat_session_deleted": (
                "from chatauth.models import ChatSession; "
                "ChatSession.objects.filter("
                f"pk={holder.session_ids['access']!r}).delete()"
            ),
        }.get(event)
        if code is not None:
            deployment.shell(code)
        elif event == "logout_everywhere":
            manage(deployment.env, "chatauth_revoke", name)
        elif event == "api_key_revoked":
            manage(deployment.env, "chatauth_apikey", "revoke", f"key-{name}")
        else:
            raise AssertionError((event, door))
        return
    admin = Browser(b.url)
    try:
        if door == "admin":
            admin.login("/admin/login/", ADMIN, PASSWORD)
        response = _http_event(admin, deployment, event, door, holder)
        assert response.status_code in (200, 302), (response.status_code, event)
    finally:
        admin.close()


def _http_event(admin: Browser, deployment, event, door, holder) -> httpx.Response:
    pk = holder.pk
    if (event, door) == ("password_changed", "admin"):
        new = "changed in the admin 42"
        return admin.form_post(
            f"/admin/auth/user/{pk}/password/",
            {"password1": new, "password2": new, "usable_password": "true"},
        )
    if (event, door) == ("deactivated", "admin"):
        return admin.admin_action("/admin/auth/user/", "deactivate_users", pk)
    if (event, door) == ("deleted", "admin"):
        return admin.form_post(f"/admin/auth/user/{pk}/delete/", {"post": "yes"})
    if (event, door) == ("chat_session_deleted", "admin"):
        return admin.admin_action(
            "/admin/chatauth/chatsession/",
            "delete_selected",
            holder.session_ids["access"],
            post="yes",
        )
    if (event, door) == ("logout_everywhere", "admin"):
        return admin.admin_action("/admin/auth/user/", "logout_users_everywhere", pk)
    if (event, door) == ("api_key_revoked", "admin"):
        return admin.admin_action(
            "/admin/chatauth/apikey/", "revoke_keys", holder.key_pk
        )
    if (event, door) == ("django_logout", "view"):
        # Django's own LogoutView, on worker B, with the user's session.
        user = Browser(deployment.b.url)
        user.client.cookies.set("sessionid", holder.browser.session_key)
        try:
            return user.form_post("/accounts/logout/", {})
        finally:
            user.close()
    if (event, door) == ("logout_everywhere", "api"):
        return httpx.post(
            f"{deployment.b.url}/auth/logout",
            json={"everywhere": True},
            headers={"Authorization": f"Bearer {holder.tokens['copilot_api_key']}"},
            timeout=30,
        )
    raise AssertionError((event, door))


# --- The matrix -------------------------------------------------------------------


async def run_scenario(
    deployment: Deployment, index: int, event: str, door: str, bound: float
) -> None:
    a = deployment.a
    holder = await asyncio.to_thread(mint, deployment, index, a)
    try:
        for kind in SOCKET_KINDS:
            ws = await open_socket(a, holder, kind)
            frame = await first_frame(ws)
            assert isinstance(frame, dict) and frame["type"] == "session", (kind, frame)
            holder.sockets[kind] = ws
            holder.session_ids[kind] = frame["session_id"]
        if event == "chat_session_deleted":
            await wait_for_row(a, holder, holder.session_ids["access"])
        await asyncio.to_thread(cause, deployment, event, door, holder)
        ended = ENDS[event]
        # Open sockets: the ended ones close with 4410 within the bound ...
        for kind, ws in holder.sockets.items():
            if kind in ended or (event == "chat_session_deleted" and kind == "access"):
                code, seconds = await closed_within(ws, bound)
                assert code == 4410, (event, door, kind, code)
                deployment.closes.append((event, door, kind, seconds))
        # ... and the others are still there once the bound has passed (the
        # sweep ran and left them alone).
        await asyncio.sleep(bound if door not in IN_PROCESS_DOORS else 0.3)
        for kind, ws in holder.sockets.items():
            if kind in ended or (event == "chat_session_deleted" and kind == "access"):
                continue
            await answers(ws)
        # New sockets, on worker A.
        for kind in SOCKET_KINDS:
            ws = await open_socket(a, holder, kind)
            frame = await first_frame(ws)
            if kind in ended:
                assert frame == new_socket_code(event, kind), (event, door, kind, frame)
            else:
                assert isinstance(frame, dict), (event, door, kind, frame)
                await ws.close()
        # HTTP requests and the refresh, on worker B.
        for kind in KINDS:
            status = await asyncio.to_thread(http_status, deployment.b, holder, kind)
            assert status == (401 if kind in ended else 200), (event, door, kind)
    finally:
        for ws in holder.sockets.values():
            await ws.close()
        holder.browser.close()


@pytest.mark.parametrize(("event", "door"), SCENARIOS, ids=lambda v: str(v))
async def test_one_worker(one, event, door):
    index = SCENARIOS.index((event, door))
    bound = LAYER_BOUND if door in IN_PROCESS_DOORS else SWEEP_BOUND
    await run_scenario(one, index, event, door, bound)


@pytest.mark.parametrize(("event", "door"), SCENARIOS, ids=lambda v: str(v))
async def test_two_workers(two, event, door):
    index = SCENARIOS.index((event, door))
    await run_scenario(two, index, event, door, LAYER_BOUND)


@pytest.mark.parametrize("deployment_name", ["one", "two"])
@pytest.mark.parametrize("rotation", ["secret_rotated_in", "secret_rotated_out"])
async def test_secret_rotation(request, deployment_name, rotation):
    """A new secret, the old one still accepted (``PREVIOUS_SECRETS``): nothing
    ends.  The old one dropped: every token signed with it is refused; the
    Django session is Django's (``SECRET_KEY``), kept.  Workers take a new
    secret by restarting, which closes their sockets (1012, "service restart")."""
    deployment: Deployment = request.getfixturevalue(deployment_name)
    index = len(SCENARIOS) + (rotation == "secret_rotated_out")
    holder = await asyncio.to_thread(mint, deployment, index, deployment.a)
    old = deployment.env["CHATAUTH_SECRET"]
    new = "rotated-secret-" + uuid.uuid4().hex * 2
    try:
        ws = await open_socket(deployment.a, holder, "access")
        assert isinstance(await first_frame(ws), dict)
        count = len(deployment.servers)
        for server in deployment.servers:
            server.stop()
        code, _ = await closed_within(ws, 5)
        assert code in (1001, 1012), code  # going away / service restart
        previous = old if rotation == "secret_rotated_in" else ""
        deployment.start(count, CHATAUTH_SECRET=new, CHATAUTH_PREVIOUS_SECRETS=previous)
        ended = ENDS[rotation]
        for kind in SOCKET_KINDS:
            ws = await open_socket(deployment.a, holder, kind)
            frame = await first_frame(ws)
            if kind in ended:
                assert frame == new_socket_code(rotation, kind), (kind, frame)
            else:
                assert isinstance(frame, dict), (kind, frame)
                await ws.close()
        for kind in KINDS:
            status = await asyncio.to_thread(http_status, deployment.b, holder, kind)
            assert status == (401 if kind in ended else 200), (rotation, kind)
    finally:
        holder.browser.close()
        deployment.env["CHATAUTH_SECRET"] = new  # what the servers now run with
