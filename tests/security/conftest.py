"""Helpers shared by the adversarial suite: forging tokens, sockets, log capture."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

#: Loggers whose ERRORs (with a traceback) mean a bug: Django's request logger
#: logs every 500 there; chatauth's modules log unexpected exceptions.
WATCHED_LOGGERS = ("django.request", "django.server", "chatauth", "daphne", "asyncio")


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def forge(
    claims: dict[str, Any],
    key: str | bytes | None,
    *,
    alg: str = "HS256",
    headers: dict[str, Any] | None = None,
) -> str:
    """A compact JWS over ``claims`` built by hand (PyJWT refuses some of these).

    ``alg`` goes in the header as given; the signature is HMAC-SHA256 with ``key``
    (any bytes, e.g. a PEM public key: the classic RS256→HS256 confusion), or
    empty when ``key`` is None.
    """
    header = {"alg": alg, "typ": "JWT", **(headers or {})}
    signing_input = f"{b64(json.dumps(header))}.{b64(json.dumps(claims))}"
    if key is None:
        return signing_input + "."
    key = key.encode() if isinstance(key, str) else key
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


class LogCapture(logging.Handler):
    """Records every log record of the watched loggers, whatever their level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        """ERROR records and any record carrying a traceback, formatted."""
        found = []
        for record in self.records:
            if record.levelno >= logging.ERROR or record.exc_info:
                text = f"{record.name} {record.levelname}: {record.getMessage()}"
                if record.exc_info:
                    text += "\n" + "".join(traceback.format_exception(*record.exc_info))
                found.append(text)
        return found

    def lines(self) -> list[str]:
        out = []
        for record in self.records:
            out.append(record.getMessage())
            if record.exc_info:
                out.append("".join(traceback.format_exception(*record.exc_info)))
        return out


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """Capture the watched loggers at DEBUG (restored afterwards)."""
    handler = LogCapture()
    saved = []
    for name in WATCHED_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)


def asgi_app():
    from project.asgi import application

    return application


def communicator(
    token: str | None = None, *, headers=(), subprotocols=None, path="/ws/chat/"
) -> WebsocketCommunicator:
    headers = list(headers)
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode("latin-1")))
    return WebsocketCommunicator(
        asgi_app(), path, headers=headers, subprotocols=subprotocols
    )


async def socket_outcome(token: str, timeout: float = 5.0) -> int | str:
    """Open ``ws/chat/`` with ``token``: its close code, or ``"session"``."""
    comm = communicator(token)
    connected, code = await comm.connect(timeout=timeout)
    if not connected:
        return f"refused-handshake:{code}"
    message = await comm.receive_output(timeout)
    if message["type"] == "websocket.close":
        await comm.wait(timeout)
        return message.get("code", 1000)
    payload = json.loads(message["text"])
    await comm.disconnect(timeout=timeout)
    return payload["type"]


@pytest.fixture
async def fresh_layer():
    layer = get_channel_layer()
    await layer.flush()
    yield layer
    await layer.flush()
