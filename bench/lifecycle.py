"""Credential-ending events → the socket's close frame, with and without the channel
layer; and what the heartbeat's sweep costs.

**Fan-out.**  Two uvicorn processes, A and B (1 worker each), share a fresh
PostgreSQL database (created for the run, dropped after) and Redis (cache and
``channels_redis`` layer, under this run's own prefix), as two workers of a
scaled-out deployment; a third process, the *actor* (``bench.site.actor``, the
same settings), stands for whatever else writes to the database: a
``manage.py shell``, a management command, an admin worker.  Idle sessions of
other users are open, half on each process (1,000; 100 with ``--quick``).
Then, event after event, sample after sample: a fresh credential (minted by the
actor), a socket opened with it on A, its ``session`` frame read, and the
credential ended --

* ``POST auth/logout`` on B (that token),
* ``POST auth/logout {"everywhere": true}`` on B,
* a password change in the actor: ``user.set_password(...); user.save()``,
* a deactivation in the actor: ``user.is_active = False; user.save()``,
* an API key revoked in the actor, ``key.revoked_at = now; key.save()``, the
  socket holding a copilot token that key minted,
* the socket's ``ChatSession`` row deleted in the actor
  (``ChatSession.objects.filter(pk=...).delete()``, once the writer has written
  it).

The figure is the time from the start of the event (the request sent; the ORM
write called, after what only prepares it, such as hashing the new password)
to the 4410 close frame read on A's socket, so it includes the event's own
writes; the time from its end (response read, write returned) is in the note.
The actor's times are its ``perf_counter()``: ``CLOCK_MONOTONIC`` on Linux, the
clock of this process too.  Samples run one at a time, after one uncounted
warm-up sample per event (a process's first event opens its connections).  The
heartbeat is at its default (30 s): a close the fan-out missed times out (5 s)
and counts as an error, never as a sample.  Target: p99 ≤ 50 ms.

**Message dropped (sweep only).**  The same, but each process has its own
in-memory channel layer (``BENCH_CHANNEL_LAYER=memory``; the cache is still
Redis) and a 2 s heartbeat: nothing the event sends reaches A, only A's sweep
can close the socket.  Samples run a few at a time, each worker with its own
user, each event a random time (uniform over one heartbeat) after its socket
opened, so the events fall at every phase of the heartbeat.  Target: p99 ≤ one
heartbeat + 1 s.

**Sweep cost.**  One uvicorn process on SQLite (the demo's database: the queries
run inside the process, so its CPU is the whole cost), in-memory layer,
local-memory cache (the sweep reads none), a 2 s heartbeat instrumented by
``bench.site.probe``, 1,000 then 5,000 idle sessions, each its own user and
token.  In alternating windows (on, off, off, on, ...)
the heartbeat runs or is switched off (the loop keeps its rhythm, nothing is
swept): an "on" window runs from the end of one heartbeat to the end of the
4th after it, an "off" window as long; the server's CPU is read from
``/proc/<pid>/stat`` at both ends.  The sweep's CPU per heartbeat is (on − off)
/ heartbeats, pooled over the window pairs; SQL statements per heartbeat
are counted in the writer thread (``connection.execute_wrapper``).  A heartbeat
does the same work whatever the interval, so its share of one core at the
default 30 s heartbeat is that CPU / 30 s.  Target: ≤ 2 % at 5,000 sessions.

Each part ends with the tracebacks its servers logged (target: none), and what
else they said.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import connect

from bench.http import LoadClient
from bench.measure import CpuMeter, Row, at_most, percentile, process_cpu
from bench.servers import (
    PG,
    REDIS,
    Actor,
    Server,
    Workspace,
    postgres_up,
    redis_up,
    workspace,
)
from bench.ws import close_sessions, open_sessions, raise_nofile
from bench.ws_logout import StampedConnection

CHAT_PATH = "/ws/chat/"
PROBE_PATH = "/bench/debug/sweep"
#: Event → how the rows name it.
EVENTS = {
    "logout": "POST auth/logout (1 token) on B",
    "everywhere": "POST auth/logout everywhere on B",
    "password": "password change (ORM save, actor)",
    "deactivate": "deactivation (ORM save, actor)",
    "api_key": "API key revoked (ORM save, actor)",
    "session_row": "chat session row deleted (ORM, actor)",
}
FULL = {
    "idle": 1_000,
    "samples": 100,  # per event, fan-out
    "sweep_samples": 36,  # per event, sweep only
    "sizes": (1_000, 5_000),
    "beats": 4,  # heartbeats per "on" window
    "pairs": 3,  # on/off window pairs per size
}
QUICK = {
    "idle": 100,
    "samples": 10,
    "sweep_samples": 4,
    "sizes": (200, 1_000),
    "beats": 2,
    "pairs": 1,
}
FANOUT_TARGET_MS = 50.0
#: A fan-out close later than this is an error (the message did not arrive).
FANOUT_TIMEOUT = 5.0
#: Uncounted fan-out samples before each event's (a process's first event
#: opens its connections: Redis, the layer's pool).
FANOUT_WARMUP = 1
SWEEP_HEARTBEAT = 2.0  # seconds, the "message dropped" servers
SWEEP_WORKERS = 6
COST_HEARTBEAT = 2.0  # seconds, the sweep-cost server
DEFAULT_HEARTBEAT = 30.0  # CHATAUTH["HEARTBEAT_INTERVAL"]'s default
CORE_SHARE_TARGET = 2.0  # percent of one core
#: An event stops sampling after this many failures (a broken path fails fast).
MAX_FAILURES = 10
IDLE_USERS = 50
IDLE_PREFIX = "lc-idle-"
WORKER_PREFIX = "lc-w"
COST_PREFIX = "lc-cost-"


def run(quick: bool) -> list[Row]:
    profile = QUICK if quick else FULL
    raise_nofile()
    space = workspace()
    rows: list[Row] = []
    missing = [
        f"{name} is not reachable on {host}:{port}"
        for name, (host, port), up in (
            ("Redis", REDIS, redis_up()),
            ("PostgreSQL", PG, postgres_up()),
        )
        if not up
    ]
    if missing:
        rows.append(
            Row(
                "event → close p99, 2 processes",
                float("nan"),
                "ms",
                note=f"skipped: {'; '.join(missing)}",
            )
        )
    else:
        with space.postgres("lifecycle") as database:
            shared = {
                "DATABASE_URL": database,
                "REDIS_URL": f"redis://{REDIS[0]}:{REDIS[1]}/0",
                # bench.site.settings puts this run's prefix on cache and layer;
                # REDIS_PREFIX says the same to the demo settings under them.
                "REDIS_PREFIX": space.prefix,
            }
            rows += _events_part(space, shared, profile, sweep_only=False)
            dropped = {
                **shared,
                "BENCH_CHANNEL_LAYER": "memory",
                "CHATAUTH_HEARTBEAT_INTERVAL": str(SWEEP_HEARTBEAT),
            }
            rows += _events_part(space, dropped, profile, sweep_only=True)
    rows += _cost_part(space, profile)
    return rows


# --- Events → close frames ------------------------------------------------------------


@dataclass
class EventResult:
    from_start: list[float] = field(default_factory=list)  # seconds
    from_end: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class SampleFailed(Exception):
    """A sample went wrong; the message says at which step."""


@dataclass
class Rig:
    a: Server
    b: Server
    actor: Actor
    http: LoadClient  # to B


def _events_part(
    space: Workspace, env: dict[str, str], profile: dict, *, sweep_only: bool
) -> list[Row]:
    tag = "lifecycle-dropped" if sweep_only else "lifecycle"
    with space.server(f"{tag}-A", **env) as a, space.server(f"{tag}-B", **env) as b:
        with CpuMeter([a.process.pid, b.process.pid]) as cpu:
            result = asyncio.run(
                _events(
                    space,
                    a,
                    b,
                    env,
                    idle=profile["idle"],
                    samples=profile["sweep_samples" if sweep_only else "samples"],
                    workers=SWEEP_WORKERS if sweep_only else 1,
                    jitter=SWEEP_HEARTBEAT if sweep_only else 0.0,
                    timeout=2 * SWEEP_HEARTBEAT + 5 if sweep_only else FANOUT_TIMEOUT,
                    warmup=0 if sweep_only else FANOUT_WARMUP,
                )
            )
        logs = a.output() + b.output()
    rows = _event_rows(result, cpu, profile["idle"], sweep_only=sweep_only)
    how = (
        f"sweep only, heartbeat {SWEEP_HEARTBEAT:g} s"
        if sweep_only
        else "channel layer"
    )
    return [*rows, _log_row(f"A and B ({how})", logs)]


async def _events(
    space: Workspace,
    a: Server,
    b: Server,
    env: dict[str, str],
    *,
    idle: int,
    samples: int,
    workers: int,
    jitter: float,
    timeout: float,
    warmup: int,
) -> dict[str, Any]:
    async with Actor(space.env(**env), space.dir) as actor:
        await actor.call("users", prefix=IDLE_PREFIX, count=IDLE_USERS, timeout=120)
        await actor.call("users", prefix=WORKER_PREFIX, count=workers)
        names = [f"{IDLE_PREFIX}{i % IDLE_USERS}" for i in range(idle)]
        tokens = (await actor.call("tokens", usernames=names, timeout=120))["result"]
        half = idle // 2
        sockets = await open_sessions(a.ws_url + CHAT_PATH, tokens[:half], half)
        try:
            sockets += await open_sessions(
                b.ws_url + CHAT_PATH, tokens[half:], idle - half
            )
            await asyncio.sleep(0.2)  # let both processes write the session rows
            rig = Rig(a, b, actor, LoadClient(b.port, workers))
            try:
                results = {
                    event: await _sample_event(
                        rig,
                        event,
                        samples,
                        workers,
                        jitter=jitter,
                        timeout=timeout,
                        warmup=warmup,
                    )
                    for event in EVENTS
                }
            finally:
                await rig.http.aclose()
            # None of the idle sessions (other users, other tokens) may have closed.
            received = [s.protocol.close_rcvd for s in sockets]
            wrongly_closed = [frame.code for frame in received if frame is not None]
        finally:
            await close_sessions(sockets)
    return {"events": results, "idle_closed": wrongly_closed}


async def _sample_event(
    rig: Rig,
    event: str,
    samples: int,
    workers: int,
    *,
    jitter: float,
    timeout: float,
    warmup: int = 0,
) -> EventResult:
    """``samples`` samples of ``event`` after ``warmup`` uncounted ones,
    ``workers`` at a time (worker ``w`` always with user ``lc-w<w>``:
    concurrent samples never share a user)."""
    result = EventResult()
    turns = iter(range(-warmup, samples))

    async def worker(index: int) -> None:
        user = f"{WORKER_PREFIX}{index}"
        for turn in turns:
            if len(result.failures) >= MAX_FAILURES:
                return
            try:
                from_start, from_end = await _sample(
                    rig, event, user, jitter=jitter, timeout=timeout
                )
            except Exception as e:  # refused, timed out, wrong code: all errors
                if not isinstance(e, SampleFailed):
                    e = SampleFailed(f"{type(e).__name__}: {e}")
                result.failures.append(str(e)[:160])
                continue
            if turn >= 0:  # not a warm-up sample
                result.from_start.append(from_start)
                result.from_end.append(from_end)

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return result


async def _sample(
    rig: Rig, event: str, user: str, *, jitter: float, timeout: float
) -> tuple[float, float]:
    """One credential, one socket on A, one event: seconds from the event's
    start and from its end to the close frame."""
    key_name = ""
    if event == "api_key":
        key_name = f"lc-key-{uuid.uuid4().hex[:12]}"
        answer = await rig.actor.call("copilot", username=user, key_name=key_name)
        token = answer["result"]
    else:
        token = (await rig.actor.call("tokens", usernames=[user]))["result"][0]
    auth = {"Authorization": f"Bearer {token}"}
    socket: StampedConnection = await connect(  # type: ignore[assignment]
        rig.a.ws_url + CHAT_PATH,
        additional_headers=auth,
        create_connection=StampedConnection,
        open_timeout=10,
        close_timeout=10,
        ping_interval=None,
    )
    stage = "session frame"
    try:
        async with asyncio.timeout(10):
            frame = json.loads(await socket.recv())
        if frame.get("type") != "session":
            raise AssertionError(f"expected a session frame, got {frame!r:.80}")
        if jitter:
            await asyncio.sleep(random.uniform(0, jitter))  # noqa: S311
        stage = "event"
        started, ended = await _cause(rig, event, user, auth, frame, key_name)
        stage = "close frame"
        async with asyncio.timeout(timeout):
            closed = await socket.close_frame()
        code = socket.protocol.close_rcvd.code  # type: ignore[union-attr]
    except Exception as e:
        raise SampleFailed(f"{stage}: {type(e).__name__}: {e}") from e
    finally:
        await socket.close()
        if event == "deactivate":
            await rig.actor.call("activate", username=user)
    if code != 4410:
        raise AssertionError(f"closed with {code}, not 4410")
    return closed - started, closed - ended


async def _cause(
    rig: Rig, event: str, user: str, auth: dict, frame: dict, key_name: str
) -> tuple[float, float]:
    """End the credential; ``perf_counter()`` at the event's start and end."""
    if event in ("logout", "everywhere"):
        body = b'{"everywhere": true}' if event == "everywhere" else b"{}"
        headers = {**auth, "Content-Type": "application/json"}
        started = time.perf_counter()
        status, content = await rig.http.request("POST", "/auth/logout", headers, body)
        ended = time.perf_counter()
        if status != 200:
            raise AssertionError(f"logout: HTTP {status} {content[:80]!r}")
        return started, ended
    if event == "password":
        answer = await rig.actor.call("password", username=user)
    elif event == "deactivate":
        answer = await rig.actor.call("deactivate", username=user)
    elif event == "api_key":
        answer = await rig.actor.call("revoke_key", name=key_name)
    elif event == "session_row":
        answer = await rig.actor.call("delete_session", session_id=frame["session_id"])
        if answer["result"] != 1:
            raise AssertionError(f"deleted {answer['result']} rows, not 1")
    else:
        raise ValueError(event)
    return answer["started"], answer["done"]


