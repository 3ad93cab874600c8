"""Logout propagation: ``POST auth/logout`` on process B → close 4410 on process A.

Two uvicorn processes (1 worker each) share one SQLite database (WAL) and one
Redis (cache and ``channels_redis`` layer, under this run's own key and channel
prefix), as two workers of a scaled-out deployment do.  N sessions (1,000, the
issue's figure; also 100 and 5,000) are opened and left idle, half on each
process, with the tokens of other users.  Then, sample after sample: a fresh
login's access token, a socket opened with it on A, the token logged out with
``POST auth/logout`` on B; the figure is the time from the logout response (its
last byte read by the client) to the 4410 close frame read on A's socket.  (A
logout ends the whole login, its refresh token too, so each sample's token is
minted by another process on the database, ``bench.site.actor``, as
``auth/login`` mints them, without a bcrypt check per sample.)  The propagation
runs inside the request (revocation written, then ``group_send`` through
Redis), so a close frame may even beat the response home: such a sample counts
as 0 ms, and the note says how many there were.
The time from sending the logout request to the close frame (what a user
waits for) is reported beside it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench.http import LoadClient
from bench.measure import CpuMeter, Row, at_most, percentile
from bench.servers import REDIS, USERS, Actor, login, redis_up, workspace
from bench.ws import close_sessions, open_sessions, raise_nofile

CHAT_PATH = "/ws/chat/"
SIZES = (100, 1_000, 5_000)
TARGETED = 1_000  # the figure: p99 ≤ 50 ms at 1,000 sessions
FULL = {"samples": 200}
QUICK = {"samples": 20}
QUICK_SIZES = (100, 1_000)
#: A close frame later than this is an error (the socket was not closed).
CLOSE_TIMEOUT = 5.0


class StampedConnection(ClientConnection):
    """A client connection that notes when the server's close frame arrived
    (``recv()`` only raises once TCP is closed too, a round trip later)."""

    close_rcvd_at: float | None = None
    _close_seen: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.close_rcvd_at is None and self.protocol.close_rcvd is not None:
            self.close_rcvd_at = time.perf_counter()
            if self._close_seen is not None and not self._close_seen.done():
                self._close_seen.set_result(None)

    async def close_frame(self) -> float:
        """Wait for the server's close frame; when it arrived."""
        if self.close_rcvd_at is None:
            self._close_seen = asyncio.get_running_loop().create_future()
            await self._close_seen
        return self.close_rcvd_at  # type: ignore[return-value]


def run(quick: bool) -> list[Row]:
    if not redis_up():
        return [
            Row(
                f"logout → close p99, {TARGETED:,} sessions on 2 processes",
                float("nan"),
                "ms",
                note=f"skipped: Redis is not reachable on {REDIS[0]}:{REDIS[1]}",
            )
        ]
    profile = QUICK if quick else FULL
    raise_nofile()
    space = workspace()
    env = {
        "REDIS_URL": f"redis://{REDIS[0]}:{REDIS[1]}/0",
        # bench.site.settings puts this run's prefix on cache and layer alike;
        # REDIS_PREFIX says the same to the demo settings under them.
        "REDIS_PREFIX": space.prefix,
        "DATABASE_URL": space.database("ws_logout"),
    }
    rows: list[Row] = []
    with (
        space.server("ws_logout-A", **env) as a,
        space.server("ws_logout-B", **env) as b,
    ):
        # The idle sessions use the first users; the samples the last one.
        idle_tokens = [login(b, name)["access_token"] for name in USERS[:-1]]
        actor_env = space.env(**env)
        for size in QUICK_SIZES if quick else SIZES:
            with CpuMeter([a.process.pid, b.process.pid]) as cpu:
                result = asyncio.run(
                    _measure(a, b, idle_tokens, actor_env, size, profile["samples"])
                )
            rows += _rows(size, result, cpu)
    return rows


async def _measure(
    a: Any,
    b: Any,
    idle_tokens: list[str],
    actor_env: dict[str, str],
    size: int,
    samples: int,
) -> dict[str, Any]:
    half = size // 2
    idle = await open_sessions(a.ws_url + CHAT_PATH, idle_tokens, half)
    try:
        idle += await open_sessions(b.ws_url + CHAT_PATH, idle_tokens, size - half)
        await asyncio.sleep(0.2)  # let both processes write the session rows
        client = LoadClient(b.port, 1)
        try:
            async with Actor(actor_env, workspace().dir) as actor:
                # One login per sample, minted before any is measured.
                minted = await actor.call(
                    "tokens", usernames=[USERS[-1]] * samples, timeout=120
                )
            latencies, signed, from_request, failures = [], [], [], []
            for index, access in enumerate(minted["result"]):
                try:
                    latency, total = await _sample(a, client, access, check=index == 0)
                except (AssertionError, TimeoutError, OSError) as e:
                    failures.append(f"{type(e).__name__}: {e}"[:100])
                    continue
                signed.append(latency)
                latencies.append(max(0.0, latency))
                from_request.append(total)
        finally:
            await client.aclose()
        # None of the idle sessions (other users' tokens) may have been closed.
        received = [s.protocol.close_rcvd for s in idle]
        wrongly_closed = [frame.code for frame in received if frame is not None]
    finally:
        await close_sessions(idle)
    return {
        "latencies": latencies,
        "early": sum(1 for x in signed if x < 0),
        "signed": signed,
        "from_request": from_request,
        "failures": failures,
        "idle_closed": wrongly_closed,
    }


