"""Live chat sessions: their rows, the writer that records them, and the sweep.

Each worker keeps a :class:`Registry` of its live sessions (per event loop):

* **durable before announced** -- a socket's ``{"type": "session"}`` frame goes
  out only once its row is committed (listable in ``auth/sessions``, deletable,
  visible to the admin and every worker), by **group commit**: one task writes,
  as soon as it is free, everything queued while its previous commit ran, in
  one transaction -- no fixed delay, so a lone connect waits one commit and a
  burst shares one;
* the row is the record of the session's opening and end (who, when, from
  where, with which credential, the close code); the admin's *audit trail*
  shows them among the audit log's events, without two more rows each;
* every ``HEARTBEAT_INTERVAL`` the same task marks the live sessions alive and
  sweeps them (:func:`sweep`): each whose credential the database no longer
  holds, or whose row is gone, is closed;
* caps on live sessions per user, credential and client address
  (:meth:`Registry.admit`).

:func:`close_session` and :func:`tell` end a session from anywhere (an HTTP
request, the admin, another worker): its socket closes on whichever worker
holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, IntegrityError, connections, transaction
from django.utils import timezone

from chatauth import revocation, signals, websessions
from chatauth.conf import settings
from chatauth.constants import CloseCode, TokenType
from chatauth.internal import bulk
from chatauth.internal.http import address_bucket, scope_client
from chatauth.models import ChatSession

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


# --- Ending a session from anywhere ---------------------------------------------


def close_session(
    session: ChatSession, *, reason: str = "revoked", code: int = CloseCode.REVOKED
) -> None:
    """Mark ``session`` closed and tell its socket, wherever it runs, to close."""
    ChatSession.objects.filter(pk=session.pk, closed_at__isnull=True).update(
        closed_at=timezone.now(), close_code=code
    )
    tell(session, reason=reason, code=code)


def tell(session: ChatSession, *, reason: str, code: int = CloseCode.REVOKED) -> None:
    """Tell the socket of ``session``, on whichever worker holds it, to close
    with ``code`` (nothing happens if it is gone already)."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None or not session.channel_name:
        return
    message = {"type": "chatauth.revoked", "reason": reason, "code": int(code)}
    try:
        async_to_sync(layer.send)(session.channel_name, message)
    except Exception:  # the worker may be gone; its sweep closes what is left
        logger.warning("could not reach a chat session", exc_info=True)


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
        Django session -- (``MAX_SOCKETS_PER_CREDENTIAL``) and per client
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
        _release_when_idle()

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
            await _in_writer(
                write_batch, [c for c, _ in opens], [(c, code) for c, code, _ in closes]
            )
        except Exception:
            logger.exception("could not record chat sessions")
        for consumer, done in opens:
            if not done.done():
                done.set_result(consumer.row_saved)
        for _, _, done in closes:
            if not done.done():
                done.set_result(None)

    async def _heartbeat(self) -> None:
        """Mark the live sessions alive and sweep them: close each whose
        credential the database no longer holds, or whose row is gone."""
        live = [c for c in self.sessions.values() if c.row_saved and not c.closing]
        size = max(1, int(settings.SWEEP_BATCH_SIZE))
        for start in range(0, len(live), size):
            batch = live[start : start + size]
            try:
                codes = await _in_writer(sweep, batch)
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


#: The one thread that writes session rows.  Not Channels' database_sync_to_async:
#: that shares one thread with every sync view of the process (a batch would queue
#: behind requests) and closes the connection after each call, which with
#: ``CONN_MAX_AGE = 0`` means a new connection per batch -- on SQLite also a WAL
#: checkpoint at each close, more than the batch itself costs.  The writer keeps
#: its connection while sessions are live, for at most ``WRITER_CONN_MAX_AGE``.
_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatauth-sessions")
WRITER_CONN_MAX_AGE = 60.0
#: A connection unused for this long is pinged before use (a database restart
#: or a server-side idle timeout may have closed it meanwhile).
WRITER_PING_AFTER = 1.0
_writer_state = {"connected_at": 0.0, "used_at": 0.0}


#: The writer keeps its connection this long after its last job.
WRITER_IDLE_RELEASE = 2.0
_idle_lock = threading.Lock()
_idle_timer: threading.Timer | None = None


def _release_when_idle(delay: float | None = None) -> None:
    """Give the writer's connections back once it has been idle for
    ``WRITER_IDLE_RELEASE``: a timer thread, not a task, so that it happens
    even if this event loop ends first.  One timer at a time."""
    global _idle_timer
    with _idle_lock:
        if delay is None and _idle_timer is not None and _idle_timer.is_alive():
            return
        _idle_timer = threading.Timer(
            WRITER_IDLE_RELEASE if delay is None else delay, _idle_release_due
        )
        _idle_timer.daemon = True
        _idle_timer.start()


def _idle_release_due() -> None:
    with contextlib.suppress(RuntimeError):  # the process is exiting
        _writer.submit(_release_if_idle)


def _release_if_idle() -> None:
    """In the writer: release, unless it was used meanwhile (then look again
    once it may have been idle long enough)."""
    if not _writer_state["connected_at"]:
        return  # released already
    idle = time.monotonic() - _writer_state["used_at"]
    if idle >= WRITER_IDLE_RELEASE:
        _release_connections(True)
    else:
        _release_when_idle(WRITER_IDLE_RELEASE - idle + 0.01)