#: Lines of a server's log that are not news: its start-up's deprecation notices.
_QUIET = ("AuthlibDeprecationWarning", "from ._compat import httpx2")


def _log_row(servers: str, log: str) -> Row:
    """Tracebacks the servers logged during a part (target: none), and what else
    they logged: the exception each traceback ends with, counted, and each
    other line, counted (timestamps are not logged: lines repeat exactly)."""
    raised: Counter[str] = Counter()
    other: Counter[str] = Counter()
    in_traceback = False
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and line and not line.startswith(" "):
            raised[line[:120]] += 1
            in_traceback = False
        elif not in_traceback and line.strip() and not any(q in line for q in _QUIET):
            # "could not leave group chatauth.user.12": one line per group.
            other[line.rsplit(" ", 1)[0] if line.count(".") > 1 else line] += 1
    tracebacks = sum(raised.values())
    said = [f"{n}× {text}" for text, n in (raised + other).most_common(6)]
    return Row(
        f"tracebacks in the server logs, {servers}",
        tracebacks,
        "",
        target=at_most(0, on="value"),
        note="; ".join(said) if said else "the logs hold nothing but start-up",
        stats={"raised": dict(raised), "other": dict(other.most_common(20))},
    )


def _event_rows(
    result: dict[str, Any],
    cpu: CpuMeter,
    idle: int,
    *,
    sweep_only: bool,
) -> list[Row]:
    if sweep_only:
        how = f"sweep only, heartbeat {SWEEP_HEARTBEAT:g} s"
        unit, scale = "s", 1.0
        target = at_most(SWEEP_HEARTBEAT + 1, on="value", unit="s")
        setup = (
            "A and B each with its own in-memory channel layer (nothing crosses), "
            f"shared PostgreSQL and Redis cache, heartbeat {SWEEP_HEARTBEAT:g} s; "
            f"{SWEEP_WORKERS} samples at a time, each event a uniform random "
            "0–1 heartbeat after its socket opened"
        )
    else:
        how = "channel layer"
        unit, scale = "ms", 1e3
        target = at_most(FANOUT_TARGET_MS, on="value", unit="ms")
        setup = (
            "A and B on one PostgreSQL database and one Redis (cache and "
            "channels_redis layer), heartbeat at its default 30 s; samples one at "
            "a time"
        )
    idle_closed: list[int] = result["idle_closed"]
    # Counted once, on the part's first row: they belong to no one event.
    shared_errors = len(idle_closed)
    rows: list[Row] = []
    for event, label in EVENTS.items():
        found: EventResult = result["events"][event]
        measure = f"{label} → close on A, %s ({how})"
        if not found.from_start:
            rows.append(
                Row(
                    measure % "p99",
                    float("nan"),
                    unit,
                    target=target,
                    errors=(len(found.failures) or 1) + shared_errors,
                    note="; ".join(found.failures[:3]) or "no samples",
                )
            )
            shared_errors = 0
            continue
        p50 = statistics.median(found.from_start)
        p99 = percentile(found.from_start, 99)
        end50 = statistics.median(found.from_end)
        end99 = percentile(found.from_end, 99)
        failures = found.failures
        note = "; ".join(
            filter(
                None,
                [
                    f"{setup}; {idle:,} idle sessions of other users (half on each "
                    f"process); {len(found.from_start)} samples from the event's "
                    f"start: p50 {p50 * scale:.2f} {unit}, p99 {p99 * scale:.2f} "
                    f"{unit}, max {max(found.from_start) * scale:.2f} {unit}; from "
                    f"its end (response read, write returned): p50 "
                    f"{end50 * scale:.2f} {unit}, p99 {end99 * scale:.2f} {unit} "
                    f"({sum(1 for x in found.from_end if x < 0)} closes came first)",
                    f"{len(failures)} failed samples: {'; '.join(failures[:3])}"
                    if failures
                    else "",
                    f"idle sessions wrongly closed: {len(idle_closed)}"
                    + (f" (codes {sorted(set(idle_closed))})" if idle_closed else ""),
                    cpu.describe(),
                ],
            )
        )
        rows.append(Row(measure % "p50", p50 * scale, unit))
        errors, shared_errors = len(failures) + shared_errors, 0
        rows.append(
            Row(
                measure % "p99",
                p99 * scale,
                unit,
                target=target,
                note=note,
                errors=errors,
                stats={
                    "p50": p50 * scale,
                    "p99": p99 * scale,
                    "max": max(found.from_start) * scale,
                    "from_end_p50": end50 * scale,
                    "from_end_p99": end99 * scale,
                    "unit": unit,
                    "samples": len(found.from_start),
                    "failures": failures,
                    "idle_closed": len(idle_closed),
                    "cpu": cpu.summary(),
                },
            )
        )
    return rows


