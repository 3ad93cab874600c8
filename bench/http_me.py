"""``GET auth/me`` with a valid bearer token vs the same view with auth off.

One uvicorn process (1 worker, DEBUG off, SQLite) serves both routes:
``auth/me`` (``JWTAuthentication`` → ``verify_token``: signature, type,
revocation and user state) and ``bench/me-noauth``, a subclass of the same view
with no authentication that returns a constant user dict of the same shape.  The
ratio of their requests/s is what authentication costs a request.  Measured with
Django's local-memory cache (``BENCH_CACHE=locmem``: the check's own cost, the
cache read from memory), then, when Redis is up, as production runs
(``REDIS_URL``: the revocation check is a Redis round trip), and, for the
record, as ``make demo`` runs now: the file-based cache next to the SQLite
file (every check reads its cache files, on the event loop).

The two routes are loaded in alternating rounds (A B, B A, ...); the ratio is the
median of the back-to-back pairs, so a burst of other work on the machine falls
on both sides of a pair.
"""

from __future__ import annotations

import asyncio
import math

from bench.http import LoadClient, check_json, expect
from bench.measure import CpuMeter, Row, Series, at_least, compare_load, paired_ratio
from bench.servers import REDIS, login, redis_up, workspace

CONCURRENCY = 16
FULL = {"rounds": 12, "duration": 1.25, "warmup": 2.0}
QUICK = {"rounds": 2, "duration": 0.5, "warmup": 0.3}


def run(quick: bool) -> list[Row]:
    profile = QUICK if quick else FULL
    rows = _measure("local-memory cache", profile, BENCH_CACHE="locmem")
    if redis_up():
        redis_url = f"redis://{REDIS[0]}:{REDIS[1]}/0"
        rows += _measure("Redis cache", profile, REDIS_URL=redis_url)[:1]
    else:
        rows.append(
            Row(
                f"auth/me req/s, Redis cache, conc {CONCURRENCY}",
                math.nan,
                "req/s",
                note=f"skipped: Redis is not reachable on {REDIS[0]}:{REDIS[1]}",
            )
        )
    demo = _measure("file-based cache (the demo's)", profile)[0]
    demo.target = None  # informational: the targets are the rows above
    demo.note = f"informational; {demo.note}"
    rows.append(demo)
    return rows


def _measure(label: str, profile: dict, **env: str) -> list[Row]:
    with workspace().server("http_me", **env) as server:
        token = login(server)["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        # Both routes answer 200 with the same keys before either is loaded.
        me = check_json(server.url, "GET", "/auth/me", headers=auth)
        noauth = check_json(server.url, "GET", "/bench/me-noauth")
        if set(me) != set(noauth):
            raise AssertionError(f"different shapes: {sorted(me)} vs {sorted(noauth)}")
        check_json(server.url, "GET", "/auth/me", status=401)  # auth really is on
        with CpuMeter([server.process.pid]) as cpu:
            results = asyncio.run(_load(server.port, auth, profile))
    with_auth, without = results["auth"], results["noauth"]
    note = "; ".join(
        [
            f"conc {CONCURRENCY}, 1 uvicorn worker, {label}; value and baseline are "
            f"median round rates, ratio the median of {len(with_auth.rounds)} "
            "back-to-back round pairs",
            with_auth.describe("auth/me"),
            without.describe("same view, auth off"),
            cpu.describe(),
        ]
    )
    return [
        Row(
            f"auth/me req/s, token + revocation check, {label}, conc {CONCURRENCY}",
            with_auth.rate,
            "req/s",
            baseline=without.rate,
            target=at_least(0.85),
            paired=paired_ratio(with_auth, without),
            note=note,
            errors=with_auth.errors + without.errors,
            stats={
                "auth": with_auth.summary(),
                "noauth": without.summary(),
                "cpu": cpu.summary(),
            },
        ),
        Row(
            f"auth/me p99 latency, {label}, conc {CONCURRENCY}",
            with_auth.p99 * 1e3,
            "ms",
            baseline=without.p99 * 1e3,
            note="informational: p99 with auth vs the same view with auth off",
        ),
    ]


async def _load(port: int, auth: dict[str, str], profile: dict) -> dict[str, Series]:
    client = LoadClient(port, CONCURRENCY)
    try:
        return await compare_load(
            {
                "auth": expect(client, "GET", "/auth/me", headers=auth),
                "noauth": expect(client, "GET", "/bench/me-noauth"),
            },
            concurrency=CONCURRENCY,
            **profile,
        )
    finally:
        await client.aclose()
