"""Property-based fuzzing of every route and of the chat socket (hypothesis).

For any bytes or JSON in any route's body, and any values in its headers, the
answer is a 2xx (where the input is legitimately valid) or a 4xx with a JSON
``{"detail"}`` body: never a 500, never an exception escaping a view (Django's
test client re-raises those), never an ERROR or a traceback in the
``django.request``/``chatauth`` logs.  For any frame on the chat socket (text,
binary, huge, deeply nested JSON), the server answers with a protocol frame or
closes with a code from the contract, within a timeout: never a hung socket, a
1011, or an exception out of the consumer.

Examples are bounded (``max_examples``) so the file runs in well under a minute;
the counts actually run are printed at the end of the module (``-s``).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chatauth
from chatauth.constants import CloseCode
from chatauth.models import APIKey
from chatauth.tokens import issue_pair
from tests.security.conftest import communicator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

EXAMPLES = 60
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=list(HealthCheck),
)
COUNTS: Counter[str] = Counter()
#: Close codes the contract allows a chat socket to end with.
CONTRACT_CLOSES = {
    CloseCode.NORMAL,
    CloseCode.UNAUTHORIZED,
    CloseCode.AUTH_TIMEOUT,
    CloseCode.REVOKED,
    CloseCode.TOO_LARGE,
    CloseCode.RATE_LIMITED,
    CloseCode.PROTOCOL_ERROR,
}
MAX_MESSAGE_BYTES = 64 * 1024


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\nfuzz examples run per target:")
    for target, count in sorted(COUNTS.items()):
        print(f"  {target:28} {count}")


# --- Strategies -----------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=60)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=15,
)


def objects_with(*fields: str):
    """JSON objects that have (some of) the route's own fields, with any values."""
    keys = st.sampled_from(fields) | st.text(max_size=8) if fields else st.text()
    return st.dictionaries(keys, json_values, max_size=6)


def deeply_nested(max_depth: int = 50_000):
    return st.integers(1, max_depth).map(
        lambda n: (
            ("[" * n + "]" * n).encode()
            if n % 2
            else ('{"a":' * n + "1" + "}" * n).encode()
        )
    )


def bodies(*fields: str):
    """Any bytes; any JSON; JSON objects with the route's fields; deep nesting."""
    return st.one_of(
        st.binary(max_size=512),
        json_values.map(lambda v: json.dumps(v).encode()),
        objects_with(*fields).map(lambda v: json.dumps(v).encode()),
        deeply_nested(),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )


content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/octet-stream",
        "",
    ]
) | st.text(max_size=40)
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=200,
)
authorizations = st.one_of(
    header_text,
    header_text.map(lambda t: "Bearer " + t),
    header_text.map(lambda t: "Api-Key " + t),
    header_text.map(lambda t: "Api-Key ca_" + t),
    st.just("Bearer"),
    st.just("Bearer "),
)
header_names = st.sampled_from(
    [
        "X-Forwarded-For",
        "X-Real-Ip",
        "X-Auth-User",
        "X-Forwarded-Email",
        "X-Forwarded-User",
        "X-Forwarded-Groups",
        "Cookie",
        "Origin",
        "Accept",
        "Accept-Language",
        "User-Agent",
        "Content-Length",
        "Host",
    ]
) | st.from_regex(r"X-[A-Za-z]{1,10}", fullmatch=True)
headers = st.dictionaries(header_names, header_text, max_size=6)


def meta(extra: dict[str, str], authorization: str | None = None) -> dict[str, str]:
    out = {}
    for name, value in extra.items():
        key = name.upper().replace("-", "_")
        if key in {"CONTENT_LENGTH", "CONTENT_TYPE"}:
            out[key] = value
        elif key == "HOST":
            continue  # ALLOWED_HOSTS answers 400 in HTML; not a chatauth route
        else:
            out["HTTP_" + key] = value
    if authorization is not None:
        out["HTTP_AUTHORIZATION"] = authorization
    return out


