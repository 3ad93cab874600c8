"""Soak: 200 chat sessions chatting, logging in and out, for 10 minutes.

Not in the default run: ``python -m bench --soak`` (or ``--only soak``),
``--soak-minutes N`` to change its length.  One uvicorn process (1 worker, the
demo's setup: SQLite, file-based cache, in-memory channel layer).  Each of
200 clients loops: open ``ws/chat/`` with its access token, chat (1–6 messages,
each echo checked, pauses of 0.1–1.5 s), then end the session one of three
ways in turn:

* ``POST auth/logout`` with its refresh token in the body (the socket must
  close with 4410): that ends the whole login -- the access token, the refresh
  token and the login's refresh family, three denylist rows;
* ``{"type": "logout"}`` on the socket (4410): the access token and the
  family, two rows;
* a plain close (1000).

After a logout the client's refresh token must be refused (``auth/token/refresh``
answers 401: the login is over), and it logs in again; after a plain close it
gets its next pair by refresh rotation (one ``rotated`` row).  Every 25th turn
the new pair comes from a password login (bcrypt, the ``login`` audit row);
the other logins after a logout are minted by another process on the database,
``bench.site.actor``, as ``auth/login`` mints them but without the bcrypt check
(200 clients logging in after two of every three sessions would otherwise
measure bcrypt, not the soak).  The clients' first pairs are minted so too.

Reported: errors (any wrong frame, close code or HTTP status; must be 0); the
server's RSS at the end vs right after the warm-up (first fifth of the run, at
most a minute), both under full load (flat within ±5%); once every socket is
closed, chat-session rows still open (must be 0 after the writer's last batch);
the server's asyncio tasks (bench-only route ``bench/debug/runtime``) vs before
the run, and chat consumers left in memory.  Then the server is stopped (its
lifespan shutdown writes the refusals it counted but had not written, as
aggregated rows with a ``count``) and every table is read: the growth of
``ChatSession``, of ``RevokedToken`` per kind and reason, and of ``AuditEvent``
per event (events, the sum of ``count``; the closes per close code) must
match what the clients did, exactly; no refusal of any kind is expected.
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
from bench.servers import PASSWORD, USERS, Actor, workspace
from bench.ws import raise_nofile, rss_bytes

CHAT_PATH = "/ws/chat/"
RUNTIME_PATH = "/bench/debug/runtime"
MINUTES = 10.0  # set by ``python -m bench --soak-minutes``
SESSIONS = 200
SAMPLE_EVERY = 5.0  # seconds between RSS/task samples
LOGIN_EVERY = 25  # a password login for the next pair every this many cycles
STEP_TIMEOUT = 30.0  # any one frame, close or request
#: How a session ends, by ``cycle % 3``.
HTTP_LOGOUT, WS_LOGOUT, PLAIN_CLOSE = 0, 1, 2


class SoakError(Exception):
    pass


@dataclass
class Tally:
    sessions: int = 0
    messages: int = 0
    http_logouts: int = 0
    ws_logouts: int = 0
    plain_closes: int = 0
    refreshes: int = 0  # rotations that answered 200
    refused_refreshes: int = 0  # refreshes after a logout that answered 401
    logins: int = 0  # password logins
    minted: int = 0  # logins minted by the actor (no bcrypt, no audit row)
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
        actor_env = space.env(DATABASE_URL=database)
        with CpuMeter([server.process.pid]) as cpu:
            result = asyncio.run(_soak(server, actor_env, seconds))
        result["runtime_before"] = runtime_before
        result["rows_before"] = before_rows
        result["open_rows"] = _open_sessions(db_path)
        server.stop()  # lifespan shutdown: the counted refusals are written
        result["exit_code"] = server.process.returncode
        result["log"] = server.output()
    result["rows_after"] = _row_counts(db_path)
    return _rows(result, cpu, seconds)


# --- The load ----------------------------------------------------------------------


async def _soak(server: Any, actor_env: dict[str, str], seconds: float) -> dict:
    tally = Tally()
    samples: list[tuple[float, int, int]] = []  # (t, rss, tasks)
    logins = asyncio.Semaphore(2)  # bcrypt: a couple at a time, like people do
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=STEP_TIMEOUT) as http,
        Actor(actor_env, workspace().dir) as actor,
    ):
        # One login per client: its own token family (a logout or a refresh
        # rotation of one client must not touch another's tokens).
        names = [USERS[i % len(USERS)] for i in range(SESSIONS)]
        first = await actor.call("pairs", usernames=names, timeout=120)
        pairs = first["result"]
        tally.minted += len(pairs)
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

        login = Login(http, actor, tally, logins)
        workers = [
            _client(server, login, pairs[i], names[i], i, deadline)
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


@dataclass
class Login:
    """Where a client's next token pair comes from."""

    http: httpx.AsyncClient
    actor: Actor
    tally: Tally
    logins: asyncio.Semaphore

    async def refresh(self, pair: dict) -> dict:
        """Rotate the pair's refresh token (must answer 200)."""
        response = await self.http.post(
            "/auth/token/refresh", json={"refresh": pair["refresh_token"]}
        )
        if response.status_code != 200:
            raise SoakError(f"refresh: HTTP {response.status_code}")
        self.tally.refreshes += 1
        return response.json()

    async def refused(self, pair: dict) -> None:
        """After a logout the login is over: its refresh token answers 401."""
        response = await self.http.post(
            "/auth/token/refresh", json={"refresh": pair["refresh_token"]}
        )
        if response.status_code != 401:
            raise SoakError(f"refresh after logout: HTTP {response.status_code}")
        self.tally.refused_refreshes += 1

    async def password(self, username: str) -> dict:
        async with self.logins:
            response = await self.http.post(
                "/auth/login", json={"username": username, "password": PASSWORD}
            )
        if response.status_code != 200:
            raise SoakError(f"login: HTTP {response.status_code}")
        self.tally.logins += 1
        return response.json()

    async def minted(self, username: str) -> dict:
        answer = await self.actor.call("pairs", usernames=[username])
        self.tally.minted += 1
        return answer["result"][0]

    async def new(self, username: str, cycle: int) -> dict:
        """A new login: by password every ``LOGIN_EVERY`` cycles, else minted."""
        if cycle % LOGIN_EVERY == 0:
            return await self.password(username)
        return await self.minted(username)


