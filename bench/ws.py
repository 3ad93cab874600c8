"""WebSocket session calls for the WebSocket benchmarks (``websockets`` client).

One *session* is what the issue's connect-rate measure counts: open the socket,
read the ``{"type": "session"}`` frame, send one ``{"type": "message"}``, read its
reply, close.  :func:`session_call` makes it a :data:`~bench.measure.Call` for
:func:`~bench.measure.compare_load`; run it against ``ws/chat/`` with a token
and against ``bench.site.asgi.BARE_WS_PATH`` (the bare consumer) without one.
"""

from __future__ import annotations

import json

from websockets.asyncio.client import connect

from bench.measure import Call


async def chat_session(url: str, token: str | None = None, content: str = "hi") -> bool:
    """One whole session; True when every frame was what the protocol says."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with connect(
        url, additional_headers=headers, open_timeout=10, close_timeout=10
    ) as socket:
        session = json.loads(await socket.recv())
        if session.get("type") != "session":
            return False
        await socket.send(json.dumps({"type": "message", "content": content}))
        reply = json.loads(await socket.recv())
        return reply == {"type": "message", "content": content}


def session_call(url: str, token: str | None = None) -> Call:
    async def call() -> bool:
        return await chat_session(url, token)

    return call
