"""Abuse: each abuse tried, the bound in force, what the server spent under it,
and a legitimate user's latency meanwhile.

**The server.**  One demo worker started exactly as the README's production
command (``uvicorn project.asgi:application --workers 1 --proxy-headers
--forwarded-allow-ips=127.0.0.1`` plus ``tests.servers.UVICORN_LIMITS``: h11
with 16 KiB request heads, ``--ws-max-size 131072 --ws-max-queue 8
--ws-per-message-deflate false``; uvicorn's own access log at its default
level), ``DJANGO_SETTINGS_MODULE=project.settings`` with ``DJANGO_DEBUG=0``:
chatauth's real caps and throttle, none raised (10 failed logins per address
and username in 5 minutes; 16 sockets per credential; 16 still authenticating
per address; refusals written every 60 s), on a fresh PostgreSQL database and
Redis (cache and channel layer, under this run's prefix); without them, on the
embedded defaults (SQLite, file cache, in-memory layer).  The notes say which.

**The legitimate user** (another process, from 127.0.0.1) measures all along:
``GET auth/me`` with its bearer token every 50 ms, and a chat socket's echo
(``{"type": "message", "content": "x"}`` → its reply) every 0.4 s, well under
``MESSAGE_RATE``.  Its latencies are cut into phases: no abuse, then each abuse
for N seconds (30; 6 with ``--quick``), then no abuse again; the baseline of
each figure is both no-abuse phases pooled.

**The attacker** runs each abuse from its own loopback address (127.0.0.10,
.11, ...: the demo trusts 127.0.0.1 as a proxy, nothing else, so each address
is a client of its own to every per-address limit), bounded in count and time:

1. WebSocket frames far over the limit, unauthenticated, the client offering
   permessage-deflate: 50 MB messages and 70 kB ones in turn;
2. huge request heads: one 8 MB header, then 50,000 headers, in turn;
3. unauthenticated sockets from one address, hundreds at a time;
4. sockets with one valid token (the attacker's own login), hundreds at a time;
5. bad API keys on ``POST auth/copilot/token``;
6. password guessing on ``auth/login`` (each guess with a made-up
   ``X-Forwarded-For``: the throttle must still count the peer), and on
   ``/admin/login/`` (Django's form, with its CSRF token);
7. WebSocket handshakes from foreign origins.

The WebSocket abuses speak raw RFC 6455 (handshake, zero-key masked frames; a
50 MB message is its header, then its bytes 64 KiB at a time until the server
closes): the same bytes on the wire as a client library's, without a core of
this machine spent building and masking them.

Per abuse: what the attacker got (answers and close codes, counted), how much
of it went past the bound, the server's RSS growth (peak during the phase
minus before, ``/proc/<pid>/status``), its CPU seconds (``/proc/<pid>/stat``;
the database's and Redis's own processes not included), what it logged, and
the audit, chat-session and denylist rows the abuse caused: every row carries
the client's address, so rows are told apart by the attacker's, read after the
server has stopped (its lifespan shutdown writes the refusals counted since
the last 60 s flush).  Targets: nothing past the bound; RSS growth at most
30 MiB; rows a constant per abuse (what the bound admits plus a few refusal
rows per flush), not one per request.  The legitimate user's latencies are
figures, not targets: attacker, server and user share this machine's two
cores, so an abuse that keeps the attacker busy slows everyone by the CPU it
takes, whatever the server does with it.
``BENCH_ABUSE_DUMP=<file>`` writes every latency sample and phase window there.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from bench.http import LoadClient
from bench.measure import CpuMeter, Row, at_most, percentile, process_cpu
from bench.servers import (
    PG,
    PG_ADMIN,
    REDIS,
    USERS,
    login,
    postgres_up,
    redis_up,
    workspace,
)
from bench.ws import open_session, raise_nofile, rss_bytes
from tests.servers import (
    ROOT,
    UVICORN_LIMITS,
    Server,
    free_port,
    server_env,
)

CHAT_PATH = "/ws/chat/"
LEGIT_ADDRESS = "127.0.0.1"
FULL = {"seconds": 30.0, "cool": 3.0, "scale": 1.0}
QUICK = {"seconds": 6.0, "cool": 2.0, "scale": 0.25}
ME_INTERVAL = 0.05  # seconds between the legitimate user's auth/me requests
ECHO_INTERVAL = 0.4  # ... and between its echoes (MESSAGE_RATE: 30 per 10 s)
RSS_BOUND_MIB = 30.0
RSS_EVERY = 0.05  # seconds between RSS samples
PG_EVERY = 0.25  # seconds between counts of the server's database connections
ATTEMPT_TIMEOUT = 20.0  # any one attempt of the attacker
#: chatauth's defaults (``chatauth.conf.DEFAULTS``), as the demo runs them.
LOGIN_FAILURE_LIMIT = 10
PENDING_CAP = 16
CREDENTIAL_CAP = 16
REFUSAL_INTERVAL = 60.0
AUTH_TIMEOUT = 10.0
MB = 1024 * 1024
LEGIT_USER, ATTACKER_USER, GUESSED_USER, ADMIN_GUESSED_USER = USERS[:4]


# --- What an abuse is, and what it got ------------------------------------------------


@dataclass
class Attack:
    """What the attacker did and got in one phase."""

    attempts: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    past: int = 0  # past the bound, besides what the outcomes say
    most_held: int = 0  # sockets the server held open at once (floods)

    def describe(self, limit: int = 6) -> str:
        top = self.outcomes.most_common(limit)
        text = ", ".join(f"{n:,}× {what}" for what, n in top)
        rest = sum(self.outcomes.values()) - sum(n for _, n in top)
        return text + (f", {rest:,} other" if rest else "")


@dataclass
class Site:
    port: int
    attacker_token: str

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{CHAT_PATH}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


AttackFn = Callable[[Site, str, Attack, float, int], Awaitable[None]]


@dataclass(frozen=True)
class Abuse:
    key: str
    label: str
    bound: str  # the bound in force, as the table says it
    attempts: int  # at most this many per phase (full run)
    run: AttackFn
    #: How many of the outcomes went past the bound.
    past: Callable[[Attack], int]
    #: Rows the bound admits (real sessions, checked logins); refusals come on
    #: top, a few per flush.
    admitted_rows: int = 0


async def _loop(
    workers: int,
    deadline: float,
    limit: int,
    attack: Attack,
    one: Callable[[int], Awaitable[str]],
) -> None:
    """``workers`` tasks call ``one(i)`` back to back until ``deadline`` or
    ``limit`` attempts; each outcome (or the client's own error) is counted."""

    async def worker() -> None:
        while attack.attempts < limit and time.perf_counter() < deadline:
            attack.attempts += 1
            index = attack.attempts
            try:
                async with asyncio.timeout(ATTEMPT_TIMEOUT):
                    outcome = await one(index)
            except InvalidStatus as e:
                outcome = f"HTTP {e.response.status_code}"
            except Exception as e:  # what the server did to the client, counted
                outcome = f"client saw {type(e).__name__}"
            attack.outcomes[outcome] += 1

    await asyncio.gather(*(worker() for _ in range(workers)))


def _close_code(socket: ClientConnection) -> str:
    frame = socket.protocol.close_rcvd
    if frame is None:
        return "no close frame"
    return f"close {frame.code}" + (f" {frame.reason}" if frame.reason else "")


def _abort(socket: ClientConnection) -> None:
    if socket.transport is not None and not socket.transport.is_closing():
        socket.transport.abort()


# --- A raw WebSocket client for the attacker ----------------------------------------
#
# The attacker shares the machine with the server and the legitimate user: a
# full client library (handshake checks, masking, a 50 MB frame built and
# copied per attempt) would spend a core of its own and measure the client.
# These few lines speak the same bytes on the wire: an RFC 6455 handshake, and
# client frames masked with a zero key (the payload as is).


@dataclass(eq=False)
class RawSocket:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    headers: dict[str, str]

    async def frame(self) -> tuple[int, bytes]:
        """The server's next frame: ``(opcode, payload)``."""
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await self.reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await self.reader.readexactly(8), "big")
        return first & 0x0F, await self.reader.readexactly(length)

    async def close_code(self) -> str:
        """Read until the server's close frame; ``close <code> <reason>``."""
        while True:
            opcode, payload = await self.frame()
            if opcode == 0x8:
                return _close_text(payload)

    def abort(self) -> None:
        self.writer.transport.abort()