# --- Checking answers -----------------------------------------------------------------


def check_http(response, target: str, logs, ok: set[int] = frozenset({200})) -> None:
    COUNTS[target] += 1
    status = response.status_code
    assert status < 500, (target, status, response.content[:500])
    assert status in ok or 400 <= status < 500, (target, status, response.content)
    if status >= 400 and response.request["REQUEST_METHOD"] != "HEAD":
        body = response.json()
        assert isinstance(body.get("detail"), str), (target, body)
    assert not logs.errors(), "\n".join(logs.errors())


def post(client: Client, path: str, body: bytes, content_type: str, **extra):
    return client.generic("POST", path, body, content_type=content_type, **extra)


# --- HTTP routes ----------------------------------------------------------------------


@pytest.fixture
def alice():
    return get_user_model().objects.create_user("alice", password="pw-" + "x" * 20)


@pytest.fixture
def api_key():
    _, raw = APIKey.objects.create_key("fuzz")
    return raw


@FUZZ
@given(body=bodies("username", "password"), ctype=content_types, extra=headers)
def test_login(alice, logs, body, ctype, extra):
    response = post(Client(), "/auth/login", body, ctype, **meta(extra))
    check_http(response, "POST auth/login", logs)


@FUZZ
@given(body=bodies(), ctype=content_types, extra=headers)
def test_header_login(logs, body, ctype, extra):
    @chatauth.header_auth_callback
    def from_proxy(headers):
        name = headers.get("X-Auth-User")
        return chatauth.User(name, metadata={"via": "fuzz"}) if name else None

    response = post(Client(), "/auth/header", body, ctype, **meta(extra))
    check_http(response, "POST auth/header", logs)


@FUZZ
@given(
    body=bodies("refresh", "refresh_token"),
    ctype=content_types,
    extra=headers,
    auth=st.none() | authorizations,
)
def test_refresh(alice, logs, body, ctype, extra, auth):
    response = post(Client(), "/auth/token/refresh", body, ctype, **meta(extra, auth))
    check_http(response, "POST auth/token/refresh", logs)


@FUZZ
@given(body=bodies("refresh"), ctype=content_types, extra=headers)
def test_refresh_with_real_tokens_mixed_in(alice, logs, body, ctype, extra):
    """Bodies that carry a genuine refresh (or access) token among fuzz."""
    pair = issue_pair(alice)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        data["refresh"] = str(pair.refresh if len(body) % 2 else pair.access)
        body = json.dumps(data).encode()
    response = post(Client(), "/auth/token/refresh", body, ctype, **meta(extra))
    check_http(response, "POST auth/token/refresh (tok)", logs)


@FUZZ
@given(
    body=bodies("identifier", "display_name", "metadata"),
    ctype=content_types,
    extra=headers,
    auth=st.none() | authorizations,
)
def test_copilot_token_without_a_key(logs, body, ctype, extra, auth):
    response = post(Client(), "/auth/copilot/token", body, ctype, **meta(extra, auth))
    check_http(response, "POST auth/copilot/token", logs, ok=set())


@FUZZ
@given(
    body=bodies("identifier", "display_name", "metadata"),
    ctype=content_types,
    extra=headers,
)
def test_copilot_token_with_an_api_key(api_key, logs, body, ctype, extra):
    auth = f"Api-Key {api_key}"
    response = post(Client(), "/auth/copilot/token", body, ctype, **meta(extra, auth))
    check_http(response, "POST auth/copilot/token +key", logs)


@FUZZ
@given(
    body=bodies("refresh", "everywhere"),
    ctype=content_types,
    extra=headers,
    auth=st.none() | authorizations,
    real=st.booleans(),
)
def test_logout(alice, logs, body, ctype, extra, auth, real):
    if real:  # a genuine access token, so the body is parsed and acted on
        auth = f"Bearer {issue_pair(alice).access}"
    response = post(Client(), "/auth/logout", body, ctype, **meta(extra, auth))
    check_http(response, "POST auth/logout", logs)