# --- The sweep's cost -------------------------------------------------------------


@dataclass
class Window:
    cpu: float  # server CPU seconds in the window
    wall: float  # seconds
    probe: dict[str, float]  # the probe's counters over the window


def _cost_part(space: Workspace, profile: dict) -> list[Row]:
    env = {
        "DATABASE_URL": space.database("lifecycle-cost"),
        # The sweep reads no cache; opening 5,000 sessions writes ~15,000
        # entries, and the demo's file cache lists its whole directory on every
        # write: minutes of set-up that measure nothing here.
        "BENCH_CACHE": "locmem",
        "BENCH_SWEEP_PROBE": "1",
        "CHATAUTH_HEARTBEAT_INTERVAL": str(COST_HEARTBEAT),
    }
    with space.server("lifecycle-cost", **env) as server:
        measured = asyncio.run(_cost(space, server, env, profile))
        logs = server.output()
    rows: list[Row] = []
    for size, windows in measured.items():
        rows += _cost_rows(size, windows, profile)
    return [*rows, _log_row("the sweep-cost server", logs)]


async def _cost(
    space: Workspace, server: Server, env: dict[str, str], profile: dict
) -> dict[int, list[dict[str, Window]]]:
    sizes: tuple[int, ...] = profile["sizes"]
    async with Actor(space.env(**env), space.dir) as actor:
        await actor.call("users", prefix=COST_PREFIX, count=max(sizes), timeout=300)
        names = [f"{COST_PREFIX}{i}" for i in range(max(sizes))]
        tokens = (await actor.call("tokens", usernames=names, timeout=300))["result"]
    url = server.ws_url + CHAT_PATH
    sockets: list[Any] = []
    measured: dict[int, list[dict[str, Window]]] = {}
    async with httpx.AsyncClient(base_url=server.url, timeout=180) as http:
        try:
            for size in sizes:
                more = size - len(sockets)
                sockets += await open_sessions(
                    url, tokens[len(sockets) : size], more, timeout=900
                )
                # Two whole heartbeats with every session's row written.
                await _probe(http, on=1, reset=1, wait=2)
                check = await _probe(http, on=1, reset=1, wait=1)
                if check["swept"] != size or check["live"] != size:
                    raise AssertionError(
                        f"{size:,} sessions open, the heartbeat swept "
                        f"{check['swept']:,} of {check['live']:,} live"
                    )
                measured[size] = await _windows(
                    http, server.process.pid, profile["beats"], profile["pairs"]
                )
            closed = [s.protocol.close_rcvd for s in sockets]
            if any(frame is not None for frame in closed):
                raise AssertionError("the sweep closed idle sessions that held")
        finally:
            await _probe(http, on=1)
            await close_sessions(sockets)
    return measured