def release_writer_connections() -> None:
    """Close the session writer's database connections now (they reopen when
    needed): for a test run about to drop its database, or a worker stopping."""
    _writer.submit(_release_connections, True).result()


async def _in_writer(fn: Callable[..., Any], *args: Any) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_writer, _writing, fn, args)


def _writing(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    now = time.monotonic()
    if not _writer_state["connected_at"]:
        _writer_state["connected_at"] = now
    elif now - _writer_state["used_at"] > WRITER_PING_AFTER:
        for connection in connections.all(initialized_only=True):
            if connection.connection is not None and not connection.is_usable():
                connection.close()
    try:
        return fn(*args)
    finally:
        _writer_state["used_at"] = time.monotonic()
        _release_connections(False)


def _release_connections(idle: bool) -> None:
    """Close the writer's connections when idle, broken or older than
    ``WRITER_CONN_MAX_AGE`` (as Django's request cycle does for requests)."""
    aged = time.monotonic() - _writer_state["connected_at"] > WRITER_CONN_MAX_AGE
    for connection in connections.all(initialized_only=True):
        if idle or aged:
            connection.close()
        elif connection.errors_occurred and not connection.is_usable():
            connection.close()
    if idle or aged:
        _writer_state["connected_at"] = 0.0


def write_batch(
    opens: list[ChatConsumer], closes: list[tuple[ChatConsumer, int]]
) -> None:
    """Record opened and closed sessions, with their audit events, in one
    transaction; if that fails, one transaction per session, so one bad row (a
    user deleted meanwhile) does not lose the others."""
    try:
        with transaction.atomic():
            _record(opens, closes)
        return
    except DatabaseError as e:
        for consumer in opens:
            consumer.row_saved = False  # rolled back
        if len(opens) + len(closes) == 1:
            if isinstance(e, IntegrityError):
                # Its user was deleted meanwhile: the socket is being closed.
                logger.warning("chat session of a deleted user not recorded")
            else:
                logger.exception("could not record a chat session")
            return
    for consumer in opens:
        write_batch([consumer], [])
    for item in closes:
        write_batch([], [item])


def _record(opens: list[ChatConsumer], closes: list[tuple[ChatConsumer, int]]) -> None:
    opens = [c for c in opens if c.row is not None]
    if opens:
        bulk.insert([c.row for c in opens])  # type: ignore[misc]
    for consumer in opens:
        consumer.row_saved = True
        signals.chat_session_opened.send(
            sender=ChatSession, session=consumer.row, scope=consumer.scope
        )
    closes = [(c, code) for c, code in closes if c.row is not None and c.row_saved]
    # Rows deleted meanwhile (the admin, the user's deletion) were recorded as
    # deleted: their sockets' ends are neither written (the UPDATE finds no
    # row) nor announced.  Which rows are still there costs a query: asked only
    # when someone listens.
    announce = signals.chat_session_closed.has_listeners(ChatSession)
    if closes and announce:
        present = set(
            ChatSession.objects.filter(
                pk__in=[c.session_id for c, _ in closes]
            ).values_list("pk", flat=True)
        )
        closes = [(c, code) for c, code in closes if c.session_id in present]
    now = timezone.now()
    for code in {code for _, code in closes}:
        # Rows closed already by close_session() (DELETE auth/sessions/<id>,
        # admin) keep the code they were given.
        ChatSession.objects.filter(
            pk__in=[c.session_id for c, c_code in closes if c_code == code],
            closed_at__isnull=True,
        ).update(closed_at=now, close_code=code, last_seen_at=now)
    for consumer, code in closes:
        row = consumer.row
        row.closed_at, row.close_code = now, code
        if announce:
            signals.chat_session_closed.send(
                sender=ChatSession, session=row, code=code, scope=consumer.scope
            )


def sweep(consumers: list[ChatConsumer]) -> list[int | None]:
    """One batch of the heartbeat: mark the sessions alive, and return for each
    the close code it must get (None while it holds), as the database says.

    A handful of queries for the whole batch: the open rows, their
    ``last_seen_at``, the denylist, the users' states, and (for sockets opened
    with a Django session cookie) those sessions and their users.
    """
    ids = [c.session_id for c in consumers]
    open_ids = set(
        ChatSession.objects.filter(pk__in=ids, closed_at__isnull=True).values_list(
            "pk", flat=True
        )
    )
    ChatSession.objects.filter(pk__in=list(open_ids)).update(
        last_seen_at=timezone.now()
    )
    credentials = [c.auth.token for c in consumers]
    codes = revocation.verdicts(credentials)
    now = time.time()
    for i, verified in enumerate(credentials):
        if codes[i] is None and verified.expires_at <= now:
            codes[i] = CloseCode.UNAUTHORIZED  # expired: as its timer would say
    web = [i for i, v in enumerate(credentials) if v.token_type == TokenType.SESSION]
    valid = websessions.still_valid([credentials[i] for i in web])
    for i, holds in zip(web, valid, strict=True):
        if not holds and codes[i] is None:
            codes[i] = CloseCode.REVOKED
    for i, session_id in enumerate(ids):
        # Closed (auth/sessions, the admin) or deleted elsewhere: a message
        # that should have closed it was lost.
        if session_id not in open_ids and codes[i] is None:
            codes[i] = CloseCode.REVOKED
    return codes


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