async def _client(
    server: Any, login: Login, pair: dict, username: str, index: int, deadline: float
) -> None:
    rng = random.Random(index)
    tally = login.tally
    cycle = index  # so that the three endings are spread over the clients
    await asyncio.sleep(rng.uniform(0, 2))  # no thundering herd at the start
    while time.monotonic() < deadline:
        cycle += 1
        ending = cycle % 3
        try:
            async with asyncio.timeout(STEP_TIMEOUT * 4):
                await _session(server, login.http, pair, ending, rng, tally)
                if ending == PLAIN_CLOSE and cycle % LOGIN_EVERY:
                    pair = await login.refresh(pair)
                else:
                    if ending != PLAIN_CLOSE:
                        await login.refused(pair)
                    pair = await login.new(username, cycle)
        except Exception as e:  # a soak counts errors, it does not stop at one
            tally.errors[f"{type(e).__name__}: {e}"[:80]] += 1
            await asyncio.sleep(0.5)
            with contextlib.suppress(Exception):
                pair = await login.minted(username)


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
        if ending == HTTP_LOGOUT:
            response = await http.post(
                "/auth/logout", json={"refresh": pair["refresh_token"]}, headers=auth
            )
            if response.status_code != 200:
                raise SoakError(f"logout: HTTP {response.status_code}")
            tally.http_logouts += 1  # done on the server, whatever the socket sees
            await _expect_close(socket, 4410)
        elif ending == WS_LOGOUT:
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


# --- The database, read directly (the server's SQLite file) ----------------------


