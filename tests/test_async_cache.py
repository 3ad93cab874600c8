"""The revocation check read from Redis on the event loop (``redis.asyncio``).

``averify_token`` (async views such as ``auth/me``, every chat socket) reads
Django's Redis cache without a thread hop.  These tests run against the real
Redis on 127.0.0.1:6379 and show that this read sees exactly what Django's cache
wrote, refuses what the full check refuses, reads the primary only, and falls
back to the database (fails closed) when Redis is down.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from chatauth import revocation, tokens
from chatauth.exceptions import TokenError, TokenRevoked
from chatauth.internal import cache as chatauth_cache
from tests.caches import NOWHERE, REDIS, file_caches, redis_caches
from tests.conftest import require_service

pytestmark = pytest.mark.django_db(transaction=True)


async def test_reads_what_djangos_cache_wrote(on_redis):
    on_redis.set_many({"int": 1, "zero": 0, "tuple": (True, 12.5), "text": "gone"})
    got = await chatauth_cache.aget_many(["int", "zero", "tuple", "text", "absent"])
    assert got == {"int": 1, "zero": 0, "tuple": (True, 12.5), "text": "gone"}
    assert got == on_redis.get_many(["int", "zero", "tuple", "text", "absent"])


def test_each_event_loop_gets_its_own_client(on_redis):
    on_redis.set("k", 7)
    assert asyncio.run(chatauth_cache.aget_many(["k"])) == {"k": 7}
    assert asyncio.run(chatauth_cache.aget_many(["k"])) == {"k": 7}  # a new loop


async def test_no_async_read_for_other_caches():
    assert chatauth_cache.is_local()
    assert await chatauth_cache.aget_many(["k"]) is None


async def test_verify_on_the_loop_refuses_what_the_full_check_refuses(on_redis, user):
    raw = str((await sync_to_async(tokens.issue_pair)(user)).access)
    verified = await tokens.averify_token(raw)  # cold: the database fills Redis
    assert await revocation.acheck(verified) == verified  # warm: on the loop
    await sync_to_async(revocation.revoke_token)(verified, reason="test")
    with pytest.raises(TokenRevoked):
        await revocation.acheck(verified)
    with pytest.raises(TokenRevoked):
        await tokens.averify_token(raw)


async def test_logout_everywhere_and_deactivation_seen_on_the_loop(on_redis, user):
    raw = str((await sync_to_async(tokens.issue_pair)(user)).access)
    verified = await tokens.averify_token(raw)
    await sync_to_async(revocation.revoke_user)(user)
    with pytest.raises(TokenRevoked):
        await revocation.acheck(verified)

    fresh = str((await sync_to_async(tokens.issue_pair)(user)).access)
    fresh_verified = await tokens.averify_token(fresh)
    user.is_active = False
    await sync_to_async(user.save)()
    with pytest.raises(TokenError) as excinfo:
        await revocation.acheck(fresh_verified)
    assert excinfo.value.code == "user_inactive"


async def test_a_denial_in_redis_is_enough(on_redis, user):
    """The loop's read is really of Redis: a denial found only there refuses."""
    raw = str((await sync_to_async(tokens.issue_pair)(user)).access)
    verified = await tokens.averify_token(raw)
    on_redis.set(f"chatauth:deny:{verified.key}", 1)
    with pytest.raises(TokenRevoked):
        await tokens.averify_token(raw)


async def test_a_miss_is_never_a_pass(on_redis, user):
    raw = str((await sync_to_async(tokens.issue_pair)(user)).access)
    verified = tokens.classify(tokens.decode(raw), raw)
    with pytest.raises(revocation.NeedsDatabase):
        await revocation.acheck(verified)  # nothing cached yet
    on_redis.set(f"chatauth:deny:{verified.key}", 0)
    with pytest.raises(revocation.NeedsDatabase):
        await revocation.acheck(verified)  # the user's state is missing


async def test_reads_the_primary_not_a_replica(user):
    """Django reads replicas; a revocation written to the primary must be seen."""
    require_service("Redis", "127.0.0.1", 6379)
    with override_settings(
        CACHES=redis_caches(REDIS, NOWHERE), CHATAUTH={"CACHE_ALIAS": "redis"}
    ):
        raw = str((await sync_to_async(tokens.issue_pair)(user)).access)
        verified = await tokens.averify_token(raw)  # writes go to the primary
        await sync_to_async(revocation.revoke_token)(verified, reason="test")
        with pytest.raises(TokenRevoked):
            await revocation.acheck(verified)
        await sync_to_async(chatauth_cache.get_cache().clear)()


