"""The chat consumer: one authenticated, revocable chat session per WebSocket.

Wrap it in :func:`chatauth.middleware.ChatAuthMiddlewareStack` (the demo's
``chatauth.routing`` does).  Protocol, JSON text frames both ways:

* server → client on connect: ``{"type": "session", "session_id", "user"}``;
* ``{"type": "message", "content": ...}`` both ways: each client message is
  handed to ``CHATAUTH["ON_MESSAGE"]`` (``handler(content, send)``, sync or
  async); every ``send(content)`` is one ``{"type": "message"}`` reply;
* ``{"type": "logout", "everywhere": false}``: logs out like ``POST auth/logout``
  (the token is revoked, ``on_logout`` hooks run with ``(None, None)``: there is
  no HTTP request or response), then close 4410;
* ``{"type": "ping"}`` → ``{"type": "pong"}`` (browsers cannot send ping frames);
* anything else → ``{"type": "error", "code", "detail"}``, and close 4400 after
  ``MAX_PROTOCOL_ERRORS`` of them.

Close codes: 4410 when the token is revoked anywhere (the socket is in the
channel-layer groups of its user and its token, so a logout on any worker
reaches it), 4401 when the token expires (a timer, armed once), 4413 for a
frame over ``MAX_MESSAGE_BYTES``, 4429 over ``MESSAGE_RATE``.  Once a close is
decided no more handler code runs: the handler task is cancelled and its
``send`` refuses.

Handlers run in a task of their own, one message after the other, so the
socket keeps reading (and can be revoked) while a handler streams a reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import DatabaseError, close_old_connections, connections, transaction
from django.utils import timezone

from chatauth import hooks, revocation, signals
from chatauth.conf import settings
from chatauth.constants import (
    CLOSE_CODE_FOR,
    CloseCode,
    Method,
    token_group,
    user_group,
)
from chatauth.context import activate, reset
from chatauth.exceptions import TokenError
from chatauth.internal import bulk
from chatauth.internal.cache import is_local as is_local_cache
from chatauth.internal.calls import acall, call
from chatauth.internal.http import scope_client
from chatauth.middleware import SESSION_TOKEN_TYPE, SocketAuth
from chatauth.models import ChatSession

logger = logging.getLogger("chatauth.consumers")
_HOSTNAME = socket.gethostname()
#: Channel layers forget a group membership after ``group_expiry`` (a day by
#: default, in channels_redis and the in-memory layer alike); a session living
#: longer (copilot tokens last 15 days) re-joins well before that.
GROUP_REFRESH = 6 * 3600


def worker_id() -> str:
    """``hostname:pid`` of this process (read per call: workers are forked)."""
    return f"{_HOSTNAME}:{os.getpid()}"[:64]


#: :meth:`ChatConsumer._check_again_here` could not decide without I/O.
_UNDECIDED = object()


class SessionClosed(Exception):
    """Raised by ``send`` in a handler whose session has closed."""


class ChatConsumer(AsyncWebsocketConsumer):
    """One live chat session.  Needs ``scope["chatauth"]`` from the middleware."""

    session_id: uuid.UUID
    auth: SocketAuth

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.closing = False
        self.gone = False  # websocket.disconnect received: nothing more to send
        self.close_code: int | None = None
        self.row: ChatSession | None = None  # written by the Registry
        self.row_saved = False
        self.closed_unsaved = False  # closed before its row was first written
        self.user_session: dict[str, Any] = {}
        self._checked: asyncio.Future[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._closer: asyncio.Task[None] | None = None
        self._handler: asyncio.Task[None] | None = None
        self._inbox: deque[Any] = deque()
        self._recent: deque[float] | None = None
        self._errors = 0
        self.groups_joined_at = 0.0

    # --- Channels plumbing ----------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception:
            if self.gone:
                raise
            # Channels' loop ends at the first error of the channel layer (Redis
            # down) and the server would drop the TCP connection with no close
            # frame and no row closed.  Without the layer no revocation can reach
            # this socket, so it must not stay open: close with 1011 (RFC 6455:
            # an unexpected condition; clients reconnect) and record the end.
            logger.warning("chat session lost its channel layer", exc_info=True)
            await self._abort(1011)

    async def _abort(self, code: int) -> None:
        self.groups = []  # the layer is gone: nothing to leave
        if not self.gone:
            with contextlib.suppress(Exception):
                await self.close(code=code)
        self.close_code = self.close_code or code
        with contextlib.suppress(StopConsumer):
            await self.websocket_disconnect(
                {"type": "websocket.disconnect", "code": code}
            )

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' dispatch() runs close_old_connections() in a thread before
        # every frame.  Every ORM call here goes through database_sync_to_async,
        # which already does that around itself, so the per-frame hop is skipped.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            logger.warning("chat session ignored a %.50r message", message["type"])
            return
        await handler(message)

    # --- Connect --------------------------------------------------------------------

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        auth = self.scope.get("chatauth")
        if not isinstance(auth, SocketAuth):
            logger.error("ChatConsumer is not wrapped in ChatAuthMiddlewareStack")
            await self.close()  # before accept: HTTP 403
            return
        self.auth = auth
        verified = auth.token
        self.session_id = uuid.uuid4()
        # Join before anything else: a revocation sent from now on reaches this
        # socket; one sent between the middleware's check and here is caught by
        # the second check below.
        groups = [user_group(verified.user_pk), token_group(verified.key)]
        try:
            for group in groups:
                await self.channel_layer.group_add(group, self.channel_name)
                self.groups.append(group)
        except Exception:
            # No channel layer (Redis down): a session nothing could revoke must
            # not open.  Accept first so the client sees 1011 ("try again"),
            # not a refused handshake that reads like "forbidden".
            logger.warning("chat session refused: channel layer down", exc_info=True)
            self.groups = []
            await self.accept(auth.subprotocol)
            await self.close(code=1011)
            return
        self.groups_joined_at = time.monotonic()
        await self.accept(auth.subprotocol)
        refused = self._check_again_here()
        if refused is _UNDECIDED:
            # Handlers wait for the second check, which runs while the client
            # reads the session message: nothing runs for a token revoked in
            # between.
            self._checked = asyncio.ensure_future(self._check_again())
        self._arm_expiry(verified.expires_at)
        user = verified.user_dict()
        self.user_session = {
            "id": str(self.session_id),
            "user": hooks.User(
                user["identifier"], user["display_name"], user["metadata"]
            ),
        }
        ip, user_agent = scope_client(self.scope)
        self.row = ChatSession(
            id=self.session_id,
            user_id=verified.user_pk,
            token_key=verified.key,
            channel_name=self.channel_name,
            worker=worker_id(),
            ip=ip,
            user_agent=user_agent,
        )
        registry().opened(self)  # the row is written with the next batch
        await self._send_json(
            {"type": "session", "session_id": str(self.session_id), "user": user}
        )
        if refused is not None and refused is not _UNDECIDED:
            await self._close(refused)

    def _check_again_here(self) -> int | object | None:
        """The second check on the loop, when the cache alone can decide it (a
        local-memory cache: no I/O).  None if still valid, the close code if
        not, ``_UNDECIDED`` when it needs a worker thread (:meth:`_check_again`)."""
        verified = self.auth.token
        if verified.token_type == SESSION_TOKEN_TYPE or not is_local_cache():
            return _UNDECIDED
        try:
            revocation.check(verified, cache_only=True)
        except revocation.NeedsDatabase:
            return _UNDECIDED
        except TokenError as e:
            return CLOSE_CODE_FOR.get(e.code, CloseCode.UNAUTHORIZED)
        return None

    async def _check_again(self) -> None:
        try:
            try:
                if self.auth.token.token_type == SESSION_TOKEN_TYPE:
                    raise revocation.NeedsDatabase()
                # Redis read on the loop when the cache can decide (no thread hop).
                await revocation.acheck_cached(self.auth.token)
            except revocation.NeedsDatabase:
                await sync_to_async(self._still_valid, thread_sensitive=False)()
        except TokenError as e:
            if not self.closing:  # else a logout here ended it: its code stands
                await self._close(CLOSE_CODE_FOR.get(e.code, CloseCode.UNAUTHORIZED))
        except Exception:
            logger.exception("could not check a chat session's credentials again")
            await self._close(1011)  # RFC 6455: the server cannot go on

    def _still_valid(self) -> None:
        """The revocation check again, now that the groups are joined."""
        from importlib import import_module

        from django.conf import settings as django_settings

        verified = self.auth.token
        try:
            if verified.token_type != SESSION_TOKEN_TYPE:
                revocation.check(verified)
                return
            engine = import_module(django_settings.SESSION_ENGINE)
            if not engine.SessionStore().exists(verified.extra["session_key"]):
                raise TokenError("Not logged in.", code="not_authenticated")
        finally:
            close_old_connections()  # a pool thread, not a request thread

    def _arm_expiry(self, expires_at: float) -> None:
        """Close with 4401 when the token stops being accepted: at ``exp`` plus
        the leeway ``verify_token`` allows, so a reconnect with the same token
        would be refused too."""
        delay = expires_at + settings.LEEWAY.total_seconds() - time.time()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(max(0.0, delay), self._expired)

    def _expired(self) -> None:
        self._expiry = None
        self._closer = asyncio.ensure_future(self._close(CloseCode.UNAUTHORIZED))

    # --- Frames from the client ----------------------------------------------------

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self.closing:
            return
        text, data = message.get("text"), message.get("bytes")
        size = _size(text) if text is not None else len(data or b"")
        if size > settings.MAX_MESSAGE_BYTES:
            return await self._close(CloseCode.TOO_LARGE)
        if self._over_rate():
            return await self._close(CloseCode.RATE_LIMITED)
        if text is None:
            return await self._protocol_error(
                "binary_not_supported", "Send JSON text frames."
            )
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError):
            return await self._protocol_error("invalid_json", "Not valid JSON.")
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind == "message":
            if "content" not in payload:
                return await self._protocol_error(
                    "invalid_message", "A message needs a content."
                )
            return await self._enqueue(payload["content"])
        if kind == "ping":
            return await self._send_json({"type": "pong"})
        if kind == "logout":
            everywhere = payload.get("everywhere", False)
            if not isinstance(everywhere, bool):
                return await self._protocol_error(
                    "invalid_message", "everywhere must be a boolean."
                )
            return await self._logout(everywhere)
        if kind == "auth":
            return await self._protocol_error(
                "already_authenticated", "This session is authenticated."
            )
        if not isinstance(kind, str):
            return await self._protocol_error(
                "invalid_message", 'Expected an object with a "type".'
            )
        return await self._protocol_error("unknown_type", "Unknown message type.")

    def _over_rate(self) -> bool:
        limit, window = settings.MESSAGE_RATE
        now = time.monotonic()
        recent = self._recent
        if recent is None or recent.maxlen != limit:
            recent = self._recent = deque(maxlen=max(1, int(limit)))
        # A sliding window: the oldest of the last ``limit`` frames must be older
        # than ``window`` seconds for one more to be allowed.
        if len(recent) == recent.maxlen and now - recent[0] < window:
            return True
        recent.append(now)
        return False

    async def _protocol_error(self, code: str, detail: str) -> None:
        self._errors += 1
        await self._send_json({"type": "error", "code": code, "detail": detail})
        if self._errors >= settings.MAX_PROTOCOL_ERRORS:
            await self._close(CloseCode.PROTOCOL_ERROR)

    # --- on_message -----------------------------------------------------------------

    async def _enqueue(self, content: Any) -> None:
        # Messages wait here while a handler runs; the rate limit bounds them,
        # and a backlog over one rate window's worth is flooding all the same.
        if len(self._inbox) >= settings.MESSAGE_RATE[0]:
            return await self._close(CloseCode.RATE_LIMITED)
        self._inbox.append(content)
        if self._handler is None or self._handler.done():
            self._handler = asyncio.ensure_future(self._run_handlers())

    async def _run_handlers(self) -> None:
        if self._checked is not None:
            await asyncio.shield(self._checked)
        context = activate(self.user_session)
        try:
            while self._inbox and not self.closing:
                content = self._inbox.popleft()
                try:
                    await acall(settings.ON_MESSAGE, content, Reply(self))
                except SessionClosed:
                    return
                except Exception:
                    if self.closing:
                        return
                    logger.exception("on_message handler raised")
                    await self._send_json(
                        {
                            "type": "error",
                            "code": "handler_failed",
                            "detail": "The message could not be handled.",
                        }
                    )
        finally:
            reset(context)

    async def send_message(self, content: Any) -> None:
        """Send one ``{"type": "message"}`` reply (what a handler's ``send`` does)."""
        if self.closing:
            raise SessionClosed()
        await self._send_json({"type": "message", "content": content})

    # --- Logout, revocation, close ------------------------------------------------

    async def _logout(self, everywhere: bool) -> None:
        self._halt()
        try:
            await database_sync_to_async(self._logout_sync)(everywhere)
        except Exception:
            logger.exception("logout over the chat socket failed")
        await self._close(CloseCode.REVOKED)

    def _logout_sync(self, everywhere: bool) -> None:
        verified = self.auth.token
        User = get_user_model()
        user = verified.extra.get("user")
        if user is None:
            user = User._default_manager.filter(pk=verified.user_pk).first()
        if verified.token_type == SESSION_TOKEN_TYPE:
            from importlib import import_module

            from django.conf import settings as django_settings

            engine = import_module(django_settings.SESSION_ENGINE)
            engine.SessionStore(verified.extra["session_key"]).delete()
            revocation.notify(token_group(verified.key), reason="logout")
        else:
            revocation.revoke_token(verified, reason="logout")
        if everywhere and user is not None:
            revocation.revoke_user(user, reason="logout_everywhere")
        for hook in hooks.get_hooks("on_logout"):
            try:
                call(hook, None, None)  # no HTTP request or response on a socket
            except Exception:
                logger.exception("on_logout hook %s raised", hook.__qualname__)
        if user is not None:
            user_logged_out.send(
                sender=type(user),
                request=None,
                user=user,
                method=Method.WEBSOCKET,
                everywhere=everywhere,
                token_id=verified.key,
                scope=self.scope,
            )

    async def chatauth_revoked(self, event: dict[str, Any]) -> None:
        """``{"type": "chatauth.revoked", "reason", "code"}`` from any worker."""
        code = event.get("code", CloseCode.REVOKED)
        if not isinstance(code, int) or not 4000 <= code <= 4999:
            code = CloseCode.REVOKED
        await self._close(code)

    def _halt(self) -> None:
        """No more handler code and no more timers, from now on."""
        self.closing = True
        self._inbox.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        handler = self._handler
        if handler is not None and handler is not asyncio.current_task():
            handler.cancel()

    async def _close(self, code: int) -> None:
        self._halt()
        if self.close_code is None and not self.gone:
            self.close_code = int(code)
            await self.close(int(code))

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self.gone = True
        self._halt()
        code = self.close_code or message.get("code") or 1006
        current = asyncio.current_task()
        for task in (self._handler, self._closer, self._checked):
            if task is not None and task is not current and not task.done():
                task.cancel()
                await _settle(task)
        for group in self.groups:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:  # layer down: its memberships expire on their own
                logger.warning("could not leave group %s", group)
                break
        if self.row is not None:
            # Returns once the row is closed: the session ends recorded.
            await registry().closed(self, int(code))
        raise StopConsumer()

    async def _send_json(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(payload))


class Reply:
    """The ``send`` a handler gets: ``await send(content)`` in an async handler,
    plain ``send(content)`` in a sync one (which runs on a worker thread)."""

    __slots__ = ("consumer",)

    def __init__(self, consumer: ChatConsumer) -> None:
        self.consumer = consumer

    def __call__(self, content: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a sync handler's thread
            return async_to_sync(self.consumer.send_message)(content)
        return self.consumer.send_message(content)


def _size(text: str) -> int:
    """UTF-8 length of ``text``, without encoding it when the answer is plain."""
    if len(text) * 4 <= settings.MAX_MESSAGE_BYTES or len(text) > (
        settings.MAX_MESSAGE_BYTES
    ):
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


async def _settle(future: asyncio.Future[Any]) -> None:
    """Wait for ``future`` to finish, whatever its outcome."""
    try:
        await asyncio.shield(future)
    except BaseException as e:  # noqa: BLE001 - its outcome is not ours to raise
        if isinstance(e, asyncio.CancelledError) and not future.cancelled():
            raise  # we were cancelled ourselves, not the future
        return


# --- Bookkeeping: batched writes and one heartbeat per worker ------------------------


class Registry:
    """The live sessions of one event loop and the writes that record them.

    Session rows (and their audit events) are written by one task, in batches of
    one transaction each: a session opened is written within ``FLUSH_DELAY``
    seconds (``MIN_FLUSH_INTERVAL`` after the previous batch, under load),
    together with every other session opened or closed meanwhile, and a session
    opened and closed within that time is written once, already closed.  A
    commit per session would cost more than the whole rest of a short session
    (an fsync each, on SQLite); batched, thousands of sessions a second cost a
    few commits.  Nothing waits for the opening write (revocation
    does not need the row: the socket is in its groups already); a closing
    consumer waits until its row says so.

    The same task refreshes ``last_seen_at`` of every live session every
    ``HEARTBEAT_INTERVAL`` seconds in a few batched updates (not one query per
    session), and renews channel-layer groups before the layer forgets them.
    """

    BATCH = 500
    #: How long a write may wait for others to share its commit.
    FLUSH_DELAY = 0.05
    #: Under load, commits are at least this far apart.  Fuller batches do not
    #: cost less per session here: a longer wait keeps every closed session
    #: (consumer, scope, row) alive longer, so more of them outlive the young
    #: garbage collections and the full ones come more often, and the writer
    #: holds the GIL in longer bursts.  Measured at 16 concurrent sessions on
    #: SQLite: 0.2 s -> ~900 sessions/s, 0.05 s -> ~1,000, 1 s -> ~800.
    MIN_FLUSH_INTERVAL = 0.05

    def __init__(self) -> None:
        self.sessions: dict[uuid.UUID, ChatConsumer] = {}
        self._opens: dict[uuid.UUID, ChatConsumer] = {}  # not written yet
        self._closes: list[tuple[ChatConsumer, int]] = []
        self._waiting: list[asyncio.Future[None]] = []
        self._due = 0.0
        self._flushed_at = -1e9  # loop time of the last batch's end
        self._wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def opened(self, consumer: ChatConsumer) -> None:
        self.sessions[consumer.session_id] = consumer
        self._queue()
        self._opens[consumer.session_id] = consumer

    def closed(self, consumer: ChatConsumer, code: int) -> asyncio.Future[None]:
        """Queue the end of ``consumer``'s session; the future is done once it is
        written (never before its opening)."""
        self.sessions.pop(consumer.session_id, None)
        self._queue()
        if consumer.session_id in self._opens and consumer.row is not None:
            consumer.row.closed_at = timezone.now()  # one INSERT, already closed
            consumer.row.close_code = code
            consumer.row.last_seen_at = consumer.row.closed_at
            consumer.closed_unsaved = True
        else:
            self._closes.append((consumer, code))
        done = asyncio.get_running_loop().create_future()
        self._waiting.append(done)
        return done

    def _pending(self) -> int:
        return len(self._opens) + len(self._closes)

    def _queue(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._pending():
            self._due = max(
                loop.time() + self.FLUSH_DELAY,
                self._flushed_at + self.MIN_FLUSH_INTERVAL,
            )
            self._wake.set()  # the task now sleeps until _due, not the heartbeat
        elif self._pending() + 1 >= self.BATCH:
            self._wake.set()
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await self._serve()
            # Idle: give the writer's connection back (a test database must be
            # droppable, a pooler's slot free) until the next session.  A
            # session that arrived meanwhile found this task still running and
            # started none: serve it.
            await _in_writer(_release_connections, True)
            if not (self.sessions or self._pending()):
                return

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        beat_at = loop.time() + settings.HEARTBEAT_INTERVAL
        while self.sessions or self._pending():
            pending = self._pending()
            if pending < self.BATCH:
                deadline = self._due if pending else beat_at
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await self._wake.wait()
            pending = self._pending()
            if pending >= self.BATCH or (pending and loop.time() >= self._due):
                await self._flush()
            if loop.time() >= beat_at:
                await self._heartbeat()
                beat_at = loop.time() + settings.HEARTBEAT_INTERVAL

    async def _flush(self) -> None:
        opens, self._opens = list(self._opens.values()), {}
        closes, self._closes = self._closes, []
        waiting, self._waiting = self._waiting, []
        try:
            await _in_writer(write_batch, opens, closes)
        except Exception:
            logger.exception("could not record chat sessions")
        finally:
            self._flushed_at = asyncio.get_running_loop().time()
            for done in waiting:
                if not done.done():
                    done.set_result(None)

    async def _heartbeat(self) -> None:
        live = [c for c in self.sessions.values() if c.row_saved and not c.closing]
        ids = [c.session_id for c in live]
        try:
            for start in range(0, len(ids), self.BATCH):
                batch = ids[start : start + self.BATCH]
                await _in_writer(_touch, batch)
        except DatabaseError:
            logger.exception("chat session heartbeat failed")
        stale = time.monotonic() - GROUP_REFRESH
        for consumer in live:
            if consumer.groups_joined_at < stale and not consumer.closing:
                consumer.groups_joined_at = time.monotonic()
                for group in consumer.groups:
                    await consumer.channel_layer.group_add(group, consumer.channel_name)


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
    from chatauth import audit

    try:
        with transaction.atomic(), audit.collected():
            _record(opens, closes)
        return
    except DatabaseError:
        for consumer in opens:
            consumer.row_saved = False  # rolled back
        if len(opens) + len(closes) == 1:
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
        if consumer.closed_unsaved:
            row = consumer.row
            signals.chat_session_closed.send(
                sender=ChatSession,
                session=row,
                code=row.close_code,
                scope=consumer.scope,
            )
    closes = [(c, code) for c, code in closes if c.row is not None and c.row_saved]
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
        signals.chat_session_closed.send(
            sender=ChatSession, session=row, code=code, scope=consumer.scope
        )


def _touch(ids: list[uuid.UUID]) -> None:
    ChatSession.objects.filter(pk__in=ids, closed_at__isnull=True).update(
        last_seen_at=timezone.now()
    )


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