#: What a logout token may look like: any text, JWT-shaped strings of any
#: segments, and a real JWT's shape with a made-up signature.
logout_tokens = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/"),
        min_size=1,
        max_size=6,
    ).map(".".join),
    st.builds(
        lambda h, c: f"{_b64(h)}.{_b64(c)}.c2ln",
        objects_with("alg", "kid", "typ", "crit"),
        objects_with("iss", "aud", "iat", "exp", "jti", "events", "sid", "sub"),
    ),
)


def _b64(value) -> str:
    import base64

    raw = json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@FUZZ
@given(
    body=st.one_of(
        bodies("logout_token"),
        logout_tokens.map(
            lambda t: b"logout_token=" + t.encode("utf-8", "surrogatepass")
        ),
    ),
    ctype=content_types,
    extra=headers,
)
def test_backchannel_logout(logs, settings, body, ctype, extra):
    """The OpenID provider's route: any body is a 400 (or 404), never a 500; a
    provider whose metadata cannot be read is a refusal too."""
    settings.CHATAUTH = {
        **settings.CHATAUTH,
        "OAUTH_PROVIDERS": {
            "fuzz": {
                # Nothing listens there: every JWT-shaped token is refused.
                "server_metadata_url": "http://127.0.0.1:9/.well-known/x",
                "client_id": "fuzz",
            }
        },
    }
    response = post(
        Client(), "/auth/oauth/fuzz/backchannel-logout", body, ctype, **meta(extra)
    )
    check_http(response, "POST auth/oauth/<id>/backchannel-logout", logs, ok=set())


@FUZZ
@given(
    method=st.sampled_from(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"]),
    path=st.sampled_from(["/auth/me", "/auth/sessions", "/auth/config"]),
    extra=headers,
    auth=st.none() | authorizations,
    query=header_text,
)
def test_reading_routes(alice, logs, method, path, extra, auth, query):
    response = Client().generic(
        method, path, b"", QUERY_STRING=query, **meta(extra, auth)
    )
    ok = {200} if method in {"GET", "HEAD", "OPTIONS"} else set()
    check_http(response, f"{path} (any method)", logs, ok=ok)


@FUZZ
@given(session_id=st.uuids() | header_text, auth=st.none() | authorizations)
def test_delete_session(alice, logs, session_id, auth):
    auth = auth if auth is not None else f"Bearer {issue_pair(alice).access}"
    path = "/auth/sessions/" + str(session_id).replace("/", "%2F")
    response = Client().generic("DELETE", path, b"", **meta({}, auth))
    COUNTS["DELETE auth/sessions/<id>"] += 1
    # A path that is no UUID does not match the route: Django's 404 page.
    assert response.status_code in {204, 401, 404}, response.content[:300]
    assert not logs.errors(), "\n".join(logs.errors())


# --- The chat socket ------------------------------------------------------------------

frame_json = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["message", "ping", "auth", "logout", "x", ""])},
        optional={
            "content": json_values,
            "token": json_values,
            "everywhere": json_values,
        },
    ),
    json_values,
).map(json.dumps)
frames = st.one_of(
    frame_json.map(lambda t: {"text": t}),
    st.text(max_size=300).map(lambda t: {"text": t}),
    st.binary(max_size=300).map(lambda b: {"bytes": b}),
    deeply_nested(60_000).map(lambda b: {"text": b.decode()}),
    st.integers(MAX_MESSAGE_BYTES - 8, MAX_MESSAGE_BYTES + 64).map(
        lambda n: {"text": json.dumps({"type": "message", "content": "x" * n})}
    ),
    st.integers(MAX_MESSAGE_BYTES - 8, MAX_MESSAGE_BYTES + 64).map(
        lambda n: {"bytes": b"\x00" * n}
    ),
    # Content nested right around what the parser accepts (the recursion limit).
    (st.integers(0, 3000) | st.integers(850, 1000)).map(
        lambda n: {"text": '{"type": "message", "content": ' + nest(n) + "}"}
    ),
)


