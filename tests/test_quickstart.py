"""The docs' quick start, to the letter, on a fresh ``startproject``.

``docs/quickstart.md`` is the page a new user follows.  Its file snippets (each
opening with a comment naming the file and what to do with it) are applied,
exactly as written, to a project made by ``django startproject`` with the
Django under test (5.2 in ``make test``, 6.1 in ``make test-django6``); its
``sh`` block of commands is run as written (with the few flags a test needs to
run them without a terminal).  Then the documented path is walked against real
servers -- ``runserver`` (daphne) and uvicorn: password login, the chat socket,
logout closing it with 4410, the widget page with its script served and its
token opening a socket that Django's own logout closes.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.servers import ROOT, free_port, stop_process, wait_for_http

pytestmark = pytest.mark.timeout(180)

DOC = ROOT / "docs" / "quickstart.md"
SECRET = "quickstart-secret-" + "q" * 40
PASSWORD = "quick-start-password-1"
#: A snippet's first line: ``# path: what to do`` or ``{# path: what to do #}``.
FILE_LINE = re.compile(
    r"^(?:#|\{#)\s*(?P<path>[\w./-]+):\s*(?P<how>[^#]+?)\s*(?:#\})?$"
)
HOW = {"add at the end": "a", "replace the file": "w", "a new file": "x"}


def doc_blocks(language: str) -> list[str]:
    text = DOC.read_text()
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.S | re.M)


def file_snippets() -> list[tuple[str, str, str]]:
    """``(path, mode, text)`` of every file snippet of the page, in order."""
    found = []
    for block in doc_blocks("python") + doc_blocks("html"):
        first = block.splitlines()[0]
        match = FILE_LINE.match(first)
        if match:
            found.append((match["path"], HOW[match["how"]], block))
    return found


def documented_commands() -> list[list[str]]:
    """The arguments of the ``python manage.py ...`` commands of the "Run it"
    block."""
    for block in doc_blocks("sh"):
        lines = block.strip().splitlines()
        if lines and all(line.startswith("python manage.py ") for line in lines):
            return [line.split()[2:] for line in lines]
    raise AssertionError("the quick start lost its 'Run it' commands")


def test_the_page_has_every_step():
    """The test below applies what the page says: not fewer steps than these."""
    paths = [path for path, _, _ in file_snippets()]
    assert paths == [
        "mysite/settings.py",
        "mysite/urls.py",
        "mysite/asgi.py",
        "templates/chat.html",
    ]
    assert [c[0] for c in documented_commands()] == [
        "check",
        "migrate",
        "createsuperuser",
        "runserver",
    ]


def project_env() -> dict[str, str]:
    import os

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "CHATAUTH_", "DATABASE_URL", "REDIS_URL"))
        and k != "PYTHONPATH"
    }
    env.update(CHATAUTH_SECRET=SECRET, DJANGO_SUPERUSER_PASSWORD=PASSWORD)
    return env


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A fresh ``startproject mysite`` with the page's steps applied and run."""
    root = tmp_path_factory.mktemp("quickstart")
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite"],
        cwd=root,
        check=True,
        timeout=60,
    )
    site = root / "mysite"
    for path, mode, text in file_snippets():
        target = site / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open(mode) as handle:
            handle.write(("\n" if mode == "a" else "") + text)
    return site


