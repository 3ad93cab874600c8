"""The revocation answers kept in the worker's memory (``chatauth.internal.nearcache``).

Against the real Redis on 127.0.0.1:6379: a copy is served only while Redis's
tracking connection says nothing changed, and a write by any other connection
is seen by the very next read -- 200 times in a row, no miss.  A read that
raced a write is not kept; a killed tracking connection, a flush, a Redis that
refuses tracking, and ``NEAR_CACHE = False`` all fall back to reading Redis.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from asgiref.sync import sync_to_async
from django.test import override_settings

from chatauth import revocation, tokens
from chatauth.exceptions import TokenRevoked
from chatauth.internal import cache as chatauth_cache
from chatauth.internal.nearcache import Incomplete, ReplyError, command, parse
from tests.caches import REDIS, redis_caches
from tests.conftest import require_service

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def other_client():
    """Another Redis connection: what another worker or process writes with."""
    client = redis.Redis.from_url(REDIS)
    yield client
    client.close()


def near():
    """The running loop's near cache."""
    entry = chatauth_cache._async_clients[asyncio.get_running_loop()]
    return entry[3]


async def tracking(keys: list[str]) -> None:
    """Read until the tracking connection is up (the first read starts it)."""
    for _ in range(200):
        await chatauth_cache.aget_many(keys)
        if near().ready:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the tracking connection never came up")


def key(kind: str = "deny") -> str:
    return f"chatauth:{kind}:{uuid.uuid4().hex}"


# --- The protocol ------------------------------------------------------------------


def test_parses_resp3_values():
    push = b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$2\r\nbc\r\n"
    assert parse(push) == (("push", [b"invalidate", [b"a", b"bc"]]), len(push))
    flush = b">2\r\n$10\r\ninvalidate\r\n_\r\n"
    assert parse(flush)[0] == ("push", [b"invalidate", None])
    hello = b"%2\r\n+server\r\n$5\r\nredis\r\n+id\r\n:42\r\n"
    assert parse(hello)[0] == [b"server", b"redis", b"id", 42]
    error = parse(b"-NOPERM no permissions\r\n")[0]
    assert isinstance(error, ReplyError) and "NOPERM" in str(error)
    assert parse(b"#t\r\n,1.5\r\n$-1\r\n", 0)[0] is True
    assert parse(b"|1\r\n+ttl\r\n:3\r\n+OK\r\n")[0] == b"OK"  # attribute skipped


@pytest.mark.parametrize(
    "partial",
    [b"", b">2\r\n$10\r\ninval", b"$5\r\nab", b"*2\r\n:1\r\n", b":12"],
)
def test_an_incomplete_value_waits_for_more(partial):
    with pytest.raises(Incomplete):
        parse(partial)


def test_garbage_is_refused_not_guessed():
    with pytest.raises(ValueError):
        parse(b"?what\r\n")


def test_commands_are_length_prefixed():
    assert command("CLIENT", b"a\r\nb") == b"*2\r\n$6\r\nCLIENT\r\n$4\r\na\r\nb\r\n"


# --- Copies and invalidation -------------------------------------------------------


async def test_a_repeated_read_is_answered_from_memory(on_redis):
    k = key()
    await sync_to_async(on_redis.set)(k, 0)
    await tracking([k])
    hits = near().hits
    assert await chatauth_cache.aget_many([k]) == {k: 0}
    assert await chatauth_cache.aget_many([k]) == {k: 0}
    assert near().hits == hits + 1  # the first read filled the copy


async def test_a_write_by_another_connection_is_seen_by_the_next_read(
    on_redis, other_client
):
    k = key()
    made = on_redis.make_and_validate_key(k)
    await sync_to_async(on_redis.set)(k, 0)
    await tracking([k])
    misses = 0
    for value in range(1, 201):
        assert await chatauth_cache.aget_many([k])  # a copy is kept
        other_client.set(made, on_redis._cache._serializer.dumps(value))
        if await chatauth_cache.aget_many([k]) != {k: value}:
            misses += 1
    assert misses == 0
    assert near().hits >= 150  # the copies were really used in between


async def test_every_kind_of_revocation_key_is_tracked(on_redis, other_client):
    keys = [key(kind) for kind in ("deny", "user", "ident")]
    for k in keys:
        await sync_to_async(on_redis.set)(k, 1)
    await tracking(keys)
    await chatauth_cache.aget_many(keys)
    for k in keys:
        other_client.delete(on_redis.make_and_validate_key(k))
        assert k not in await chatauth_cache.aget_many(keys)


