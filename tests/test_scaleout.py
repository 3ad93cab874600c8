"""Two real uvicorn processes sharing Redis and a PostgreSQL database.

A logout (or a session close) posted to process B reaches a socket held by
process A through the Redis channel layer, and A refuses the token from then on
through the shared denylist.  The clients are the real ``websockets`` library and
httpx; nothing is simulated.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import PASSWORD, require_service
from tests.servers import (
    create_users,
    fresh_postgres,
    manage,
    migrate,
    server_env,
    start_server,
)

pytestmark = pytest.mark.timeout(90)

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory):
    """Processes A and B on one fresh PostgreSQL database and one Redis prefix."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    servers = []
    with fresh_postgres("chatauth_scaleout") as (_, database_url):
        try:
            env = server_env(
                DATABASE_URL=database_url,
                REDIS_URL=REDIS_URL,
                # This run's own channel-layer and cache keys: other runs (and
                # other suites) may share this Redis.
                REDIS_PREFIX=f"chatauth-test-{uuid.uuid4().hex[:12]}",
            )
            migrate(env)
            create_users(env, ("alice", PASSWORD))
            tmp = tmp_path_factory.mktemp("scaleout")
            servers.append(start_server(env, tmp))
            servers.append(start_server(env, tmp))
            yield servers
        finally:
            for server in servers:
                server.stop()
        for server in servers:
            assert "Traceback" not in server.output(), server.output()


