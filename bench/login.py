"""Password login requests/s at concurrency = cores vs the bcrypt limit.

A login is bound by one bcrypt check at the demo's real cost (Django's
``BCryptSHA256PasswordHasher``, cost 12), which releases the GIL; so a server
that runs it off the event loop can do at most ``cores / t(bcrypt.checkpw)``
logins a second.  ``t`` is measured in this run, on a hash the demo's hasher
makes, in rounds that alternate with the login rounds (so both see the same
machine); Django's ``check_password`` on the same hash is timed too.

``cores / t`` assumes every core is free for bcrypt.  On a shared machine they
are not, so the rate ``cores`` threads of bare ``checkpw`` reach in this process
is also measured, in the same alternating rounds: what the machine really gave.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass

from bench.http import LoadClient, check_json, expect
from bench.measure import (
    CpuMeter,
    Row,
    Series,
    at_least,
    compare_calls,
    compare_load,
    paired_ratio,
)
from bench.servers import PASSWORD, USERS, login, setup_django, workspace

FULL = {"rounds": 4, "duration": 5.0, "warmup": 1.5, "hash_rounds": 3}
QUICK = {"rounds": 1, "duration": 1.5, "warmup": 0.3, "hash_rounds": 1}


def run(quick: bool) -> list[Row]:
    profile = QUICK if quick else FULL
    cores = os.cpu_count() or 1
    costs = _hash_costs(profile["hash_rounds"])
    with workspace().server("login") as server:
        login(server)  # answers 200 before it is loaded
        check_json(
            server.url,
            "POST",
            "/auth/login",
            status=401,
            json_body={"username": USERS[0], "password": "wrong"},
        )
        with CpuMeter([server.process.pid]) as cpu:
            series = asyncio.run(_load(server.port, cores, costs, profile))
    logins, threads, serial = series["login"], series["threads"], series["checkpw"]
    t_bare, t_django = serial.p50, costs.check_password.p50
    times = (
        f"t(bcrypt.checkpw) {t_bare * 1e3:.1f} ms (p50 of {serial.count} checks "
        f"in rounds alternating with the login rounds), "
        f"t(check_password) {t_django * 1e3:.1f} ms, cost {costs.cost}"
    )
    return [
        Row(
            f"password login req/s, conc = cores = {cores}",
            logins.rate,
            "req/s",
            baseline=cores / t_bare,
            target=at_least(0.85),
            note="; ".join(
                [
                    f"baseline cores / t(bcrypt.checkpw); {times}",
                    logins.describe("login"),
                    cpu.describe(),
                ]
            ),
            errors=logins.errors + threads.errors + serial.errors,
            stats={
                "login": logins.summary(),
                "checkpw_serial": serial.summary(),
                "t_checkpw_s": t_bare,
                "t_check_password_s": t_django,
                "bcrypt_cost": costs.cost,
                "cpu": cpu.summary(),
            },
        ),
        Row(
            f"password login req/s vs in-process bcrypt, {cores} threads",
            logins.rate,
            "req/s",
            baseline=threads.rate,
            paired=paired_ratio(logins, threads),
            note="informational: the baseline is bare bcrypt.checkpw on "
            f"{cores} threads in this process, in rounds alternating with the "
            "login rounds (what the machine really gave bcrypt meanwhile); ratio "
            "the median of back-to-back round pairs",
            stats={"checkpw_threads": threads.summary()},
        ),
        Row(
            f"t(Django check_password), bcrypt_sha256 cost {costs.cost}",
            t_django * 1e3,
            "ms",
            baseline=costs.checkpw.p50 * 1e3,
            note="informational: Django's check vs bare bcrypt.checkpw on the same "
            "hash, timed back to back; "
            + costs.check_password.describe("check_password")
            + "; "
            + costs.checkpw.describe("checkpw"),
            stats={
                "check_password": costs.check_password.summary(),
                "checkpw": costs.checkpw.summary(),
            },
        ),
    ]


@dataclass
class HashCosts:
    prepared: bytes  # what BCryptSHA256PasswordHasher hands to bcrypt
    hashed: bytes  # the bcrypt hash inside the Django-encoded one
    cost: int
    checkpw: Series
    check_password: Series


def _hash_costs(rounds: int) -> HashCosts:
    """Time Django's ``check_password`` and bare ``bcrypt.checkpw`` on one hash
    made by the demo's default hasher."""
    setup_django()
    import bcrypt
    from django.contrib.auth.hashers import check_password, get_hasher, make_password

    hasher = get_hasher("default")
    if hasher.algorithm != "bcrypt_sha256":
        raise AssertionError(f"the demo's default hasher is {hasher.algorithm}")
    encoded = make_password(PASSWORD)
    # Django hashes the password with SHA-256 first and gives bcrypt the hex
    # digest (so long passwords are not truncated at bcrypt's 72 bytes).
    prepared = hasher.digest(PASSWORD.encode()).hexdigest().encode()
    hashed = encoded.partition("$")[2].encode()
    if not (bcrypt.checkpw(prepared, hashed) and check_password(PASSWORD, encoded)):
        raise AssertionError("the hash does not check")
    series = compare_calls(
        {
            "checkpw": lambda: bcrypt.checkpw(prepared, hashed),
            "check_password": lambda: check_password(PASSWORD, encoded),
        },
        calls=2,
        rounds=rounds,
        warmup=1,
    )
    cost = int(hashed.split(b"$")[2])
    return HashCosts(
        prepared, hashed, cost, series["checkpw"], series["check_password"]
    )


async def _load(
    port: int, cores: int, costs: HashCosts, profile: dict
) -> dict[str, Series]:
    import bcrypt

    client = LoadClient(port, cores)
    users = itertools.cycle(USERS[: max(cores, 1)])
    calls = {
        name: expect(
            client,
            "POST",
            "/auth/login",
            json_body={"username": name, "password": PASSWORD},
        )
        for name in USERS
    }

    async def one_login() -> bool:
        return await calls[next(users)]()

    async def one_checkpw() -> bool:
        # bcrypt releases the GIL: with ``cores`` workers, as many threads run
        # it in parallel; with one worker this times ``t``.
        return await asyncio.to_thread(bcrypt.checkpw, costs.prepared, costs.hashed)

    try:
        return await compare_load(
            {"login": one_login, "threads": one_checkpw, "checkpw": one_checkpw},
            concurrency={"login": cores, "threads": cores, "checkpw": 1},
            rounds=profile["rounds"],
            duration=profile["duration"],
            warmup=profile["warmup"],
        )
    finally:
        await client.aclose()
