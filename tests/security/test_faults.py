"""Faults injected into real processes: Redis down, the database away, a worker killed.

* Redis down mid-run (a private ``redis-server`` on its own port, the server's
  cache and channel layer): a token revoked before the outage stays refused
  (the check falls back to the database: fail closed), a valid one still works
  or gets a clean 503 (never a 500), a logout during the outage holds, open
  sockets keep working or close cleanly, and all is well once Redis is back
  on the same port.
* The database away (a private PostgreSQL database refusing connections, its
  sessions terminated): login, me and refresh answer 503 ``{"detail"}``, never
  500; once it is back everything works, and no row is half-written: every
  rotated refresh token has its audit row and vice versa, and a refresh refused
  during the outage still works afterwards (not half-rotated).
* A worker SIGKILLed: its live-session rows are closed by the next
  ``chatauth_prune`` (after three missed heartbeats; ``HEARTBEAT_INTERVAL`` is 1 s
  for these servers), and the other worker's sessions are untouched.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import time
import uuid

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import PASSWORD, require_service
from tests.servers import (
    create_users,
    free_port,
    manage,
    migrate,
    server_env,
    start_server,
)

pytestmark = pytest.mark.timeout(120)

PG_ADMIN = "postgresql://root@127.0.0.1:5432/postgres"


def env_for(database_url: str, **extra: str) -> dict[str, str]:
    env = server_env(
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="tests.security.server_settings",
        CHATAUTH_TEST_BCRYPT_ROUNDS="8",
        **extra,
    )
    migrate(env)
    create_users(env, ("alice", PASSWORD))
    return env


def login(client: httpx.Client) -> dict:
    response = client.post(
        "/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return response.json()


def me(client: httpx.Client, token: str) -> httpx.Response:
    return client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})


def clean(response: httpx.Response, *allowed: int) -> int:
    """The status, after checking it is one of ``allowed`` with a JSON detail."""
    assert response.status_code in allowed, (response.status_code, response.text)
    if response.status_code >= 400:
        assert isinstance(response.json()["detail"], str)
    return response.status_code


def until(predicate, timeout: float = 15.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"not true within {timeout}s: {predicate}")


# --- (a) Redis down -------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of this test alone: no persistence, its own port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        until(lambda: _ping(self.port), timeout=10)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def _ping(port: int) -> bool:
    import redis

    try:
        return redis.Redis(port=port, socket_timeout=0.5).ping()
    except redis.RedisError:
        return False


@pytest.fixture
def redis_server():
    require_service("redis-server binary", "127.0.0.1", 6379)  # Redis is installed
    redis = PrivateRedis(free_port())
    redis.start()
    yield redis
    redis.kill()


async def open_socket(server, token: str):
    ws = await connect(
        f"{server.ws_url}/ws/chat/",
        additional_headers={"Authorization": f"Bearer {token}"},
    )
    assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session"
    return ws


async def socket_works_or_closed_cleanly(ws) -> str:
    try:
        await ws.send(json.dumps({"type": "message", "content": "still there?"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert reply == {"type": "message", "content": "still there?"}
        return "working"
    except ConnectionClosed as e:
        # Never dropped without a close frame (the consumer used to die with the
        # channel layer's ConnectionError and uvicorn cut the TCP connection).
        assert e.rcvd is not None, "dropped without a close frame"
        assert e.rcvd.code in {1000, 1011, 4410, 4401}, e
        return f"closed {e.rcvd.code}"


def test_redis_down_revocation_fails_closed_and_recovers(redis_server, tmp_path):
    env = env_for(
        f"sqlite:///{tmp_path / 'db.sqlite3'}",
        REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0",
        REDIS_PREFIX=f"faults-{uuid.uuid4().hex[:8]}",
    )
    server = start_server(env, tmp_path)
    try:
        outcomes = asyncio.run(_redis_scenario(server, redis_server))
    finally:
        server.stop()
    with sqlite3.connect(tmp_path / "db.sqlite3") as conn:
        outcomes["session rows never closed"] = conn.execute(
            "SELECT count(*) FROM chatauth_chatsession WHERE closed_at IS NULL"
        ).fetchone()[0]
    print(f"\nRedis down: {outcomes}")
    # Every session ended recorded, also the one the outage cut.
    assert outcomes["session rows never closed"] == 0, outcomes
    # No HTTP route answered 500 (Django logs each as "Internal Server Error: <path>").
    assert "Internal Server Error: /auth/" not in server.output(), server.output()


async def _redis_scenario(server, redis_server) -> dict[str, object]:
    outcomes: dict[str, object] = {}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        revoked, valid, spare = login(client), login(client), login(client)
        assert me(client, revoked["access_token"]).status_code == 200  # cached
        logout = client.post(
            "/auth/logout",
            json={"refresh": revoked["refresh_token"]},
            headers={"Authorization": f"Bearer {revoked['access_token']}"},
        )
        assert logout.status_code == 200
        assert me(client, valid["access_token"]).status_code == 200
        ws = await open_socket(server, spare["access_token"])

        redis_server.kill()  # --- the outage ------------------------------------
        for _ in range(3):
            response = me(client, revoked["access_token"])
            assert clean(response, 401) == 401
            assert response.json() == {"detail": "Token has been revoked."}
            refresh = client.post(
                "/auth/token/refresh", json={"refresh": revoked["refresh_token"]}
            )
            assert clean(refresh, 401, 503) != 200
        outcomes["valid token"] = clean(me(client, valid["access_token"]), 200, 503)
        # A logout during the outage holds: that token is refused from then on.
        out = client.post(
            "/auth/logout",
            json={},
            headers={"Authorization": f"Bearer {valid['access_token']}"},
        )
        outcomes["logout"] = clean(out, 200, 503)
        if outcomes["logout"] == 200:
            assert clean(me(client, valid["access_token"]), 401, 503) != 200
        outcomes["login"] = clean(
            client.post(
                "/auth/login", json={"username": "alice", "password": PASSWORD}
            ),
            200,
            503,
        )
        outcomes["open socket"] = await socket_works_or_closed_cleanly(ws)
        outcomes["new socket"] = await _new_socket_outcome(server, spare)

        redis_server.start()  # --- back, on the same port, empty -----------------
        fresh = until(lambda: _login_or_none(client))
        assert me(client, fresh["access_token"]).status_code == 200
        assert me(client, revoked["access_token"]).status_code == 401
        if outcomes["logout"] == 200:
            assert me(client, valid["access_token"]).status_code == 401
        # Sockets again, and a logout reaches them through the channel layer.
        ws2 = await open_socket(server, fresh["access_token"])
        out = client.post(
            "/auth/logout",
            json={},
            headers={"Authorization": f"Bearer {fresh['access_token']}"},
        )
        assert out.status_code == 200
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws2.recv(), 10)
        assert closed.value.rcvd.code == 4410
        await ws.close()
    return outcomes


async def _new_socket_outcome(server, pair: dict) -> str:
    """Opening a socket while the channel layer is down: a session or a clean close."""
    try:
        ws = await open_socket(server, pair["access_token"])
    except ConnectionClosed as e:
        assert e.rcvd is not None and e.rcvd.code in {1011, 4401, 4410}, e
        return f"closed {e.rcvd.code}"
    await ws.close()
    return "session"


def _login_or_none(client: httpx.Client) -> dict | None:
    response = client.post(
        "/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    return response.json() if response.status_code == 200 else None


# --- (b) The database away ------------------------------------------------------------


@pytest.fixture
def private_pg():
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    name = f"chatauth_fault_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(PG_ADMIN, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, admin
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_database_away_is_a_clean_503_and_nothing_half_written(private_pg, tmp_path):
    import psycopg

    name, admin = private_pg
    url = f"postgres://root@127.0.0.1:5432/{name}"
    env = env_for(url)
    server = start_server(env, tmp_path)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            first = login(client)
            rotated = client.post(
                "/auth/token/refresh", json={"refresh": first["refresh_token"]}
            )
            assert rotated.status_code == 200
            pair = rotated.json()
            unseen = login(client)  # never checked: not in the server's cache

            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s",
                (name,),
            )
            answers = {
                "login": client.post(
                    "/auth/login", json={"username": "alice", "password": PASSWORD}
                ),
                "me": me(client, unseen["access_token"]),
                "refresh": client.post(
                    "/auth/token/refresh", json={"refresh": pair["refresh_token"]}
                ),
            }
            for route, response in answers.items():
                assert response.status_code == 503, (route, response.text)
                assert response.json() == {
                    "detail": "Service temporarily unavailable. Try again shortly."
                }, route

            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            # A connection broken by the outage may fail one request per worker
            # thread (a clean 503 too); then it is replaced.
            again = until(lambda: _login_or_none(client))
            assert me(client, again["access_token"]).status_code == 200
            assert me(client, unseen["access_token"]).status_code == 200
            # The refresh refused during the outage was not half-rotated.
            after = client.post(
                "/auth/token/refresh", json={"refresh": pair["refresh_token"]}
            )
            assert after.status_code == 200, after.text
            assert (
                client.post(
                    "/auth/token/refresh", json={"refresh": pair["refresh_token"]}
                ).status_code
                == 401
            )
    finally:
        server.stop()
    with psycopg.connect(url.replace("postgres://", "postgresql://")) as conn:
        rotated_keys = {
            row[0]
            for row in conn.execute(
                "SELECT key FROM chatauth_revokedtoken WHERE reason = 'rotated'"
            )
        }
        audited = {
            row[0]
            for row in conn.execute(
                "SELECT token_id FROM chatauth_auditevent WHERE event = 'refresh'"
            )
        }
        logins = conn.execute(
            "SELECT count(*) FROM chatauth_auditevent WHERE event = 'login'"
        ).fetchone()[0]
    assert len(rotated_keys) == 2
    assert rotated_keys == audited
    assert logins == 3  # first, unseen, again: the refused one left nothing
    assert "Internal Server Error" not in server.output(), server.output()


# --- (c) A worker killed --------------------------------------------------------------


def open_rows(db, worker_pids: set[int] | None = None) -> dict[str, tuple]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT id, worker, closed_at, close_code FROM chatauth_chatsession"
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


def test_killed_worker_sessions_are_closed_by_prune(tmp_path):
    db = tmp_path / "db.sqlite3"
    env = env_for(f"sqlite:///{db}", CHATAUTH_TEST_HEARTBEAT="1")
    doomed = start_server(env, tmp_path)
    survivor = start_server(env, tmp_path)

    async def scenario():
        with httpx.Client(base_url=survivor.url, timeout=30) as client:
            tokens = [login(client)["access_token"] for _ in range(4)]
        sockets = {
            "doomed": [await open_socket(doomed, t) for t in tokens[:2]],
            "survivor": [await open_socket(survivor, t) for t in tokens[2:]],
        }
        # Rows are written in batches: wait for all four.
        await asyncio.to_thread(until, lambda: len(open_rows(db)) == 4)
        by_worker = {}
        for _, (worker, closed_at, _code) in open_rows(db).items():
            assert closed_at is None
            by_worker.setdefault(worker.rsplit(":", 1)[1], 0)
            by_worker[worker.rsplit(":", 1)[1]] += 1
        assert by_worker == {
            str(doomed.process.pid): 2,
            str(survivor.process.pid): 2,
        }, by_worker

        doomed.process.kill()  # SIGKILL: nothing of it runs again
        doomed.process.wait(timeout=10)

        def pruned():
            manage(env, "chatauth_prune", "--keep-days", "1")
            rows = open_rows(db)
            dead = [r for r in rows.values() if r[0].endswith(f":{doomed.process.pid}")]
            return all(r[1] is not None for r in dead) and rows

        started = time.monotonic()
        rows = await asyncio.to_thread(until, pruned, 20, 0.5)
        took = time.monotonic() - started
        for worker, closed_at, code in rows.values():
            if worker.endswith(f":{survivor.process.pid}"):
                assert closed_at is None, "a live worker's session was closed"
            else:
                assert closed_at is not None and code == 1000
        # The survivor's sockets still work.
        for ws in sockets["survivor"]:
            assert await socket_works_or_closed_cleanly(ws) == "working"
            await ws.close()
        print(f"\nkilled worker's 2 sessions closed by prune {took:.1f}s after SIGKILL")

    try:
        asyncio.run(scenario())
    finally:
        doomed.stop()
        survivor.stop()
    assert "Traceback" not in survivor.output(), survivor.output()