def _close_text(payload: bytes) -> str:
    if len(payload) < 2:
        return "close (no code)"
    code = int.from_bytes(payload[:2], "big")
    reason = payload[2:].decode(errors="replace")
    return f"close {code}" + (f" {reason}" if reason else "")


def client_frame(payload: bytes, opcode: int = 0x1, length: int | None = None) -> bytes:
    """A final client frame (``length``: what its header announces, by default
    the payload's), masked with a zero key."""
    n = len(payload) if length is None else length
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65_536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


async def raw_socket(
    port: int,
    address: str,
    headers: dict[str, str] | None = None,
    *,
    deflate: bool = False,
) -> RawSocket:
    """Open ``ws/chat/`` from ``address``; the handshake's answer (101 or not)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(address, 0), limit=1024 * 1024
    )
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {CHAT_PATH} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append(
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
        )
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except BaseException:
        writer.transport.abort()
        raise
    status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    answer = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer[name.strip().lower()] = value.strip()
    return RawSocket(reader, writer, int(status_line.split()[1]), answer)


# --- 1. Frames over the limit ---------------------------------------------------------

BOMB_BYTES = 50 * 1000 * 1000
OVER_BYTES = 70_000  # over MAX_MESSAGE_BYTES (64 KiB), under --ws-max-size
CHUNK = b"0" * (64 * 1024)
#: A 50 MB message cut short by a reset after less than this was sent was
#: refused on its header (the server read no more than its socket buffers).
REFUSED_BEFORE = 4 * MB


async def big_frames(
    site: Site, address: str, attack: Attack, deadline: float, limit: int
) -> None:
    """Unauthenticated sockets offering permessage-deflate; on each, one
    message: a 50 MB one (its header, then its bytes streamed 64 KiB at a time
    until the server closes) or a 70 kB one, in turn."""
    over = client_frame(
        json.dumps({"type": "message", "content": "x" * OVER_BYTES}).encode()
    )
    offered = Counter[str]()
    streamed: list[int] = []

    async def one(index: int) -> str:
        socket = await raw_socket(site.port, address, deflate=True)
        try:
            if socket.status != 101:
                return f"HTTP {socket.status}"
            accepted = "permessage-deflate" in socket.headers.get(
                "sec-websocket-extensions", ""
            )
            offered["accepted" if accepted else "declined"] += 1
            closed = asyncio.ensure_future(socket.close_code())
            big = index % 2 == 1
            sent = 0
            try:
                if big:
                    socket.writer.write(client_frame(b"", length=BOMB_BYTES))
                    while sent < BOMB_BYTES and not closed.done():
                        socket.writer.write(CHUNK)
                        sent += len(CHUNK)
                        await socket.writer.drain()
                        await asyncio.sleep(0)  # read what the server said
                else:
                    socket.writer.write(over)
                async with asyncio.timeout(10):
                    code = await closed
            except (ConnectionError, asyncio.IncompleteReadError):
                # Written into a connection the server had closed: the close
                # frame may be lost with it.  How far the message got says
                # whether the server read it.
                code = f"reset after {sent / MB:.1f} MiB sent"
                if big and sent < REFUSED_BEFORE:
                    code = f"reset after < {REFUSED_BEFORE // MB} MiB sent"
            finally:
                closed.cancel()
                if big:
                    streamed.append(sent)
            return f"{'50 MB' if big else '70 kB'}: {code}"
        finally:
            socket.abort()

    try:
        await _loop(1, deadline, limit, attack, one)
    finally:
        attack.notes.append(
            f"permessage-deflate offered {sum(offered.values())}×: declined "
            f"{offered['declined']}, accepted {offered['accepted']}"
        )
        if streamed:
            attack.notes.append(
                "of each 50 MB message the client got to send at most "
                f"{max(streamed) / MB:.2f} MiB (median "
                f"{statistics.median(streamed) / MB:.2f} MiB) before the close"
            )
        attack.past += offered["accepted"]


def _past_big_frames(attack: Attack) -> int:
    fine = re.compile(
        r"50 MB: (close 1009( .*)?|reset after < \d+ MiB sent)|70 kB: close 4413( .*)?"
    )
    return attack.past + sum(
        n for what, n in attack.outcomes.items() if not fine.fullmatch(what)
    )


# --- 2. Huge request heads ------------------------------------------------------------

BIG_HEADER = (
    b"GET /auth/config HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
    + b"a" * (8 * MB)
    + b"\r\n\r\n"
)
MANY_HEADERS = (
    b"GET /auth/config HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(50_000))
    + b"\r\n"
)


async def huge_heads(
    site: Site, address: str, attack: Attack, deadline: float, limit: int
) -> None:
    async def one(index: int) -> str:
        big = index % 2 == 1
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", site.port, local_addr=(address, 0)
        )
        head = memoryview(BIG_HEADER if big else MANY_HEADERS)
        try:
            answer = asyncio.ensure_future(reader.readline())
            sent = 0
            # 64 KiB at a time until the server answers: the same bytes on the
            # wire, without copying 8 MB per attempt into this process's buffers.
            with contextlib.suppress(ConnectionError):
                while sent < len(head) and not answer.done():
                    writer.write(head[sent : sent + len(CHUNK)])
                    sent += len(CHUNK)
                    await writer.drain()
                    await asyncio.sleep(0)
            try:
                async with asyncio.timeout(10):
                    line = await answer
            except (ConnectionError, asyncio.IncompleteReadError):
                line = b""
        finally:
            writer.transport.abort()
        name = "8 MB header" if big else "50,000 headers"
        if line.startswith(b"HTTP/"):
            return f"{name}: HTTP {line.split()[1].decode()}"
        return f"{name}: closed without an answer"

    await _loop(2, deadline, limit, attack, one)


def _past_huge_heads(attack: Attack) -> int:
    return sum(
        n
        for what, n in attack.outcomes.items()
        if not re.search(r": HTTP 4\d\d$|closed without an answer$", what)
    )


# --- 3 and 4. Socket floods -----------------------------------------------------------

BURST = 200  # sockets opened at once (at most FLOOD_CONCURRENCY handshakes)
FLOOD_CONCURRENCY = 64


async def _flood(
    site: Site,
    address: str,
    attack: Attack,
    deadline: float,
    limit: int,
    headers: dict[str, str] | None,
) -> None:
    """Bursts of sockets from ``address``; those the server keeps (pending
    authentication, or a session) are held until the phase ends."""
    held: dict[RawSocket, asyncio.Future[str]] = {}
    most = 0

    async def one() -> str:
        socket = await raw_socket(site.port, address, headers)
        if socket.status != 101:
            socket.abort()
            return f"HTTP {socket.status}"
        try:
            async with asyncio.timeout(1.0):
                opcode, payload = await socket.frame()
        except TimeoutError:
            # Waiting for its credentials, as it may: held, its close awaited.
            held[socket] = asyncio.ensure_future(socket.close_code())
            return "held pending"
        except (ConnectionError, asyncio.IncompleteReadError):
            socket.abort()
            return "connection lost"
        if opcode == 0x8:
            socket.abort()
            return _close_text(payload)
        if opcode == 0x1 and json.loads(payload).get("type") == "session":
            held[socket] = asyncio.ensure_future(socket.close_code())
            return "session opened (held)"
        socket.abort()
        return f"frame {opcode}"

    gate = asyncio.Semaphore(FLOOD_CONCURRENCY)

    async def gated() -> None:
        async with gate:
            try:
                async with asyncio.timeout(ATTEMPT_TIMEOUT):
                    outcome = await one()
            except Exception as e:
                outcome = f"client saw {type(e).__name__}"
            attack.outcomes[outcome] += 1

    def settle() -> None:
        """Count the held sockets the server has closed since (AUTH_TIMEOUT)."""
        for socket, closed in list(held.items()):
            if closed.done():
                del held[socket]
                socket.abort()
                code = "connection lost" if closed.exception() else closed.result()
                attack.outcomes[f"held, then {code}"] += 1

    try:
        while attack.attempts < limit and time.perf_counter() < deadline:
            burst = min(BURST, limit - attack.attempts)
            attack.attempts += burst
            await asyncio.gather(*(gated() for _ in range(burst)))
            settle()
            most = max(most, len(held))
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.perf_counter())))
    finally:
        settle()
        for socket, closed in held.items():
            closed.cancel()
            socket.abort()
        attack.notes.append(f"at most {most} held open at once")
        attack.most_held = most


async def pending_flood(
    site: Site, address: str, attack: Attack, deadline: float, limit: int
) -> None:
    await _flood(site, address, attack, deadline, limit, None)


async def token_flood(
    site: Site, address: str, attack: Attack, deadline: float, limit: int
) -> None:
    auth = {"Authorization": f"Bearer {site.attacker_token}"}
    await _flood(site, address, attack, deadline, limit, auth)


def _past_pending(attack: Attack) -> int:
    return max(0, attack.most_held - PENDING_CAP)


def _past_token(attack: Attack) -> int:
    return max(0, attack.outcomes["session opened (held)"] - CREDENTIAL_CAP)


# --- 5. Bad API keys ------------------------------------------------------------------


async def bad_api_keys(
    site: Site, address: str, attack: Attack, deadline: float, limit: int
) -> None:
    client = LoadClient(site.port, 4, local_address=address)
    body = json.dumps({"identifier": "eve"}).encode()

    async def one(index: int) -> str:
        headers = {
            "Authorization": f"Api-Key ca_{index:08x}.{'n' * 43}",
            "Content-Type": "application/json",
        }
        status, _ = await client.request("POST", "/auth/copilot/token", headers, body)
        return f"HTTP {status}"

    try:
        await _loop(4, deadline, limit, attack, one)
    finally:
        await client.aclose()


def _past_api_keys(attack: Attack) -> int:
    return sum(n for what, n in attack.outcomes.items() if what != "HTTP 401")


# --- 6. Password guessing -------------------------------------------------------------


async def guess_api(
    site: Site, address: str, attack: Attack, deadline: float, limit: int
) -> None:
    client = LoadClient(site.port, 4, local_address=address)

    async def one(index: int) -> str:
        headers = {
            "Content-Type": "application/json",
            # Made up: the peer is no trusted proxy, so this must not count.
            "X-Forwarded-For": f"198.51.100.{index % 250 + 1}",
        }
        body = json.dumps({"username": GUESSED_USER, "password": f"guess {index}"})
        status, _ = await client.request("POST", "/auth/login", headers, body.encode())
        return f"HTTP {status}"

    try:
        await _loop(4, deadline, limit, attack, one)
    finally:
        await client.aclose()


def _past_guess_api(attack: Attack) -> int:
    checked = attack.outcomes["HTTP 401"]
    return max(0, checked - LOGIN_FAILURE_LIMIT) + attack.outcomes["HTTP 200"]


_CSRF = re.compile(rb'name="csrfmiddlewaretoken" value="([^"]+)"')


async def guess_admin(
    site: Site, address: str, attack: Attack, deadline: float, limit: int
) -> None:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(
        base_url=site.url, transport=transport, timeout=ATTEMPT_TIMEOUT
    ) as http:
        page = await http.get("/admin/login/", params={"next": "/admin/"})
        found = _CSRF.search(page.content)
        if page.status_code != 200 or found is None:
            attack.notes.append(f"no login form: HTTP {page.status_code}")
            return
        token = found.group(1).decode()

        async def one(index: int) -> str:
            response = await http.post(
                "/admin/login/?next=/admin/",
                data={
                    "csrfmiddlewaretoken": token,
                    "username": ADMIN_GUESSED_USER,
                    "password": f"guess {index}",
                    "next": "/admin/",
                },
                headers={"X-Forwarded-For": f"198.51.100.{index % 250 + 1}"},
            )
            return f"HTTP {response.status_code}"

        await _loop(2, deadline, limit, attack, one)


def _past_guess_admin(attack: Attack) -> int:
    # 200: the form shown again, the password checked and wrong; 302: logged in.
    checked = attack.outcomes["HTTP 200"]
    return max(0, checked - LOGIN_FAILURE_LIMIT) + attack.outcomes["HTTP 302"]


# --- 7. Foreign origins ---------------------------------------------------------------


async def foreign_origins(
    site: Site, address: str, attack: Attack, deadline: float, limit: int
) -> None:
    origins = (
        "https://evil.example",
        f"http://127.0.0.1:{site.port + 1}",  # another app of the same host
        f"http://127.0.0.1:{site.port}.evil.example",
        "null",
    )

    async def one(index: int) -> str:
        origin = {"Origin": origins[index % len(origins)]}
        socket = await raw_socket(site.port, address, origin)
        socket.abort()
        return "opened" if socket.status == 101 else f"HTTP {socket.status}"

    await _loop(4, deadline, limit, attack, one)


def _past_origins(attack: Attack) -> int:
    return sum(n for what, n in attack.outcomes.items() if what != "HTTP 403")


ABUSES: tuple[Abuse, ...] = (
    Abuse(
        "frames",
        "WS frames over the limit (50 MB / 70 kB, deflate offered)",
        "1009 on the frame header, before its bytes are read (> 128 KiB, "
        "--ws-max-size); 4413 (> 64 KiB, chatauth); deflate declined",
        50_000,
        big_frames,
        _past_big_frames,
    ),
    Abuse(
        "heads",
        "huge request heads (8 MB header / 50,000 headers)",
        "HTTP 400 past 16 KiB of head (h11)",
        50_000,
        huge_heads,
        _past_huge_heads,
    ),
    Abuse(
        "pending",
        "unauthenticated sockets from one address",
        f"4429 pending_sockets_per_address past {PENDING_CAP} pending; 4408 after "
        f"AUTH_TIMEOUT {AUTH_TIMEOUT:g} s",
        20_000,
        pending_flood,
        _past_pending,
    ),
    Abuse(
        "token",
        "sockets with one valid token",
        f"4429 sockets_per_credential past {CREDENTIAL_CAP} live",
        20_000,
        token_flood,
        _past_token,
        # Each session the cap admits: its row, its opened and closed events.
        admitted_rows=3 * CREDENTIAL_CAP,
    ),
    Abuse(
        "api_keys",
        "bad API keys on POST auth/copilot/token",
        "401 each; refusals counted, not one row each",
        50_000,
        bad_api_keys,
        _past_api_keys,
    ),
    Abuse(
        "guess_api",
        "password guessing on auth/login (spoofed X-Forwarded-For)",
        f"429 after {LOGIN_FAILURE_LIMIT} failures per address (5 min)",
        50_000,
        guess_api,
        _past_guess_api,
        admitted_rows=LOGIN_FAILURE_LIMIT,  # a login_failed row per checked guess
    ),
    Abuse(
        "guess_admin",
        "password guessing on /admin/login/ (Django's form)",
        f"429 after {LOGIN_FAILURE_LIMIT} failures per address (5 min)",
        20_000,
        guess_admin,
        _past_guess_admin,
        admitted_rows=LOGIN_FAILURE_LIMIT,
    ),
    Abuse(
        "origin",
        "WS handshakes from foreign origins",
        "HTTP 403 at the handshake",
        50_000,
        foreign_origins,
        _past_origins,
    ),
)


def attacker_address(index: int) -> str:
    return f"127.0.0.{10 + index}"


# --- The legitimate user (its own process) --------------------------------------------

#: (time, "me" or "echo", latency in seconds or None, error)
Sample = tuple[float, str, float | None, str]


def legit_main(port: int, token: str, stop: Any, conn: Any, limit: float) -> None:
    """The legitimate user's process: measure until ``stop`` is set (or
    ``limit`` seconds), then send the samples through ``conn``."""
    samples: list[Sample] = []
    try:
        asyncio.run(_legit(port, token, stop, samples, limit))
    finally:
        conn.send(samples)
        conn.close()


async def _legit(
    port: int, token: str, stop: Any, samples: list[Sample], limit: float
) -> None:
    clock = time.perf_counter
    end = clock() + limit
    auth = {"Authorization": f"Bearer {token}"}
    client = LoadClient(port, 1)

    def going() -> bool:
        return clock() < end and not stop.is_set()

    async def me() -> None:
        while going():
            started = clock()
            try:
                async with asyncio.timeout(10):
                    status, _ = await client.request("GET", "/auth/me", auth)
                error = "" if status == 200 else f"HTTP {status}"
            except Exception as e:
                error = type(e).__name__
            took = clock() - started
            samples.append((started, "me", None if error else took, error))
            await asyncio.sleep(ME_INTERVAL)

    async def echo() -> None:
        url = f"ws://{LEGIT_ADDRESS}:{port}{CHAT_PATH}"
        socket: ClientConnection | None = None
        message = json.dumps({"type": "message", "content": "x"})
        while going():
            started = clock()
            try:
                if socket is None:
                    socket = await open_session(url, token)
                started = clock()
                async with asyncio.timeout(10):
                    await socket.send(message)
                    while True:  # anything else the server sends is skipped
                        reply = json.loads(await socket.recv())
                        if reply.get("type") == "message":
                            break
                error = "" if reply.get("content") == "x" else "wrong echo"
            except Exception as e:
                error = f"{type(e).__name__}" + (
                    f" {_close_code(socket)}" if socket is not None else ""
                )
                if socket is not None:
                    _abort(socket)
                socket = None
            took = clock() - started
            samples.append((started, "echo", None if error else took, error))
            await asyncio.sleep(ECHO_INTERVAL)
        if socket is not None:
            with contextlib.suppress(Exception):
                await socket.close()

    try:
        await asyncio.gather(me(), echo())
    finally:
        await client.aclose()


# --- The server -----------------------------------------------------------------------


def start_server(env: dict[str, str], log_dir: Path, timeout: float = 60) -> Server:
    """The README's production command, one worker, on a free port."""
    port = free_port()
    log = log_dir / f"abuse-server-{port}.log"
    command = [
        sys.executable, "-m", "uvicorn", "project.asgi:application",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--proxy-headers", f"--forwarded-allow-ips={LEGIT_ADDRESS}",
        *UVICORN_LIMITS,
    ]  # fmt: skip
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    server = Server(port, process, log, env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.output()[-3000:]}")
        try:
            httpx.get(server.url + "/auth/config", timeout=5).raise_for_status()
            return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not start in {timeout}s:\n{server.output()}")