async def _probe(http: httpx.AsyncClient, **params: int) -> dict[str, Any]:
    response = await http.post(PROBE_PATH, params=params)
    response.raise_for_status()
    return response.json()


async def _windows(
    http: httpx.AsyncClient, pid: int, beats: int, pairs: int
) -> list[dict[str, Window]]:
    """``pairs`` pairs of windows, heartbeat on and off, in alternating order."""
    measured: list[dict[str, Window]] = []
    last_on = beats * (COST_HEARTBEAT + 0.1)  # until an "on" window says better
    for index in range(pairs):
        pair: dict[str, Window] = {}
        for variant in ("on", "off") if index % 2 == 0 else ("off", "on"):
            if variant == "on":
                pair["on"] = await _on_window(http, pid, beats)
                last_on = pair["on"].wall
            else:
                pair["off"] = await _off_window(http, pid, last_on)
        measured.append(pair)
    return measured


async def _on_window(http: httpx.AsyncClient, pid: int, beats: int) -> Window:
    """From the end of one heartbeat to the end of the ``beats``-th after it."""
    before = await _probe(http, on=1, reset=1, wait=1)
    cpu, wall = process_cpu(pid), time.perf_counter()
    after = await _probe(http, wait=beats)
    cpu, wall = process_cpu(pid) - cpu, time.perf_counter() - wall
    counters = {
        k: after[k] - before[k]
        for k in ("beats", "beat_cpu", "beat_wall", "sweeps", "swept", "queries")
    }
    counters["writer_cpu"] = after["writer_cpu"] - before["writer_cpu"]
    return Window(cpu, wall, counters)


