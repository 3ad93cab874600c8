"""Revocation answers kept in the worker's memory, invalidated by Redis.

A token check reads two or three small keys from Redis (the credential's
denylist entries and the user's state).  At concurrency 1 that round trip is
most of the check's time.  Redis can tell a client when a key it may have
copied changes (client-side caching, RESP3 ``CLIENT TRACKING``); this module
keeps a copy of the revocation keys in each worker's event loop and drops it
when Redis says so.

How a stale copy is ruled out:

- **Broadcast tracking on a connection of its own**: ``CLIENT TRACKING ON BCAST
  PREFIX <deny> PREFIX <user> PREFIX <ident>``.  Every write to a revocation key,
  by any client (another worker, a management command, Django's sync client in
  this process), an expiry, an eviction and a flush make Redis push an
  ``invalidate`` message here.  Redis queues that message while it executes the
  write and writes it out in the same turn as the writer's answer, before it
  runs another command.  (``SWAPDB`` sends none: do not use it on this Redis.)
- **Drained before every check**: the socket is read (non-blocking) at the
  start of every lookup, so an invalidation that has arrived is applied before
  the copy is trusted, whatever order the event loop would have served the two
  sockets in; while part of a message is still on its way nothing is trusted.
  Writes made by this process drop the copy directly too
  (:func:`chatauth.internal.cache.forget_near`).
- **A silent connection is a lost one**: the tracking connection is pinged
  every :data:`PING_INTERVAL`; when Redis has sent nothing for
  :data:`SILENT_AFTER` since a ping (a dead link, a partition, a host gone
  without closing), every copy is dropped.  That is the bound on a copy's
  staleness when the network fails: an invalidation lost or delayed in the
  network for longer than that cannot be outlived.
- **A read in flight is not kept** if any invalidation arrived meanwhile (its
  answer may predate the write): the *generation* counts invalidations.
- **No tracking, no copy**: until the tracking connection is up, after it
  fails or closes (then every copy is dropped), when Redis refuses tracking
  (before 6.0, an ACL without ``CLIENT``), or with TLS or a Unix socket, every
  check reads Redis as before.  A copy is also kept at most
  ``DENYLIST_CACHE_TTL`` after it was read.
- **Bounded input**: a message over :data:`MAX_BUFFER` bytes (a bulk delete
  of many keys at once) or one that does not parse drops every copy and
  reconnects rather than being parsed at length.

Only the event-loop read path (:func:`chatauth.internal.cache.aget_many`) uses
it; ``CHATAUTH["NEAR_CACHE"] = False`` turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Any

logger = logging.getLogger(__name__)

#: The revocation keys' kinds (``<CACHE_PREFIX>:<kind>:...``) kept here.
KINDS = ("deny", "user", "ident")
#: Past this many entries the copy is dropped and starts again (a bound on
#: memory; each entry is a key and a small tuple).
MAX_ENTRIES = 100_000
#: Seconds before a tracking connection that failed is tried again.
RETRY_AFTER = 1.0
#: Seconds between pings on the tracking connection, and how long Redis may
#: stay silent after one before the connection counts as lost.
PING_INTERVAL = 0.25
SILENT_AFTER = 1.0
#: Bytes of unparsed input at most (about 4,000 keys in one invalidation):
#: past that every copy is dropped and the connection made again.
MAX_BUFFER = 256 * 1024
#: Nesting of RESP aggregates at most (an invalidation is two levels deep).
MAX_DEPTH = 4
#: Seconds the tracking handshake may take.
HANDSHAKE_TIMEOUT = 2.0
CLIENT_NAME = "chatauth-near-cache"


class Incomplete(Exception):
    """The buffer ends inside a RESP value: wait for more bytes."""


class Malformed(ValueError):
    """Not RESP, or larger or deeper than this client accepts."""


class ReplyError(Exception):
    """Redis answered a command with an error."""


def _line(buf: bytes | bytearray, pos: int) -> tuple[bytes, int]:
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete
    return bytes(buf[pos:end]), end + 2


def parse(buf: bytes | bytearray, pos: int = 0, depth: int = 0) -> tuple[Any, int]:
    """One RESP2/RESP3 value from ``buf`` at ``pos``: ``(value, next pos)``.

    Strings stay bytes; an error reply is a :class:`ReplyError` value (not
    raised: it is the answer); a push is ``("push", [items])``.  Raises
    :class:`Incomplete` when the value is not all there yet, :class:`Malformed`
    when it is not RESP or exceeds :data:`MAX_BUFFER` or :data:`MAX_DEPTH`.
    """
    if pos >= len(buf):
        raise Incomplete
    kind = buf[pos : pos + 1]
    head, pos = _line(buf, pos + 1)
    try:
        if kind in (b"+", b"("):
            return head, pos
        if kind == b"-":
            return ReplyError(head.decode("utf-8", "replace")), pos
        if kind == b":":
            return int(head), pos
        if kind == b",":
            return float(head), pos
        if kind == b"#":
            return head == b"t", pos
        if kind == b"_":
            return None, pos
        size = int(head) if kind in b"$=!*~>%|" and len(kind) == 1 else None
    except ValueError:
        raise Malformed(f"bad RESP {kind!r} value") from None
    if size is None:
        raise Malformed(f"not a RESP value: {kind!r}")
    if size > MAX_BUFFER:
        raise Malformed(f"a RESP value of {size} bytes or items")
    if kind in (b"$", b"=", b"!"):
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise Incomplete
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise Malformed("a bulk string without its CRLF")
        data = bytes(buf[pos : pos + size])
        if kind == b"!":
            return ReplyError(data.decode("utf-8", "replace")), pos + size + 2
        return data, pos + size + 2
    if depth >= MAX_DEPTH:
        raise Malformed("RESP nested too deep")
    if size < 0:
        return None, pos
    count = size * 2 if kind in (b"%", b"|") else size
    items = []
    for _ in range(count):
        item, pos = parse(buf, pos, depth + 1)
        items.append(item)
    if kind == b"|":  # attributes precede the value they describe
        return parse(buf, pos, depth)
    if kind == b">":
        return ("push", items), pos
    return items, pos


def command(*args: str | bytes) -> bytes:
    """``args`` as one RESP command."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class NearCache:
    """The copy for one event loop.  Use from that loop only."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: tuple[str, int],
        *,
        prefixes: list[str],
        username: str | None,
        password: str | None,
        max_age: float,
    ) -> None:
        self.loop = loop
        self.address = address
        self.prefixes = prefixes
        self.username = username
        self.password = password
        self.max_age = max_age
        #: Redis key -> (value, monotonic deadline).
        self.entries: dict[str, tuple[Any, float]] = {}
        #: Counts invalidations (and losses of the connection): a read that
        #: began under another generation is not kept.
        self.generation = 0
        self.sock: socket.socket | None = None
        self.ready = False
        self.refused = False  # Redis will not track for us: never try again
        self.retry_at = 0.0
        self.connecting: asyncio.Task[None] | None = None
        self.buffer = bytearray()
        #: When the oldest ping Redis has not answered (with anything) was sent.
        self.unanswered_since: float | None = None
        self.pinger: asyncio.TimerHandle | None = None
        #: The tracking connection's id in Redis (``CLIENT LIST``), and how
        #: many lookups were answered here.
        self.client_id: int | None = None
        self.hits = 0

    # --- Reading ---------------------------------------------------------------

    def usable(self) -> bool:
        """Whether copies may be trusted now (invalidations applied first, no
        message half-received, Redis not silent); starts the tracking
        connection when it is due."""
        if self.ready:
            self.drain()
            if self.ready and self._silent():
                self._lost(ConnectionError("Redis went silent"))
            return self.ready and not self.buffer
        if (
            not self.refused
            and self.connecting is None
            and time.monotonic() >= self.retry_at
        ):
            self.connecting = self.loop.create_task(self._connect())
        return False

    def lookup(self, keys: list[str]) -> list[Any] | None:
        """The copies of ``keys``, if all are here and fresh (call
        :meth:`usable` first)."""
        now = time.monotonic()
        values = []
        for key in keys:
            entry = self.entries.get(key)
            if entry is None or entry[1] < now:
                return None
            values.append(entry[0])
        self.hits += 1
        return values

    def keep(self, generation: int, keys: list[str], values: list[Any]) -> None:
        """Keep what a read begun at ``generation`` found, unless anything was
        invalidated since (the read may have raced a write)."""
        if not self.usable() or generation != self.generation:
            return
        if len(self.entries) + len(keys) > MAX_ENTRIES:
            self.entries.clear()
        deadline = time.monotonic() + self.max_age
        tracked = tuple(self.prefixes)
        for key, value in zip(keys, values, strict=True):
            # Only what Redis reports on: any other key's copy could go stale.
            if value is not None and key.startswith(tracked):
                self.entries[key] = (value, deadline)

    def forget(self, keys: list[str] | None) -> None:
        """Drop the copies of ``keys`` (all of them: None)."""
        self.generation += 1
        if keys is None:
            self.entries.clear()
        else:
            for key in keys:
                self.entries.pop(key, None)

    # --- The tracking connection -----------------------------------------------

    async def _connect(self) -> None:
        sock = None
        self.buffer.clear()
        try:
            host, port = self.address
            family, kind, proto, _, address = (
                await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            )[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            await asyncio.wait_for(
                self.loop.sock_connect(sock, address), HANDSHAKE_TIMEOUT
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            hello: list[str] = ["HELLO", "3"]
            if self.password is not None:
                hello += ["AUTH", self.username or "default", self.password]
            tracking = ["CLIENT", "TRACKING", "ON", "BCAST"]
            for prefix in self.prefixes:
                tracking += ["PREFIX", prefix]
            commands = [hello, ["CLIENT", "SETNAME", CLIENT_NAME], tracking]
            await self.loop.sock_sendall(sock, b"".join(command(*c) for c in commands))
            replies = await asyncio.wait_for(
                self._replies(sock, len(commands)), HANDSHAKE_TIMEOUT
            )
            for reply in replies:
                if isinstance(reply, ReplyError):
                    raise reply
            hello_reply = dict(zip(replies[0][::2], replies[0][1::2], strict=True))
            self.client_id = hello_reply.get(b"id")
        except ReplyError as e:
            self.buffer.clear()
            _close(sock)
            if _permanent(e):
                # An old Redis, an ACL without CLIENT or HELLO, a proxy that
                # does not speak RESP3: reads go to Redis every time.
                logger.info("Redis refused client tracking (%s): no near cache", e)
                self.refused = True
            else:  # loading, busy, a password being rotated: later
                logger.warning("near cache: Redis answered %s; trying again", e)
                self.retry_at = time.monotonic() + RETRY_AFTER
            return
        except Exception as e:
            logger.warning("near cache: no tracking connection (%r)", e)
            self.buffer.clear()
            self.retry_at = time.monotonic() + RETRY_AFTER
            _close(sock)
            return
        except BaseException:  # cancelled: the loop is closing
            _close(sock)
            raise
        finally:
            self.connecting = None
        self.sock = sock
        self.forget(None)  # nothing older than this connection is trusted
        self.ready = True
        self.unanswered_since = None
        self.loop.add_reader(sock.fileno(), self.drain)
        self.pinger = self.loop.call_later(PING_INTERVAL, self._ping)
        self.drain()

    async def _replies(self, sock: socket.socket, count: int) -> list[Any]:
        replies: list[Any] = []
        while len(replies) < count:
            data = await self.loop.sock_recv(sock, 65536)
            if not data:
                raise ConnectionError("closed during the handshake")
            self.buffer += data
            replies += [v for v in self._values() if not _is_push(v)]
        return replies

    def _values(self) -> list[Any]:
        """Every complete value in the buffer (consumed)."""
        values, pos = [], 0
        while True:
            try:
                value, pos = parse(self.buffer, pos)
            except Incomplete:
                break
            values.append(value)
        del self.buffer[:pos]
        if len(self.buffer) > MAX_BUFFER:
            raise Malformed(f"over {MAX_BUFFER} bytes of one message")
        return values

    def _ping(self) -> None:
        """Ask Redis for a word (``PING``): its silence is how a dead link
        shows (see :data:`SILENT_AFTER`)."""
        self.pinger = None
        sock = self.sock
        if sock is None:
            return
        try:
            sock.send(PING)  # a few bytes: a full send buffer is a dead link too
        except OSError as e:
            self._lost(e)
            return
        if self.unanswered_since is None:
            self.unanswered_since = time.monotonic()
        self.pinger = self.loop.call_later(PING_INTERVAL, self._ping)

    def _silent(self) -> bool:
        since = self.unanswered_since
        return since is not None and time.monotonic() - since > SILENT_AFTER

    def drain(self) -> None:
        """Apply every invalidation the socket holds; lose the copy if the
        connection is gone or sends what this client does not accept."""
        sock = self.sock
        if sock is None:
            return
        try:
            received = False
            while True:
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                if not data:
                    raise ConnectionError("Redis closed the tracking connection")
                received = True
                self.buffer += data
            if received:
                self.unanswered_since = None
            # A complete message ends with CRLF: no need to parse otherwise.
            if self.buffer.endswith(b"\r\n"):
                for value in self._values():
                    self._apply(value)
            elif len(self.buffer) > MAX_BUFFER:
                raise Malformed(f"over {MAX_BUFFER} bytes of one message")
        except Exception as e:
            self._lost(e)

    def _apply(self, value: Any) -> None:
        if _is_push(value) and value[1] and value[1][0] == b"invalidate":
            keys = value[1][1] if len(value[1]) > 1 else None
            self.forget(None if keys is None else [k.decode() for k in keys])

    def _lost(self, error: BaseException) -> None:
        logger.warning("near cache: tracking connection lost (%r)", error)
        self.close()
        self.retry_at = time.monotonic() + RETRY_AFTER

    def close(self) -> None:
        """Stop trusting copies and close the connection."""
        self.ready = False
        self.forget(None)
        sock, self.sock = self.sock, None
        self.buffer.clear()
        self.unanswered_since = None
        if self.pinger is not None:
            self.pinger.cancel()
            self.pinger = None
        if sock is not None:
            with contextlib.suppress(Exception):
                if not self.loop.is_closed():
                    self.loop.remove_reader(sock.fileno())
            _close(sock)


PING = command("PING")


def _permanent(error: ReplyError) -> bool:
    """Whether Redis will never track for this client (else: try later)."""
    text = str(error)
    return text.startswith(("NOPERM", "NOAUTH")) or "unknown" in text.lower()


def _is_push(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and value[0] == "push"


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