class RssSampler:
    """The server's RSS every :data:`RSS_EVERY` seconds, in a thread; on
    PostgreSQL, also the connections open to the server's database every
    :data:`PG_EVERY` seconds (``pg_stat_activity``), in another."""

    def __init__(self, pid: int, database: str) -> None:
        self.pid = pid
        self.database = database
        self.samples: list[tuple[float, int]] = []
        self.connections: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)]
        if not database.startswith("sqlite"):
            self._threads.append(threading.Thread(target=self._pg, daemon=True))

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                self.samples.append((time.perf_counter(), rss_bytes(self.pid)))
            self._stop.wait(RSS_EVERY)

    def _pg(self) -> None:
        import psycopg

        name = self.database.rsplit("/", 1)[-1]
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        try:
            with psycopg.connect(PG_ADMIN, autocommit=True) as db:
                while not self._stop.is_set():
                    found = db.execute(query, (name,)).fetchone()
                    self.connections.append((time.perf_counter(), int(found[0])))
                    self._stop.wait(PG_EVERY)
        except psycopg.Error:  # no figure, the run goes on
            return

    def __enter__(self) -> RssSampler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def peak(self, start: float, end: float) -> int:
        return max((r for t, r in self.samples if start <= t <= end), default=0)

    def connections_peak(self, start: float, end: float) -> int | None:
        if not self.connections:
            return None
        return max((n for t, n in self.connections if start <= t <= end), default=0)


