"""A lean keep-alive HTTP/1.1 client to generate load.

The server and the load generator share the machine (two cores on the reference
box), so every CPU cycle the client spends is taken from the server it measures.
httpx costs about 1.3 ms of client CPU per request here, a third of a core at a
Django server's pace; this client costs a tenth of that, in the spirit of
``wrk`` but in pure Python, so ``make bench`` needs nothing installed.  Every
route is still checked with httpx before it is loaded (see :func:`check_json`).
Loopback only: it speaks plain HTTP to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from bench.measure import Call, CallFailed

LOOPBACK = "127.0.0.1"


class HTTPError(Exception):
    pass


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class LoadClient:
    """Up to ``size`` persistent connections to one loopback server, from
    ``local_address`` (another loopback address, e.g. ``127.0.0.2``: another
    client as far as the server's per-address limits go) if given."""

    def __init__(self, port: int, size: int, local_address: str | None = None) -> None:
        self.port = port
        self.size = size
        self.local_addr = (local_address, 0) if local_address else None
        self._idle: asyncio.Queue[_Connection] = asyncio.Queue()
        self._open = 0
        self._all: list[_Connection] = []

    async def _acquire(self) -> tuple[_Connection, bool]:
        """An idle connection (``reused`` True) or a new one."""
        while not self._idle.empty():
            connection = self._idle.get_nowait()
            if connection.reader.at_eof() or connection.writer.is_closing():
                self._discard(connection)  # the server closed it while idle
                continue
            return connection, True
        if self._open < self.size:
            self._open += 1
            try:
                reader, writer = await asyncio.open_connection(
                    LOOPBACK, self.port, local_addr=self.local_addr
                )
            except BaseException:
                self._open -= 1
                raise
            connection = _Connection(reader, writer)
            self._all.append(connection)
            return connection, False
        return await self._idle.get(), True

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._all.remove(connection)
        self._open -= 1

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> tuple[int, bytes]:
        """Send one request; return ``(status, body)``."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {LOOPBACK}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        for attempt in (1, 2):
            connection, reused = await self._acquire()
            try:
                connection.writer.write(data)
                status, content, keep_alive = await _read_response(connection.reader)
            except asyncio.IncompleteReadError as e:
                self._discard(connection)
                # A kept-alive connection the server closed (its keep-alive
                # timeout) as we sent: send again once on a new one, as
                # browsers do.  Any other failure is the server's.
                if reused and not e.partial and attempt == 1:
                    continue
                raise
            except BaseException:
                self._discard(connection)
                raise
            if keep_alive:
                self._idle.put_nowait(connection)
            else:
                self._discard(connection)
            return status, content
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        for connection in list(self._all):
            connection.close()
        self._all.clear()
        self._open = 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head[:-4].split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise HTTPError(f"not an HTTP response: {status_line[:80]!r}")
    status = int(parts[1])
    headers: dict[bytes, bytes] = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    keep_alive = headers.get(b"connection", b"").lower() != b"close"
    if b"content-length" in headers:
        content = await reader.readexactly(int(headers[b"content-length"]))
        return status, content, keep_alive
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        return status, b"".join(chunks), keep_alive
    return status, await reader.read(), False


def expect(
    client: LoadClient,
    method: str,
    path: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
) -> Call:
    """A :data:`~bench.measure.Call` that succeeds when the answer has ``status``
    (else raises :class:`~bench.measure.CallFailed` with the status and body)."""
    body = b"" if json_body is None else json.dumps(json_body).encode()
    if json_body is not None:
        headers = {"Content-Type": "application/json", **(headers or {})}

    async def call() -> bool:
        got, content = await client.request(method, path, headers, body)
        if got != status:
            raise CallFailed(f"HTTP {got} {content[:60].decode(errors='replace')}")
        return True

    return call


def check_json(
    base_url: str,
    method: str,
    path: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
) -> Any:
    """Send one request with httpx and return its JSON, or raise if the route
    does not answer as the benchmark expects (a benchmark of a 401 measures
    nothing)."""
    response = httpx.request(
        method, base_url + path, headers=headers, json=json_body, timeout=30
    )
    if response.status_code != status:
        raise HTTPError(
            f"{method} {path}: expected {status}, got {response.status_code}: "
            f"{response.text[:200]}"
        )
    return response.json()