async def _sample(
    a: Any, client: LoadClient, access: str, *, check: bool
) -> tuple[float, float]:
    """Seconds from the logout response (B) to the close frame (A), and from the
    logout request's sending to the close frame."""
    auth = {"Authorization": f"Bearer {access}"}
    socket: StampedConnection = await connect(  # type: ignore[assignment]
        a.ws_url + CHAT_PATH,
        additional_headers=auth,
        create_connection=StampedConnection,
        open_timeout=10,
        close_timeout=10,
        ping_interval=None,
    )
    try:
        async with asyncio.timeout(10):
            frame = json.loads(await socket.recv())
        if frame.get("type") != "session":
            raise AssertionError(f"expected a session frame, got {frame!r:.80}")
        sent = time.perf_counter()
        status, content = await client.request(
            "POST", "/auth/logout", {**auth, "Content-Type": "application/json"}, b"{}"
        )
        responded = time.perf_counter()
        if status != 200:
            raise AssertionError(f"logout: HTTP {status} {content[:80]!r}")
        async with asyncio.timeout(CLOSE_TIMEOUT):
            closed = await socket.close_frame()
        code = socket.protocol.close_rcvd.code  # type: ignore[union-attr]
        if code != 4410:
            raise AssertionError(f"closed with {code}, not 4410")
    finally:
        await socket.close()
    if check:
        # The other half of the contract: A refuses the token over HTTP too.
        async with httpx.AsyncClient() as http:
            response = await http.get(a.url + "/auth/me", headers=auth, timeout=10)
        if response.status_code != 401:
            raise AssertionError(f"A's auth/me answered {response.status_code}")
    return closed - responded, closed - sent


def _rows(size: int, result: dict[str, Any], cpu: CpuMeter) -> list[Row]:
    latencies: list[float] = result["latencies"]
    failures: list[str] = result["failures"]
    if not latencies:
        return [
            Row(
                f"logout → close p99, {size:,} sessions on 2 processes",
                float("nan"),
                "ms",
                errors=len(failures) or 1,
                note="; ".join(failures[:3]) or "no samples",
            )
        ]
    p50, p99 = statistics.median(latencies), percentile(latencies, 99)
    note = "; ".join(
        filter(
            None,
            [
                f"{size:,} idle sessions (half on each process) + the sampled one; "
                f"{len(latencies)} samples, p50 {p50 * 1e3:.2f} ms, "
                f"p99 {p99 * 1e3:.2f} ms, max {max(latencies) * 1e3:.2f} ms; "
                f"{result['early']} of {len(latencies)} close frames arrived before "
                "the response had been read (counted as 0 ms; median signed "
                f"{statistics.median(result['signed']) * 1e3:+.2f} ms)",
                f"idle sessions wrongly closed: {len(result['idle_closed'])}"
                + (
                    f" (close codes {sorted(set(result['idle_closed']))})"
                    if result["idle_closed"]
                    else ""
                ),
                f"{len(failures)} failed samples: {'; '.join(failures[:3])}"
                if failures
                else "",
                cpu.describe(),
            ],
        )
    )
    p99_row = Row(
        f"logout → close p99, {size:,} sessions on 2 processes",
        p99 * 1e3,
        "ms",
        target=at_most(50, on="value", unit="ms") if size == TARGETED else None,
        note=note,
        errors=len(failures) + len(result["idle_closed"]),
        stats={
            "p50_ms": p50 * 1e3,
            "p99_ms": p99 * 1e3,
            "max_ms": max(latencies) * 1e3,
            "samples": len(latencies),
            "early": result["early"],
            "failures": failures,
            "idle_closed": len(result["idle_closed"]),
            "cpu": cpu.summary(),
        },
    )
    p50_row = Row(
        f"logout → close p50, {size:,} sessions on 2 processes", p50 * 1e3, "ms"
    )
    from_request: list[float] = result["from_request"]
    request_row = Row(
        f"logout request sent → close p99, {size:,} sessions",
        percentile(from_request, 99) * 1e3,
        "ms",
        note="informational: the whole logout as a user sees it (request sent on "
        f"B → close frame on A); p50 {statistics.median(from_request) * 1e3:.2f} ms",
    )
    return [p50_row, p99_row, request_row]
