"""Memory per idle authenticated WebSocket session (5,000 of them) vs bare consumer.

Two fresh uvicorn processes (1 worker each, the demo as ``make demo`` runs it:
SQLite, in-memory channel layer, so the group memberships live in the server's
own memory too; but the local-memory cache, ``BENCH_CACHE=locmem``, where the
demo now keeps its cache in files, so the cache entries count in the RSS as
before): one holds 5,000 idle ``ws/chat/``
sessions (authenticated, in their groups, session rows written, expiry timers
armed), the other 5,000 idle sessions of the bare consumer.  Each first opens
and closes a few hundred sessions of its kind (code paths, caches and
allocator pools warmed), then its resident set size (``VmRSS`` from
``/proc/<pid>/status``) is read before and after the 5,000 are opened; the
figure is the difference divided by the number of sessions.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.measure import Row, at_most
from bench.servers import USERS, login, workspace
from bench.site.constants import BARE_WS_PATH
from bench.ws import close_sessions, open_sessions, raise_nofile, rss_bytes

CHAT_PATH = "/ws/chat/"
SESSIONS = 5_000
QUICK_SESSIONS = 500
WARMUP = 300
#: RSS is read once it has not moved for this long (the session rows are written
#: in batches, ``FLUSH_DELAY`` after the last open).
SETTLE = 1.0


def run(quick: bool) -> list[Row]:
    raise_nofile()
    count = QUICK_SESSIONS if quick else SESSIONS
    space = workspace()
    with space.server("ws_memory-chat", BENCH_CACHE="locmem") as chat_server:
        tokens = [login(chat_server, name)["access_token"] for name in USERS]
        chat = asyncio.run(
            _measure(
                chat_server.process.pid, chat_server.ws_url + CHAT_PATH, tokens, count
            )  # fmt: skip
        )
    with space.server("ws_memory-bare", BENCH_CACHE="locmem") as bare_server:
        bare = asyncio.run(
            _measure(
                bare_server.process.pid,
                bare_server.ws_url + BARE_WS_PATH,
                [None],
                count,
            )  # fmt: skip
        )
    per_chat = chat["grown"] / count
    per_bare = bare["grown"] / count
    note = (
        f"{count:,} idle sessions on a fresh 1-worker server each, after {WARMUP} "
        "opened and closed; RSS "
        f"{chat['before'] / 2**20:.1f} → {chat['after'] / 2**20:.1f} MiB (ws/chat/), "
        f"{bare['before'] / 2**20:.1f} → {bare['after'] / 2**20:.1f} MiB (bare); "
        f"opening took {chat['open_s']:.1f} s and {bare['open_s']:.1f} s"
    )
    return [
        Row(
            f"memory per idle session, {count:,} sessions",
            per_chat / 1024,
            "KiB",
            baseline=per_bare / 1024,
            target=at_most(1.2),
            note=note,
            stats={"chat": chat, "bare": bare},
        )
    ]


async def _settled_rss(pid: int, timeout: float = 30) -> int:
    """RSS once it has stopped moving (or after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    last, since = rss_bytes(pid), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = rss_bytes(pid)
        if abs(now - last) > 64 * 1024:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= SETTLE:
            break
    return last


async def _measure(
    pid: int, url: str, tokens: list[str | None], count: int
) -> dict[str, Any]:
    warm = await open_sessions(url, tokens, WARMUP)
    await close_sessions(warm)
    before = await _settled_rss(pid)
    started = time.monotonic()
    sockets = await open_sessions(url, tokens, count)
    open_s = time.monotonic() - started
    try:
        after = await _settled_rss(pid)
    finally:
        await close_sessions(sockets)
    return {"before": before, "after": after, "grown": after - before, "open_s": open_s}
