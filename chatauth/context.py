"""``chatauth.user_session``: per-chat-session storage (Chainlit's ``cl.user_session``).

Inside a chat session's handler, ``user_session.get("user")`` is the
authenticated :class:`chatauth.User`; ``set``/``get`` keep values for the life of
that one WebSocket connection.  The current session is held in a context
variable, so concurrent sessions on one worker never see each other's values.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

_current: ContextVar[dict[str, Any] | None] = ContextVar(
    "chatauth_user_session", default=None
)
#: The chat consumer whose handler is running (for :class:`chatauth.CopilotFunction`).
_socket: ContextVar[Any] = ContextVar("chatauth_socket", default=None)


class UserSession:
    """Dictionary-like access to the current chat session's values."""

    def _data(self) -> dict[str, Any]:
        data = _current.get()
        if data is None:
            raise LookupError("chatauth.user_session is only usable in a chat session")
        return data

    def get(self, key: str, default: Any = None) -> Any:
        data = _current.get()
        if data is None:
            return default
        return data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._data()[key] = value

    def __contains__(self, key: str) -> bool:
        return key in (_current.get() or {})


def activate(data: dict[str, Any], socket: Any = None) -> Any:
    """Make ``data`` the current session's store (and ``socket`` its chat
    consumer); returns a token for :func:`reset`."""
    return _current.set(data), _socket.set(socket)


def reset(token: Any) -> None:
    data, socket = token
    _socket.reset(socket)
    _current.reset(data)


def current_socket() -> Any:
    """The chat consumer of the running handler, or None outside one."""
    return _socket.get()


user_session = UserSession()
