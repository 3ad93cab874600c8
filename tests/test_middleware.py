"""ChatAuthMiddlewareStack: credentials in the contract's order, refusals, origins."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from chatauth.constants import CloseCode
from chatauth.middleware import (
    SUBPROTOCOL,
    ChatAuthMiddlewareStack,
    OriginValidator,
    SocketAuth,
)
from chatauth.models import AuditEvent
from chatauth.tokens import issue_pair
from tests.conftest import bearer, chainlit_token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


@pytest.fixture(autouse=True)
async def _fresh_layer():
    await get_channel_layer().flush()
    yield


class WhoAmI(AsyncWebsocketConsumer):
    """Any consumer: reports what the middleware put in the scope."""

    async def connect(self):
        await self.accept()
        auth = self.scope["chatauth"]
        assert isinstance(auth, SocketAuth)
        await self.send(
            text_data=json.dumps(
                {
                    "user": self.scope["user"].identifier,
                    "pk": str(self.scope["user"].pk),
                    "source": auth.source,
                    "identity": type(auth).__name__,
                    "jti": auth.claims.get("jti"),
                }
            )
        )


def chat_app():
    from project.asgi import application

    return application


def connect(app=None, path="/ws/chat/", headers=(), subprotocols=None):
    return WebsocketCommunicator(
        app or chat_app(), path, headers=list(headers), subprotocols=subprotocols
    )


async def closed_with(comm, code, timeout=5):
    message = await comm.receive_output(timeout)
    assert message["type"] == "websocket.close", message
    assert message.get("code") == code, message
    await comm.wait(timeout)


def auth_header(token):
    return [(b"authorization", f"Bearer {token}".encode())]


def cookie(name, value):
    return [(b"cookie", f"other=1; {name}={value}".encode())]


async def session_of(comm, subprotocol=None):
    connected, chosen = await comm.connect(timeout=5)
    assert connected
    assert chosen == subprotocol
    message = await comm.receive_json_from(timeout=5)
    assert message["type"] == "session", message
    return message


async def expired_token(pair):
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    claims["exp"] = int(time.time()) - 3600
    return jwt.encode(claims, django_settings.CHATAUTH["SECRET"], algorithm="HS256")


# --- Each credential path opens a session -------------------------------------------


async def test_authorization_header(pair):
    session = await session_of(connect(headers=auth_header(pair["access_token"])))
    assert session["user"]["identifier"] == "alice"


async def test_subprotocol_pair_is_answered_with_chatauth_bearer(pair):
    comm = connect(subprotocols=[SUBPROTOCOL, pair["access_token"]])
    session = await session_of(comm, subprotocol=SUBPROTOCOL)
    assert session["user"]["identifier"] == "alice"
    await comm.disconnect()


async def test_auth_cookie(pair):
    comm = connect(headers=cookie("chatauth_access", pair["access_token"]))
    assert (await session_of(comm))["user"]["identifier"] == "alice"
    await comm.disconnect()


async def test_django_session_cookie(user):
    client = APIClient()
    await sync_to_async(client.force_login)(user)
    key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    comm = connect(headers=cookie(django_settings.SESSION_COOKIE_NAME, key))
    assert (await session_of(comm))["user"]["identifier"] == "alice"
    await comm.disconnect()


async def test_a_stale_auth_cookie_falls_back_to_the_live_django_session(user, pair):
    await sync_to_async(APIClient().post)(
        "/auth/logout", {}, format="json", **bearer(pair["access_token"])
    )
    client = APIClient()
    await sync_to_async(client.force_login)(user)
    key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    header = f"chatauth_access={pair['access_token']}; sessionid={key}".encode()
    comm = connect(headers=[(b"cookie", header)])
    assert (await session_of(comm))["user"]["identifier"] == "alice"
    await comm.disconnect()


async def test_the_identity_is_typed_token_or_web_session(user, pair):
    """``scope["chatauth"]`` is a TokenAuth or a WebSessionAuth, by class: a
    stale auth cookie that falls back to the live web session is the latter."""
    await sync_to_async(APIClient().post)(
        "/auth/logout", {}, format="json", **bearer(pair["access_token"])
    )
    client = APIClient()
    await sync_to_async(client.force_login)(user)
    key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    fresh = await sync_to_async(lambda: str(issue_pair(user).access))()
    app = ChatAuthMiddlewareStack(WhoAmI.as_asgi())
    cases = [
        (auth_header(fresh), ("header", "TokenAuth")),
        (cookie("chatauth_access", fresh), ("cookie", "TokenAuth")),
        (
            cookie(django_settings.SESSION_COOKIE_NAME, key),
            ("session", "WebSessionAuth"),
        ),
        (
            [
                (
                    b"cookie",
                    f"chatauth_access={pair['access_token']}; sessionid={key}".encode(),
                )
            ],
            ("session", "WebSessionAuth"),
        ),
    ]
    for headers, expected in cases:
        comm = connect(app, headers=headers)
        assert (await comm.connect(timeout=5))[0]
        seen = await comm.receive_json_from()
        assert (seen["source"], seen["identity"]) == expected, headers
        await comm.disconnect()


async def test_first_auth_message(pair):
    comm = connect()
    assert await comm.connect(timeout=5) == (True, None)
    await comm.send_json_to({"type": "auth", "token": pair["access_token"]})
    session = await comm.receive_json_from(timeout=5)
    assert session["type"] == "session" and session["user"]["identifier"] == "alice"
    await comm.send_json_to({"type": "message", "content": "after auth"})
    assert (await comm.receive_json_from())["content"] == "after auth"
    await comm.disconnect()


async def test_query_string_token_only_when_enabled(chat, pair):
    path = f"/ws/chat/?token={pair['access_token']}"
    chat(ALLOW_QUERY_STRING_TOKEN=True)
    comm = connect(path=path)
    assert (await session_of(comm))["user"]["identifier"] == "alice"
    await comm.disconnect()

    chat(ALLOW_QUERY_STRING_TOKEN=False, AUTH_TIMEOUT=0.2)
    comm = connect(path=path)
    assert await comm.connect(timeout=5) == (True, None)  # waits for an auth frame
    await closed_with(comm, CloseCode.AUTH_TIMEOUT)


async def test_chainlit_token(db):
    token = chainlit_token("carol", {"role": "admin"})
    session = await session_of(connect(headers=auth_header(token)))
    assert session["user"] == {
        "identifier": "carol",
        "display_name": None,
        "metadata": {"role": "admin"},
    }


async def test_order_header_wins_over_subprotocol_and_cookie(pair, make_user):
    from chatauth.tokens import issue_copilot_token

    bob = await sync_to_async(make_user)("bob")
    bob_token = await sync_to_async(lambda: str(issue_copilot_token(bob)))()
    app = ChatAuthMiddlewareStack(WhoAmI.as_asgi())
    comm = connect(
        app,
        headers=[
            *auth_header(bob_token),
            *cookie("chatauth_access", pair["access_token"]),
        ],
        subprotocols=[SUBPROTOCOL, pair["access_token"]],
    )
    connected, _ = await comm.connect(timeout=5)
    assert connected
    seen = await comm.receive_json_from()
    assert (seen["user"], seen["source"]) == ("bob", "header")
    await comm.disconnect()
    comm = connect(
        app,
        headers=cookie("chatauth_access", bob_token),
        subprotocols=[SUBPROTOCOL, pair["access_token"]],
    )
    assert (await comm.connect(timeout=5)) == (True, SUBPROTOCOL)
    seen = await comm.receive_json_from()
    assert (seen["user"], seen["source"]) == ("alice", "subprotocol")
    await comm.disconnect()


async def test_around_any_consumer_first_message_replays_the_connect(pair):
    comm = connect(ChatAuthMiddlewareStack(WhoAmI.as_asgi()), path="/anything/")
    assert await comm.connect(timeout=5) == (True, None)
    await comm.send_json_to({"type": "auth", "token": pair["access_token"]})
    seen = await comm.receive_json_from()  # WhoAmI's own accept was swallowed
    assert seen["user"] == "alice" and seen["source"] == "message"
    assert (
        seen["jti"]
        == jwt.decode(pair["access_token"], options={"verify_signature": False})["jti"]
    )
    await comm.disconnect()


# --- Refusals -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["header", "subprotocol", "cookie", "message"])
@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("garbage", CloseCode.UNAUTHORIZED),
        ("expired", CloseCode.UNAUTHORIZED),
        ("refresh", CloseCode.UNAUTHORIZED),
        ("revoked", CloseCode.REVOKED),
    ],
)
async def test_bad_credentials_are_refused_with_a_close_code(pair, where, kind, code):
    if kind == "garbage":
        token = "not.a.jwt"
    elif kind == "expired":
        token = await expired_token(pair)
    elif kind == "refresh":
        token = pair["refresh_token"]
    else:
        token = pair["access_token"]
        response = await sync_to_async(APIClient().post)(
            "/auth/logout", {}, format="json", **bearer(token)
        )
        assert response.status_code == 200
    subprotocol = None
    if where == "header":
        comm = connect(headers=auth_header(token))
    elif where == "subprotocol":
        comm = connect(subprotocols=[SUBPROTOCOL, token])
        subprotocol = SUBPROTOCOL
    elif where == "cookie":
        comm = connect(headers=cookie("chatauth_access", token))
    else:
        comm = connect()
    # Accepted (answering the subprotocol, or a browser would fail the handshake)
    # and closed at once, so the client can read why.
    assert await comm.connect(timeout=5) == (True, subprotocol)
    if where == "message":
        await comm.send_json_to({"type": "auth", "token": token})
    await closed_with(comm, code)
    refusal = await AuditEvent.objects.aget(event=AuditEvent.Event.SESSION_REFUSED)
    assert refusal.method == "websocket" and not refusal.success
    assert refusal.reason in {"token_not_valid", "token_expired", "token_revoked"}
    assert token not in refusal.token_id + refusal.identifier + refusal.reason


async def test_subprotocol_without_a_token(db):
    comm = connect(subprotocols=[SUBPROTOCOL])
    assert await comm.connect(timeout=5) == (True, SUBPROTOCOL)
    await closed_with(comm, CloseCode.UNAUTHORIZED)


async def test_malformed_authorization_header(db):
    comm = connect(headers=[(b"authorization", b"Bearer")])
    assert (await comm.connect(timeout=5))[0]
    await closed_with(comm, CloseCode.UNAUTHORIZED)


async def test_no_credentials_in_time_is_4408(chat, db):
    chat(AUTH_TIMEOUT=0.2)
    comm = connect()
    assert await comm.connect(timeout=5) == (True, None)
    await closed_with(comm, CloseCode.AUTH_TIMEOUT)
    refusal = await AuditEvent.objects.aget(event=AuditEvent.Event.SESSION_REFUSED)
    assert refusal.reason == "auth_timeout"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"text": json.dumps({"type": "message", "content": "hi"})}, 4401),
        ({"text": "not json"}, 4401),
        ({"text": json.dumps({"type": "auth", "token": 42})}, 4401),
        ({"bytes": b"\x00" * 10}, 4401),
        ({"text": json.dumps({"type": "auth", "token": "x" * 70_000})}, 4413),
    ],
)
async def test_first_frame_that_is_not_an_auth_message(db, frame, code):
    comm = connect()
    assert (await comm.connect(timeout=5))[0]
    await comm.send_input({"type": "websocket.receive", **frame})
    await closed_with(comm, code)


async def test_client_leaving_before_auth_is_quiet(db):
    comm = connect()
    assert (await comm.connect(timeout=5))[0]
    await comm.disconnect(timeout=5)  # no exception from the application


# --- Origin -------------------------------------------------------------------------


async def test_foreign_origin_is_refused_at_the_handshake_and_audited(pair):
    comm = connect(
        headers=[
            (b"origin", b"https://evil.example"),
            *auth_header(pair["access_token"]),
        ]
    )
    # Closed before accept: servers answer the handshake with HTTP 403.
    assert await comm.connect(timeout=5) == (False, 1000)
    await comm.wait(5)
    refusal = await AuditEvent.objects.aget(event=AuditEvent.Event.SESSION_REFUSED)
    assert (refusal.reason, refusal.method, refusal.success) == (
        "origin",
        "websocket",
        False,
    )


async def test_allowed_origin_and_missing_origin(chat, pair):
    chat(ALLOWED_ORIGINS=["https://app.example.com"])
    for origin in (b"https://app.example.com", b"http://127.0.0.1:8000", None):
        headers = [*auth_header(pair["access_token"]), (b"host", b"127.0.0.1:8000")]
        if origin:
            headers.append((b"origin", origin))
        comm = connect(headers=headers)
        await session_of(comm)
        await comm.disconnect()
    # Another port of an allowed host is another origin (another app).
    headers = [
        *auth_header(pair["access_token"]),
        (b"host", b"127.0.0.1:8000"),
        (b"origin", b"http://127.0.0.1:3000"),
    ]
    assert await connect(headers=headers).connect(timeout=5) == (False, 1000)


def allowed(
    origin, *, origins=(), hosts=("127.0.0.1", "localhost"), host=None, tls=False
):
    from django.test import override_settings

    from chatauth.conf import settings

    headers = [(b"host", host.encode())] if host else []
    scope = {"headers": headers, "scheme": "wss" if tls else "ws"}
    with override_settings(
        ALLOWED_HOSTS=list(hosts), CHATAUTH={"ALLOWED_ORIGINS": list(origins)}
    ):
        try:
            return OriginValidator(None).origin_allowed(origin, scope)
        finally:
            settings.reload()


def test_origin_rules():
    # The server's own origin: scheme (ws = http), Host and port, exactly, for a
    # Host that ALLOWED_HOSTS allows.
    assert allowed("http://127.0.0.1:8000", host="127.0.0.1:8000")
    assert allowed("http://localhost", host="localhost")
    assert allowed("http://localhost:80", host="localhost")
    assert not allowed("http://localhost:3000", host="localhost:8000")  # another app
    assert not allowed("https://localhost:8000", host="localhost:8000")  # scheme
    assert not allowed("http://127.0.0.2:8000", host="127.0.0.2:8000")  # not allowed
    assert not allowed("http://localhost.evil.example", host="localhost")
    assert not allowed("http://127.0.0.1:8765.evil.com", host="127.0.0.1:8765")
    assert not allowed("http://127.0.0.1:8000")  # no Host: no own origin
    assert not allowed("null", host="localhost")  # sandboxed frames, file://
    assert not allowed("garbage", host="localhost")
    assert not allowed("http://user@localhost", host="localhost")
    assert not allowed("http://localhost/", host="localhost")
    # ALLOWED_ORIGINS: listed origins, exactly (default ports made explicit).
    origins = ["https://app.example.com", "http://localhost:3000"]
    assert allowed("https://app.example.com", origins=origins)
    assert allowed("https://app.example.com:443", origins=origins)
    assert allowed("HTTPS://APP.EXAMPLE.COM", origins=origins)
    assert not allowed("http://app.example.com", origins=origins)
    assert not allowed("https://app.example.com:8443", origins=origins)
    assert not allowed("https://app.example.com.evil.example", origins=origins)
    assert not allowed("https://x.app.example.com", origins=origins)
    assert allowed("http://localhost:3000", origins=origins)
    assert not allowed("http://localhost:3001", origins=origins)
    assert not allowed("http://x.example:99999", origins=["http://x.example"])
    # Wildcard-like entries allow nothing (check E008 reports them).
    assert not allowed("https://anything.example", origins=["*"])
    assert not allowed("https://a.corp.example", origins=["https://.corp.example"])
    # "*" in ALLOWED_HOSTS allows any Host, never any Origin.
    assert not allowed("https://evil.example", hosts=["*"], host="chat.example")
    assert allowed("http://chat.example", hosts=["*"], host="chat.example")
    assert allowed("http://chat.example:8000", hosts=["*"], host="chat.example:8000")
    assert not allowed(
        "http://chat.example:8001", hosts=["*"], host="chat.example:8000"
    )
    assert allowed("http://[::1]:8000", hosts=["[::1]"], host="[::1]:8000")
    # A TLS socket (or uvicorn --proxy-headers behind a TLS proxy): https.
    assert allowed(
        "https://chat.example", hosts=["chat.example"], host="chat.example", tls=True
    )


def test_origin_entries_that_are_not_origins_are_errors():
    from django.test import override_settings

    from chatauth.checks import check_settings

    bad = ["*", "https://*.example.com", ".example.com", "https://a.example/", "x"]
    good = ["https://app.example.com", "http://localhost:3000", "http://[::1]:8000"]
    with override_settings(CHATAUTH={"ALLOWED_ORIGINS": [*bad, *good]}):
        errors = [e for e in check_settings() if e.id == "chatauth.E008"]
    assert len(errors) == len(bad)


async def test_the_consumer_refuses_a_scope_without_authentication(db):
    from chatauth.consumers import ChatConsumer

    comm = connect(ChatConsumer.as_asgi())
    assert await comm.connect(timeout=5) == (False, 1000)
    await comm.send_input({"type": "websocket.disconnect", "code": 1006})
    await comm.wait(5)


async def test_unknown_path_is_refused_not_a_server_error(db):
    comm = connect(path="/ws/nope/")
    assert await comm.connect(timeout=5) == (False, 1000)
    await comm.send_input({"type": "websocket.disconnect", "code": 1006})
    await comm.wait(5)