@dataclass
class Phase:
    name: str
    abuse: Abuse | None
    address: str
    start: float = 0.0
    end: float = 0.0
    attack: Attack = field(default_factory=Attack)
    server_cpu: float = 0.0
    client_cpu: float = 0.0  # this process: the attacker (and the RSS sampler)
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0  # after the cool-down
    log_lines: int = 0
    log_sample: str = ""
    crashed: str = ""
    machine: CpuMeter | None = None  # cores busy: ours, everybody else's
    connections: int | None = None  # most PostgreSQL connections of the server


def _log_lines(server: Server) -> list[str]:
    return server.output().splitlines()


async def _phases(
    site: Site,
    server: Server,
    rss: RssSampler,
    profile: dict[str, float],
) -> list[Phase]:
    seconds, cool, scale = profile["seconds"], profile["cool"], profile["scale"]
    pid = server.process.pid
    plan = [Phase("no abuse (before)", None, "")]
    plan += [
        Phase(abuse.label, abuse, attacker_address(i)) for i, abuse in enumerate(ABUSES)
    ]
    plan.append(Phase("no abuse (after)", None, ""))
    for phase in plan:
        print(f"   phase: {phase.name}", file=sys.stderr, flush=True)
        lines_before = len(_log_lines(server))
        phase.rss_before = rss_bytes(pid)
        cpu, own = process_cpu(pid), time.process_time()
        with CpuMeter([pid]) as phase.machine:
            phase.start = time.perf_counter()
            deadline = phase.start + seconds
            if phase.abuse is None:
                await asyncio.sleep(seconds)
            else:
                limit = max(10, int(phase.abuse.attempts * scale))
                try:
                    async with asyncio.timeout(seconds + 60):
                        await phase.abuse.run(
                            site, phase.address, phase.attack, deadline, limit
                        )
                except Exception as e:  # reported on the phase's rows
                    phase.crashed = f"{type(e).__name__}: {e}"[:200]
            phase.end = time.perf_counter()
        phase.server_cpu = process_cpu(pid) - cpu
        phase.client_cpu = time.process_time() - own
        phase.rss_peak = rss.peak(phase.start, phase.end)
        phase.connections = rss.connections_peak(phase.start, phase.end)
        await asyncio.sleep(cool)
        phase.rss_after = rss_bytes(pid)
        new_lines = _log_lines(server)[lines_before:]
        phase.log_lines = len(new_lines)
        phase.log_sample = _common_line(new_lines)
    return plan


