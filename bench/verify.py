"""Token verification in-process, and the denylist check at 10 vs 1,000,000 rows.

``chatauth.tokens.verify_token`` on a valid, not revoked access token (signature,
claims, type, then ``revocation.check`` through the local-memory cache) against
PyJWT's ``jwt.decode`` alone on the same token: what chatauth adds to the bare
signature check.  The target row is a token seen for the first time (the
signature memory, ``VERIFIED_TOKEN_CACHE_SIZE``, turned off, so PyJWT runs on
every call); a second, informational row is the same token presented again
(signature remembered, revocation still checked).

Then the denylist: ``revocation.check`` timed against two copies of the SQLite
file database, one whose ``RevokedToken`` table holds 10 rows and one holding a
million (bulk-inserted), in alternating rounds.  Once through the cache (the hot
path), once with the token's cache entry dropped before every call, so each
check makes its one database lookup, by the unique index on ``key``.  Neither
may grow with the size of the denylist.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

from bench.measure import (
    CpuMeter,
    Row,
    at_least,
    at_most,
    compare_calls,
    fmt_seconds,
    paired_ratio,
)
from bench.servers import USERS, setup_django, workspace

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from chatauth.tokens import VerifiedToken

FULL = {"calls": 10_000, "rounds": 10, "db_calls": 1_000, "revoked": 1_000_000}
QUICK = {"calls": 2_000, "rounds": 2, "db_calls": 300, "revoked": 100_000}
FEW = 10


def run(quick: bool) -> list[Row]:
    profile = QUICK if quick else FULL
    setup_django()
    import jwt
    from django.conf import settings as django_settings

    from chatauth.conf import settings
    from chatauth.tokens import issue_pair, verify_token

    backend = django_settings.CACHES[settings.CACHE_ALIAS]["BACKEND"]
    if not backend.endswith("LocMemCache"):
        raise AssertionError(f"expected the local-memory cache, got {backend}")
    raw = str(issue_pair(_bench_user()).access)
    secret, algorithm = settings.SECRET, settings.ALGORITHM
    verified = verify_token(raw)  # warms the cache: "not revoked", user state

    from django.test import override_settings

    first_sight = {**getattr(django_settings, "CHATAUTH", {})}
    first_sight["VERIFIED_TOKEN_CACHE_SIZE"] = 0
    with override_settings(CHATAUTH=first_sight):
        verify_token(raw)  # the revocation state back in the (cleared) cache
        rows = [
            _verify_row(
                "token verifications/s in-process (valid, not revoked)",
                lambda: verify_token(raw),
                lambda: jwt.decode(raw, secret, algorithms=[algorithm]),
                profile,
                "first sight: PyJWT runs on every call (signature memory off)",
                target=True,
            )
        ]
    verify_token(raw)
    rows.append(
        _verify_row(
            "token verifications/s in-process, same token again",
            lambda: verify_token(raw),
            lambda: jwt.decode(raw, secret, algorithms=[algorithm]),
            profile,
            "informational: the token's signature remembered "
            "(VERIFIED_TOKEN_CACHE_SIZE), revocation still checked on every call",
            target=False,
        )
    )
    rows += _denylist(verified, profile)
    return rows


def _verify_row(
    measure: str,
    ours_call: Callable[[], object],
    pyjwt_call: Callable[[], object],
    profile: dict,
    what: str,
    *,
    target: bool,
) -> Row:
    with CpuMeter() as cpu:
        series = compare_calls(
            {"verify_token": ours_call, "jwt.decode": pyjwt_call},
            calls=profile["calls"],
            rounds=profile["rounds"],
            warmup=profile["calls"] // 10,
        )
    ours, pyjwt = series["verify_token"], series["jwt.decode"]
    return Row(
        measure,
        ours.rate,
        "/s",
        baseline=pyjwt.rate,
        target=at_least(0.50) if target else None,
        paired=paired_ratio(ours, pyjwt),
        note="; ".join(
            [
                f"{what}; baseline PyJWT jwt.decode alone on the same token; "
                "local-memory cache; value and baseline are median round "
                "rates, ratio the median of back-to-back round pairs",
                ours.describe("verify_token"),
                pyjwt.describe("jwt.decode"),
                cpu.describe(),
            ]
        ),
        stats={
            "verify_token": ours.summary(),
            "jwt_decode": pyjwt.summary(),
            "cpu": cpu.summary(),
        },
    )


def _bench_user() -> AbstractBaseUser:
    from django.contrib.auth import get_user_model

    return get_user_model()._default_manager.get(username=USERS[0])


def _denylist(verified: VerifiedToken, profile: dict) -> list[Row]:
    """Time ``revocation.check`` on two copies of the database, one with ``FEW``
    revoked tokens and one with ``profile["revoked"]``, in alternating rounds."""
    from django.core.cache import caches
    from django.db import connection

    from chatauth import revocation
    from chatauth.conf import settings
    from chatauth.exceptions import TokenRevoked
    from chatauth.models import RevokedToken

    cache = caches[settings.CACHE_ALIAS]
    deny_key = f"{settings.CACHE_PREFIX}:deny:{verified.key}"
    many = profile["revoked"]
    few_db = connection.settings_dict["NAME"]
    many_db = workspace().database("denylist").removeprefix("sqlite:///")

    def use(name: str) -> None:
        # Same process, same connection settings: only the file differs.
        if connection.settings_dict["NAME"] != name:
            connection.close()
            connection.settings_dict["NAME"] = name

    use(many_db)
    seconds = _insert_revoked(many)
    total = RevokedToken.objects.count()
    # A revoked key somewhere in the big table is found, and refused.
    probe = RevokedToken.objects.order_by("?").values_list("key", flat=True)[0]
    try:
        revocation.check(replace(verified, key=probe))
    except TokenRevoked:
        pass
    else:
        raise AssertionError("a revoked token was accepted")
    cache.delete(f"{settings.CACHE_PREFIX}:deny:{probe}")
    query = RevokedToken.objects.filter(key=verified.key).values("pk")[:1]
    plan = " | ".join(
        line.split("SEARCH ", 1)[-1] for line in query.explain().splitlines()
    )
    use(few_db)
    _insert_revoked(FEW)
    if RevokedToken.objects.count() != FEW or total != many:
        raise AssertionError("the denylists do not have the sizes measured")

    check = lambda: revocation.check(verified)  # noqa: E731
    variants = {"few": check, "many": check}
    prepare = {"few": lambda: use(few_db), "many": lambda: use(many_db)}
    kwargs = {"calls": profile["db_calls"], "rounds": profile["rounds"]}
    hot = compare_calls(variants, prepare=prepare, warmup=100, **kwargs)
    # Drop only the token's denylist entry: each check then makes exactly its
    # one denylist query (the user's state stays cached).
    cold = compare_calls(
        variants,
        prepare=prepare,
        warmup=100,
        before=lambda: cache.delete(deny_key),
        **kwargs,
    )
    use(few_db)

    label = f"{many:,}"
    inserted = f"{many:,} rows bulk-inserted in {seconds:.1f} s"
    how = (
        f"baseline: the same check on a copy of the database with {FEW} revoked, "
        "in alternating rounds; value and baseline are p50"
    )
    return [
        Row(
            f"denylist check, DB lookup (cache entry dropped), {label} revoked",
            cold["many"].p50 * 1e6,
            "µs",
            baseline=cold["few"].p50 * 1e6,
            target=at_most(1.5),
            note=f"{how}; query plan: {plan}; p99 {fmt_seconds(cold['many'].p99)} "
            f"vs {fmt_seconds(cold['few'].p99)}; {inserted}",
            stats={
                f"db_{FEW}": cold["few"].summary(),
                f"db_{many}": cold["many"].summary(),
                "query_plan": plan,
            },
        ),
        Row(
            f"denylist check, cached, {label} revoked",
            hot["many"].p50 * 1e6,
            "µs",
            baseline=hot["few"].p50 * 1e6,
            target=at_most(1.5),
            note=f"{how}; p99 {fmt_seconds(hot['many'].p99)} "
            f"vs {fmt_seconds(hot['few'].p99)}",
            stats={
                f"cache_{FEW}": hot["few"].summary(),
                f"cache_{many}": hot["many"].summary(),
            },
        ),
    ]


def _insert_revoked(count: int) -> float:
    """Insert ``count`` revoked tokens with random 32-hex keys (like simplejwt's
    ``jti``) in one statement; return the seconds it took."""
    from django.db import connection, transaction
    from django.utils import timezone

    from chatauth.models import RevokedToken

    table = RevokedToken._meta.db_table
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        # Keys are generated and sorted by SQLite itself: a million Python-side
        # rows would take longer to build than the lookups take to measure.
        cursor.execute(
            f"""
            INSERT INTO {table} (key, token_type, reason, revoked_at, expires_at)
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s)
            SELECT k, 'access', 'bench', %s, %s
            FROM (SELECT lower(hex(randomblob(16))) AS k FROM n) ORDER BY k
            """,  # noqa: S608 - the table name is the model's, not input
            [count, adapt(now), adapt(now + timedelta(days=7))],
        )
    return time.perf_counter() - started