async def test_a_key_redis_does_not_report_is_never_copied(on_redis, other_client):
    k = key("other")  # outside the tracked prefixes: a copy could go stale
    made = on_redis.make_and_validate_key(k)
    await sync_to_async(on_redis.set)(k, 1)
    await tracking([k])
    assert await chatauth_cache.aget_many([k]) == {k: 1}
    assert made not in near().entries
    other_client.set(made, on_redis._cache._serializer.dumps(2))
    assert await chatauth_cache.aget_many([k]) == {k: 2}


def mgets(client) -> int:
    return client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)


async def test_a_read_that_raced_a_write_is_not_kept(on_redis, other_client):
    """The MGET is answered with the old value, then the write lands and its
    invalidation reaches the tracking socket before the answer is handled:
    that answer must not be kept."""
    k = key()
    made = on_redis.make_and_validate_key(k)
    await sync_to_async(on_redis.set)(k, 1)
    await tracking([k])
    raced = 0
    for value in range(2, 102):
        near().forget(None)
        before = mgets(other_client)
        read = asyncio.ensure_future(chatauth_cache.aget_many([k]))
        for _ in range(50):
            await asyncio.sleep(0)
            # Blocking the loop: once Redis has run the MGET, its answer waits
            # in the socket while the write goes in.
            if mgets(other_client) > before:
                other_client.set(made, on_redis._cache._serializer.dumps(value))
                break
        else:
            other_client.set(made, on_redis._cache._serializer.dumps(value))
        if await read == {k: value - 1}:
            raced += 1
        assert await chatauth_cache.aget_many([k]) == {k: value}
    assert raced >= 50  # the answer predated the write that many times


async def test_revocation_through_chatauth_is_seen_at_once(on_redis, user):
    raw = str((await sync_to_async(tokens.issue_pair)(user)).access)
    verified = await tokens.averify_token(raw)
    await tracking([])
    for _ in range(3):
        assert await revocation.acheck(verified) == verified
    assert near().hits >= 2
    await sync_to_async(revocation.revoke_token)(verified, reason="test")
    with pytest.raises(TokenRevoked):
        await revocation.acheck(verified)


# --- Falling back to Redis ---------------------------------------------------------


async def test_a_killed_tracking_connection_drops_every_copy(on_redis, other_client):
    k = key()
    made = on_redis.make_and_validate_key(k)
    await sync_to_async(on_redis.set)(k, 1)
    await tracking([k])
    await chatauth_cache.aget_many([k])
    assert made in near().entries
    other_client.client_kill_filter(_id=near().client_id)
    other_client.set(made, on_redis._cache._serializer.dumps(2))
    # The kill reached the socket before the write's reply reached us.
    assert await chatauth_cache.aget_many([k]) == {k: 2}
    assert not near().ready and not near().entries
    await asyncio.sleep(1.1)  # RETRY_AFTER
    await tracking([k])  # and it comes back
    assert await chatauth_cache.aget_many([k]) == {k: 2}


async def test_a_flush_drops_every_copy(on_redis):
    k = key()
    await sync_to_async(on_redis.set)(k, 1)
    await tracking([k])
    await chatauth_cache.aget_many([k])
    assert near().entries
    # An empty database of its own: a flush of any database invalidates all.
    redis.Redis.from_url("redis://127.0.0.1:6379/15").flushdb()
    for _ in range(100):
        assert near().usable()  # drains
        if not near().entries:
            break
        await asyncio.sleep(0.01)
    assert not near().entries


async def test_no_copies_when_turned_off(on_redis):
    with override_settings(
        CACHES=redis_caches(REDIS),
        CHATAUTH={"CACHE_ALIAS": "redis", "NEAR_CACHE": False},
    ):
        k = key()
        await sync_to_async(chatauth_cache.get_cache().set)(k, 1)
        assert await chatauth_cache.aget_many([k]) == {k: 1}
        assert near() is None


async def test_a_redis_that_refuses_tracking_is_read_every_time(other_client):
    require_service("Redis", "127.0.0.1", 6379)
    name = f"chatauth-test-{uuid.uuid4().hex[:8]}"
    other_client.acl_setuser(
        name, enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-client"]
    )
    try:
        url = f"redis://{name}:pw@127.0.0.1:6379/0"
        with override_settings(
            CACHES=redis_caches(url), CHATAUTH={"CACHE_ALIAS": "redis"}
        ):
            cache = chatauth_cache.get_cache()
            k = key()
            made = cache.make_and_validate_key(k)
            await sync_to_async(cache.set)(k, 1)
            for _ in range(20):
                await chatauth_cache.aget_many([k])
                if near().refused:
                    break
                await asyncio.sleep(0.02)
            assert near().refused and not near().ready
            other_client.set(made, cache._cache._serializer.dumps(2))
            assert await chatauth_cache.aget_many([k]) == {k: 2}
    finally:
        other_client.acl_deluser(name)