def _common_line(lines: list[str]) -> str:
    """The lines logged most, counted (timestamps and client ports left out)."""
    texts = Counter(
        re.sub(r"^[\d-]+ [\d:,]+ |:\d+ - ", " ", line).strip()[:90] for line in lines
    )
    return "; ".join(f"{n:,}× {text!r}" for text, n in texts.most_common(3))


# --- Rows in the database -------------------------------------------------------------


def _count_rows(database: str) -> dict[str, Any]:
    """Audit rows and events (sum of ``count``) per address, event and reason;
    chat-session rows per address; denylist rows."""
    if database.startswith("sqlite:///"):
        import sqlite3

        path = database.removeprefix("sqlite:///")
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        ) as db:
            audit = db.execute(
                "SELECT ip, event, reason, count(*), sum(count) FROM "
                "chatauth_auditevent GROUP BY ip, event, reason"
            ).fetchall()
            sessions = db.execute(
                "SELECT ip, count(*) FROM chatauth_chatsession GROUP BY ip"
            ).fetchall()
            denied = db.execute("SELECT count(*) FROM chatauth_revokedtoken").fetchone()
    else:
        import psycopg

        with psycopg.connect(database) as db:
            audit = db.execute(
                "SELECT host(ip), event, reason, count(*), sum(count) FROM "
                "chatauth_auditevent GROUP BY 1, 2, 3"
            ).fetchall()
            sessions = db.execute(
                "SELECT host(ip), count(*) FROM chatauth_chatsession GROUP BY 1"
            ).fetchall()
            denied = db.execute("SELECT count(*) FROM chatauth_revokedtoken").fetchone()
    return {
        "audit": {(ip, e, r): (int(n), int(c)) for ip, e, r, n, c in audit},
        "sessions": {ip: int(n) for ip, n in sessions},
        "denylist": int(denied[0]),
    }


