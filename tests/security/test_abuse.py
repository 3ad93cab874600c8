"""Abuse at the edges, against a real server started as the README says
(``tests.servers.UVICORN_LIMITS``): what an unauthenticated client can make a
worker hold or write is bounded.

* A decompression bomb cannot be sent: the server declines per-message
  compression, and refuses a frame over its limit before reading it (1009);
  chatauth closes 4413 past its own, smaller limit.  The worker's memory stays
  within a few MB of where it was.
* Huge request heads (one 8 MB header, 50,000 headers) are refused.
* Floods of sockets meet the per-worker caps (4429 and the cap's name), while
  another client is served.
* A socket from another port of the same host (another app) is refused.
* A flood of refusals costs a few counted audit rows, not one per request.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import PASSWORD
from tests.servers import create_users, migrate, server_env, start_server

pytestmark = pytest.mark.timeout(120)


def make(tmp_path_factory, name: str):
    tmp = tmp_path_factory.mktemp(name)
    db = tmp / "db.sqlite3"
    env = server_env(
        DATABASE_URL=f"sqlite:///{db}",
        DJANGO_SETTINGS_MODULE="tests.security.server_settings",
        CHATAUTH_TEST_BCRYPT_ROUNDS="4",
    )
    migrate(env)
    create_users(env, ("alice", PASSWORD))
    return start_server(env, tmp, ready_path="/auth/config"), db


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server, _ = make(tmp_path_factory, "abuse")
    yield server
    server.stop()
    assert "Traceback" not in server.output(), server.output()[-3000:]


@pytest.fixture(scope="module")
def token(server):
    response = httpx.post(
        f"{server.url}/auth/login",
        json={"username": "alice", "password": PASSWORD},
        timeout=30,
    )
    return response.json()["access_token"]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def close_code(ws) -> int:
    try:
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    except ConnectionClosed as e:
        assert e.rcvd is not None, "no close frame"
        return e.rcvd.code


async def test_a_decompression_bomb_cannot_be_sent(server, token):
    pid = server.process.pid
    before = rss_mb(pid)
    url = f"{server.ws_url}/ws/chat/"
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(
        url, additional_headers=headers, compression="deflate", max_size=None
    ) as ws:
        # The server declined per-message compression: nothing it reads inflates.
        assert not ws.protocol.extensions
        assert json.loads(await ws.recv())["type"] == "session"
        bomb = json.dumps({"type": "message", "content": "0" * (50 * 1024 * 1024)})
        with pytest.raises(ConnectionClosed):
            await ws.send(bomb)
            await ws.recv()
        assert ws.protocol.close_rcvd.code == 1009  # refused before it was read
    # Just over chatauth's own limit: chatauth's answer.
    async with connect(url, additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["type"] == "session"
        await ws.send(json.dumps({"type": "message", "content": "x" * 70_000}))
        assert await close_code(ws) == 4413
    grew = rss_mb(pid) - before
    print(f"\nworker memory after a 50 MB message: +{grew:.1f} MB")
    assert grew < 20


def raw_request(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        try:
            conn.sendall(head)
            return conn.recv(200)
        except OSError:  # the server closed the connection as we sent
            return b""


@pytest.mark.parametrize(
    "head",
    [
        b"GET /auth/config HTTP/1.1\r\nHost: x\r\nX-Big: "
        + b"a" * (8 * 1024 * 1024)
        + b"\r\n\r\n",
        b"GET /auth/config HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(50_000))
        + b"\r\n",
    ],
    ids=["one-8MB-header", "50k-headers"],
)
def test_huge_request_heads_are_refused(server, head):
    started = time.perf_counter()
    answer = raw_request(server.port, head)
    assert not answer.startswith(b"HTTP/1.1 200"), answer
    assert time.perf_counter() - started < 5
    fine = httpx.get(f"{server.url}/auth/config", timeout=5)
    assert fine.status_code == 200


async def test_pending_socket_flood_meets_its_cap(server, token):
    url = f"{server.ws_url}/ws/chat/"
    waiting, refused = [], 0
    try:
        for _ in range(40):  # no credentials: each waits for an auth frame
            ws = await connect(url)
            try:
                async with asyncio.timeout(0.3):
                    await ws.recv()
            except TimeoutError:
                waiting.append(ws)  # still waiting, as a pending socket does
            except ConnectionClosed as e:
                assert (e.rcvd.code, e.rcvd.reason) == (
                    4429,
                    "pending_sockets_per_address",
                )
                refused += 1
        assert (len(waiting), refused) == (16, 24)
        # Another client (another address) is served meanwhile.
        async with connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            local_addr=("127.0.0.2", 0),
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "session"
    finally:
        for ws in waiting:
            await ws.close()


async def test_one_token_cannot_open_a_thousand_sockets(server, token):
    url = f"{server.ws_url}/ws/chat/"
    headers = {"Authorization": f"Bearer {token}"}
    opened, codes = [], []
    try:
        for _ in range(40):
            ws = await connect(url, additional_headers=headers)
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert frame["type"] == "session"
                opened.append(ws)
            except ConnectionClosed as e:
                codes.append((e.rcvd.code, e.rcvd.reason))
    finally:
        for ws in opened:
            await ws.close()
    assert len(opened) == 16
    assert set(codes) == {(4429, "sockets_per_credential")}


async def test_another_port_of_the_same_host_is_another_origin(server, token):
    headers = {"Authorization": f"Bearer {token}"}
    own = f"http://127.0.0.1:{server.port}"
    async with connect(
        f"{server.ws_url}/ws/chat/", additional_headers=headers, origin=own
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "session"
    for origin in (
        f"http://127.0.0.1:{server.port + 1}",
        f"http://127.0.0.1:{server.port}.evil.com",
        f"https://127.0.0.1:{server.port}",
    ):
        with pytest.raises(InvalidStatus) as refused:
            await connect(
                f"{server.ws_url}/ws/chat/", additional_headers=headers, origin=origin
            )
        assert refused.value.response.status_code == 403


def test_a_flood_of_refusals_costs_a_few_rows(tmp_path_factory):
    server, db = make(tmp_path_factory, "refusals")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(300):
                response = http.post(
                    "/auth/copilot/token",
                    json={"identifier": "eve"},
                    headers={"Authorization": f"Api-Key ca_{i:08x}.nope"},
                )
                assert response.status_code == 401
    finally:
        server.stop()  # a clean exit writes what was counted
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT count, ip FROM chatauth_auditevent WHERE event = 'api_key_refused'"
        ).fetchall()
    assert rows == [(300, "127.0.0.1")], rows