def _row_counts(path: str) -> dict[str, int]:
    """Rows per table; denylist rows per kind and reason; audit events per
    event as the audit trail shows them (the sum of ``count``: a refusal row
    stands for many; a chat session's row is the record of its opening and its
    end), the closes per code; and rows of the audit table itself per event."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        counts = {
            "chat_sessions": db.execute(
                "SELECT count(*) FROM chatauth_chatsession"
            ).fetchone()[0],
        }
        for kind, reason, n in db.execute(
            "SELECT token_type, reason, count(*) FROM chatauth_revokedtoken "
            "GROUP BY token_type, reason"
        ):
            counts[f"revoked:{kind}:{reason}"] = n
        for event, n in db.execute(
            "SELECT event, sum(count) FROM chatauth_audittrail GROUP BY event"
        ):
            counts[f"audit:{event}"] = n
        for event, rows in db.execute(
            "SELECT event, count(*) FROM chatauth_auditevent GROUP BY event"
        ):
            counts[f"audit rows:{event}"] = rows
        for code, n in db.execute(
            "SELECT reason, sum(count) FROM chatauth_audittrail "
            "WHERE event = 'session_closed' GROUP BY reason"
        ):
            counts[f"audit:session_closed:{code}"] = n
    return counts


def _open_sessions(path: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute(
            "SELECT count(*) FROM chatauth_chatsession WHERE closed_at IS NULL"
        ).fetchone()[0]


# --- The table -------------------------------------------------------------------


def expected_rows(tally: Tally) -> dict[str, int]:
    """What the clients did, as rows: every other key must not grow at all (no
    refusal, no reuse, no failed login)."""
    logouts = tally.http_logouts + tally.ws_logouts
    revoked = {
        # A logout ends the login: the token it was made with and its family;
        # an HTTP logout names its refresh token too.
        "revoked:access:logout": logouts,
        "revoked:family:logout": logouts,
        "revoked:refresh:logout": tally.http_logouts,
        # A refresh rotates the refresh token out.
        "revoked:refresh:rotated": tally.refreshes,
    }
    audit = {
        "audit:session_opened": tally.sessions,
        "audit:session_closed": tally.sessions,
        "audit:session_closed:4410": logouts,
        "audit:session_closed:1000": tally.plain_closes,
        "audit:login": tally.logins,
        "audit:logout": logouts,
        "audit:refresh": tally.refreshes,
        # One per denylist row written.
        "audit:revoke": sum(revoked.values()),
    }
    # Each of these events is its own row (only refusals are aggregated), but
    # a chat session's opening and end are its own row's (no audit rows).
    sessions_own = {"audit:session_opened", "audit:session_closed"}
    rows = {
        f"audit rows:{k.split(':')[1]}": 0 if k in sessions_own else n
        for k, n in audit.items()
        if k.count(":") == 1
    }
    return {"chat_sessions": tally.sessions, **revoked, **audit, **rows}


def _rows(result: dict[str, Any], cpu: CpuMeter, seconds: float) -> list[Row]:
    tally: Tally = result["tally"]
    before, after = result["rows_before"], result["rows_after"]

    def grown(key: str) -> int:
        return after.get(key, 0) - before.get(key, 0)

    expected = expected_rows(tally)
    keys = sorted(set(expected) | {k for k in after if k.startswith(("audit", "rev"))})
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
        f"closes, {tally.refreshes:,} refreshes, {tally.refused_refreshes:,} "
        f"refreshes after a logout refused (401), {tally.logins:,} password "
        f"logins, {tally.minted:,} logins minted by the actor; " + cpu.describe()
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
    tracebacks = result["log"].count("Traceback (most recent call last)")
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
            note="read after the server stopped (its shutdown writes the refusals "
            "it counted); growth vs expected: "
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
                f"{runtime_after.get('consumers')}; server exit status "
                f"{result['exit_code']}, {tracebacks} tracebacks in its log"
            ),
            errors=int(runtime_after["live_sessions"] > 0)
            + int((runtime_after.get("consumers") or 0) > 0)
            + tracebacks,
            stats={"before": runtime_before, "after": runtime_after},
        ),
    ]