@dataclass
class Written:
    rows: int = 0  # audit + chat-session rows
    events: int = 0  # what the audit rows stand for (sum of ``count``)
    by_kind: Counter[str] = field(default_factory=Counter)  # "event/reason" → rows
    events_by_kind: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        parts = [
            f"{self.by_kind[k]} {k}"
            + (
                f" (standing for {self.events_by_kind[k]:,})"
                if self.events_by_kind[k] != self.by_kind[k]
                else ""
            )
            for k in sorted(self.by_kind)
        ]
        return ", ".join(parts) or "none"


def _written(before: dict[str, Any], after: dict[str, Any], address: str) -> Written:
    found = Written()
    for (ip, event, reason), (rows, events) in after["audit"].items():
        if ip != address:
            continue
        was_rows, was_events = before["audit"].get((ip, event, reason), (0, 0))
        if rows - was_rows:
            kind = f"{event}/{reason}" if reason else event
            found.by_kind[kind] += rows - was_rows
            found.events_by_kind[kind] += events - was_events
            found.rows += rows - was_rows
            found.events += events - was_events
    sessions = after["sessions"].get(address, 0) - before["sessions"].get(address, 0)
    if sessions:
        found.by_kind["chat session rows"] += sessions
        found.events_by_kind["chat session rows"] += sessions
        found.rows += sessions
        found.events += sessions
    return found


# --- The run --------------------------------------------------------------------------


