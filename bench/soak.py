"""Soak: 200 chat sessions chatting, logging in and out, for 10 minutes.

Not in the default run: ``python -m bench --soak`` (or ``--only soak``),
``--soak-minutes N`` to change its length.  One uvicorn process (1 worker, the
demo's setup: SQLite, local-memory cache, in-memory channel layer).  Each of
200 clients loops: open ``ws/chat/`` with its access token, chat (1–6 messages,
each echo checked, pauses of 0.1–1.5 s), then end the session one of three
ways in turn — ``POST auth/logout`` (the socket must close with 4410),
``{"type": "logout"}`` on the socket (4410), or a plain close — and get its next
token by refresh rotation (every 25th time by a password login).

Reported: errors (any wrong frame, close code or HTTP status; must be 0); the
server's RSS at the end vs right after the warm-up (first fifth of the run, at
most a minute), both under full load (flat within ±5%); once every socket is
closed, chat-session rows still open (must be 0 after the writer's last batch)
and the growth of ``ChatSession``, ``RevokedToken`` and ``AuditEvent`` (per
event) vs what the clients did; the server's asyncio tasks (bench-only route
``bench/debug/runtime``) vs before the run, and chat consumers left in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.measure import CpuMeter, Row, at_most
from bench.servers import PASSWORD, USERS, workspace
from bench.ws import raise_nofile, rss_bytes

CHAT_PATH = "/ws/chat/"
RUNTIME_PATH = "/bench/debug/runtime"
MINUTES = 10.0  # set by ``python -m bench --soak-minutes``
SESSIONS = 200
SAMPLE_EVERY = 5.0  # seconds between RSS/task samples
LOGIN_EVERY = 25  # a password login instead of a refresh every this many cycles
STEP_TIMEOUT = 30.0  # any one frame, close or request


class SoakError(Exception):
    pass


@dataclass
class Tally:
    sessions: int = 0
    messages: int = 0
    http_logouts: int = 0
    ws_logouts: int = 0
    plain_closes: int = 0
    refreshes: int = 0
    logins: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def run(quick: bool) -> list[Row]:
    raise_nofile()
    seconds = MINUTES * 60
    space = workspace()
    database = space.database("soak")
    db_path = database.removeprefix("sqlite:///")
    with space.server("soak", DATABASE_URL=database) as server:
        before_rows = _row_counts(db_path)
        runtime_before = httpx.get(server.url + RUNTIME_PATH, timeout=10).json()
        with CpuMeter([server.process.pid]) as cpu:
            result = asyncio.run(_soak(server, seconds))
        result["runtime_before"] = runtime_before
        result["rows_before"] = before_rows
        result["rows_after"] = _row_counts(db_path)
        result["open_rows"] = _open_sessions(db_path)
    return _rows(result, cpu, seconds)


# --- The load ----------------------------------------------------------------------


async def _soak(server: Any, seconds: float) -> dict[str, Any]:
    tally = Tally()
    samples: list[tuple[float, int, int]] = []  # (t, rss, tasks)
    logins = asyncio.Semaphore(2)  # bcrypt: a couple at a time, like people do
    async with httpx.AsyncClient(base_url=server.url, timeout=STEP_TIMEOUT) as http:
        # One login per client: its own token family (a logout or a refresh
        # rotation of one client must not touch another's tokens).
        pairs = await asyncio.gather(
            *(
                _next_pair(http, {}, USERS[i % len(USERS)], 0, tally, logins)
                for i in range(SESSIONS)
            )
        )
        started = time.monotonic()  # the clock starts once every client can go
        deadline = started + seconds
        warmup_end = started + min(60.0, seconds / 5)

        async def sampler() -> None:
            while time.monotonic() < deadline:
                await asyncio.sleep(SAMPLE_EVERY)
                with contextlib.suppress(httpx.HTTPError):
                    tasks = (await http.get(RUNTIME_PATH)).json()["tasks"]
                    samples.append(
                        (
                            time.monotonic() - started,
                            rss_bytes(server.process.pid),
                            tasks,
                        )
                    )

        workers = [
            _client(server, http, pairs[i], i, deadline, tally, logins)
            for i in range(SESSIONS)
        ]
        sampling = asyncio.ensure_future(sampler())
        try:
            async with asyncio.timeout(seconds + 120):
                await asyncio.gather(*workers)
        except TimeoutError:
            tally.errors["clients did not stop in time"] += 1
        finally:
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling
        # Every socket is closed: the server must drop every session and task.
        settled = await _settle(http)
        after = (await http.get(RUNTIME_PATH, params={"objects": "1"})).json()
    warm = [s for s in samples if s[0] >= warmup_end - started]
    return {
        "tally": tally,
        "samples": samples,
        "rss_start": warm[0][1] if warm else None,
        "rss_end": warm[-1][1] if warm else None,
        "runtime_after": after,
        "settled_s": settled,
    }


async def _settle(http: httpx.AsyncClient, timeout: float = 30) -> float:
    """Wait until the server holds no live session (rows written); seconds taken."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        runtime = (await http.get(RUNTIME_PATH)).json()
        if runtime["live_sessions"] == 0:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # the writer's last batch and idle release
    return time.monotonic() - started


