"""chatauth and a real Chainlit 2.x server share tokens, both ways.

Chainlit runs in a virtualenv of its own (its dependencies are not ours), built on
first use with ``pip install "chainlit>=2,<3"`` and kept in
``$CHATAUTH_CHAINLIT_VENV`` (default ``~/.cache/chatauth/chainlit-venv``).  Its
app turns Chainlit's authentication on (a password callback) with
``CHAINLIT_AUTH_SECRET`` set to chatauth's secret, which is Chainlit's copilot
set-up: the host site mints the token, Chainlit checks it.

Chainlit 2.x checks a token in ``chainlit/auth/jwt.py::decode_jwt``: PyJWT,
``algorithms=["HS256"]``, the shared secret, ``exp`` required (it is deleted
before the rest becomes a ``User``), then ``User(**claims)``, a pydantic
dataclass that ignores unknown fields.  So chatauth's own claims (``jti``,
``iat``, ``token_type``, ``user_id``) pass, ``identifier``/``display_name``/
``metadata`` are what Chainlit reads.  PyJWT refuses an ``iat`` in the future
with no leeway, so a copilot token's ``iat`` is backdated (its exact time is in
``chatauth_iat``): a host clock ahead of Chainlit's is tolerated.  One setting
breaks it: ``CHATAUTH["AUDIENCE"]`` adds an ``aud`` claim, which PyJWT refuses
when the decoder names no audience (asserted below; ``chatauth.W021`` warns).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from unittest import mock

import httpx
import jwt
import pytest
from django.template import Context, Template
from django.test import RequestFactory, override_settings

from chatauth.constants import TokenType
from chatauth.models import APIKey, Profile
from chatauth.tokens import issue_copilot_token, verify_token
from tests.conftest import REQUIRE_SERVICES
from tests.servers import CHAINLIT_VENV, start_chainlit, stop_process

# The first run builds the Chainlit virtualenv inside the fixture (about a minute).
pytestmark = [pytest.mark.django_db, pytest.mark.timeout(600)]

VENV = CHAINLIT_VENV
REQUIREMENT = "chainlit>=2,<3"
READY = VENV / ".chatauth-ready"  # written once pip has finished
APP = """
import chainlit as cl


@cl.password_auth_callback
def auth(username: str, password: str):
    # Turns Chainlit's authentication on; "bob" lets the test get a token that
    # Chainlit minted itself.
    if (username, password) == ("bob", "bob-password"):
        return cl.User(identifier="bob", display_name="Bob", metadata={"via": "cl"})
    return None


@cl.on_message
async def echo(message: cl.Message):
    await cl.Message(content=message.content).send()