def run(quick: bool) -> list[Row]:
    profile = QUICK if quick else FULL
    raise_nofile()
    space = workspace()
    production = redis_up() and postgres_up()
    with contextlib.ExitStack() as stack:
        if production:
            database = stack.enter_context(space.postgres("abuse"))
            setup = (
                f"PostgreSQL ({PG[0]}:{PG[1]}, a fresh database) and Redis "
                f"({REDIS[0]}:{REDIS[1]}: cache and channel layer)"
            )
            extra = {
                "REDIS_URL": f"redis://{REDIS[0]}:{REDIS[1]}/0",
                "REDIS_PREFIX": space.prefix,
            }
        else:
            database = space.database("abuse")
            setup = (
                "the embedded defaults (SQLite, file cache, in-memory layer): "
                "PostgreSQL or Redis not reachable"
            )
            extra = {}
        env = server_env(
            DJANGO_SETTINGS_MODULE="project.settings",
            DATABASE_URL=database,
            **extra,
        )
        server = start_server(env, space.dir)
        try:
            result = _measure(server, database, profile)
        finally:
            server.stop()  # lifespan shutdown: the counted refusals are written
        result["after_stop"] = _count_rows(database)
        result["exit_code"] = server.process.returncode
        result["log_tail"] = server.output()[-2000:]
        result["tracebacks"], result["raised"] = _tracebacks(server.output())
    dump = os.environ.get("BENCH_ABUSE_DUMP")
    if dump:  # every sample and phase window, to look at the latencies closely
        Path(dump).write_text(
            json.dumps(
                {
                    "phases": [(p.name, p.start, p.end) for p in result["phases"]],
                    "samples": result["samples"],
                }
            )
        )
    return _rows(result, profile, setup)


def _measure(server: Server, database: str, profile: dict[str, float]) -> dict:
    legit_token = login(server, LEGIT_USER)["access_token"]
    attacker_token = login(server, ATTACKER_USER)["access_token"]
    site = Site(server.port, attacker_token)
    before = _count_rows(database)
    budget = (len(ABUSES) + 2) * (profile["seconds"] + profile["cool"] + 60) + 60
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    receiving, sending = context.Pipe(duplex=False)
    legit = context.Process(
        target=legit_main,
        args=(server.port, legit_token, stop, sending, budget),
        daemon=True,
    )
    legit.start()
    sending.close()
    samples: list[Sample] = []
    try:
        time.sleep(2.0)  # the legitimate user's socket open, its first requests
        with (
            RssSampler(server.process.pid, database) as rss,
            CpuMeter([server.process.pid]) as cpu,
        ):
            phases = asyncio.run(_phases(site, server, rss, profile))
    finally:
        stop.set()
        if receiving.poll(30):
            samples = receiving.recv()
        legit.join(10)
        if legit.is_alive():
            legit.terminate()
            legit.join(5)
    return {
        "phases": phases,
        "samples": samples,
        "before": before,
        "before_stop": _count_rows(database),
        "cpu": cpu,
    }


# --- The table ------------------------------------------------------------------------


@dataclass
class Latency:
    p50: float = math.nan  # ms
    p99: float = math.nan
    count: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, samples: list[Sample]) -> Latency:
        good = [s[2] * 1e3 for s in samples if s[2] is not None]
        found = cls(count=len(good), errors=Counter(s[3] for s in samples if s[3]))
        if good:
            found.p50, found.p99 = statistics.median(good), percentile(good, 99)
        return found

    def text(self) -> str:
        return f"{self.p50:.2f}/{self.p99:.2f}"


def _latencies(samples: list[Sample], kind: str, phases: list[Phase]) -> Latency:
    chosen = [
        s
        for s in samples
        if s[1] == kind and any(p.start <= s[0] <= p.end for p in phases)
    ]
    return Latency.of(chosen)