async def login(http: httpx.AsyncClient, server) -> dict:
    response = await http.post(
        f"{server.url}/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def close_code(ws, timeout: float = 5.0) -> int:
    """Read until the server closes; the close code it sent."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as e:
            assert e.rcvd is not None, "the server never sent a close frame"
            return e.rcvd.code


async def session_of(ws) -> dict:
    import json

    message = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert message["type"] == "session", message
    return message


async def test_logout_on_b_closes_the_socket_on_a(two_servers):
    a, b = two_servers
    async with httpx.AsyncClient(timeout=10) as http:
        pair = await login(http, a)
        token = pair["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            connect(f"{a.ws_url}/ws/chat/", additional_headers=headers) as on_a,
            connect(
                f"{b.ws_url}/ws/chat/", subprotocols=["chatauth.bearer", token]
            ) as on_b,
        ):
            assert on_b.subprotocol == "chatauth.bearer"
            await session_of(on_a)
            await session_of(on_b)
            await on_a.send('{"type": "message", "content": "hi"}')
            assert "hi" in await asyncio.wait_for(on_a.recv(), 5)

            response = await http.post(f"{b.url}/auth/logout", json={}, headers=headers)
            assert response.status_code == 200
            logged_out = time.monotonic()
            assert await close_code(on_a) == 4410
            elapsed = time.monotonic() - logged_out
            assert elapsed < 1.0, f"closed {elapsed:.3f}s after the logout"
            assert await close_code(on_b) == 4410

        response = await http.get(f"{a.url}/auth/me", headers=headers)
        assert response.status_code == 401
        # A refuses a new socket with that token too.
        async with connect(f"{a.ws_url}/ws/chat/", additional_headers=headers) as ws:
            assert await close_code(ws) == 4410


async def test_session_closed_from_b_closes_on_a_and_is_recorded(two_servers):
    a, b = two_servers
    async with httpx.AsyncClient(timeout=10) as http:
        pair = await login(http, b)
        headers = {"Authorization": f"Bearer {pair['access_token']}"}
        async with connect(f"{a.ws_url}/ws/chat/", additional_headers=headers) as ws:
            session = await session_of(ws)
            for _ in range(50):  # rows are written in batches, within 50 ms
                listed = await http.get(f"{b.url}/auth/sessions", headers=headers)
                mine = [s for s in listed.json() if s["id"] == session["session_id"]]
                if mine:
                    break
                await asyncio.sleep(0.05)
            assert mine and mine[0]["current"] is True
            response = await http.delete(
                f"{b.url}/auth/sessions/{session['session_id']}", headers=headers
            )
            assert response.status_code == 204
            assert await close_code(ws) == 4410
        for _ in range(50):  # A records the close as it processes the disconnect
            listed = (await http.get(f"{a.url}/auth/sessions", headers=headers)).json()
            if session["session_id"] not in {s["id"] for s in listed}:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the closed session is still listed")
        # The token itself was not revoked: only that one session was closed.
        assert (await http.get(f"{a.url}/auth/me", headers=headers)).status_code == 200


def test_redis_prefix_is_used():
    """The prefix above reaches the demo settings (else runs would share keys)."""
    import subprocess
    import sys

    from tests.servers import ROOT

    env = server_env(REDIS_URL=REDIS_URL, REDIS_PREFIX="p-check")
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.CHANNEL_LAYERS['default']['CONFIG']['prefix'], "
        "s.CACHES['default']['KEY_PREFIX'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_DEBUG": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert out == ["p-check", "p-check"]


async def read_your_writes(a, b, username: str = "alice", rounds: int = 200) -> int:
    """Open a socket on ``a``; right after its session frame, list the session
    on ``b`` and delete it there.  How many rounds missed it."""
    misses = 0
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{a.url}/auth/login", json={"username": username, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        pair = response.json()
        headers = {"Authorization": f"Bearer {pair['access_token']}"}
        for _ in range(rounds):
            async with connect(
                f"{a.ws_url}/ws/chat/", additional_headers=headers
            ) as ws:
                session = (await session_of(ws))["session_id"]
                listed = await http.get(f"{b.url}/auth/sessions", headers=headers)
                gone = await http.delete(
                    f"{b.url}/auth/sessions/{session}", headers=headers
                )
                if session not in {s["id"] for s in listed.json()}:
                    misses += 1
                if gone.status_code != 204:
                    misses += 1
                else:
                    assert await close_code(ws) == 4410
    return misses


async def test_a_session_is_durable_before_it_is_announced_on_two_workers(
    two_servers,
):
    a, b = two_servers
    assert await read_your_writes(a, b) == 0


async def test_a_session_is_durable_before_it_is_announced_on_one_worker(
    demo_server,
):
    name = f"ryw-{uuid.uuid4().hex[:6]}"
    create_users(demo_server.env, (name, PASSWORD))
    assert await read_your_writes(demo_server, demo_server, name) == 0


async def test_forward_auth_on_b_refuses_at_once_what_a_revoked(two_servers):
    """Each worker keeps the revocation answers it read from Redis (the near
    cache); a logout on A must still be refused by B's very next check, and a
    deactivation by another process (a management command) too."""
    a, b = two_servers
    name = f"near-{uuid.uuid4().hex[:6]}"
    create_users(a.env, (name, PASSWORD))
    credentials = {"username": name, "password": PASSWORD}
    missed = 0
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(100):
            response = await http.post(f"{a.url}/auth/login", json=credentials)
            assert response.status_code == 200, response.text
            pair = response.json()
            bearer = {"Authorization": f"Bearer {pair['access_token']}"}
            for _ in range(3):  # the later ones answered from B's memory
                assert (
                    await http.get(f"{b.url}/auth/verify", headers=bearer)
                ).status_code == 200
            logout = await http.post(
                f"{a.url}/auth/logout",
                headers=bearer,
                json={"refresh_token": pair["refresh_token"]},
            )
            assert logout.status_code in (200, 204), logout.text
            if (
                await http.get(f"{b.url}/auth/verify", headers=bearer)
            ).status_code != 401:
                missed += 1
        assert missed == 0
        response = await http.post(f"{a.url}/auth/login", json=credentials)
        bearer = {"Authorization": f"Bearer {response.json()['access_token']}"}
        for server in (a, b):
            assert (
                await http.get(f"{server.url}/auth/verify", headers=bearer)
            ).status_code == 200
        await asyncio.to_thread(
            manage,
            a.env,
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model as m; "
            f"u = m().objects.get(username={name!r}); "
            "u.is_active = False; u.save()",
        )
        for server in (b, a):
            assert (
                await http.get(f"{server.url}/auth/verify", headers=bearer)
            ).status_code == 401
