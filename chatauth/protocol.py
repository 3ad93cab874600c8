"""The chat protocol's client frames: what they may hold, and the limits on them.

:class:`~chatauth.consumers.ChatConsumer` applies these to every frame before
any handler sees it: the size (``MAX_MESSAGE_BYTES``, close 4413), the rate
(``MESSAGE_RATE``, close 4429), and the shape of a message or thread frame.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from chatauth.conf import settings

USER_MESSAGE = "user_message"
#: What a client message may be (Chainlit's types of a message a page sends).
MESSAGE_TYPES = frozenset({USER_MESSAGE, "system_message"})
#: A thread id: a UUID, as Chainlit's copilot makes, or any short opaque id.
THREAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def frame_size(text: str) -> int:
    """UTF-8 length of ``text``, without encoding it when the answer is plain."""
    if len(text) * 4 <= settings.MAX_MESSAGE_BYTES or len(text) > (
        settings.MAX_MESSAGE_BYTES
    ):
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


class RateWindow:
    """``MESSAGE_RATE`` of one socket: a sliding window over its last frames."""

    __slots__ = ("recent",)

    def __init__(self) -> None:
        self.recent: deque[float] | None = None

    def over(self) -> bool:
        """Count one more frame; True if it is over the rate (then not counted)."""
        limit, window = settings.MESSAGE_RATE
        now = time.monotonic()
        recent = self.recent
        if recent is None or recent.maxlen != limit:
            recent = self.recent = deque(maxlen=max(1, int(limit)))
        # A sliding window: the oldest of the last ``limit`` frames must be older
        # than ``window`` seconds for one more to be allowed.
        if len(recent) == recent.maxlen and now - recent[0] < window:
            return True
        recent.append(now)
        return False


# --- Client frames, parsed ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """``{"type": "message", "content", "message_type"}``: for the handler."""

    content: Any
    message_type: str


@dataclass(frozen=True, slots=True)
class Thread:
    """``{"type": "thread", "thread_id"}``: the page names its conversation."""

    thread_id: str


@dataclass(frozen=True, slots=True)
class CallResult:
    """``{"type": "call_fn_result", "id", "result"}``: a page function's answer."""

    call_id: str
    result: Any


@dataclass(frozen=True, slots=True)
class Ping:
    """``{"type": "ping"}``: answered ``{"type": "pong"}``."""


@dataclass(frozen=True, slots=True)
class Logout:
    """``{"type": "logout", "everywhere"}``: log out, then close 4410."""

    everywhere: bool


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """A frame the server cannot use: answered ``{"type": "error", "code",
    "detail"}`` (close 4400 after ``MAX_PROTOCOL_ERRORS``)."""

    code: str
    detail: str


Frame = Message | Thread | CallResult | Ping | Logout | ProtocolError


def parse(content: Any) -> Frame:
    """The frame a client's decoded JSON ``content`` is, or the error it makes."""
    kind = content.get("type") if isinstance(content, dict) else None
    if kind == "message":
        if "content" not in content:
            return ProtocolError("invalid_message", "A message needs a content.")
        message_type = content.get("message_type", USER_MESSAGE)
        if not isinstance(message_type, str) or message_type not in MESSAGE_TYPES:
            return ProtocolError("invalid_message", "Unknown message_type.")
        return Message(content["content"], message_type)
    if kind == "thread":
        thread_id = content.get("thread_id")
        if not isinstance(thread_id, str) or not THREAD_ID_RE.fullmatch(thread_id):
            return ProtocolError(
                "invalid_thread", "thread_id must be 1-64 of A-Z a-z 0-9 _ -."
            )
        return Thread(thread_id)
    if kind == "call_fn_result":
        call_id = content.get("id")
        if not isinstance(call_id, str) or len(call_id) > 64:
            return ProtocolError(
                "invalid_message", "call_fn_result needs the call's id."
            )
        return CallResult(call_id, content.get("result"))
    if kind == "ping":
        return Ping()
    if kind == "logout":
        everywhere = content.get("everywhere", False)
        if not isinstance(everywhere, bool):
            return ProtocolError("invalid_message", "everywhere must be a boolean.")
        return Logout(everywhere)
    if kind == "auth":
        return ProtocolError("already_authenticated", "This session is authenticated.")
    if not isinstance(kind, str):
        return ProtocolError("invalid_message", 'Expected an object with a "type".')
    return ProtocolError("unknown_type", "Unknown message type.")