def _rows(result: dict[str, Any], profile: dict[str, float], setup: str) -> list[Row]:
    phases: list[Phase] = result["phases"]
    samples: list[Sample] = result["samples"]
    quiet = [p for p in phases if p.abuse is None]
    base = {k: _latencies(samples, k, quiet) for k in ("me", "echo")}
    seconds = profile["seconds"]
    flushes = math.ceil(seconds / REFUSAL_INTERVAL) + 1
    before, after = result["before"], result["after_stop"]
    mib = 2**20
    rows: list[Row] = []
    table = [
        (
            "abuse",
            "bound in force",
            "attacker got",
            "RSS +MiB",
            "CPU s",
            "DB conns",
            "rows (events)",
            "auth/me p50/p99 ms",
            "echo p50/p99 ms",
        ),
        (
            "no abuse (both phases)",
            "",
            "",
            "",
            "",
            _conns(max((p.connections or 0) for p in quiet)),
            "",
            base["me"].text(),
            base["echo"].text(),
        ),
    ]
    cpu: CpuMeter = result["cpu"]
    for phase in quiet:
        me, echo = (_latencies(samples, k, [phase]) for k in ("me", "echo"))
        rows.append(
            Row(
                f"{phase.name}: legit auth/me p99",
                me.p99,
                "ms",
                note=f"p50 {me.p50:.2f} ms, {me.count} requests; socket echo p50 "
                f"{echo.p50:.2f} ms, p99 {echo.p99:.2f} ms, {echo.count} echoes; "
                f"server CPU {phase.server_cpu:.2f} s, RSS "
                f"{phase.rss_before / mib:.1f} MiB, PostgreSQL connections at most "
                f"{_conns(phase.connections)}; {_load(phase)}",
                errors=sum(me.errors.values()) + sum(echo.errors.values()),
                stats={"me": me.__dict__, "echo": echo.__dict__},
            )
        )
    for index, phase in enumerate(phases):
        abuse = phase.abuse
        if abuse is None:
            continue
        me, echo = (_latencies(samples, k, [phase]) for k in ("me", "echo"))
        written = _written(before, after, phase.address)
        growth = (phase.rss_peak - phase.rss_before) / mib
        kept = (phase.rss_after - phase.rss_before) / mib
        past = abuse.past(phase.attack)
        elapsed = phase.end - phase.start
        rate = phase.attack.attempts / elapsed if elapsed > 0 else 0.0
        got = phase.attack.describe()
        short = abuse.key
        rows_bound = abuse.admitted_rows + 2 * flushes
        attempts = max(1, phase.attack.attempts)
        per_attempt = phase.server_cpu / attempts * 1e3
        legit_errors = sum(me.errors.values()) + sum(echo.errors.values())
        why = "; ".join(
            f"{n}× {e}" for e, n in (me.errors + echo.errors).most_common(3)
        )
        rows += [
            Row(
                f"{short}: attempts past the bound",
                float(past),
                "",
                target=at_most(0, on="value"),
                errors=int(bool(phase.crashed)),
                note=f"{abuse.label} from {phase.address}; bound: {abuse.bound}; "
                f"{phase.attack.attempts:,} attempts in {elapsed:.1f} s "
                f"({rate:,.0f}/s): {got}"
                + "".join(f"; {n}" for n in phase.attack.notes)
                + f"; attacker client CPU {phase.client_cpu:.2f} s"
                + (f"; CRASHED: {phase.crashed}" if phase.crashed else ""),
                stats={
                    "attempts": phase.attack.attempts,
                    "outcomes": dict(phase.attack.outcomes),
                    "seconds": elapsed,
                    "address": phase.address,
                },
            ),
            Row(
                f"{short}: server RSS growth (peak)",
                growth,
                "MiB",
                target=at_most(RSS_BOUND_MIB, on="value", unit="MiB"),
                note=f"RSS {phase.rss_before / mib:.1f} MiB before, peak "
                f"{phase.rss_peak / mib:.1f} MiB during, {kept:+.1f} MiB kept "
                f"{profile['cool']:g} s after",
            ),
            Row(
                f"{short}: server CPU",
                phase.server_cpu,
                "s",
                note=f"{phase.server_cpu / elapsed:.2f} cores over the phase (the "
                "uvicorn process; the database and Redis are other processes), "
                f"{per_attempt:.2f} ms per attempt; PostgreSQL connections of the "
                f"server: at most {_conns(phase.connections)} at once; "
                f"{phase.log_lines:,} log lines"
                + (f", most {phase.log_sample}" if phase.log_sample else "")
                + f"; {phase.machine.describe()}",
            ),
            Row(
                f"{short}: audit and session rows written",
                float(written.rows),
                "rows",
                target=at_most(rows_bound, on="value"),
                note=f"{written.describe()}; bound: {abuse.admitted_rows} the cap "
                f"admits + 2 refusal keys × {flushes} flushes (one every "
                f"{REFUSAL_INTERVAL:g} s, and at shutdown)",
                stats={
                    "by_kind": dict(written.by_kind),
                    "events_by_kind": dict(written.events_by_kind),
                },
            ),
            Row(
                f"{short}: legit auth/me p99",
                me.p99,
                "ms",
                baseline=base["me"].p99,
                errors=legit_errors,
                note=f"p50 {me.p50:.2f} ms vs {base['me'].p50:.2f} ms with no "
                f"abuse; {me.count} requests; {_load(phase)}"
                + (f"; legit errors: {why}" if why else ""),
            ),
            Row(
                f"{short}: legit socket echo p99",
                echo.p99,
                "ms",
                baseline=base["echo"].p99,
                note=f"p50 {echo.p50:.2f} ms vs {base['echo'].p50:.2f} ms with no "
                f"abuse; {echo.count} echoes (p99 of so few is about the maximum)",
            ),
        ]
        table.append(
            (
                f"{index}. {abuse.label}",
                abuse.bound,
                f"{phase.attack.attempts:,} tried: {got}",
                f"{growth:+.1f}",
                f"{phase.server_cpu:.2f}",
                _conns(phase.connections),
                f"{written.rows} ({written.events:,})",
                me.text(),
                echo.text(),
            )
        )
    shutdown = _written_total(result["before_stop"], after)
    rows.append(
        Row(
            "abuse: tracebacks in the server log",
            float(result["tracebacks"]),
            "",
            target=at_most(0, on="value"),
            note=(
                "raised: "
                + "; ".join(f"{n}× {e}" for e, n in result["raised"].most_common(3))
                + "; "
                if result["raised"]
                else ""
            )
            + f"server: uvicorn, 1 worker, the README's production flags, "
            f"project.settings (DEBUG off), {setup}; phases of {seconds:g} s, "
            f"{profile['cool']:g} s apart; legitimate user from {LEGIT_ADDRESS} in "
            f"its own process; refusal rows written at shutdown: {shutdown}; "
            f"denylist rows written during the run: "
            f"{after['denylist'] - before['denylist']}; server exit status "
            f"{result['exit_code']}; {cpu.describe()}",
            stats={"table": table},
        )
    )
    print(_format_table(table), file=sys.stderr)
    return rows


def _conns(peak: int | None) -> str:
    return "—" if peak is None else str(peak)


def _tracebacks(log: str) -> tuple[int, Counter[str]]:
    """How many tracebacks ``log`` holds, and the exception each ended with."""
    raised: Counter[str] = Counter()
    inside = False
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            inside = True
        elif inside and line and not line.startswith(" "):
            if not line.startswith(("The above exception", "During handling")):
                raised[line[:160]] += 1
            inside = False
    return log.count("Traceback (most recent call last)"), raised


def _load(phase: Phase) -> str:
    meter = phase.machine
    if meter is None or not meter.wall:
        return ""
    server, attacker = phase.server_cpu / meter.wall, phase.client_cpu / meter.wall
    return (
        f"cores busy: this run {meter.ours:.2f} (server {server:.2f}, attacker "
        f"{attacker:.2f}), other processes {meter.others:.2f} of {os.cpu_count()}"
    )


def _written_total(before: dict[str, Any], after: dict[str, Any]) -> int:
    return sum(n for n, _ in after["audit"].values()) - sum(
        n for n, _ in before["audit"].values()
    )


def _format_table(table: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]

    def line(values: tuple[str, ...]) -> str:
        return " | ".join(
            v.ljust(w) for v, w in zip(values, widths, strict=True)
        ).rstrip()

    out = [line(table[0]), "-+-".join("-" * w for w in widths)]
    out += [line(r) for r in table[1:]]
    return "\n".join(out)
