"""The registry of a worker's live chat sessions: caps, group commit, heartbeat.

Each worker keeps a :class:`Registry` of its live chat sessions (per event
loop):

* **durable before announced** -- a socket's ``{"type": "session"}`` frame goes
  out only once its row is committed (listable in ``auth/sessions``, deletable,
  visible to the admin and every worker), by **group commit**: one task writes,
  as soon as it is free, everything queued while its previous commit ran, in
  one transaction (:mod:`chatauth.chatsessions.writer`) -- no fixed delay, so a
  lone connect waits one commit and a burst shares one;
* every ``HEARTBEAT_INTERVAL`` the same task marks the live chat sessions alive
  and sweeps them (:mod:`chatauth.chatsessions.sweep`): each whose credential
  the database no longer holds, or whose row is gone, is closed;
* caps on live chat sessions per user, credential and client address
  (:meth:`Registry.admit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
import weakref
from collections import Counter
from typing import TYPE_CHECKING, Any

from chatauth.chatsessions.sweep import sweep
from chatauth.chatsessions.writer import in_writer, release_when_idle, write_batch
from chatauth.conf import settings
from chatauth.internal.http import address_bucket, scope_client

if TYPE_CHECKING:
    from chatauth.consumers import ChatConsumer

logger = logging.getLogger("chatauth.sessions")
_HOSTNAME = socket.gethostname()
#: Channel layers forget a group membership after ``group_expiry`` (a day by
#: default, in channels_redis and the in-memory layer alike); a session living
#: longer (copilot tokens last 15 days) re-joins well before that.
GROUP_REFRESH = 6 * 3600
#: The caps of :meth:`Registry.admit`, in the order of its counts.
CAPS = (
    "MAX_SOCKETS_PER_USER",
    "MAX_SOCKETS_PER_CREDENTIAL",
    "MAX_SOCKETS_PER_ADDRESS",
)


def worker_id() -> str:
    """``hostname:pid`` of this process (read per call: workers are forked)."""
    return f"{_HOSTNAME}:{os.getpid()}"[:64]


# --- The registry: group commit, heartbeat, caps ----------------------------------


class Registry:
    """The live sessions of one event loop and the writes that record them.

    Rows are written by one task, one transaction per commit: it commits as
    soon as it is free, taking everything queued while the previous commit ran
    (at most :attr:`BATCH`).  A commit per session would cost more than the
    whole rest of a short session (an fsync each, on SQLite); shared, thousands
    of sessions a second cost a few commits.  An opening is awaited (the
    session frame waits for it); so is an end (the consumer finishes once its
    row says so).
    """

    BATCH = 500

    def __init__(self) -> None:
        self.sessions: dict[uuid.UUID, ChatConsumer] = {}
        #: Live sessions per user, per credential, per client address.
        self._counts: tuple[Counter[Any], Counter[Any], Counter[Any]] = (
            Counter(),
            Counter(),
            Counter(),
        )
        self._opens: list[tuple[ChatConsumer, asyncio.Future[bool]]] = []
        self._closes: list[tuple[ChatConsumer, int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def admit(self, consumer: ChatConsumer) -> str | None:
        """Count a new session against this worker's caps; the name of the cap
        it would exceed (it is not counted then), else None.

        Per user (``MAX_SOCKETS_PER_USER``), per credential -- one token, one
        web session -- (``MAX_SOCKETS_PER_CREDENTIAL``) and per client
        address (``MAX_SOCKETS_PER_ADDRESS``).  Checked and counted in one step
        of the event loop, so concurrent connects cannot all slip through.
        """
        verified = consumer.auth.token
        address = address_bucket(scope_client(consumer.scope)[0])
        keys = (str(verified.user_pk), verified.key, address)
        for count, key, cap in zip(self._counts, keys, CAPS, strict=True):
            if count[key] >= getattr(settings, cap):
                return cap.removeprefix("MAX_").lower()
        for count, key in zip(self._counts, keys, strict=True):
            count[key] += 1
        consumer.admitted = keys
        return None

    def release(self, consumer: ChatConsumer) -> None:
        """The session counted by :meth:`admit` is over."""
        keys, consumer.admitted = consumer.admitted, None
        if keys is None:
            return
        for count, key in zip(self._counts, keys, strict=True):
            count[key] -= 1
            if count[key] <= 0:
                del count[key]

    def opened(self, consumer: ChatConsumer) -> asyncio.Future[bool]:
        """Queue the row of a new session; the future is True once it is
        committed, False if it could not be written."""
        self.sessions[consumer.session_id] = consumer
        done = asyncio.get_running_loop().create_future()
        self._opens.append((consumer, done))
        self._kick()
        return done

    def closed(self, consumer: ChatConsumer, code: int) -> asyncio.Future[None]:
        """Queue the end of ``consumer``'s session; the future is done once it is
        written (at once for a session whose row was never written)."""
        self.sessions.pop(consumer.session_id, None)
        done = asyncio.get_running_loop().create_future()
        if consumer.row_saved:
            self._closes.append((consumer, code, done))
            self._kick()
        else:
            done.set_result(None)
        return done

    def _pending(self) -> bool:
        return bool(self._opens or self._closes)

    def _kick(self) -> None:
        self._wake.set()
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        await self._serve()
        # Idle: the writer gives its connection back once it has been idle for
        # WRITER_IDLE_RELEASE (a pooler's slot free, a test database
        # droppable), not at once: a client reconnecting would open a new
        # connection per session.
        release_when_idle()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        beat_at = loop.time() + settings.HEARTBEAT_INTERVAL
        while self.sessions or self._pending():
            if not self._pending():
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(beat_at):
                        await self._wake.wait()
            if self._pending():
                await self._commit()
            if loop.time() >= beat_at:
                await self._heartbeat()
                beat_at = loop.time() + settings.HEARTBEAT_INTERVAL

    async def _commit(self) -> None:
        """Write, in one transaction, what was queued (up to :attr:`BATCH`)."""
        opens, self._opens = self._opens[: self.BATCH], self._opens[self.BATCH :]
        room = self.BATCH - len(opens)
        closes, self._closes = self._closes[:room], self._closes[room:]
        try:
            await in_writer(
                write_batch, [c for c, _ in opens], [(c, code) for c, code, _ in closes]
            )
        except Exception:
            logger.exception("could not record chat sessions")
        for consumer, done in opens:
            if not done.done():
                done.set_result(consumer.row_saved)
        for _, _, ended in closes:
            if not ended.done():
                ended.set_result(None)

    async def _heartbeat(self) -> None:
        """Mark the live sessions alive and sweep them: close each whose
        credential the database no longer holds, or whose row is gone."""
        live = [c for c in self.sessions.values() if c.row_saved and not c.closing]
        size = max(1, int(settings.SWEEP_BATCH_SIZE))
        for start in range(0, len(live), size):
            batch = live[start : start + size]
            try:
                codes = await in_writer(sweep, batch)
            except Exception:  # this batch waits for the next beat, not the rest
                logger.exception("chat session heartbeat failed")
                continue
            for consumer, code in zip(batch, codes, strict=True):
                if code is not None and not consumer.closing:
                    await consumer._close(code)
        stale = time.monotonic() - GROUP_REFRESH
        for consumer in live:
            if consumer.groups_joined_at < stale and not consumer.closing:
                consumer.groups_joined_at = time.monotonic()
                try:
                    for group in consumer.groups:
                        await consumer.channel_layer.group_add(
                            group, consumer.channel_name
                        )
                except Exception:  # layer down: its consumer closes on its own
                    logger.warning("could not renew chat session groups")


_registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Registry] = (
    weakref.WeakKeyDictionary()
)


def registry() -> Registry:
    """The live-session registry of the running event loop."""
    loop = asyncio.get_running_loop()
    found = _registries.get(loop)
    if found is None:
        found = _registries[loop] = Registry()
    return found