async def test_redis_down_fails_closed(user):
    raw = str((await sync_to_async(tokens.issue_pair)(user)).access)
    verified = await sync_to_async(tokens.verify_token)(raw)
    await sync_to_async(revocation.revoke_token)(verified)
    with override_settings(
        CACHES=redis_caches(NOWHERE), CHATAUTH={"CACHE_ALIAS": "redis"}
    ):
        with pytest.raises(revocation.NeedsDatabase):
            await revocation.acheck(verified)
        with pytest.raises(TokenRevoked):  # the database decides
            await tokens.averify_token(raw)
        fresh = str((await sync_to_async(tokens.issue_pair)(user)).access)
        assert (await tokens.averify_token(fresh)).identifier == "alice"


def test_closed_loops_do_not_keep_clients(on_redis):
    on_redis.set("k", 7)
    for _ in range(5):
        assert asyncio.run(chatauth_cache.aget_many(["k"])) == {"k": 7}
    # Each new loop's first read drops the entries of loops already closed.
    assert len(chatauth_cache._async_clients) <= 1


async def test_a_burst_shares_a_bounded_pool(on_redis):
    on_redis.set("k", 7)
    results = await asyncio.gather(
        *(chatauth_cache.aget_many(["k"]) for _ in range(200))
    )
    assert results == [{"k": 7}] * 200
    reads, _, _ = chatauth_cache._async_reader(chatauth_cache.get_cache())
    pool = reads.client.connection_pool
    opened = len(pool._available_connections) + len(pool._in_use_connections)
    assert 0 < opened <= chatauth_cache.ASYNC_MAX_CONNECTIONS


@pytest.mark.parametrize(
    "options",
    [{"retry_on_timeout": True}, {"pool_class": "redis.BlockingConnectionPool"}],
)
async def test_unusual_redis_setups_keep_the_sync_path(options, user):
    require_service("Redis", "127.0.0.1", 6379)
    config = redis_caches(REDIS)
    config["redis"]["OPTIONS"] = options
    with override_settings(CACHES=config, CHATAUTH={"CACHE_ALIAS": "redis"}):
        assert await chatauth_cache.aget_many(["k"]) is None
        raw = str((await sync_to_async(tokens.issue_pair)(user)).access)
        assert (await tokens.averify_token(raw)).identifier == "alice"
        await sync_to_async(chatauth_cache.get_cache().clear)()


@pytest.fixture
def mget_calls(on_redis):
    """How many MGET commands this loop's client sends (the real command, counted
    on the way: Redis's own statistics would count other clients' too)."""

    async def reads():
        reads, _, _ = chatauth_cache._async_reader(chatauth_cache.get_cache())
        return reads

    calls = []

    async def install():
        batch = await reads()
        real = batch.client.mget

        async def counted(keys):
            calls.append(len(keys))
            return await real(keys)

        batch.client.mget = counted
        return calls

    return install


async def test_concurrent_reads_share_a_command(on_redis, mget_calls):
    """Group commit for reads: a burst costs a few MGETs, each caller gets its
    own keys' values, in order."""
    on_redis.set_many({f"k{i}": i for i in range(64)})
    calls = await mget_calls()
    results = await asyncio.gather(
        *(
            chatauth_cache.aget_many([f"k{i}", f"k{63 - i}", "absent"])
            for i in range(64)
        )
    )
    assert results == [{f"k{i}": i, f"k{63 - i}": 63 - i} for i in range(64)]
    assert 1 <= len(calls) <= 4, calls  # one goes out at once, the rest together
    assert sum(calls) == 64 * 3
    calls.clear()
    assert await chatauth_cache.aget_many(["k1"]) == {"k1": 1}
    assert calls == [1]


async def test_a_backlog_is_cut_into_bounded_commands(on_redis, mget_calls):
    on_redis.set("k", 7)
    calls = await mget_calls()
    results = await asyncio.gather(
        *(chatauth_cache.aget_many(["k", "absent"]) for _ in range(2000))
    )
    assert results == [{"k": 7}] * 2000
    assert max(calls) <= chatauth_cache.MgetBatch.MAX_KEYS
    assert sum(calls) == 4000


async def test_a_cancelled_reader_does_not_hurt_the_others(on_redis):
    on_redis.set("k", 7)
    first = asyncio.ensure_future(chatauth_cache.aget_many(["k"]))
    waiting = [asyncio.ensure_future(chatauth_cache.aget_many(["k"])) for _ in range(8)]
    await asyncio.sleep(0)
    waiting[3].cancel()
    assert await first == {"k": 7}
    done = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(done[3], asyncio.CancelledError)
    assert [r for i, r in enumerate(done) if i != 3] == [{"k": 7}] * 7