def nest(depth: int) -> str:
    """JSON text of a string nested in ``depth`` lists."""
    return "[" * depth + '"leaf"' + "]" * depth


def fresh_token() -> str:
    user = get_user_model().objects.create_user(f"ws-{COUNTS.total()}-{id(object())}")
    return str(issue_pair(user).access)


async def read_until_reply_or_close(comm, timeout: float = 10.0) -> dict:
    message = await comm.receive_output(timeout)
    assert message["type"] in {"websocket.send", "websocket.close"}, message
    return message


@FUZZ
@given(batch=st.lists(frames, min_size=1, max_size=4))
async def test_socket_frames(logs, fresh_layer, batch):
    COUNTS["ws sessions (examples)"] += 1
    token = await sync_to_async(fresh_token)()
    comm = communicator(token)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    hello = json.loads((await comm.receive_output(10))["text"])
    assert hello["type"] == "session"
    closed = None
    for frame in batch:
        COUNTS["ws frames (session)"] += 1
        await comm.send_input({"type": "websocket.receive", **frame})
        message = await read_until_reply_or_close(comm)
        if message["type"] == "websocket.close":
            closed = message.get("code")
            break
        reply = json.loads(message["text"])
        assert reply["type"] in {"message", "pong", "error"}, reply
        if reply["type"] == "error":
            assert reply["code"] != "handler_failed", reply
    if closed is None:
        await comm.disconnect(timeout=10)
    else:
        assert closed in CONTRACT_CLOSES, closed
        await comm.send_input({"type": "websocket.disconnect", "code": closed})
        await comm.wait(10)
    assert not logs.errors(), "\n".join(logs.errors())


@FUZZ
@given(frame=frames)
async def test_socket_first_auth_frame(logs, fresh_layer, frame):
    """No handshake credential: the first frame must be ``{"type": "auth"}``."""
    COUNTS["ws first frame (no creds)"] += 1
    comm = communicator()
    connected, _ = await comm.connect(timeout=10)
    assert connected
    await comm.send_input({"type": "websocket.receive", **frame})
    message = await read_until_reply_or_close(comm)
    assert message["type"] == "websocket.close", message
    assert message["code"] in {CloseCode.UNAUTHORIZED, CloseCode.TOO_LARGE}, message
    await comm.wait(10)
    assert not logs.errors(), "\n".join(logs.errors())


@FUZZ
@given(
    auth=st.none() | authorizations,
    protocols=st.none() | st.lists(header_text, max_size=3),
    extra=headers,
)
async def test_socket_handshake_headers(logs, fresh_layer, auth, protocols, extra):
    """Any handshake: refused (403 or a contract close) or waiting for auth."""
    COUNTS["ws handshake headers"] += 1
    hdrs = [
        (k.lower().encode(), v.encode("latin-1"))
        for k, v in extra.items()
        if k.lower() != "host"
    ]
    if auth is not None:
        hdrs.append((b"authorization", auth.encode("latin-1")))
    if protocols is not None:
        protocols = ["chatauth.bearer", *protocols]
    comm = communicator(headers=hdrs, subprotocols=protocols)
    connected, code = await comm.connect(timeout=10)
    if not connected:  # refused at the handshake (foreign Origin): HTTP 403
        assert code in {None, 1000, CloseCode.FORBIDDEN}, code
    else:
        # Nothing: no credential, so it waits for the auth frame.
        if not await comm.receive_nothing(0.2):
            message = await comm.receive_output(1)
            assert message["type"] == "websocket.close", message
            assert message.get("code") in CONTRACT_CLOSES, message
        await comm.disconnect(timeout=10)
    assert not logs.errors(), "\n".join(logs.errors())
