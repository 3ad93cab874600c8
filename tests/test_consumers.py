"""The chat consumer over Channels' WebsocketCommunicator, with the in-memory layer.

Every test opens real sockets through ``project.asgi.application`` (routing, origin
check, authentication, consumer) against the test database.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from rest_framework.test import APIClient

import chatauth
import chatauth.consumers
from chatauth.constants import CloseCode
from chatauth.models import AuditEvent, AuditTrail, ChatSession
from chatauth.tokens import issue_copilot_token
from tests.conftest import bearer, chainlit_token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]

#: What handlers below saw, for assertions (reset by the autouse fixture).
SEEN: list = []


# --- Handlers named in CHATAUTH["ON_MESSAGE"] by the tests --------------------------


async def whoami(content, send):
    """Reply with the session's user and a per-session counter."""
    user = chatauth.user_session.get("user")
    count = chatauth.user_session.get("count", 0) + 1
    chatauth.user_session.set("count", count)
    SEEN.append(user)
    await send({"identifier": user.identifier, "count": count, "echo": content})


async def stream(content, send):
    for i in range(3):
        await send(f"{content}-{i}")


def sync_handler(content, send):
    user = chatauth.user_session.get("user")
    SEEN.append(user)
    send(f"sync {user.identifier}: {content}")
    send("done")


async def slow(content, send):
    await send("started")
    SEEN.append("started")
    await asyncio.sleep(0.3)
    SEEN.append("after")  # must never run: the session is revoked meanwhile
    await send("after")


def sync_slow(content, send):
    send("started")
    time.sleep(0.3)  # a sync handler cannot be interrupted: its next send stops it
    try:
        send("after")
    except chatauth.consumers.SessionClosed:
        SEEN.append("refused")
        raise
    SEEN.append("sent")


async def broken(content, send):
    raise RuntimeError("handler bug")


# --- Helpers ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
async def _fresh_layer():
    SEEN.clear()
    layer = get_channel_layer()
    await layer.flush()
    yield
    await layer.flush()


def app():
    from project.asgi import application

    return application


def communicator(token=None, *, headers=(), path="/ws/chat/", subprotocols=None):
    headers = list(headers)
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return WebsocketCommunicator(
        app(), path, headers=headers, subprotocols=subprotocols
    )


async def open_session(token=None, **kwargs):
    """Connect, check the session message; return (communicator, session)."""
    comm = communicator(token, **kwargs)
    connected, _ = await comm.connect(timeout=5)
    assert connected
    session = await comm.receive_json_from(timeout=5)
    assert session["type"] == "session"
    return comm, session


async def send_message(comm, content):
    await comm.send_json_to({"type": "message", "content": content})
    return await comm.receive_json_from(timeout=5)


async def expect_close(comm, code, timeout=5.0):
    """The next output is a close with ``code``; then finish like the server would."""
    while True:
        message = await comm.receive_output(timeout)
        if message["type"] == "websocket.close":
            break
        assert message["type"] == "websocket.send", message
    assert message.get("code") == code, message
    await comm.send_input({"type": "websocket.disconnect", "code": code})
    await comm.wait(5)


async def hang_up(comm):
    await comm.disconnect(timeout=5)


async def assert_no_tasks():
    """Nothing of a finished session is left running on the loop."""
    current = asyncio.current_task()
    for _ in range(50):
        others = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not others:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"leaked tasks: {others}")


async def http(method, path, *, client=None, data=None, **extra):
    from rest_framework.test import APIClient

    client = client or APIClient()
    call = getattr(client, method)
    if data is not None:
        return await sync_to_async(call)(path, data, format="json", **extra)
    return await sync_to_async(call)(path, **extra)


async def row(session_id):
    """The session's row, once written (rows are written in batches)."""
    for _ in range(100):
        found = await ChatSession.objects.filter(pk=session_id).afirst()
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no row for session {session_id}")


# --- The session --------------------------------------------------------------------


