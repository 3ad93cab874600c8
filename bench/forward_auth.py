"""Forward auth: ``GET auth/verify`` vs a bare PyJWT check, and vs Chainlit's ``/user``.

What a reverse proxy asks before every request it guards.  Three servers, one
uvicorn worker each, loaded by the same client in alternating rounds:

* chatauth's ``auth/verify``, answered by ``chatauth.forwardauth`` ahead of
  Django (``chatauth.asgi``): signature, type, expiry, the denylist and the
  user's state (revocation checked on every call), with the Redis cache as in
  production (the worker's near cache on: Redis reports every write to the keys
  it copied, and those reports are read before each check; and off: a round trip
  per check, for comparison), and with the local-memory cache (the check's own
  cost).  After each load a logout must be refused by the very next check;
* the baseline: ``bench.site.bare_verify``, a bare ASGI app doing one PyJWT
  ``decode`` on the bearer token (no framework, no revocation): the physical
  limit of this job in Python, target ≥ 0.80 of it;
* Chainlit's ``GET /user`` (a Chainlit 2.x server from the virtualenv the test
  suite builds, ``~/.cache/chatauth/chainlit-venv``), the check Chainlit itself
  makes, target ≥ 1.0× of it; skipped when that virtualenv is missing.

At concurrency 16 and 1, with one access token from chatauth's own login (the
same string to all three servers: Chainlit accepts chatauth's tokens), p50/p99
reported next to each baseline's.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator

import httpx

from bench.http import LoadClient, expect
from bench.measure import CpuMeter, Row, Series, at_least, compare_load, paired_ratio
from bench.servers import REDIS, login, redis_up, workspace
from tests.servers import CHAINLIT_VENV, SECRET, start_chainlit, stop_process

NO_NEAR = "Redis cache, NEAR_CACHE off"
FULL = {"rounds": 10, "duration": 1.0, "warmup": 1.5}
QUICK = {"rounds": 2, "duration": 0.5, "warmup": 0.3}
CHAINLIT_APP = """
import chainlit as cl


@cl.password_auth_callback
def auth(username: str, password: str):
    return None  # authentication on: /user checks the token


@cl.on_message
async def echo(message: cl.Message):
    await cl.Message(content=message.content).send()
