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
from chatauth.internal import nearcache
from chatauth.internal.nearcache import (
    Incomplete,
    ReplyError,
    command,
    parse,
)
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


# --- A Redis that misbehaves (a real socket, a scripted server) -----------------------


class ScriptedRedis:
    """A TCP server that answers the tracking handshake as told, then sends
    what the test writes, and answers pings only when ``answering``."""

    def __init__(self, handshake: bytes) -> None:
        self.handshake = handshake
        self.answering = True
        self.writer: asyncio.StreamWriter | None = None
        self.connections = 0

    async def __aenter__(self) -> ScriptedRedis:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address = self.server.sockets[0].getsockname()[:2]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        if self.writer is not None:
            self.writer.close()

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        self.writer = writer
        received = b""
        while b"TRACKING" not in received:
            received += await reader.read(4096)
        writer.write(self.handshake)
        while data := await reader.read(4096):
            if self.answering:
                writer.write(b"+PONG\r\n" * data.count(b"PING"))

    def send(self, data: bytes) -> None:
        self.writer.write(data)


HANDSHAKE = b"%1\r\n+id\r\n:7\r\n+OK\r\n+OK\r\n"
INVALIDATE = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\np:k\r\n"


async def scripted_near(redis_server, **timing) -> nearcache.NearCache:
    near = nearcache.NearCache(
        asyncio.get_running_loop(),
        redis_server.address,
        prefixes=["p:"],
        username=None,
        password=None,
        max_age=60,
    )
    for _ in range(200):
        if near.usable():
            break
        await asyncio.sleep(0.01)
    assert near.ready and near.client_id == 7
    near.keep(near.generation, ["p:k"], ["not revoked"])
    assert near.usable() and near.lookup(["p:k"]) == ["not revoked"]
    return near


async def settle() -> None:
    """Let the scripted server's bytes cross loopback."""
    await asyncio.sleep(0.05)


async def test_a_half_received_invalidation_trusts_nothing():
    async with ScriptedRedis(HANDSHAKE) as server:
        near = await scripted_near(server)
        server.send(INVALIDATE[:30])
        await settle()
        assert not near.usable()  # the rest may name this very key
        server.send(INVALIDATE[30:])
        await settle()
        assert near.usable() and near.lookup(["p:k"]) is None
        near.close()


async def test_a_silent_redis_is_a_lost_connection(monkeypatch):
    monkeypatch.setattr(nearcache, "PING_INTERVAL", 0.05)
    monkeypatch.setattr(nearcache, "SILENT_AFTER", 0.2)
    async with ScriptedRedis(HANDSHAKE) as server:
        near = await scripted_near(server)
        await asyncio.sleep(0.4)
        assert near.usable()  # pings answered: a quiet link is fine
        server.answering = False  # a dead link: nothing comes back
        await asyncio.sleep(0.4)
        assert not near.usable() and not near.entries
        near.close()


@pytest.mark.parametrize(
    "hostile",
    [
        b">2\r\n$10\r\ninvalidate\r\n*1\r\n$99999999\r\n",  # a huge declared size
        b"*99999999\r\n",
        b">2\r\n$10\r\ninvalidateXX*1\r\n$3\r\np:k\r\n",  # a bulk without its CRLF
        b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",  # nested too deep
        b"?\r\n",
        b":twelve\r\n",
    ],
)
async def test_a_message_it_does_not_accept_drops_every_copy(hostile):
    async with ScriptedRedis(HANDSHAKE) as server:
        near = await scripted_near(server)
        server.send(hostile)
        await settle()
        assert not near.usable() and not near.ready and not near.entries
        near.close()


async def test_an_endless_message_drops_every_copy(monkeypatch):
    monkeypatch.setattr(nearcache, "MAX_BUFFER", 4096)
    async with ScriptedRedis(HANDSHAKE) as server:
        near = await scripted_near(server)
        server.send(b">2\r\n$10\r\ninvalidate\r\n*1000\r\n" + b"$3\r\np:x\r" * 1000)
        await settle()
        assert not near.usable() and not near.ready and not near.entries
        near.close()


async def test_a_passing_refusal_is_tried_again(monkeypatch):
    monkeypatch.setattr(nearcache, "RETRY_AFTER", 0.05)
    loading = b"-LOADING Redis is loading the dataset in memory\r\n+OK\r\n+OK\r\n"
    async with ScriptedRedis(loading) as server:
        near = nearcache.NearCache(
            asyncio.get_running_loop(),
            server.address,
            prefixes=["p:"],
            username=None,
            password=None,
            max_age=60,
        )
        for _ in range(20):
            near.usable()
            await asyncio.sleep(0.02)
        assert not near.refused and server.connections >= 2
        server.handshake = HANDSHAKE  # loaded now
        for _ in range(50):
            if near.usable():
                break
            await asyncio.sleep(0.02)
        assert near.ready
        near.close()
