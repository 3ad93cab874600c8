"""One process-wide cache client for chatauth's hot paths."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol, cast

from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache

from chatauth.conf import on_reload
from chatauth.internal.nearcache import KINDS as NEAR_KINDS
from chatauth.internal.nearcache import NearCache

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    from django.core.cache.backends.base import BaseCache
    from django.core.cache.backends.redis import RedisCache, RedisSerializer

_lock = threading.Lock()
#: (alias, cache, whether it lives in this process's memory), made once per
#: process.
_cache: tuple[str, BaseCache, bool] | None = None


def _current() -> tuple[str, BaseCache, bool]:
    from chatauth.conf import settings

    global _cache
    alias = settings.CACHE_ALIAS
    current = _cache
    if current is None or current[0] != alias:
        with _lock:
            if _cache is None or _cache[0] != alias:
                cache = caches.create_connection(alias)
                _cache = (alias, cache, isinstance(cache, LocMemCache))
            current = _cache
    return current


def get_cache() -> BaseCache:
    """The cache named by ``CHATAUTH["CACHE_ALIAS"]``, created once per process.

    ``django.core.cache.caches[alias]`` is per request context under ASGI: each
    request gets a new backend object, and for Redis a new connection pool, so
    every authenticated request would open a new TCP connection (measured: 101
    connections for 100 requests, half the throughput).  Cache backends are
    thread-safe, so one shared object serves every request.  Local-memory caches
    share their storage by name, so this object sees what ``caches[alias]`` sees.
    """
    return _current()[1]


def is_local() -> bool:
    """True when reading the cache does no I/O (process memory): an event loop
    may read it without a thread hop.  (Not a file cache: even that may block
    on the disk.)"""
    return _current()[2]


def has_atomic_counters() -> bool:
    """True when the cache's ``add``/``incr`` are atomic (local memory, Redis,
    Memcached); a file or database cache reads then writes."""
    from django.core.cache.backends.memcached import BaseMemcachedCache
    from django.core.cache.backends.redis import RedisCache

    return isinstance(get_cache(), LocMemCache | RedisCache | BaseMemcachedCache)


def is_process_memory() -> bool:
    """True when the cache lives in this process's memory: no other process
    (another worker, a management command) can write to it."""
    return _current()[2]


@on_reload
def reset() -> None:
    """Forget the shared client (settings changed)."""
    global _cache
    _cache = None


# --- Async reads ---------------------------------------------------------------
#
# Django's cache API has no real async I/O: ``aget_many`` runs ``get_many`` in a
# thread.  Under load a thread hop and a blocking round trip per request cost
# more than the rest of the token check (measured on ``auth/me``).  For Django's
# own ``RedisCache`` the hot read (the revocation check) is done here with
# ``redis.asyncio`` on the caller's event loop instead: same keys (the cache's
# ``make_key``), same values (the cache's serializer), always from the primary
# (Django reads replicas; a revocation must be seen at once).  Writes stay on
# Django's cache.  Any other set-up (a subclass, another pool class, options
# ``redis.asyncio`` may not take) keeps the sync path in a thread.

#: Connections one event loop may open for these reads; a burst of connects
#: waits for a free one instead of opening one connection per socket.
ASYNC_MAX_CONNECTIONS = 32
#: Seconds a read, a connect, or the wait for a free connection may take; past
#: that the caller falls back to the database, as for any cache failure.
ASYNC_READ_TIMEOUT = 2.0
#: Cache ``OPTIONS`` that mean the same to ``redis.asyncio``.
_ASYNC_SAFE_OPTIONS = frozenset(
    {
        "db",
        "username",
        "password",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "health_check_interval",
        "client_name",
        "max_connections",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
        "parser_class",  # the sync parser: not passed on, redis.asyncio picks its own
        # How the client names itself to the server (Django 6.1 sets one).
        "driver_info",
        "lib_name",
        "lib_version",
    }
)
_async_lock = threading.Lock()
#: loop -> (cache, reads, serializer, near cache): ``reads`` groups the loop's
#: reads on its own redis.asyncio client (:class:`MgetBatch`); the near cache
#: (:mod:`chatauth.internal.nearcache`) answers repeated ones without Redis.
#: A plain dict, pruned of closed loops: a client's connections refer to their
#: loop, so weak keys would never die.
_async_clients: dict[
    asyncio.AbstractEventLoop,
    tuple[BaseCache, MgetBatch | None, RedisSerializer | None, NearCache | None],
] = {}


def _async_reader(
    cache: BaseCache,
) -> tuple[MgetBatch, RedisSerializer, NearCache | None] | None:
    """``(reads, serializer, near cache)`` for ``cache`` on the running loop,
    or None when ``cache`` has no async read here."""
    loop = asyncio.get_running_loop()
    entry = _async_clients.get(loop)
    if entry is None or entry[0] is not cache:
        if entry is not None and entry[3] is not None:
            entry[3].close()
        client, serializer = _make_async_reader(cache) or (None, None)
        reads = None if client is None else MgetBatch(client)
        near = None if client is None else _make_near_cache(loop, cache)
        entry = (cache, reads, serializer, near)
        with _async_lock:
            for old in [old for old in _async_clients if old.is_closed()]:
                # Its sockets close when collected; the near cache's now.
                old_near = _async_clients[old][3]
                if old_near is not None:
                    old_near.close()
                del _async_clients[old]
            _async_clients[loop] = entry
    _, reads, serializer, near = entry
    if reads is None or serializer is None:
        return None
    return reads, serializer, near


class _RedisClientState(Protocol):
    """What :func:`_make_async_reader` reads of Django's ``RedisCacheClient``:
    private attributes, which django-stubs leaves out."""

    _pool_class: type[redis.ConnectionPool]
    _pool_options: dict[str, Any]
    _servers: list[str]
    _serializer: RedisSerializer


def _make_async_reader(
    cache: BaseCache,
) -> tuple[redis.asyncio.Redis, RedisSerializer] | None:
    import redis
    import redis.asyncio
    from django.core.cache.backends.redis import RedisCache, RedisCacheClient

    if type(cache) is not RedisCache:
        return None
    if type(cache._cache) is not RedisCacheClient:
        return None
    sync_client = cast("_RedisClientState", cache._cache)
    if (
        sync_client._pool_class is not redis.ConnectionPool
        or not set(sync_client._pool_options) <= _ASYNC_SAFE_OPTIONS
    ):
        return None
    options = dict(sync_client._pool_options)
    options.pop("parser_class", None)
    options["max_connections"] = min(
        options.get("max_connections") or ASYNC_MAX_CONNECTIONS, ASYNC_MAX_CONNECTIONS
    )
    # A read (or connect) that hangs ends as a failure: the database decides.
    for name in ("socket_timeout", "socket_connect_timeout"):
        if options.get(name) is None or options[name] > ASYNC_READ_TIMEOUT:
            options[name] = ASYNC_READ_TIMEOUT
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        sync_client._servers[0], timeout=ASYNC_READ_TIMEOUT, **options
    )
    return redis.asyncio.Redis(connection_pool=pool), sync_client._serializer


def _make_near_cache(
    loop: asyncio.AbstractEventLoop, cache: BaseCache
) -> NearCache | None:
    """A :class:`~chatauth.internal.nearcache.NearCache` for the revocation
    keys of ``cache`` (a plain TCP Redis: no TLS, no Unix socket), or None."""
    from redis.connection import parse_url

    from chatauth.conf import settings

    if not settings.NEAR_CACHE:
        return None
    # Made only for the RedisCache that _make_async_reader took.
    sync_client = cast("_RedisClientState", cast("RedisCache", cache)._cache)
    options = sync_client._pool_options
    try:
        url: dict[str, Any] = parse_url(sync_client._servers[0])
    except ValueError:
        return None
    if (
        "path" in url
        or "connection_class" in url
        or any(name.startswith("ssl") for name in options)
    ):
        return None
    return NearCache(
        loop,
        (url.get("host") or "localhost", int(url.get("port") or 6379)),
        prefixes=[
            cache.make_and_validate_key(f"{settings.CACHE_PREFIX}:{kind}:")
            for kind in NEAR_KINDS
        ],
        username=options.get("username", url.get("username")),
        password=options.get("password", url.get("password")),
        max_age=settings.DENYLIST_CACHE_TTL.total_seconds(),
    )


def forget_near(keys: list[str]) -> None:
    """Drop this process's near copies of ``keys`` (cache keys, before
    ``make_key``): called by chatauth's own writes, from any thread.  The
    drop is queued on each loop before the writer's own result is: a
    coroutine that awaited the write cannot see the old copy after it."""
    if not _async_clients:
        return
    cache = get_cache()
    made = [cache.make_and_validate_key(key) for key in keys]
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    with _async_lock:
        entries = list(_async_clients.items())
    for loop, entry in entries:
        near = entry[3]
        if near is None or loop.is_closed():
            continue
        if loop is running:
            near.forget(made)
        else:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(near.forget, made)


async def aget_many(keys: list[str]) -> dict[str, Any] | None:
    """``get_many(keys)`` without blocking the loop, or None when this cache
    offers no async read (the caller then runs the sync path in a thread).

    Raises whatever the cache raises (the caller decides what a failure means).
    """
    cache = get_cache()
    reader = _async_reader(cache)
    if reader is None:
        return None
    reads, serializer, near = reader
    made = [cache.make_and_validate_key(key) for key in keys]
    generation = None
    if near is not None and near.usable():
        copies = near.lookup(made)
        if copies is not None:
            return dict(zip(keys, copies, strict=True))
        generation = near.generation
    values = [
        None if value is None else serializer.loads(value)
        for value in await reads.get(made)
    ]
    if generation is not None and near is not None:  # (near is, with a generation)
        near.keep(generation, made, values)
    return {
        key: value for key, value in zip(keys, values, strict=True) if value is not None
    }


class CacheReadFailed(ConnectionError):
    """The grouped read that carried this one failed (its cause is chained)."""


class MgetBatch:
    """Concurrent reads of one loop in few ``MGET`` commands, by group commit:
    the first read goes out at once; reads that arrive while it is in flight
    wait and go out together, as one command, when it returns.  A lone read
    costs one round trip, as before; sixteen concurrent ones cost about two,
    not sixteen (each command costs more CPU in redis-py than its keys do).
    One command carries at most :attr:`MAX_KEYS` keys; a backlog larger than
    that gets up to :attr:`MAX_IN_FLIGHT` commands at once."""

    MAX_KEYS = 512
    MAX_IN_FLIGHT = 4

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self.waiting: deque[tuple[list[Any], asyncio.Future[list[Any]]]] = deque()
        self.waiting_keys = 0
        self.runners: set[asyncio.Task[None]] = set()

    async def get(self, keys: list[Any]) -> list[Any]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.waiting.append((keys, future))
        self.waiting_keys += len(keys)
        if not self.runners or (
            self.waiting_keys > self.MAX_KEYS and len(self.runners) < self.MAX_IN_FLIGHT
        ):
            runner = asyncio.ensure_future(self._run())
            self.runners.add(runner)
            runner.add_done_callback(self._ended)
        return await future

    def _take(self) -> list[tuple[list[Any], asyncio.Future[list[Any]]]]:
        batch: list[tuple[list[Any], asyncio.Future[list[Any]]]] = []
        count = 0
        while self.waiting and (
            not batch or count + len(self.waiting[0][0]) <= self.MAX_KEYS
        ):
            keys, future = self.waiting.popleft()
            self.waiting_keys -= len(keys)
            count += len(keys)
            batch.append((keys, future))
        return batch

    async def _run(self) -> None:
        batch: list[tuple[list[Any], asyncio.Future[list[Any]]]] = []
        try:
            while self.waiting:
                batch = self._take()
                try:
                    values = await self.client.mget(
                        [k for keys, _ in batch for k in keys]
                    )
                except Exception as e:
                    _fail(batch, e)
                    batch = []
                    continue
                start = 0
                for keys, future in batch:
                    if not future.done():  # not cancelled meanwhile
                        future.set_result(values[start : start + len(keys)])
                    start += len(keys)
                batch = []
        finally:
            # Leave the set now, not only in the done-callback: a read queued
            # between this return and that callback would find a runner gone.
            self.runners.discard(asyncio.current_task())
            _fail(batch, ConnectionError("the cache read was cancelled"))

    def _ended(self, runner: asyncio.Task[None]) -> None:
        """A runner is done; if it was cancelled (the loop is closing, perhaps
        before it even started) and no other runner is left, nobody may wait
        for ever."""
        self.runners.discard(runner)
        if runner.cancelled() and not self.runners and self.waiting:
            _fail(list(self.waiting), ConnectionError("the cache read was cancelled"))
            self.waiting.clear()
            self.waiting_keys = 0


def _fail(
    batch: list[tuple[list[Any], asyncio.Future[list[Any]]]], error: Exception
) -> None:
    for _, future in batch:
        if not future.done():
            failure = CacheReadFailed(f"cache read failed: {error!r}")
            failure.__cause__ = error
            future.set_exception(failure)