async def test_session_message_and_echo(pair):
    comm, session = await open_session(pair["access_token"])
    assert session["user"] == {
        "identifier": "alice",
        "display_name": None,
        "metadata": {},
    }
    reply = await send_message(comm, "hello")
    assert reply == {"type": "message", "content": "hello"}
    saved = await row(session["session_id"])
    assert saved.closed_at is None and saved.channel_name and saved.worker
    assert saved.token_key and saved.user_id is not None
    await hang_up(comm)
    saved = await row(session["session_id"])
    assert saved.closed_at is not None and saved.close_code == 1000
    # The row is the record of both; the audit trail shows them among the
    # audit log's events (no extra rows).
    assert not await AuditEvent.objects.filter(event__startswith="session_o").aexists()
    events = [
        e
        async for e in AuditTrail.objects.filter(
            event__in=[AuditEvent.Event.SESSION_OPENED, AuditEvent.Event.SESSION_CLOSED]
        ).order_by("created_at")
    ]
    assert [(e.event, e.user_id, e.reason) for e in events] == [
        ("session_opened", saved.user_id, ""),
        ("session_closed", saved.user_id, "1000"),
    ]
    assert pair["access_token"] not in json.dumps([e.token_id for e in events])
    await assert_no_tasks()


async def test_the_session_frame_comes_once_the_row_is_durable(pair):
    """Read-your-writes: right after the session frame, the session is listed
    and can be deleted, every time."""
    for _ in range(30):
        comm, session = await open_session(pair["access_token"])
        headers = bearer(pair["access_token"])
        listed = await http("get", "/auth/sessions", **headers)
        assert session["session_id"] in {s["id"] for s in listed.json()}
        deleted = await http(
            "delete", f"/auth/sessions/{session['session_id']}", **headers
        )
        assert deleted.status_code == 204
        await expect_close(comm, CloseCode.REVOKED)