"""


def unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(reason + " and CHATAUTH_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(reason)


def build_venv() -> None:
    """Create the Chainlit virtualenv (slow once: ~1 minute), or reuse it."""
    if READY.exists():
        return
    shutil.rmtree(VENV, ignore_errors=True)  # a half-built one from an interrupted run
    VENV.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(VENV)],
            check=True,
            timeout=120,
            capture_output=True,
        )
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "--quiet", REQUIREMENT],
            check=True,
            timeout=900,
            capture_output=True,
            text=True,
        )
    except (subprocess.SubprocessError, OSError) as e:
        output = getattr(e, "stderr", "") or ""
        unavailable(f"could not install {REQUIREMENT}: {e} {output[-500:]}")
    READY.write_text(REQUIREMENT + "\n")


@pytest.fixture(scope="module")
def chainlit(tmp_path_factory):
    """A real ``chainlit run`` on a free loopback port; yields its base URL."""
    build_venv()
    app_dir = tmp_path_factory.mktemp("chainlit-app")
    # Importing chainlit writes .chainlit/ into the working directory: keep it
    # out of the repository.
    version = subprocess.run(
        [
            str(VENV / "bin" / "python"),
            "-c",
            "import chainlit; print(chainlit.__version__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=app_dir,
    ).stdout.strip()
    if not version.startswith("2."):
        unavailable(f"Chainlit 2.x is needed in {VENV}, found {version!r}")
    try:
        process, url = start_chainlit(app_dir, APP, os.environ["CHATAUTH_SECRET"])
    except RuntimeError as e:
        pytest.fail(f"chainlit did not start: {e}")
    try:
        print(f"\nChainlit {version} at {url}")
        yield url
    finally:
        stop_process(process)


def chainlit_user(chainlit: str, token: str) -> httpx.Response:
    return httpx.get(
        f"{chainlit}/user", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


@pytest.fixture
def alice(user):
    Profile.objects.create(
        user=user, display_name="Alice", metadata={"plan": "pro", "tags": ["a", "b"]}
    )
    return user


# --- chatauth's tokens, accepted by Chainlit ----------------------------------------


def test_chainlit_reads_identity_from_a_chatauth_copilot_token(chainlit, alice):
    response = chainlit_user(chainlit, str(issue_copilot_token(alice)))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "identifier": "alice",
        "display_name": "Alice",
        "metadata": {"plan": "pro", "tags": ["a", "b"]},
    }


def test_the_copilot_login_chainlits_widget_does_accepts_it(chainlit, alice):
    # mountChainlitWidget({accessToken}) sends it to POST /auth/jwt, which sets
    # Chainlit's own session cookie for the socket.io connection.
    response = httpx.post(
        f"{chainlit}/auth/jwt",
        headers={"Authorization": f"Bearer {issue_copilot_token(alice)}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    cookies = response.headers.get_list("set-cookie")
    assert any(c.startswith("access_token=") for c in cookies), cookies


def test_the_template_tags_chainlit_embed_works_against_chainlit(chainlit, alice):
    request = RequestFactory().get("/")
    request.user = alice
    html = Template(
        "{% load chatauth %}{% copilot_widget chainlit_server=server %}"
    ).render(Context({"request": request, "server": chainlit + "/"}))
    script = f'<script src="{chainlit}/copilot/index.js"></script>'
    assert script in html
    served = httpx.get(f"{chainlit}/copilot/index.js", timeout=30)
    assert served.status_code == 200
    assert "javascript" in served.headers["content-type"]
    start = html.index('type="application/json">') + len('type="application/json">')
    config = json.loads(html[start : html.index("</script>", start)])
    assert config["chainlitServer"] == chainlit
    assert chainlit_user(chainlit, config["accessToken"]).json()["identifier"] == (
        "alice"
    )


def test_a_token_minted_with_an_api_key_is_accepted(chainlit, api):
    _, key = APIKey.objects.create_key("chainlit-host")
    response = api.post(
        "/auth/copilot/token",
        {"identifier": "carol@example.com", "metadata": {"org": "acme"}},
        format="json",
        HTTP_AUTHORIZATION=f"Api-Key {key}",
    )
    assert response.status_code == 200, response.content
    user = chainlit_user(chainlit, response.json()["access_token"])
    assert user.status_code == 200
    assert user.json()["identifier"] == "carol@example.com"
    assert user.json()["metadata"] == {"org": "acme"}


def test_chainlit_refuses_what_it_should(chainlit, alice):
    wrong_secret = jwt.encode(
        {"identifier": "alice", "metadata": {}, "exp": int(time.time()) + 60},
        "another-secret-" + "x" * 40,
        algorithm="HS256",
    )
    assert chainlit_user(chainlit, wrong_secret).status_code == 401
    expired = issue_copilot_token(alice, lifetime=timedelta(seconds=-60))
    assert chainlit_user(chainlit, str(expired)).status_code == 401
    # The one incompatible setting: an audience claim Chainlit does not expect.
    with override_settings(
        CHATAUTH={"SECRET": os.environ["CHATAUTH_SECRET"], "AUDIENCE": "chat"}
    ):
        with_audience = str(issue_copilot_token(alice))
    assert chainlit_user(chainlit, with_audience).status_code == 401


def test_a_copilot_token_minted_on_a_clock_ahead_is_accepted(chainlit, alice):
    """Chainlit decodes with PyJWT and no leeway, and PyJWT refuses an ``iat``
    in its future.  A host whose clock runs 3 s ahead of Chainlit's still gets
    its copilot tokens accepted: their ``iat`` is backdated by LEEWAY, the exact
    time is in ``chatauth_iat``."""
    ahead = datetime.now(UTC) + timedelta(seconds=3)
    with mock.patch("rest_framework_simplejwt.tokens.aware_utcnow", lambda: ahead):
        token = issue_copilot_token(alice)
    assert token["chatauth_iat"] == pytest.approx(ahead.timestamp(), abs=0.001)
    response = chainlit_user(chainlit, str(token))
    assert response.status_code == 200, response.text
    assert response.json()["identifier"] == "alice"
    # The same token with its exact time as iat: what Chainlit refused before.
    claims = jwt.decode(str(token), options={"verify_signature": False})
    claims["iat"] = int(ahead.timestamp()) + 1
    exact = jwt.encode(claims, os.environ["CHATAUTH_SECRET"], algorithm="HS256")
    assert chainlit_user(chainlit, exact).status_code == 401
    # And chatauth itself reads the exact time for revocation.
    assert verify_token(str(token)).issued_at == token["chatauth_iat"]


# --- Chainlit's own tokens, accepted by chatauth --------------------------------------


def test_chatauth_accepts_a_token_chainlit_minted(chainlit, db):
    response = httpx.post(
        f"{chainlit}/login",
        data={"username": "bob", "password": "bob-password"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    cookie = next(
        c
        for c in response.headers.get_list("set-cookie")
        if c.startswith("access_token=")
    )
    token = cookie.split(";", 1)[0].split("=", 1)[1]
    verified = verify_token(token)
    assert verified.token_type == TokenType.CHAINLIT
    assert verified.identifier == "bob"
    assert verified.claims["metadata"] == {"via": "cl"}
    assert verified.user_pk is not None  # mapped to (created as) a Django user