async def _off_window(http: httpx.AsyncClient, pid: int, seconds: float) -> Window:
    """As long as an "on" window, heartbeat switched off; one probe request at
    the end, as the "on" window has."""
    await _probe(http, on=0, reset=1)
    cpu, wall = process_cpu(pid), time.perf_counter()
    await asyncio.sleep(seconds)
    after = await _probe(http)
    cpu, wall = process_cpu(pid) - cpu, time.perf_counter() - wall
    if after["beats"]:
        raise AssertionError("a heartbeat ran while switched off")
    return Window(cpu, wall, {"skipped": after["skipped"]})


def _cost_rows(size: int, pairs: list[dict[str, Window]], profile: dict) -> list[Row]:
    per_beat = []  # the sweep's CPU seconds per heartbeat, one per pair
    on_cpu = idle_cpu = 0.0  # server CPU over all "on" windows, and as long off
    for pair in pairs:
        on, off = pair["on"], pair["off"]
        idle = off.cpu * on.wall / off.wall  # the same time, heartbeat off
        per_beat.append((on.cpu - idle) / on.probe["beats"])
        on_cpu += on.cpu
        idle_cpu += idle
    on_all = [p["on"] for p in pairs]
    beats = sum(w.probe["beats"] for w in on_all)
    # Pooled over the pairs: /proc counts in 10 ms ticks, and an idle server's
    # own CPU comes in bursts (its keep-alive pings): the windows average out.
    sweep = (on_cpu - idle_cpu) / beats
    queries = sum(w.probe["queries"] for w in on_all) / beats
    inside = sum(w.probe["beat_cpu"] for w in on_all) / beats
    writer = sum(w.probe["writer_cpu"] for w in on_all) / beats
    beat_wall = sum(w.probe["beat_wall"] for w in on_all) / beats
    batches = sum(w.probe["sweeps"] for w in on_all) / beats
    share = sweep / DEFAULT_HEARTBEAT * 100
    thousands = size / 1000
    how = (
        f"1 uvicorn process, SQLite (queries run in the process), in-memory layer, "
        f"heartbeat {COST_HEARTBEAT:g} s; {size:,} idle sessions, one user and one "
        f"token each; {len(pairs)} pair{'s' * (len(pairs) > 1)} of windows "
        f"(heartbeat on: {profile['beats']} whole heartbeats from the end of one; "
        "off: as long), "
        "server CPU from /proc/<pid>/stat; sweep CPU per heartbeat = (on − off) / "
        "heartbeats, pooled over the pairs (pair by pair: "
        f"{', '.join(f'{x * 1e3:.1f}' for x in per_beat)} ms)"
    )
    inside_note = (
        f"in the process (bench.site.probe): {inside * 1e3:.1f} ms process CPU "
        f"during each heartbeat, {writer * 1e3:.1f} ms of it in the writer thread, "
        f"{beat_wall * 1e3:.1f} ms wall; {batches:.1f} sweep batches and "
        f"{queries:.1f} SQL statements per heartbeat"
    )
    return [
        Row(
            f"server CPU per heartbeat, {size:,} idle sessions, heartbeat on vs off",
            on_cpu / beats * 1e3,
            "ms",
            baseline=idle_cpu / beats * 1e3,
            note=f"{how}; baseline: the same time with the heartbeat switched off",
        ),
        Row(
            f"sweep CPU per 1,000 sessions per heartbeat, {size:,} sessions",
            sweep / thousands * 1e3,
            "ms",
            note=f"{how}; {inside_note}",
            stats={
                "per_beat_ms": [x * 1e3 for x in per_beat],
                "inside_beat_cpu_ms": inside * 1e3,
                "writer_cpu_ms": writer * 1e3,
                "beat_wall_ms": beat_wall * 1e3,
                "windows": [
                    {
                        name: {"cpu": w.cpu, "wall": w.wall, **w.probe}
                        for name, w in pair.items()
                    }
                    for pair in pairs
                ],
            },
        ),
        Row(
            f"SQL queries per heartbeat, {size:,} sessions",
            queries,
            "queries",
            note=f"{queries / thousands:.1f} per 1,000 sessions; {batches:.0f} "
            f"batches of at most SWEEP_BATCH_SIZE sessions; statements through "
            "Django's cursors in the writer thread during the sweep (the "
            "connection's own set-up and liveness pings not included)",
        ),
        Row(
            f"sweep share of one core at a 30 s heartbeat, {size:,} sessions",
            share,
            "%",
            target=at_most(CORE_SHARE_TARGET, on="value", unit="%"),
            note=f"sweep CPU per heartbeat {sweep * 1e3:.1f} ms (measured at a "
            f"{COST_HEARTBEAT:g} s heartbeat; a heartbeat's work does not depend on "
            f"the interval) / {DEFAULT_HEARTBEAT:g} s",
        ),
    ]
