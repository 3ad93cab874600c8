"""The reference deployment, started exactly as the README's Production section
gives it, probed from outside as an attacker would.

The README's production command is read from the README itself (so the docs and
this test cannot drift apart), with ``<proxy>`` = 127.0.0.2, two workers and a
free port; PostgreSQL and Redis as in production; every other setting as
shipped (no ``DJANGO_SSL_REDIRECT=0`` or ``DJANGO_SECURE_COOKIES=0``: HTTPS
redirect, HSTS and Secure cookies on).  The test plays two parties:

* **the proxy**: connections from 127.0.0.2, which uvicorn trusts to say the
  scheme (``X-Forwarded-Proto: https``) and the client's address;
* **anyone else**: connections from 127.0.0.1 (a local process, or a client
  that reached the workers directly), trusted with nothing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import require_service
from tests.servers import (
    PG_ADMIN,
    ROOT,
    free_port,
    fresh_postgres,
    manage,
    migrate,
    run_manage,
)

pytestmark = pytest.mark.timeout(120)

PROXY = "127.0.0.2"
HTTPS = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
DEMO_USER, DEMO_PASSWORD = "demo", "demo-password-123"


def readme_command() -> list[str]:
    """The uvicorn command of the README's Production section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Production") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    command = block[block.index("uvicorn ") :].replace("\\\n", " ")
    args = shlex.split(command.splitlines()[0])
    assert args[0] == "uvicorn" and "project.asgi:application" in args
    return args


def deployed_args(port: int) -> list[str]:
    args = readme_command()
    out = [sys.executable, "-m", "uvicorn"]
    rest = iter(args[1:])
    for arg in rest:
        if arg == "--port":
            out += [arg, str(port)]
            next(rest)
        elif arg == "--workers":
            out += [arg, "2"]
            next(rest)
        else:
            out.append(arg.replace("<proxy>", PROXY))
    return out


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    with fresh_postgres("chatauth_deploy") as (name, database_url):
        yield from _deployed(name, database_url, tmp_path_factory.mktemp("deploy"))


def _deployed(name: str, database_url: str, tmp: Path):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("DJANGO_", "CHATAUTH_", "DATABASE_URL", "REDIS_", "OAUTH_")
        )
    }
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        DATABASE_URL=database_url,
        REDIS_URL="redis://127.0.0.1:6379/0",
        REDIS_PREFIX=f"chatauth-deploy-{uuid.uuid4().hex[:12]}",
        CHATAUTH_SECRET=secrets.token_urlsafe(48),
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        PYTHONPATH=str(ROOT),
    )
    log = tmp / "server.log"
    process = None
    try:
        migrate(env)
        checked = run_manage(env, "check", "--deploy")
        manage(env, "demo_user")
        port = free_port()
        with log.open("wb") as handle:
            process = subprocess.Popen(
                deployed_args(port),
                cwd=ROOT,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/auth/config", timeout=2)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log.read_text()) from None
                time.sleep(0.2)
        yield {
            "url": url,
            "port": port,
            "log": log,
            "check": checked,
            "database": name,
        }
    finally:
        if process is not None:
            process.terminate()
            process.wait(15)
    assert "Traceback" not in log.read_text(), log.read_text()


def through_proxy() -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=PROXY)
    return httpx.Client(transport=transport, headers=HTTPS, timeout=10)


def directly() -> httpx.Client:
    return httpx.Client(timeout=10)


def test_check_deploy_reports_nothing(deployment):
    result = deployment["check"]
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output, output


def test_the_readme_command_is_what_runs():
    args = readme_command()
    assert "--forwarded-allow-ips=<proxy>" in args
    assert {"--ws-per-message-deflate", "--ws-max-size", "--http"} <= set(args)


def test_spoofed_identity_headers_log_no_one_in(deployment):
    url = deployment["url"] + "/auth/header"
    spoof = {"X-Forwarded-User": DEMO_USER, "X-Forwarded-Email": "x@example.com"}
    with directly() as anyone:
        # Not through the proxy: plain HTTP, whatever it claims -> to HTTPS.
        answer = anyone.post(url, headers={**spoof, **HTTPS})
        assert answer.status_code == 301, answer.text
        assert answer.headers["location"].startswith("https://")
    with through_proxy() as proxy:
        # Even the proxy's requests: header login is off until configured.
        answer = proxy.post(url, headers=spoof)
        assert answer.status_code == 401, answer.text
        assert "access_token" not in answer.text
        assert proxy.get(deployment["url"] + "/auth/config").json()["header"] is False