def manage(site: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=site,
        env=env or project_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def ready_site(site) -> Path:
    """The page's commands, up to the server."""
    check, migrate, createsuperuser, _ = documented_commands()
    output = manage(site, *check)
    assert "System check identified no issues" in output, output
    manage(site, *migrate, "-v0")
    manage(site, *createsuperuser, "--noinput", "--email", "alice@example.com")
    return site


def serve(site: Path, command: list[str], port: int, env=None) -> subprocess.Popen:
    log = open(site / f"server-{port}.log", "wb")  # noqa: SIM115 (closed with it)
    process = subprocess.Popen(
        command, cwd=site, env=env or project_env(), stdout=log, stderr=log
    )
    wait_for_http(
        f"http://127.0.0.1:{port}/admin/login/",
        process,
        log=site / f"server-{port}.log",
    )
    return process


def server_command(kind: str, port: int) -> list[str]:
    if kind == "runserver":  # as documented, without the reloader
        runserver = documented_commands()[-1]
        return [sys.executable, "manage.py", *runserver, f"127.0.0.1:{port}"] + [
            "--noreload"
        ]
    return [sys.executable, "-m", "uvicorn", "mysite.asgi:application"] + [
        "--port",
        str(port),
    ]


@pytest.fixture(scope="module", params=["runserver", "uvicorn"])
def server(request, ready_site):
    port = free_port()
    process = serve(ready_site, server_command(request.param, port), port)
    yield f"127.0.0.1:{port}"
    stop_process(process)


async def close_code(ws, timeout: float = 10) -> int:
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as e:
            assert e.rcvd is not None, "closed without a close frame"
            return e.rcvd.code


async def test_login_chat_and_logout_closes_the_socket(server):
    async with httpx.AsyncClient(base_url=f"http://{server}") as http:
        login = await http.post(
            "/auth/login", json={"username": "alice", "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        access = login.json()["access_token"]
        bearer = {"Authorization": f"Bearer {access}"}
        async with connect(f"ws://{server}/ws/chat/", additional_headers=bearer) as ws:
            session = json.loads(await ws.recv())
            assert session["type"] == "session"
            assert session["user"]["identifier"] == "alice"
            await ws.send(json.dumps({"type": "message", "content": "hello"}))
            assert json.loads(await ws.recv()) == {
                "type": "message",
                "content": "hello",
            }
            assert (await http.post("/auth/logout", headers=bearer)).status_code == 200
            assert await close_code(ws) == 4410
        assert (await http.get("/auth/me", headers=bearer)).status_code == 401
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://{server}/ws/elsewhere/"):
            pass
    assert refused.value.response.status_code == 403


async def test_the_widget_page_after_signing_in(server):
    async with httpx.AsyncClient(base_url=f"http://{server}") as browser:
        anonymous = await browser.get("/chat/")
        assert anonymous.status_code == 200 and "copilot.js" not in anonymous.text
        await browser.get("/admin/login/")
        signed_in = await browser.post(
            "/admin/login/?next=/admin/",
            data={
                "username": "alice",
                "password": PASSWORD,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
                "next": "/admin/",
            },
            headers={"Referer": f"http://{server}/admin/login/"},
        )
        assert signed_in.status_code == 302, signed_in.text
        page = await browser.get("/chat/")
        assert page.status_code == 200
        [script] = re.findall(r'<script src="([^"]+copilot\.js)"', page.text)
        config = json.loads(
            re.search(
                r'<script id="chatauth-copilot-[^"]+" type="application/json">'
                r"(.*?)</script>",
                page.text,
                re.S,
            )[1]
        )
        assert config["title"] == "Ask me" and config["accessToken"]
        served = await browser.get(script)
        assert served.status_code == 200 and "mountChatWidget" in served.text
        # The widget's way in: the token as a subprotocol, from the page's origin.
        async with connect(
            f"ws://{server}/ws/chat/",
            subprotocols=["chatauth.bearer", config["accessToken"]],
            origin=f"http://{server}",
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "session"
            # Signing out of Django (the admin's own view) ends the widget's chat.
            out = await browser.post(
                "/admin/logout/",
                data={"csrfmiddlewaretoken": browser.cookies["csrftoken"]},
                headers={"Referer": f"http://{server}/admin/"},
            )
            assert out.status_code == 200, out.text
            assert await close_code(ws) == 4410


@pytest.mark.parametrize(("kind", "code"), [("runserver", 4503), ("uvicorn", 1011)])
async def test_a_server_error_closes_the_socket_on_either_server(
    ready_site, kind, code
):
    """The channel layer unreachable: the socket is told to come back later
    (1011; daphne cannot send 1011, so 4503 there), never left hanging."""
    (ready_site / "mysite" / "dead_layer.py").write_text(
        "from mysite.settings import *  # noqa\n"
        "CHANNEL_LAYERS = {'default': {\n"
        "    'BACKEND': 'channels_redis.core.RedisChannelLayer',\n"
        f"    'CONFIG': {{'hosts': ['redis://127.0.0.1:{free_port()}/0']}},\n"
        "}}\n"
    )
    env = {**project_env(), "DJANGO_SETTINGS_MODULE": "mysite.dead_layer"}
    port = free_port()
    process = serve(ready_site, server_command(kind, port), port, env=env)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            login = await http.post(
                "/auth/login", json={"username": "alice", "password": PASSWORD}
            )
            access = login.json()["access_token"]
        async with connect(
            f"ws://127.0.0.1:{port}/ws/chat/",
            additional_headers={"Authorization": f"Bearer {access}"},
        ) as ws:
            assert await close_code(ws) == code
    finally:
        stop_process(process)


async def test_a_socket_without_credentials_is_refused_on_either_server(server):
    """Refusals are close codes every server can send (daphne refuses a close
    code that is an ``IntEnum``, and the client would hang): a first frame that
    is not ``{"type": "auth"}`` gets 4401."""
    async with connect(f"ws://{server}/ws/chat/") as ws:
        await ws.send(json.dumps({"type": "message", "content": "hi"}))
        assert await close_code(ws) == 4401