async def _client(
    server: Any,
    http: httpx.AsyncClient,
    pair: dict,
    index: int,
    deadline: float,
    tally: Tally,
    logins: asyncio.Semaphore,
) -> None:
    rng = random.Random(index)
    username = pair["user"]["identifier"]
    cycle = index  # so that the three endings are spread over the clients
    await asyncio.sleep(rng.uniform(0, 2))  # no thundering herd at the start
    while time.monotonic() < deadline:
        cycle += 1
        ending = cycle % 3
        try:
            async with asyncio.timeout(STEP_TIMEOUT * 4):
                await _session(server, http, pair, ending, rng, tally)
            if ending in (0, 1):  # logged out: the access token is revoked
                pair = await _next_pair(http, pair, username, cycle, tally, logins)
        except Exception as e:  # a soak counts errors, it does not stop at one
            tally.errors[f"{type(e).__name__}: {e}"[:80]] += 1
            await asyncio.sleep(0.5)
            with contextlib.suppress(Exception):
                pair = await _next_pair(http, pair, username, 0, tally, logins)


async def _session(
    server: Any,
    http: httpx.AsyncClient,
    pair: dict,
    ending: int,
    rng: random.Random,
    tally: Tally,
) -> None:
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    async with connect(
        server.ws_url + CHAT_PATH, additional_headers=auth, close_timeout=10
    ) as socket:
        frame = json.loads(await socket.recv())
        if frame.get("type") != "session":
            raise SoakError(f"expected a session frame, got {frame.get('type')!r}")
        tally.sessions += 1
        for n in range(rng.randint(1, 6)):
            content = f"soak {n} {rng.random():.6f}"
            await socket.send(json.dumps({"type": "message", "content": content}))
            reply = json.loads(await socket.recv())
            if reply != {"type": "message", "content": content}:
                raise SoakError(f"wrong echo: {reply!r:.60}")
            tally.messages += 1
            await asyncio.sleep(rng.uniform(0.1, 1.5))
        if ending == 0:
            response = await http.post("/auth/logout", json={}, headers=auth)
            if response.status_code != 200:
                raise SoakError(f"logout: HTTP {response.status_code}")
            await _expect_close(socket, 4410)
            tally.http_logouts += 1
        elif ending == 1:
            await socket.send(json.dumps({"type": "logout"}))
            await _expect_close(socket, 4410)
            tally.ws_logouts += 1
        else:
            tally.plain_closes += 1  # the context manager closes it (1000)


async def _expect_close(socket: Any, code: int) -> None:
    try:
        frame = await socket.recv()
    except ConnectionClosed as e:
        got = e.rcvd.code if e.rcvd is not None else None
        if got != code:
            raise SoakError(f"closed with {got}, not {code}") from e
        return
    raise SoakError(f"expected close {code}, got a frame {frame!r:.60}")


async def _next_pair(
    http: httpx.AsyncClient,
    pair: dict,
    username: str,
    cycle: int,
    tally: Tally,
    logins: asyncio.Semaphore,
) -> dict:
    if cycle % LOGIN_EVERY:
        response = await http.post(
            "/auth/token/refresh", json={"refresh": pair["refresh_token"]}
        )
        if response.status_code == 200:
            tally.refreshes += 1
            return response.json()
    async with logins:
        response = await http.post(
            "/auth/login", json={"username": username, "password": PASSWORD}
        )
    if response.status_code != 200:
        raise SoakError(f"login: HTTP {response.status_code}")
    tally.logins += 1
    return response.json()


# --- The database, read directly (the server's SQLite file) ----------------------


def _row_counts(path: str) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        counts = {
            "chat_sessions": db.execute(
                "SELECT count(*) FROM chatauth_chatsession"
            ).fetchone()[0],
            "revoked_tokens": db.execute(
                "SELECT count(*) FROM chatauth_revokedtoken"
            ).fetchone()[0],
        }
        for event, n in db.execute(
            "SELECT event, count(*) FROM chatauth_auditevent GROUP BY event"
        ):
            counts[f"audit:{event}"] = n
    return counts


