"""``ws/chat/`` of the demo over a real socket: uvicorn and the ``websockets`` client.

What a unit test cannot show: the HTTP status of a refused handshake, the
subprotocol answer a browser insists on, and that abuse never turns into a server
error in the server's own log.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.servers import manage

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def token(demo_server):
    return manage(demo_server.env, "chatauth_token", "e2e-ws-user").strip()


async def close_code(ws, timeout=5.0):
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as e:
            assert e.rcvd is not None
            return e.rcvd.code


async def test_subprotocol_session_and_echo(demo_server, token):
    url = f"{demo_server.ws_url}/ws/chat/"
    origin = f"http://127.0.0.1:{demo_server.port}"  # the demo's own pages
    async with connect(
        url, subprotocols=["chatauth.bearer", token], origin=origin
    ) as ws:
        assert ws.subprotocol == "chatauth.bearer"  # never the token
        session = json.loads(await ws.recv())
        assert session["type"] == "session"
        assert session["user"]["identifier"] == "e2e-ws-user"
        await ws.send(json.dumps({"type": "message", "content": "hello"}))
        assert json.loads(await ws.recv()) == {"type": "message", "content": "hello"}


async def test_foreign_origin_gets_403_at_the_handshake(demo_server, token):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            f"{demo_server.ws_url}/ws/chat/",
            additional_headers={"Authorization": f"Bearer {token}"},
            origin="https://evil.example",
        ):
            pass
    assert refused.value.response.status_code == 403


async def test_unknown_path_is_403_not_500(demo_server):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{demo_server.ws_url}/ws/elsewhere/"):
            pass
    assert refused.value.response.status_code == 403


async def test_first_message_auth_and_bad_token(demo_server, token):
    url = f"{demo_server.ws_url}/ws/chat/"
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(await ws.recv())["type"] == "session"
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token[:-4] + "AAAA"}))
        assert await close_code(ws) == 4401


async def test_abuse_never_becomes_a_server_error(demo_server, token):
    url = f"{demo_server.ws_url}/ws/chat/"
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(url, additional_headers=headers) as ws:
        await ws.recv()  # session
        for frame in (b"\x00\xffbinary", "not json", '{"type": 7}', "[" * 3000):
            await ws.send(frame)
            reply = json.loads(await ws.recv())
            assert reply["type"] == "error"
        await ws.send('{"type": "nope"}')
        assert json.loads(await ws.recv())["code"] == "unknown_type"
        assert await close_code(ws) == 4400  # the fifth protocol error
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "message", "content": "x" * 70_000}))
        assert await close_code(ws) == 4413
    async with connect(url, additional_headers=headers) as ws:
        await ws.recv()
        for i in range(40):  # MESSAGE_RATE is 30 per 10 s
            await ws.send(json.dumps({"type": "message", "content": i}))
        assert await close_code(ws) == 4429
    output = demo_server.output()
    assert "Traceback" not in output and " 500" not in output, output


# --- A project's subclass of ChatConsumer ---------------------------------------------


@pytest.fixture(scope="module")
def subclass_server(tmp_path_factory):
    """uvicorn serving ``tests.subclass_asgi`` (the demo plus ``ws/sub/``)."""
    from tests.servers import migrate, server_env, start_server

    tmp = tmp_path_factory.mktemp("subclass-server")
    env = server_env(DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}")
    migrate(env)
    server = start_server(env, tmp, app="tests.subclass_asgi:application")
    yield server
    server.stop()


async def test_a_project_subclass_overrides_the_hooks_and_is_still_revoked(
    subclass_server,
):
    import httpx

    token = manage(subclass_server.env, "chatauth_token", "sub-user").strip()
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(
        f"{subclass_server.ws_url}/ws/sub/", additional_headers=headers
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "session"  # super().connect()
        assert json.loads(await ws.recv()) == {"type": "motd", "user": "sub-user"}
        await ws.send(json.dumps({"type": "shout", "text": "hi"}))
        assert json.loads(await ws.recv()) == {"type": "shout", "text": "HI"}
        await ws.send(json.dumps({"type": "message", "content": "hello"}))
        assert json.loads(await ws.recv()) == {"type": "message", "content": "hello"}
        await ws.send(json.dumps({"type": "nope"}))  # super(): a protocol error
        assert json.loads(await ws.recv())["code"] == "unknown_type"
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(
                f"{subclass_server.url}/auth/logout", json={}, headers=headers
            )
        assert response.status_code == 200
        assert await close_code(ws) == 4410
    deadline = asyncio.get_running_loop().time() + 5
    while "project consumer disconnected" not in subclass_server.output():
        assert asyncio.get_running_loop().time() < deadline, subclass_server.output()
        await asyncio.sleep(0.05)
    assert "project consumer disconnected: 4410" in subclass_server.output()