"""


def run(quick: bool) -> list[Row]:
    profile = QUICK if quick else FULL
    caches = {"local-memory cache": {"BENCH_CACHE": "locmem"}}
    if redis_up():
        redis_url = f"redis://{REDIS[0]}:{REDIS[1]}/0"
        caches["Redis cache"] = {"REDIS_URL": redis_url}
        # The same without the worker's copy: a round trip to Redis per check.
        caches[NO_NEAR] = {"REDIS_URL": redis_url, "BENCH_NEAR_CACHE": "0"}
    rows: list[Row] = []
    with (
        workspace().server(
            "forward_auth_bare", app="bench.site.bare_verify:app"
        ) as bare,
        chainlit_server() as chainlit,
    ):
        for label, env in caches.items():
            with workspace().server("forward_auth", **env) as server:
                token = login(server)["access_token"]
                auth = {"Authorization": f"Bearer {token}"}
                for name, port in (("chatauth", server.port), ("bare", bare.port)):
                    _check(port, "/auth/verify" if name == "chatauth" else "/", auth)
                targets = {
                    "chatauth": (server.port, "/auth/verify"),
                    "bare": (bare.port, "/"),
                }
                if chainlit is not None:
                    targets["chainlit"] = (chainlit, "/user")
                pids = [server.process.pid, bare.process.pid]
                for concurrency in (16, 1):
                    with CpuMeter(pids) as cpu:
                        series = asyncio.run(_load(targets, auth, concurrency, profile))
                    rows += _rows(label, concurrency, series, cpu)
                _revoked_at_once(server, auth)
    if not redis_up():
        rows.append(
            Row(
                "auth/verify req/s, Redis cache",
                math.nan,
                "req/s",
                note=f"skipped: Redis is not reachable on {REDIS[0]}:{REDIS[1]}",
            )
        )
    return rows


def _revoked_at_once(server, auth: dict[str, str]) -> None:
    """After the load: a logout is refused by the very next check (the answers
    the worker kept did not outlive it)."""
    url = f"{server.url}/auth/verify"
    fresh = {"Authorization": f"Bearer {login(server)['access_token']}"}
    for headers in (fresh, fresh, auth):
        if httpx.get(url, headers=headers, timeout=10).status_code != 200:
            raise AssertionError("auth/verify refused a valid token after the load")
    logout = httpx.post(f"{server.url}/auth/logout", headers=fresh, json={}, timeout=10)
    logout.raise_for_status()
    if httpx.get(url, headers=fresh, timeout=10).status_code != 401:
        raise AssertionError("auth/verify let a token through after its logout")


def _check(port: int, path: str, auth: dict[str, str]) -> None:
    """The route answers 200 with the token and 401 without, before any load."""
    url = f"http://127.0.0.1:{port}{path}"
    if httpx.get(url, headers=auth, timeout=10).status_code != 200:
        raise AssertionError(f"{url} refused a valid token")
    if httpx.get(url, timeout=10).status_code != 401:
        raise AssertionError(f"{url} let a request without a token through")


async def _load(
    targets: dict[str, tuple[int, str]],
    auth: dict[str, str],
    concurrency: int,
    profile: dict,
) -> dict[str, Series]:
    clients = {
        name: LoadClient(port, concurrency) for name, (port, _) in targets.items()
    }
    try:
        return await compare_load(
            {
                name: expect(clients[name], "GET", path, headers=auth)
                for name, (_, path) in targets.items()
            },
            concurrency=concurrency,
            **profile,
        )
    finally:
        for client in clients.values():
            await client.aclose()


def _rows(label: str, concurrency: int, series: dict[str, Series], cpu) -> list[Row]:
    ours, bare = series["chatauth"], series["bare"]
    rows = [
        Row(
            f"auth/verify req/s vs bare PyJWT, {label}, conc {concurrency}",
            ours.rate,
            "req/s",
            baseline=bare.rate,
            # Without the near cache: for comparison, no target.
            target=None if label == NO_NEAR else at_least(0.80),
            paired=paired_ratio(ours, bare),
            note="; ".join(
                [
                    f"1 uvicorn worker each, conc {concurrency}, {label}; ratio the "
                    f"median of {len(ours.rounds)} back-to-back round pairs",
                    ours.describe("auth/verify"),
                    bare.describe("bare PyJWT ASGI app"),
                    cpu.describe(),
                ]
            ),
            errors=ours.errors + bare.errors,
            stats={"chatauth": ours.summary(), "bare": bare.summary()},
        ),
        Row(
            f"auth/verify p99 latency, {label}, conc {concurrency}",
            ours.p99 * 1e3,
            "ms",
            baseline=bare.p99 * 1e3,
            note=f"informational: p50 {ours.p50 * 1e3:.2f} ms vs "
            f"{bare.p50 * 1e3:.2f} ms (bare PyJWT)",
        ),
    ]
    chainlit = series.get("chainlit")
    if chainlit is not None:
        rows.append(
            Row(
                f"auth/verify req/s vs Chainlit /user, {label}, conc {concurrency}",
                ours.rate,
                "req/s",
                baseline=chainlit.rate,
                target=None if label == NO_NEAR else at_least(1.0),
                paired=paired_ratio(ours, chainlit),
                note=chainlit.describe("Chainlit /user")
                + f"; Chainlit p50 {chainlit.p50 * 1e3:.2f} ms, "
                f"p99 {chainlit.p99 * 1e3:.2f} ms",
                errors=chainlit.errors,
                stats={"chainlit": chainlit.summary()},
            )
        )
    return rows


@contextlib.contextmanager
def chainlit_server() -> Iterator[int | None]:
    """A Chainlit server with authentication on, sharing chatauth's secret: its
    port, or None when the test suite's Chainlit virtualenv is not there."""
    if not (CHAINLIT_VENV / "bin" / "chainlit").exists():
        print(f"forward_auth: no Chainlit in {CHAINLIT_VENV}: its rows are skipped")
        yield None
        return
    app_dir = workspace().dir / "chainlit-app"
    app_dir.mkdir(exist_ok=True)
    process, url = start_chainlit(app_dir, CHAINLIT_APP, SECRET)
    try:
        yield int(url.rsplit(":", 1)[1])
    finally:
        stop_process(process)