def _open_sessions(path: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute(
            "SELECT count(*) FROM chatauth_chatsession WHERE closed_at IS NULL"
        ).fetchone()[0]


# --- The table -------------------------------------------------------------------


def _rows(result: dict[str, Any], cpu: CpuMeter, seconds: float) -> list[Row]:
    tally: Tally = result["tally"]
    before, after = result["rows_before"], result["rows_after"]

    def grown(key: str) -> int:
        return after.get(key, 0) - before.get(key, 0)

    logouts = tally.http_logouts + tally.ws_logouts
    expected = {
        "chat_sessions": tally.sessions,
        "audit:session_opened": tally.sessions,
        "audit:session_closed": tally.sessions,
        "audit:login": tally.logins,
        "audit:logout": logouts,
        "audit:refresh": tally.refreshes,
        # A logout revokes the access token; a refresh rotates the refresh one out.
        "revoked_tokens": logouts + tally.refreshes,
        "audit:revoke": logouts + tally.refreshes,
    }
    keys = sorted(set(expected) | {k for k in after if k.startswith("audit:")})
    mismatches = {
        k: (grown(k), expected.get(k, 0))
        for k in keys
        if grown(k) != expected.get(k, 0)
    }
    errors = sum(tally.errors.values())
    runtime_before, runtime_after = result["runtime_before"], result["runtime_after"]
    leaked_tasks = runtime_after["tasks"] - runtime_before["tasks"]
    activity = (
        f"{seconds / 60:g} min, {SESSIONS} clients: {tally.sessions:,} sessions, "
        f"{tally.messages:,} messages echoed, {tally.http_logouts:,} HTTP logouts, "
        f"{tally.ws_logouts:,} WebSocket logouts, {tally.plain_closes:,} plain "
        f"closes, {tally.refreshes:,} refreshes, {tally.logins:,} password logins; "
        + cpu.describe()
    )
    rss_start, rss_end = result["rss_start"], result["rss_end"]
    samples = result["samples"]
    mib = 2**20
    shown = samples[:: max(1, len(samples) // 12)]
    rss_note = (
        "RSS under full load right after the warm-up vs at the end; samples every "
        f"{SAMPLE_EVERY:g} s (MiB): "
        + ", ".join(f"{t:.0f}s {r / mib:.1f}" for t, r, _ in shown)
    )
    return [
        Row(
            "soak errors",
            float(errors),
            "",
            target=at_most(0, on="value"),
            note=activity
            + (
                "; errors: " + "; ".join(f"{n}× {w}" for w, n in tally.errors.items())
                if errors
                else ""
            ),
            stats={"tally": {**tally.__dict__, "errors": dict(tally.errors)}},
        ),
        Row(
            "soak server RSS, end vs after warm-up",
            (rss_end or float("nan")) / mib,
            "MiB",
            baseline=(rss_start / mib) if rss_start else None,
            target=at_most(1.05),
            note=rss_note,
            errors=0 if rss_start else 1,
            stats={"samples": samples},
        ),
        Row(
            "soak open chat-session rows after all closed",
            float(result["open_rows"]),
            "rows",
            target=at_most(0, on="value"),
            note=f"read {result['settled_s']:.1f} s after the last socket closed",
        ),
        Row(
            "soak rows not matching the clients' activity",
            float(len(mismatches)),
            "tables/events",
            target=at_most(0, on="value"),
            note="growth vs expected: "
            + ", ".join(f"{k} {grown(k):,}/{expected.get(k, 0):,}" for k in keys)
            + (f"; MISMATCHED: {mismatches}" if mismatches else ""),
            stats={"before": before, "after": after, "expected": expected},
        ),
        Row(
            "soak leaked tasks (server, after all closed)",
            float(leaked_tasks),
            "tasks",
            target=at_most(0, on="value"),
            note=(
                f"asyncio tasks {runtime_before['tasks']} before, "
                f"{runtime_after['tasks']} after; live sessions in the registry "
                f"{runtime_after['live_sessions']}, chat consumers in memory "
                f"{runtime_after.get('consumers')}"
            ),
            errors=int(runtime_after["live_sessions"] > 0)
            + int((runtime_after.get("consumers") or 0) > 0),
            stats={"before": runtime_before, "after": runtime_after},
        ),
    ]
