"""WebSocket session calls for the WebSocket benchmarks (``websockets`` client).

One *session* is what the issue's connect-rate measure counts: open the socket,
read the ``{"type": "session"}`` frame, send one ``{"type": "message"}``, read its
reply, close.  :func:`session_call` makes it a :data:`~bench.measure.Call` for
:func:`~bench.measure.compare_load`; run it against ``ws/chat/`` with a token
and against ``bench.site.constants.BARE_WS_PATH`` (the bare consumer) without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import resource
from collections.abc import Sequence
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from bench.measure import Call, CallFailed


async def chat_session(url: str, token: str | None = None, content: str = "hi") -> bool:
    """One whole session; True when every frame was what the protocol says."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with connect(
        url, additional_headers=headers, open_timeout=10, close_timeout=10
    ) as socket:
        session = json.loads(await socket.recv())
        if session.get("type") != "session":
            return False
        await socket.send(json.dumps({"type": "message", "content": content}))
        reply = json.loads(await socket.recv())
        return reply == {"type": "message", "content": content}


def session_call(url: str, tokens: Sequence[str] = ()) -> Call:
    """One session per call; with ``tokens``, each call uses the next one in
    turn (clients of several users, each reconnecting with its own token)."""
    turn = itertools.cycle(tokens) if tokens else itertools.repeat(None)

    async def call() -> bool:
        return await chat_session(url, next(turn))

    return call


# --- Idle sessions: the "work already on the server" of the scaling measures -------

#: Each idle socket holds one file descriptor here and one in the server.
NOFILE_NEEDED = 12_000


def raise_nofile(wanted: int = NOFILE_NEEDED) -> int:
    """Raise this process's soft open-file limit towards ``wanted`` (never past
    the hard limit); servers started afterwards inherit it.  The new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


async def open_session(url: str, token: str | None = None) -> ClientConnection:
    """An open chat socket whose ``session`` frame has been read (no pings: an
    idle socket must cost the server nothing but its memory)."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    socket = await connect(
        url,
        additional_headers=headers,
        open_timeout=30,
        close_timeout=10,
        ping_interval=None,
        max_queue=4,
    )
    try:
        async with asyncio.timeout(30):
            session = json.loads(await socket.recv())
        if session.get("type") != "session":
            raise CallFailed(f"expected a session frame, got {session!r:.80}")
    except BaseException:
        socket.transport.abort()
        raise
    return socket


async def open_sessions(
    url: str,
    tokens: Sequence[str | None],
    count: int,
    *,
    concurrency: int = 32,
    timeout: float = 300,
) -> list[ClientConnection]:
    """``count`` open sessions, tokens used round-robin, ``concurrency`` handshakes
    at a time; all or nothing (on failure the opened ones are closed)."""
    opened: list[ClientConnection] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            opened.append(await open_session(url, tokens[index % len(tokens)]))

    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(one(i) for i in range(count)))
    except BaseException:
        await close_sessions(opened)
        raise
    return opened


async def close_sessions(
    sockets: Sequence[ClientConnection], *, concurrency: int = 64, timeout: float = 60
) -> None:
    """Close ``sockets`` cleanly (close handshake), a few at a time; whatever is
    still open after ``timeout`` seconds is aborted."""
    gate = asyncio.Semaphore(concurrency)

    async def one(socket: ClientConnection) -> None:
        async with gate:
            with contextlib.suppress(Exception):
                await socket.close()

    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(one(s) for s in sockets))
    except TimeoutError:
        pass
    for socket in sockets:
        if socket.transport is not None and not socket.transport.is_closing():
            socket.transport.abort()


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (``VmRSS`` in ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