def test_the_scheme_comes_only_from_the_proxy(deployment):
    url = deployment["url"] + "/auth/config"
    with directly() as anyone:
        assert anyone.get(url, headers=HTTPS).status_code == 301
    with through_proxy() as proxy:
        answer = proxy.get(url)
        assert answer.status_code == 200
        assert "max-age=" in answer.headers["strict-transport-security"]


def test_query_string_tokens_never_reach_the_access_log(deployment):
    with through_proxy() as proxy:
        pair = proxy.post(
            deployment["url"] + "/auth/login",
            json={"username": DEMO_USER, "password": DEMO_PASSWORD},
        ).json()
        token = pair["access_token"]
        answer = proxy.get(deployment["url"] + f"/auth/me?token={token}")
        assert answer.status_code == 401
        answer = proxy.get(
            deployment["url"] + f"/auth/oauth/none/callback?code={token}&state=x"
        )
        assert answer.status_code < 500
    ws = f"ws://127.0.0.1:{deployment['port']}/ws/chat/?token={token}"
    try:
        with connect(ws, open_timeout=10) as socket:
            with pytest.raises(Exception):  # noqa: B017 - closed 4401, any shape
                socket.recv(timeout=10)
    except InvalidStatus:
        pass
    time.sleep(0.5)
    log = deployment["log"].read_text()
    assert token not in log
    assert "?[redacted]" in log  # the lines are there, without their queries
    assert DEMO_PASSWORD not in log


def test_cookies_are_secure_and_http_only(deployment):
    with through_proxy() as proxy:
        page = proxy.get(deployment["url"] + "/admin/login/")
        csrf = page.cookies["csrftoken"]
        proxy.cookies.clear()
        cookie = page.headers["set-cookie"]
        assert "Secure" in cookie and "SameSite=Lax" in cookie
        answer = proxy.post(
            deployment["url"] + "/admin/login/",
            data={
                "username": DEMO_USER,
                "password": DEMO_PASSWORD,
                "csrfmiddlewaretoken": csrf,
            },
            # Sent by hand: a Secure cookie never goes back over this
            # loopback's plain HTTP (the proxy would speak HTTPS to the user).
            headers={
                "Referer": f"https://127.0.0.1:{deployment['port']}/admin/login/",
                "Cookie": f"csrftoken={csrf}",
            },
        )
        assert answer.status_code == 302, answer.text
        sessions = [
            c
            for c in answer.headers.get_list("set-cookie")
            if c.startswith("sessionid=")
        ]
        assert sessions and all("Secure" in c and "HttpOnly" in c for c in sessions), (
            sessions
        )


def test_options_tells_no_implementation_details(deployment):
    from chatauth import views

    with through_proxy() as proxy:
        for path, view in (
            ("/auth/login", views.LoginView),
            ("/auth/header", views.HeaderLoginView),
            ("/auth/config", views.ConfigView),
        ):
            answer = proxy.options(deployment["url"] + path)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert "description" not in body
            first_line = view.__doc__.strip().splitlines()[0]
            assert first_line not in json.dumps(body)


def test_a_burst_of_requests_cannot_exhaust_the_database(deployment):
    """Each worker's connections come from a bounded pool: 400 unauthenticated
    requests, 100 at a time, never hold more than the pools' size, and every
    one is answered (no "too many clients" 503)."""
    import concurrent.futures
    import threading

    import psycopg

    seen, done = [], threading.Event()

    def count() -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            while not done.is_set():
                seen.append(
                    admin.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                        [deployment["database"]],
                    ).fetchone()[0]
                )
                time.sleep(0.02)

    counter = threading.Thread(target=count)
    counter.start()
    url = deployment["url"] + "/auth/copilot/token"
    transport = httpx.HTTPTransport(
        local_address=PROXY, limits=httpx.Limits(max_connections=100)
    )
    try:
        with httpx.Client(transport=transport, headers=HTTPS, timeout=30) as proxy:

            def attempt(i: int) -> int:
                return proxy.post(
                    url,
                    json={"identifier": "x"},
                    # Well-formed, unknown: each one is looked up.
                    headers={"Authorization": f"Api-Key ca_{i:08x}.{'n' * 43}"},
                ).status_code

            with concurrent.futures.ThreadPoolExecutor(100) as pool:
                statuses = list(pool.map(attempt, range(400)))
    finally:
        done.set()
        counter.join()
    assert set(statuses) == {401}, sorted(set(statuses))
    assert seen and max(seen) <= 2 * 10, max(seen)  # 2 workers, pools of 10
