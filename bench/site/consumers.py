"""The baseline of the WebSocket benchmarks: a Channels consumer with no auth."""

from __future__ import annotations

import json
import uuid

from channels.generic.websocket import AsyncWebsocketConsumer

from bench.site.constants import CONSTANT_USER


class BareConsumer(AsyncWebsocketConsumer):
    """Speaks chatauth's chat protocol on the wire — ``{"type": "session", ...}``
    on connect, ``{"type": "message"}`` echoed — with no credentials, no origin
    check, no groups and no session row: what a chat socket costs without
    authentication.  Like every consumer it still gets a name on the channel
    layer, so the layer's cost is in the baseline too."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(
            text_data=json.dumps(
                {
                    "type": "session",
                    "session_id": str(uuid.uuid4()),
                    "user": CONSTANT_USER,
                }
            )
        )

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        try:
            payload = json.loads(text_data or "")
        except ValueError:
            payload = None
        if isinstance(payload, dict) and payload.get("type") == "message":
            reply = {"type": "message", "content": payload.get("content")}
            await self.send(text_data=json.dumps(reply))
        elif isinstance(payload, dict) and payload.get("type") == "ping":
            await self.send(text_data=json.dumps({"type": "pong"}))
