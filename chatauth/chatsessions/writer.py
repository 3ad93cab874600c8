"""The chat-session writer: one thread that records chat sessions' rows.

:func:`write_batch` records, in one transaction, the chat sessions opened and
closed since the last commit (with their signals, hence their audit events);
:func:`in_writer` runs it (or :func:`~chatauth.chatsessions.sweep.sweep`) on
the writer's thread, which keeps its database connection while chat sessions
are live and gives it back once idle (:func:`release_writer_connections`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, IntegrityError, connections, transaction
from django.utils import timezone

from chatauth import signals
from chatauth.internal import bulk
from chatauth.models import ChatSession

if TYPE_CHECKING:
    from chatauth.consumers import ChatConsumer

logger = logging.getLogger("chatauth.sessions")

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


def release_when_idle(delay: float | None = None) -> None:
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
        release_when_idle(WRITER_IDLE_RELEASE - idle + 0.01)


def release_writer_connections() -> None:
    """Close the session writer's database connections now (they reopen when
    needed): for a test run about to drop its database, or a worker stopping."""
    _writer.submit(_release_connections, True).result()


async def in_writer(fn: Callable[..., Any], *args: Any) -> Any:
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
        if row is None:  # kept out above: never
            continue
        row.closed_at, row.close_code = now, code
        if announce:
            signals.chat_session_closed.send(
                sender=ChatSession, session=row, code=code, scope=consumer.scope
            )
