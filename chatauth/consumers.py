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
* ``{"type": "message", "content", "message_type": "system_message"}``: a
  message the host page sent (Chainlit's ``sendChainlitMessage`` with a
  ``type``), handed to the handler like any other;
  ``chatauth.user_session.get("message_type")`` tells them apart;
* ``{"type": "thread", "thread_id"}`` from the client names the conversation
  (Chainlit's copilot thread, kept by the page); the server answers with the
  same frame once it is in ``user_session["thread_id"]`` and, if
  ``CHATAUTH["ON_THREAD"]`` is set, has run it (in order with the messages);
* ``{"type": "call_fn", "id", "name", "args"}`` from the server asks the page
  to run a function (:class:`chatauth.CopilotFunction`); the page answers
  ``{"type": "call_fn_result", "id", "result"}``.  A result for an id that is
  not pending (answered, timed out, made up) is ignored;
* anything else → ``{"type": "error", "code", "detail"}``, and close 4400 after
  ``MAX_PROTOCOL_ERRORS`` of them.

Close codes: 4410 when the credential is revoked anywhere (the socket is in the
channel-layer groups of its user and of every key of its credential -- the
token, its login, its Django session, its API key -- so an ending on any worker
reaches it), 4401 when the token expires (a timer, armed once), 4413 for a
frame over ``MAX_MESSAGE_BYTES``, 4429 over ``MESSAGE_RATE``.  Once a close is
decided no more handler code runs: the handler task is cancelled and its
``send`` refuses.

The sweep: on every heartbeat each worker re-checks its live sessions against
the database in batches (:func:`sweep`), and closes those whose credential no
longer holds or whose row is gone.  A lost channel-layer message, a bulk
``QuerySet.update()`` or a revocation by another process with no shared layer
costs at most one ``HEARTBEAT_INTERVAL``.

Handlers run in a task of their own, one message after the other, so the
socket keeps reading (and can be revoked) while a handler streams a reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections import deque
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import get_user_model
from django.db import (
    close_old_connections,
)

from chatauth import flows, hooks, revocation
from chatauth.conf import settings
from chatauth.constants import (
    CloseCode,
    Method,
    TokenType,
    token_group,
    user_group,
)
from chatauth.context import activate, reset
from chatauth.exceptions import TokenError
from chatauth.functions import PendingCalls
from chatauth.internal.cache import is_local as is_local_cache
from chatauth.internal.calls import acall
from chatauth.internal.http import scope_client
from chatauth.middleware import SocketAuth, audit_refusal
from chatauth.models import ChatSession
from chatauth.sessions import registry, worker_id

logger = logging.getLogger("chatauth.consumers")
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
        self.user_session: dict[str, Any] = {}
        self.admitted: tuple[str, str, str | None] | None = None  # see Registry
        self._checked: asyncio.Future[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._closer: asyncio.Task[None] | None = None
        self._handler: asyncio.Task[None] | None = None
        self._inbox: deque[tuple[str, Any, str]] = deque()
        self.calls = PendingCalls()
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
            await self._abort(CloseCode.SERVER_ERROR)

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
        over = registry().admit(self)
        if over is not None:
            await self.accept(auth.subprotocol)
            await self.close(code=CloseCode.RATE_LIMITED, reason=over)
            await audit_refusal(self.scope, over, type(self))
            return
        # Join before anything else: a revocation sent from now on reaches this
        # socket; one sent between the middleware's check and here is caught by
        # the second check below.
        groups = [
            user_group(verified.user_pk),
            *(token_group(key) for key in verified.revocation_keys),
        ]
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
            await self.close(code=CloseCode.SERVER_ERROR)
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
        # Durable before announced: listable, deletable, every worker sees it.
        if not await registry().opened(self):
            return await self._close(
                CloseCode.SERVER_ERROR
            )  # not recorded: the client retries
        if self.closing:
            return  # ended while its row was written (a revocation meanwhile)
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
        if verified.token_type == TokenType.SESSION or not is_local_cache():
            return _UNDECIDED
        try:
            revocation.check(verified, cache_only=True)
        except revocation.NeedsDatabase:
            return _UNDECIDED
        except TokenError as e:
            return revocation.close_code(e)
        return None

    async def _check_again(self) -> None:
        """Check the credential again, now that the groups are joined; close the
        socket if it no longer holds."""
        try:
            try:
                if self.auth.token.token_type == TokenType.SESSION:
                    raise revocation.NeedsDatabase()
                # Redis read on the loop when the cache can decide (no thread hop).
                await revocation.acheck(self.auth.token)
            except revocation.NeedsDatabase:
                await sync_to_async(self._still_valid, thread_sensitive=False)()
        except TokenError as e:
            if not self.closing:  # else a logout here ended it: its code stands
                await self._close(self._ended_code(e))
        except Exception:
            logger.exception("could not check a chat session's credentials again")
            await self._close(
                CloseCode.SERVER_ERROR
            )  # RFC 6455: the server cannot go on

    def _ended_code(self, error: TokenError) -> int:
        """The close code of a credential that held at connect and no longer
        does.  A Django session that Django refuses now (logged out, flushed,
        its password changed) was ended: 4410, as for a revoked token."""
        if self.auth.token.token_type == TokenType.SESSION:
            return CloseCode.REVOKED
        return revocation.close_code(error)

    def _still_valid(self) -> None:
        """The revocation check again, the database deciding (Django's own
        checks of a session ran at the handshake; a session ended since is on
        the denylist)."""
        try:
            revocation.check(self.auth.token)
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
            message_type = payload.get("message_type", USER_MESSAGE)
            if not isinstance(message_type, str) or message_type not in MESSAGE_TYPES:
                return await self._protocol_error(
                    "invalid_message", "Unknown message_type."
                )
            return await self._enqueue("message", payload["content"], message_type)
        if kind == "thread":
            thread_id = payload.get("thread_id")
            if not isinstance(thread_id, str) or not THREAD_ID_RE.fullmatch(thread_id):
                return await self._protocol_error(
                    "invalid_thread", "thread_id must be 1-64 of A-Z a-z 0-9 _ -."
                )
            return await self._enqueue("thread", thread_id, "")
        if kind == "call_fn_result":
            call_id = payload.get("id")
            if not isinstance(call_id, str) or len(call_id) > 64:
                return await self._protocol_error(
                    "invalid_message", "call_fn_result needs the call's id."
                )
            # Unknown, answered or timed-out ids are ignored: a page may answer
            # late, and ids are not guessable anyway (see PendingCalls).
            self.calls.resolve(call_id, payload.get("result"))
            return None
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

    async def _enqueue(self, kind: str, value: Any, message_type: str) -> None:
        # Messages wait here while a handler runs; the rate limit bounds them,
        # and a backlog over one rate window's worth is flooding all the same.
        if len(self._inbox) >= settings.MESSAGE_RATE[0]:
            return await self._close(CloseCode.RATE_LIMITED)
        self._inbox.append((kind, value, message_type))
        if self._handler is None or self._handler.done():
            self._handler = asyncio.ensure_future(self._run_handlers())

    async def _run_handlers(self) -> None:
        if self._checked is not None:
            await asyncio.shield(self._checked)
        context = activate(self.user_session, self)
        try:
            while self._inbox and not self.closing:
                kind, value, message_type = self._inbox.popleft()
                try:
                    if kind == "thread":
                        await self._switch_thread(value)
                        continue
                    self.user_session["message_type"] = message_type
                    await acall(settings.ON_MESSAGE, value, Reply(self))
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

    async def _switch_thread(self, thread_id: str) -> None:
        """The page named its conversation: keep it, let ``ON_THREAD`` resume
        it (replay its history, say), then confirm it to the page."""
        self.user_session["thread_id"] = thread_id
        if settings.ON_THREAD is not None:
            await acall(settings.ON_THREAD, thread_id, Reply(self))
        if self.closing:
            raise SessionClosed()
        await self._send_json({"type": "thread", "thread_id": thread_id})

    async def call_page(self, name: str, args: Any, timeout: float) -> Any:
        """Ask the page to run ``name(args)``; its result, or
        :class:`asyncio.TimeoutError` after ``timeout`` seconds."""
        if self.closing:
            raise SessionClosed()
        call_id, future = self.calls.start()
        try:
            await self._send_json(
                {"type": "call_fn", "id": call_id, "name": name, "args": args}
            )
            return await asyncio.wait_for(future, timeout)
        finally:
            self.calls.forget(call_id)

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
        user = verified.extra.get("user")
        if user is None:
            User = get_user_model()
            user = User._default_manager.filter(pk=verified.user_pk).first()
        if user is None:
            revocation.revoke_token(verified, reason="logout")
            return
        flows.logout(
            None,
            user,
            credential=verified,
            everywhere=everywhere,
            method=Method.WEBSOCKET,
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
        self.calls.cancel_all()
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
        registry().release(self)
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


USER_MESSAGE = "user_message"
#: What a client message may be (Chainlit's types of a message a page sends).
MESSAGE_TYPES = frozenset({USER_MESSAGE, "system_message"})
#: A thread id: a UUID, as Chainlit's copilot makes, or any short opaque id.
THREAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


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
