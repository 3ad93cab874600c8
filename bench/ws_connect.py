"""WebSocket sessions/s (connect, session frame, echo, close) vs a bare consumer.

One uvicorn process (1 worker, DEBUG off, SQLite, local-memory cache, in-memory
channel layer: the demo as ``make demo`` runs it, but for the cache, which the
demo keeps in files now; ``BENCH_CACHE=locmem``) serves both: ``ws/chat/``
(origin check, bearer-token check with revocation, groups of user and token,
the second revocation check, the session row committed before the session
frame (the record of its opening and end: no audit rows), expiry timer, the
``on_message`` echo) and ``/bench/ws/bare``, a Channels consumer speaking the
same frames with no auth at all.  A *session* is one whole client
conversation: open, read ``{"type": "session"}``, send ``{"type": "message"}``,
read the echo, close.  The chat sessions take the bench users' tokens in turn
(clients of 8 users, each reconnecting with its own token, as the widget does);
a token's first sight is the ``verify`` benchmark.  Rounds of the two
alternate (A B, B A, ...); the ratio is the median of the back-to-back pairs.

Then the same at concurrency 16 with 100, 1,000 and 5,000 idle authenticated
sessions already open on the server (how the cost grows with the work the
server holds); the bare consumer is measured beside them with the same idle
sessions open.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.measure import CpuMeter, Row, Series, at_least, compare_load, paired_ratio
from bench.servers import USERS, login, workspace
from bench.site.constants import BARE_WS_PATH
from bench.ws import close_sessions, open_sessions, raise_nofile, session_call

CHAT_PATH = "/ws/chat/"
CONCURRENCY = (1, 16)
IDLE = (100, 1_000, 5_000)
IDLE_CONCURRENCY = 16
FULL = {"rounds": 10, "duration": 1.5, "warmup": 1.5}
QUICK = {"rounds": 2, "duration": 0.5, "warmup": 0.3}
QUICK_IDLE = (100,)


def run(quick: bool) -> list[Row]:
    profile = QUICK if quick else FULL
    raise_nofile()
    with workspace().server("ws_connect", BENCH_CACHE="locmem") as server:
        tokens = [login(server, name)["access_token"] for name in USERS]
        chat_url, bare_url = server.ws_url + CHAT_PATH, server.ws_url + BARE_WS_PATH
        asyncio.run(_check(chat_url, bare_url, tokens[0]))
        rows: list[Row] = []
        for concurrency in CONCURRENCY:
            rows.append(
                _row(
                    f"WS sessions/s, conc {concurrency}",
                    *_measure(
                        server,
                        chat_url,
                        bare_url,
                        concurrency,
                        0,
                        tokens,
                        profile,
                    ),  # fmt: skip
                    concurrency=concurrency,
                    target=True,
                )
            )
        for idle in QUICK_IDLE if quick else IDLE:
            rows.append(
                _row(
                    f"WS sessions/s, conc {IDLE_CONCURRENCY}, "
                    f"{idle:,} idle sessions open",
                    *_measure(
                        server,
                        chat_url,
                        bare_url,
                        IDLE_CONCURRENCY,
                        idle,
                        tokens,
                        profile,
                    ),  # fmt: skip
                    concurrency=IDLE_CONCURRENCY,
                    target=False,
                )
            )
    return rows


async def _check(chat_url: str, bare_url: str, token: str) -> None:
    """Both routes speak the protocol, and ``ws/chat/`` really checks the token."""
    for url, with_token in ((chat_url, token), (bare_url, None)):
        if not await session_call(url, [with_token] if with_token else [])():
            raise AssertionError(f"{url} did not answer a session as expected")
    try:
        async with connect(
            chat_url, additional_headers={"Authorization": "Bearer x.y.z"}
        ) as socket:
            await asyncio.wait_for(socket.recv(), 10)
    except ConnectionClosed as e:
        if e.rcvd is None or e.rcvd.code != 4401:
            raise AssertionError(f"a bad token closed with {e.rcvd}, not 4401") from e
    else:
        raise AssertionError("ws/chat/ accepted a session with a bad token")


def _measure(
    server: object,
    chat_url: str,
    bare_url: str,
    concurrency: int,
    idle: int,
    tokens: list[str],
    profile: dict,
) -> tuple[Series, Series, CpuMeter]:
    async def go() -> dict[str, Series]:
        sockets = await open_sessions(chat_url, tokens, idle) if idle else []
        try:
            return await compare_load(
                {
                    "chat": session_call(chat_url, tokens),
                    "bare": session_call(bare_url),
                },
                concurrency=concurrency,
                **profile,
            )
        finally:
            await close_sessions(sockets)

    with CpuMeter([server.process.pid]) as cpu:  # type: ignore[attr-defined]
        results = asyncio.run(go())
    return results["chat"], results["bare"], cpu


def _row(
    measure: str,
    chat: Series,
    bare: Series,
    cpu: CpuMeter,
    *,
    concurrency: int,
    target: bool,
) -> Row:
    note = "; ".join(
        [
            f"conc {concurrency}, 1 uvicorn worker, local-memory cache, in-memory "
            "layer; value and baseline are median round rates, ratio the median of "
            f"{len(chat.rounds)} back-to-back round pairs"
            + ("" if target else " (informational: how cost grows)"),
            chat.describe("ws/chat/"),
            bare.describe("bare consumer"),
            cpu.describe(),
        ]
    )
    return Row(
        measure,
        chat.rate,
        "sessions/s",
        baseline=bare.rate,
        target=at_least(0.90) if target else None,
        paired=paired_ratio(chat, bare),
        note=note,
        errors=chat.errors + bare.errors,
        stats={"chat": chat.summary(), "bare": bare.summary(), "cpu": cpu.summary()},
    )
