"""``on_message`` handlers (``CHATAUTH["ON_MESSAGE"]``): how a chat session runs
them, and the built-in ones.

A handler is ``handler(content, send)``, sync or async: ``content`` is what the
client sent, ``send(text)`` (awaitable) sends one reply; call it several times to
stream.  ``chatauth.user_session.get("user")`` is the authenticated user.

Handlers run in a task of their own (:func:`run_inbox`), one message after the
other, so the socket keeps reading (and can be revoked) while a handler streams
a reply; once the chat session closes, no more handler code runs: the task is
cancelled and ``send`` raises :class:`SessionClosed`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync

from chatauth.conf import settings
from chatauth.context import activate, reset
from chatauth.internal.calls import acall

if TYPE_CHECKING:
    from chatauth.consumers import ChatConsumer

logger = logging.getLogger("chatauth.consumers")


class SessionClosed(Exception):
    """Raised by ``send`` in a handler whose chat session has closed."""


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


async def run_inbox(consumer: ChatConsumer) -> None:
    """Run the handlers of what ``consumer``'s inbox holds, in order, until it
    is empty or the chat session closes (the consumer's handler task)."""
    if consumer._checked is not None:
        await asyncio.shield(consumer._checked)
    context = activate(consumer.user_session, consumer)
    try:
        while consumer._inbox and not _closing(consumer):
            kind, value, message_type = consumer._inbox.popleft()
            try:
                if kind == "thread":
                    await switch_thread(consumer, value)
                    continue
                consumer.user_session["message_type"] = message_type
                await acall(settings.ON_MESSAGE, value, Reply(consumer))
            except SessionClosed:
                return
            except Exception:
                if _closing(consumer):
                    return
                logger.exception("on_message handler raised")
                await consumer.send_json(
                    {
                        "type": "error",
                        "code": "handler_failed",
                        "detail": "The message could not be handled.",
                    }
                )
    finally:
        reset(context)


def _closing(consumer: ChatConsumer) -> bool:
    """Whether ``consumer``'s chat session is closing, read anew each time (an
    await in between may have closed it: no narrowing carried over)."""
    return consumer.closing


async def switch_thread(consumer: ChatConsumer, thread_id: str) -> None:
    """The page named its conversation: keep it, let ``ON_THREAD`` resume it
    (replay its history, say), then confirm it to the page."""
    consumer.user_session["thread_id"] = thread_id
    if settings.ON_THREAD is not None:
        await acall(settings.ON_THREAD, thread_id, Reply(consumer))
    if consumer.closing:
        raise SessionClosed()
    await consumer.send_json({"type": "thread", "thread_id": thread_id})


async def settle(future: asyncio.Future[Any]) -> None:
    """Wait for ``future`` (a handler's task, say) to finish, whatever its
    outcome."""
    try:
        await asyncio.shield(future)
    except BaseException as e:  # noqa: BLE001 - its outcome is not ours to raise
        if isinstance(e, asyncio.CancelledError) and not future.cancelled():
            raise  # we were cancelled ourselves, not the future
        return


async def echo(content: Any, send: Callable[[Any], Awaitable[None]]) -> None:
    """Reply with what was sent: the demo's chat."""
    await send(content)