async def test_a_cancelled_command_leaves_nobody_waiting(on_redis):
    """The loop closing cancels the command in flight: its readers, and those
    queued behind it, fail at once instead of waiting for ever."""
    on_redis.set("k", 7)
    readers = [asyncio.ensure_future(chatauth_cache.aget_many(["k"])) for _ in range(5)]
    await asyncio.sleep(0)  # the first command is in flight, four wait
    reads, _, _ = chatauth_cache._async_reader(chatauth_cache.get_cache())
    for runner in list(reads.runners):
        runner.cancel()
    done = await asyncio.wait_for(
        asyncio.gather(*readers, return_exceptions=True), timeout=5
    )
    assert all(isinstance(r, ConnectionError) for r in done), done
    assert not reads.waiting and not reads.runners
    assert await chatauth_cache.aget_many(["k"]) == {"k": 7}  # and it reads again


async def test_a_failed_command_fails_every_reader_it_carried():
    with override_settings(
        CACHES=redis_caches(NOWHERE), CHATAUTH={"CACHE_ALIAS": "redis"}
    ):
        results = await asyncio.gather(
            *(chatauth_cache.aget_many(["k"]) for _ in range(5)),
            return_exceptions=True,
        )
    assert all(isinstance(r, chatauth_cache.CacheReadFailed) for r in results)
    # One exception each, not one shared (whose traceback every raise extends).
    assert len({id(r) for r in results}) == 5


async def test_a_chainlit_token_finds_its_user_through_redis(on_redis, user):
    """A Chainlit-format token's user is read from Redis on the loop; after a
    rename, with the old name taken by someone else, the old tokens are ended
    and a new one names the new holder, not the cached old one."""
    from django.contrib.auth import get_user_model

    from tests.conftest import chainlit_token

    raw = chainlit_token("alice")
    first = await tokens.averify_token(raw)  # found in the database, then cached
    assert str(first.user_pk) == str(user.pk)
    again = await tokens.averify_token(raw)  # the cached identity, on the loop
    assert again.user_pk == first.user_pk and again.current_identifier == "alice"
    user.username = "alice-renamed"
    await sync_to_async(user.save)()
    other = await sync_to_async(get_user_model().objects.create_user)("alice")
    with pytest.raises(TokenRevoked):  # the rename ended tokens naming "alice"
        await tokens.averify_token(raw)
    fresh = chainlit_token("alice", iat=time.time() + 0.01)
    now = await tokens.averify_token(fresh)
    assert str(now.user_pk) == str(other.pk)
    assert str((await tokens.averify_token(fresh)).user_pk) == str(other.pk)


async def test_a_warm_redis_decides_on_the_loop(on_redis, user, monkeypatch):
    """Access and Chainlit-format tokens whose answers Redis holds are checked
    without a worker thread (the database is not asked)."""
    from tests.conftest import chainlit_token

    access = str((await sync_to_async(tokens.issue_pair)(user)).access)
    chainlit = chainlit_token("alice")
    await tokens.averify_token(access)  # cold: via the database, then cached
    first = await tokens.averify_token(chainlit)

    def refuse(verified):
        raise AssertionError("went to a worker thread")

    monkeypatch.setattr(tokens, "_check_in_worker", refuse)
    monkeypatch.setattr(tokens, "_full_check", refuse)
    assert str((await tokens.averify_token(access)).user_pk) == str(user.pk)
    assert (await tokens.averify_token(chainlit)).user_pk == first.user_pk
    assert await revocation.acached_identity("alice") == first.user_pk
    assert await revocation.acached_identity("nobody") is None


async def test_a_cache_without_an_async_read_finds_chainlit_users_in_a_thread(
    tmp_path, user
):
    """A file cache (not local, no async read): the cached identity cannot be
    read on the loop, so the full check finds the user."""
    from tests.conftest import chainlit_token

    with override_settings(
        CACHES=file_caches(tmp_path), CHATAUTH={"CACHE_ALIAS": "files"}
    ):
        assert not chatauth_cache.is_local()
        assert await revocation.acached_identity("alice") is None
        raw = chainlit_token("alice")
        assert str((await tokens.averify_token(raw)).user_pk) == str(user.pk)
        assert await revocation.acached_identity("alice") is None  # not on the loop
        assert str((await tokens.averify_token(raw)).user_pk) == str(user.pk)
