"""The chat consumer: one authenticated, revocable chat session per WebSocket.

:class:`ChatConsumer` is the class a project subclasses (see its docstring).
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
token, its login, its web session, its API key -- so an ending on any worker
reaches it), 4401 when the token expires (a timer, armed once), 4413 for a
frame over ``MAX_MESSAGE_BYTES``, 4429 over ``MESSAGE_RATE``.  Once a close is
decided no more handler code runs: the handler task is cancelled and its
``send`` refuses.

The sweep: on every heartbeat each worker re-checks its live chat sessions
against the database in batches (:mod:`chatauth.chatsessions.sweep`), and closes
those whose credential no longer holds or whose row is gone.  A lost
channel-layer message, a bulk ``QuerySet.update()`` or a revocation by another
process with no shared layer costs at most one ``HEARTBEAT_INTERVAL``.

Handlers run in a task of their own (:mod:`chatauth.handlers`), one message
after the other, so the socket keeps reading (and can be revoked) while a
handler streams a reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from typing import Any, cast

from asgiref.typing import WebSocketDisconnectEvent
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model

from chatauth import flows, hooks, protocol, revocation
from chatauth.chatsessions.registry import registry, worker_id
from chatauth.conf import settings
from chatauth.constants import CloseCode, Method, token_group, user_group
from chatauth.exceptions import TokenError
from chatauth.functions import PendingCalls
from chatauth.handlers import SessionClosed, run_inbox, settle
from chatauth.identities import UNDECIDED, SocketAuth
from chatauth.internal.http import scope_client
from chatauth.middleware.auth import audit_refusal
from chatauth.models import ChatSession
from chatauth.protocol import RateWindow, frame_size

logger = logging.getLogger("chatauth.consumers")


class ChatConsumer(AsyncJsonWebsocketConsumer):
    """One live chat session; needs ``scope["chatauth"]`` from
    :func:`~chatauth.middleware.ChatAuthMiddlewareStack`.

    The class a project subclasses, the Channels way: override Channels' hooks
    and call ``super()``, then route the subclass instead of this class
    (``ChatAuthMiddlewareStack(MyConsumer.as_asgi())`` in the project's
    ``websocket_urlpatterns``; docs/websocket.md shows the whole ``asgi.py``)::

        class MyConsumer(ChatConsumer):
            async def connect(self):
                await super().connect()
                if not self.closing:  # the chat session is open
                    await self.send_json({"type": "motd", "text": "Hello"})

            async def receive_json(self, content, **kwargs):
                if isinstance(content, dict) and content.get("type") == "typing":
                    return  # a frame of this project's own
                await super().receive_json(content, **kwargs)

            async def disconnect(self, code):
                await super().disconnect(code)  # the chat session's end is recorded

    ``connect()`` opens the chat session: admission (4429 over a cap), the
    channel-layer groups, the second revocation check, the row, then the
    ``{"type": "session"}`` frame; after ``super().connect()``, ``closing`` is
    true if it ended already.  ``receive()`` applies the limits (4413, 4429)
    and parses the frame; ``receive_json()`` gets each client frame that is a
    JSON value.  ``disconnect(code)`` ends the chat session: handlers cancelled,
    groups left, the row closed.  Revocation (4410), expiry (4401) and the
    sweep hold whatever the subclass overrides.  ``send_message(content)`` and
    ``send_json(frame)`` send; ``user_session`` is the chat session's store.
    """

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
        self._rate = RateWindow()
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
                {"type": "websocket.disconnect", "code": code, "reason": None}
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

    async def websocket_disconnect(self, message: WebSocketDisconnectEvent) -> None:
        # Channels' own leaves the groups before disconnect() runs (failing on a
        # channel layer that is down, with the row never closed) and hops to a
        # thread for close_old_connections() (none is needed: see dispatch()).
        self.gone = True
        await self.disconnect(message.get("code") or 1006)
        raise StopConsumer()

    # --- Connect --------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the chat session (see the class docstring)."""
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
            # No channel layer (Redis down): a chat session nothing could revoke
            # must not open.  Accept first so the client sees 1011 ("try again"),
            # not a refused handshake that reads like "forbidden".
            logger.warning("chat session refused: channel layer down", exc_info=True)
            self.groups = []
            await self.accept(auth.subprotocol)
            await self.close(code=CloseCode.SERVER_ERROR)
            return
        self.groups_joined_at = time.monotonic()
        await self.accept(auth.subprotocol)
        # The second check, on the loop when the cache alone can decide (a
        # local-memory cache: no I/O).  Else handlers wait for it, and it runs
        # while the client reads the session frame: nothing runs for a
        # token revoked in between.
        refused = auth.check_on_loop()
        if refused is UNDECIDED:
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
        if not await registry().opened(self):  # not recorded: the client retries
            return await self._close(CloseCode.SERVER_ERROR)
        if self.closing:
            return  # ended while its row was written (a revocation meanwhile)
        await self.send_json(
            {"type": "session", "session_id": str(self.session_id), "user": user}
        )
        if isinstance(refused, int):  # revoked between the two checks
            await self._close(refused)

    async def _check_again(self) -> None:
        """Check the credential again, now that the groups are joined; close the
        socket if it no longer holds."""
        try:
            await self.auth.acheck()
        except TokenError as e:
            if not self.closing:  # else a logout here ended it: its code stands
                await self._close(self.auth.ended_code(e))
        except Exception:
            logger.exception("could not check a chat session's credentials again")
            # RFC 6455: the server cannot go on.
            await self._close(CloseCode.SERVER_ERROR)

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

    async def receive(
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        **kwargs: Any,
    ) -> None:
        """One frame: the size and rate limits, then JSON text only, parsed and
        handed to :meth:`receive_json`."""
        if self.closing:
            return
        size = (
            frame_size(text_data) if text_data is not None else len(bytes_data or b"")
        )
        if size > settings.MAX_MESSAGE_BYTES:
            return await self._close(CloseCode.TOO_LARGE)
        if self._rate.over():
            return await self._close(CloseCode.RATE_LIMITED)
        if text_data is None:
            return await self._protocol_error(
                "binary_not_supported", "Send JSON text frames."
            )
        try:
            payload = await self.decode_json(text_data)
        except (ValueError, RecursionError):
            return await self._protocol_error("invalid_json", "Not valid JSON.")
        await self.receive_json(payload, **kwargs)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """One client frame, any JSON value: the protocol's frames by their
        ``type`` (:func:`chatauth.protocol.parse`); anything else is a protocol
        error."""
        frame = protocol.parse(content)
        if isinstance(frame, protocol.Message):
            return await self._enqueue("message", frame.content, frame.message_type)
        if isinstance(frame, protocol.Thread):
            return await self._enqueue("thread", frame.thread_id, "")
        if isinstance(frame, protocol.CallResult):
            # Unknown, answered or timed-out ids are ignored: a page may answer
            # late, and ids are not guessable anyway (see PendingCalls).
            self.calls.resolve(frame.call_id, frame.result)
        elif isinstance(frame, protocol.Ping):
            await self.send_json({"type": "pong"})
        elif isinstance(frame, protocol.Logout):
            await self._logout(frame.everywhere)
        else:
            await self._protocol_error(frame.code, frame.detail)

    async def _protocol_error(self, code: str, detail: str) -> None:
        self._errors += 1
        await self.send_json({"type": "error", "code": code, "detail": detail})
        if self._errors >= settings.MAX_PROTOCOL_ERRORS:
            await self._close(CloseCode.PROTOCOL_ERROR)

    async def _enqueue(self, kind: str, value: Any, message_type: str) -> None:
        # Messages wait here while a handler runs; the rate limit bounds them,
        # and a backlog over one rate window's worth is flooding all the same.
        if len(self._inbox) >= settings.MESSAGE_RATE[0]:
            return await self._close(CloseCode.RATE_LIMITED)
        self._inbox.append((kind, value, message_type))
        if self._handler is None or self._handler.done():
            self._handler = asyncio.ensure_future(run_inbox(self))

    # --- Sending --------------------------------------------------------------------

    async def call_page(self, name: str, args: Any, timeout: float) -> Any:
        """Ask the page to run ``name(args)``; its result, or
        :class:`asyncio.TimeoutError` after ``timeout`` seconds."""
        if self.closing:
            raise SessionClosed()
        call_id, future = self.calls.start()
        try:
            await self.send_json(
                {"type": "call_fn", "id": call_id, "name": name, "args": args}
            )
            return await asyncio.wait_for(future, timeout)
        finally:
            self.calls.forget(call_id)

    async def send_message(self, content: Any) -> None:
        """Send one ``{"type": "message"}`` reply (what a handler's ``send`` does)."""
        if self.closing:
            raise SessionClosed()
        await self.send_json({"type": "message", "content": content})

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
            scope=cast(dict[str, Any], self.scope),
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

    async def disconnect(self, code: int) -> None:
        """End the chat session: no more handler code, its groups left, its
        caps released, its row closed (with the code the server closed with,
        else the client's ``code``); returns once that is recorded."""
        self.gone = True
        self._halt()
        code = self.close_code or code
        current = asyncio.current_task()
        for task in (self._handler, self._closer, self._checked):
            if task is not None and task is not current and not task.done():
                task.cancel()
                await settle(task)
        for group in self.groups:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:  # layer down: its memberships expire on their own
                logger.warning("could not leave group %s", group)
                break
        registry().release(self)
        if self.row is not None:
            # Returns once the row is closed: the chat session ends recorded.
            await registry().closed(self, int(code))
