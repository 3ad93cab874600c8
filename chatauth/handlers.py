"""Built-in ``on_message`` handlers (``CHATAUTH["ON_MESSAGE"]``).

A handler is ``handler(content, send)``, sync or async: ``content`` is what the
client sent, ``send(text)`` (awaitable) sends one reply; call it several times to
stream.  ``chatauth.user_session.get("user")`` is the authenticated user.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


async def echo(content: Any, send: Callable[[Any], Awaitable[None]]) -> None:
    """Reply with what was sent: the demo's chat."""
    await send(content)