async def test_the_writer_keeps_its_connection_between_sessions_then_gives_it_back(
    pair, monkeypatch
):
    """A client reconnecting does not open a database connection per session;
    an idle worker holds none once WRITER_IDLE_RELEASE has passed."""
    from chatauth.chatsessions import writer

    monkeypatch.setattr(writer, "WRITER_IDLE_RELEASE", 0.3)
    comm, _ = await open_session(pair["access_token"])
    await hang_up(comm)
    connected_at = writer._writer_state["connected_at"]
    assert connected_at  # kept after the last session ended
    comm, _ = await open_session(pair["access_token"])
    await hang_up(comm)
    assert writer._writer_state["connected_at"] == connected_at  # the same one
    deadline = time.monotonic() + 5
    while writer._writer_state["connected_at"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not writer._writer_state["connected_at"]  # given back once idle


async def test_a_session_shorter_than_a_batch_is_recorded_opened_and_closed(pair):
    comm, session = await open_session(pair["access_token"])
    await hang_up(comm)  # returns once the row is written
    saved = await ChatSession.objects.aget(pk=session["session_id"])
    assert saved.closed_at is not None and saved.close_code == 1000
    events = {
        e.event: e.reason
        async for e in AuditTrail.objects.filter(
            token_id=saved.token_key, event__startswith="session_"
        )
    }
    assert events == {"session_opened": "", "session_closed": "1000"}


async def test_user_session_inside_on_message(chat, pair):
    chat(ON_MESSAGE="tests.test_consumers.whoami")
    comm, _ = await open_session(pair["access_token"])
    first = await send_message(comm, "a")
    second = await send_message(comm, "b")
    assert first["content"] == {"identifier": "alice", "count": 1, "echo": "a"}
    assert second["content"]["count"] == 2  # per-session values persist
    assert isinstance(SEEN[0], chatauth.User) and SEEN[0].identifier == "alice"
    # Another session of the same user starts with its own values.
    other, _ = await open_session(pair["access_token"])
    assert (await send_message(other, "c"))["content"]["count"] == 1
    await hang_up(comm)
    await hang_up(other)
    assert chatauth.user_session.get("user") is None  # nothing leaks out
    await assert_no_tasks()


async def test_streaming_and_sync_handlers(chat, pair):
    chat(ON_MESSAGE="tests.test_consumers.stream")
    comm, _ = await open_session(pair["access_token"])
    await comm.send_json_to({"type": "message", "content": "x"})
    replies = [(await comm.receive_json_from(timeout=5))["content"] for _ in range(3)]
    assert replies == ["x-0", "x-1", "x-2"]
    await hang_up(comm)

    chat(ON_MESSAGE="tests.test_consumers.sync_handler")
    comm, _ = await open_session(pair["access_token"])
    assert (await send_message(comm, "hi"))["content"] == "sync alice: hi"
    assert (await comm.receive_json_from(timeout=5))["content"] == "done"
    assert SEEN[0].identifier == "alice"
    await hang_up(comm)
    await assert_no_tasks()


async def test_failing_handler_is_an_error_reply_not_a_crash(chat, pair):
    chat(ON_MESSAGE="tests.test_consumers.broken")
    comm, _ = await open_session(pair["access_token"])
    reply = await send_message(comm, "x")
    assert reply["type"] == "error" and reply["code"] == "handler_failed"
    assert "handler bug" not in reply["detail"]
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
    await hang_up(comm)
    await assert_no_tasks()


# --- Revocation reaches open sockets ------------------------------------------------


async def test_http_logout_closes_the_socket_of_that_token_within_a_second(pair):
    comm, session = await open_session(pair["access_token"])
    await send_message(comm, "ready")
    response = await http(
        "post", "/auth/logout", data={}, **bearer(pair["access_token"])
    )
    assert response.status_code == 200
    started = time.monotonic()
    await expect_close(comm, CloseCode.REVOKED, timeout=1)
    assert time.monotonic() - started < 1
    saved = await row(session["session_id"])
    assert saved.close_code == CloseCode.REVOKED
    await assert_no_tasks()


async def test_logout_everywhere_closes_all_of_the_users_sockets_only(
    pair, make_user, django_user_model
):
    bob = await sync_to_async(make_user)("bob")
    alice = await django_user_model.objects.aget(username="alice")
    copilot = await sync_to_async(lambda: str(issue_copilot_token(alice)))()
    bob_token = await sync_to_async(lambda: str(issue_copilot_token(bob)))()
    mine = [
        (await open_session(pair["access_token"]))[0],
        (await open_session(copilot))[0],
        (await open_session(chainlit_token("alice")))[0],
    ]
    theirs, _ = await open_session(bob_token)
    response = await http(
        "post",
        "/auth/logout",
        data={"everywhere": True},
        **bearer(pair["access_token"]),
    )
    assert response.status_code == 200
    for comm in mine:
        await expect_close(comm, CloseCode.REVOKED, timeout=1)
    assert await theirs.receive_nothing(timeout=0.3)
    assert (await send_message(theirs, "still here"))["content"] == "still here"
    await hang_up(theirs)
    await assert_no_tasks()


async def test_revocation_cancels_a_running_handler(chat, pair):
    chat(ON_MESSAGE="tests.test_consumers.slow")
    comm, session = await open_session(pair["access_token"])
    assert (await send_message(comm, "go"))["content"] == "started"
    await row(session["session_id"])
    response = await http(
        "delete",
        f"/auth/sessions/{session['session_id']}",
        **bearer(pair["access_token"]),
    )
    assert response.status_code == 204
    closed = await comm.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": CloseCode.REVOKED}
    # The client has not hung up yet; the handler would have woken by now.
    await asyncio.sleep(0.6)
    assert SEEN == ["started"]  # no handler code ran after the revocation
    assert await comm.receive_nothing(timeout=0.1)
    await hang_up(comm)
    await assert_no_tasks()


async def test_revocation_stops_a_sync_handler_at_its_next_send(chat, pair):
    chat(ON_MESSAGE="tests.test_consumers.sync_slow")
    comm, _ = await open_session(pair["access_token"])
    assert (await send_message(comm, "go"))["content"] == "started"
    response = await http(
        "post", "/auth/logout", data={}, **bearer(pair["access_token"])
    )
    assert response.status_code == 200
    closed = await comm.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": CloseCode.REVOKED}
    for _ in range(40):
        if SEEN:
            break
        await asyncio.sleep(0.05)
    assert SEEN == ["refused"]
    assert await comm.receive_nothing(timeout=0.1)
    await hang_up(comm)
    await assert_no_tasks()


async def test_logout_message_logs_out_like_http(chat, pair):
    seen = []

    @chatauth.on_logout
    def bye(request, response):
        seen.append((request, response))

    comm, _ = await open_session(pair["access_token"])
    await comm.send_json_to({"type": "logout"})
    await expect_close(comm, CloseCode.REVOKED)
    assert seen == [(None, None)]
    response = await http("get", "/auth/me", **bearer(pair["access_token"]))
    assert response.status_code == 401
    logout = await AuditEvent.objects.aget(event=AuditEvent.Event.LOGOUT)
    assert logout.method == "websocket" and logout.identifier == "alice"
    # The login the token belongs to ended with it: its refresh token too.
    response = await http(
        "post", "/auth/token/refresh", data={"refresh": pair["refresh_token"]}
    )
    assert response.status_code == 401
    await assert_no_tasks()


async def test_logout_message_everywhere(pair, django_user_model):
    alice = await django_user_model.objects.aget(username="alice")
    copilot = await sync_to_async(lambda: str(issue_copilot_token(alice)))()
    other, _ = await open_session(copilot)
    comm, _ = await open_session(pair["access_token"])
    await comm.send_json_to({"type": "logout", "everywhere": True})
    await expect_close(comm, CloseCode.REVOKED)
    await expect_close(other, CloseCode.REVOKED)
    response = await http("get", "/auth/me", **bearer(copilot))
    assert response.status_code == 401
    await assert_no_tasks()


async def test_deactivating_the_user_closes_the_socket(pair, django_user_model):
    comm, _ = await open_session(pair["access_token"])
    alice = await django_user_model.objects.aget(username="alice")
    alice.is_active = False
    await alice.asave(update_fields=["is_active"])
    await expect_close(comm, CloseCode.REVOKED)


async def test_token_expiring_while_open_closes_with_4401(chat, user):
    chat(LEEWAY=0)
    token = await sync_to_async(
        lambda: str(issue_copilot_token(user, timedelta(seconds=2)))
    )()
    comm, _ = await open_session(token)
    started = time.monotonic()
    await expect_close(comm, CloseCode.UNAUTHORIZED, timeout=4)
    assert time.monotonic() - started < 3.5
    await assert_no_tasks()


# --- Live sessions over HTTP --------------------------------------------------------


async def test_sessions_list_and_delete(pair):
    comm, session = await open_session(
        pair["access_token"], headers=[(b"user-agent", b"pytest-ws")]
    )
    other, other_session = await open_session(chainlit_token("alice"))
    await row(session["session_id"])
    await row(other_session["session_id"])
    response = await http("get", "/auth/sessions", **bearer(pair["access_token"]))
    assert response.status_code == 200
    listed = {s["id"]: s for s in response.json()}
    assert set(listed) == {session["session_id"], other_session["session_id"]}
    assert listed[session["session_id"]]["current"] is True
    assert listed[other_session["session_id"]]["current"] is False
    assert listed[session["session_id"]]["user_agent"] == "pytest-ws"

    response = await http(
        "delete",
        f"/auth/sessions/{other_session['session_id']}",
        **bearer(pair["access_token"]),
    )
    assert response.status_code == 204
    await expect_close(other, CloseCode.REVOKED)
    assert (await send_message(comm, "alive"))["content"] == "alive"
    response = await http("get", "/auth/sessions", **bearer(pair["access_token"]))
    assert [s["id"] for s in response.json()] == [session["session_id"]]
    await hang_up(comm)
    await assert_no_tasks()


async def test_another_users_session_cannot_be_deleted(pair, make_user):
    bob = await sync_to_async(make_user)("bob")
    bob_token = await sync_to_async(lambda: str(issue_copilot_token(bob)))()
    comm, session = await open_session(bob_token)
    await row(session["session_id"])  # it exists: the 404 is about ownership
    response = await http(
        "delete",
        f"/auth/sessions/{session['session_id']}",
        **bearer(pair["access_token"]),
    )
    assert response.status_code == 404
    assert (await send_message(comm, "alive"))["content"] == "alive"
    await hang_up(comm)


async def test_heartbeat_updates_last_seen(chat, pair):
    chat(HEARTBEAT_INTERVAL=0.1)
    comm, session = await open_session(pair["access_token"])
    opened = (await row(session["session_id"])).last_seen_at
    for _ in range(50):
        await asyncio.sleep(0.1)
        if (await row(session["session_id"])).last_seen_at > opened:
            break
    else:
        raise AssertionError("last_seen_at never moved")
    await hang_up(comm)
    await assert_no_tasks()


# --- Limits -------------------------------------------------------------------------


async def test_too_large_is_4413(chat, pair):
    chat(MAX_MESSAGE_BYTES=1000)
    comm, _ = await open_session(pair["access_token"])

    def frame(content):  # UTF-8 as a browser sends it: "é" is 2 bytes
        return json.dumps({"type": "message", "content": content}, ensure_ascii=False)

    await comm.send_to(text_data=frame("é" * 450))  # under 1000 bytes
    assert (await comm.receive_json_from(timeout=5))["content"] == "é" * 450
    assert len(frame("é" * 490)) < 1000 < len(frame("é" * 490).encode())
    await comm.send_to(text_data=frame("é" * 490))  # 999 characters, 1489 bytes
    await expect_close(comm, CloseCode.TOO_LARGE)
    await assert_no_tasks()


async def test_binary_too_large_is_4413(chat, pair):
    chat(MAX_MESSAGE_BYTES=100)
    comm, _ = await open_session(pair["access_token"])
    await comm.send_to(bytes_data=b"x" * 101)
    await expect_close(comm, CloseCode.TOO_LARGE)


async def test_message_rate_is_4429(chat, pair):
    chat(MESSAGE_RATE=(3, 10))
    comm, _ = await open_session(pair["access_token"])
    for i in range(3):
        assert (await send_message(comm, i))["content"] == i
    await comm.send_json_to({"type": "message", "content": "one too many"})
    await expect_close(comm, CloseCode.RATE_LIMITED)
    await assert_no_tasks()


async def test_malformed_and_binary_frames_get_errors_then_4400(chat, pair):
    chat(MAX_PROTOCOL_ERRORS=5)
    comm, _ = await open_session(pair["access_token"])
    frames = [
        ("text", "not json"),
        ("text", json.dumps(["no", "type"])),
        ("text", json.dumps({"type": "nope"})),
        ("bytes", b"\x00\x01binary"),
        ("text", "[" * 5000 + "]" * 5000),  # deep nesting: still just an error
    ]
    codes = []
    for kind, frame in frames[:-1]:
        if kind == "text":
            await comm.send_to(text_data=frame)
        else:
            await comm.send_to(bytes_data=frame)
        reply = await comm.receive_json_from(timeout=5)
        assert reply["type"] == "error" and reply["detail"]
        codes.append(reply["code"])
    assert codes == [
        "invalid_json",
        "invalid_message",
        "unknown_type",
        "binary_not_supported",
    ]
    await comm.send_to(text_data=frames[-1][1])
    reply = await comm.receive_json_from(timeout=5)
    assert reply["type"] == "error"
    await expect_close(comm, CloseCode.PROTOCOL_ERROR)
    await assert_no_tasks()


async def test_auth_and_message_without_content_are_errors(pair):
    comm, _ = await open_session(pair["access_token"])
    await comm.send_json_to({"type": "auth", "token": pair["access_token"]})
    assert (await comm.receive_json_from())["code"] == "already_authenticated"
    await comm.send_json_to({"type": "message"})
    assert (await comm.receive_json_from())["code"] == "invalid_message"
    await comm.send_json_to({"type": "logout", "everywhere": "yes"})
    assert (await comm.receive_json_from())["code"] == "invalid_message"
    await hang_up(comm)


# --- Django session cookie sessions -------------------------------------------------


async def test_session_cookie_session_closes_on_http_logout_of_that_session(user):
    client = APIClient()
    await sync_to_async(client.force_login)(user)
    from django.conf import settings as django_settings

    session_key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={session_key}".encode()
    comm, session = await open_session(headers=[(b"cookie", cookie)])
    assert session["user"]["identifier"] == "alice"
    await send_message(comm, "ready")
    response = await http("post", "/auth/logout", client=client, data={})
    assert response.status_code == 200
    await expect_close(comm, CloseCode.REVOKED, timeout=1)
    # The session is gone: the same cookie opens nothing now.
    comm = communicator(headers=[(b"cookie", cookie)])
    assert (await comm.connect(timeout=5))[0]
    await expect_close(comm, CloseCode.UNAUTHORIZED)
    await assert_no_tasks()


async def test_logout_message_on_a_session_cookie_session_ends_the_django_session(user):
    client = APIClient()
    await sync_to_async(client.force_login)(user)
    from django.conf import settings as django_settings

    session_key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={session_key}".encode()
    comm, _ = await open_session(headers=[(b"cookie", cookie)])
    await comm.send_json_to({"type": "logout"})
    await expect_close(comm, CloseCode.REVOKED)
    response = await http("post", "/auth/copilot/token", client=client, data={})
    assert response.status_code in (401, 403)  # the Django session is over
