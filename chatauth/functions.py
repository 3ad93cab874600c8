"""Calling a function of the host page from the server (Chainlit's ``CopilotFunction``).

Inside an ``on_message`` handler::

    result = await chatauth.CopilotFunction(name="url", args={"q": 1}).acall()

sends ``{"type": "call_fn", "id", "name", "args"}`` down the chat socket; the
widget dispatches Chainlit's ``chainlit-call-fn`` window event with
``detail: {name, args, callback}``, and ``callback(result)`` sends
``{"type": "call_fn_result", "id", "result"}`` back.  As in Chainlit, a page
that does not answer within the timeout (``COPILOT_FUNCTION_TIMEOUT``, 300 s by
default as in Chainlit) gives ``None``, or :class:`asyncio.TimeoutError` with
``raise_on_timeout=True``.

The page is not trusted: a result is any JSON up to ``MAX_MESSAGE_BYTES`` (the
socket's frame limit), ids are random (a page cannot answer a call it was not
sent), an answer for an id that is not pending is ignored, and a session has at
most ``MAX_PENDING_CALLS`` calls waiting at once.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync

from chatauth.conf import settings
from chatauth.context import current_socket

#: Longest function name a call may carry.
MAX_NAME_LENGTH = 200


class TooManyCalls(RuntimeError):
    """More than ``MAX_PENDING_CALLS`` page calls waiting in one session."""


class PendingCalls:
    """A chat session's calls waiting for the page's answer, by id."""

    __slots__ = ("_futures",)

    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[Any]] = {}

    def start(self) -> tuple[str, asyncio.Future[Any]]:
        if len(self._futures) >= settings.MAX_PENDING_CALLS:
            raise TooManyCalls(
                f"{len(self._futures)} page calls are already waiting "
                "(CHATAUTH['MAX_PENDING_CALLS'])"
            )
        call_id = secrets.token_urlsafe(12)
        future = asyncio.get_running_loop().create_future()
        self._futures[call_id] = future
        return call_id, future

    def resolve(self, call_id: str, result: Any) -> bool:
        """Hand ``result`` to the call ``call_id``; False if it is not waiting."""
        future = self._futures.pop(call_id, None)
        if future is None or future.done():
            return False
        future.set_result(result)
        return True

    def forget(self, call_id: str) -> None:
        self._futures.pop(call_id, None)

    def cancel_all(self) -> None:
        futures, self._futures = self._futures, {}
        for future in futures.values():
            future.cancel()

    def __len__(self) -> int:
        return len(self._futures)


@dataclass
class CopilotFunction:
    """A function of the host page, called from a chat handler (Chainlit's name)."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)

    async def acall(
        self, *, timeout: float | None = None, raise_on_timeout: bool = False
    ) -> Any:
        """Run it in the page of the current chat session; its result.

        ``timeout`` defaults to ``COPILOT_FUNCTION_TIMEOUT``.  Raises
        :class:`LookupError` outside a chat handler, :class:`TooManyCalls`
        over ``MAX_PENDING_CALLS``, :class:`chatauth.consumers.SessionClosed`
        when called on a session already ending.  A session that ends while
        the call waits cancels the handler itself (no handler code runs after
        a close): clean up in ``finally``, not in ``except SessionClosed``.
        """
        socket = current_socket()
        if socket is None:
            raise LookupError("CopilotFunction needs a chat session (an on_message)")
        if not isinstance(self.name, str) or not 0 < len(self.name) <= MAX_NAME_LENGTH:
            raise ValueError(f"a function name is 1-{MAX_NAME_LENGTH} characters")
        json.dumps(self.args)  # TypeError now, not a broken frame later
        if timeout is None:
            timeout = float(settings.COPILOT_FUNCTION_TIMEOUT)
        try:
            return await socket.call_page(self.name, self.args, timeout)
        except TimeoutError:
            if raise_on_timeout:
                raise
            return None

    def call(self, **kwargs: Any) -> Any:
        """:meth:`acall` for a sync handler (which runs on a worker thread)."""
        return async_to_sync(self.acall)(**kwargs)
