"""A real OpenID Connect provider (npm ``oidc-provider``) on loopback, for tests.

``start_provider(clients)`` installs the npm packages on first use (``npm ci`` into
``tests/oidc/node_modules``, git-ignored), starts ``server.mjs`` on a free
127.0.0.1 port and waits for it.  Without ``node``/``npm`` the tests that need it
are skipped, unless ``CHATAUTH_REQUIRE_SERVICES=1`` (CI), where they fail.

``Browser`` plays the user at the provider: it follows the provider's redirects
and submits its login and consent forms with httpx until the provider sends the
browser back to the client's redirect URI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from tests.servers import free_port, stop_process

HERE = Path(__file__).resolve().parent
REQUIRE_SERVICES = os.environ.get("CHATAUTH_REQUIRE_SERVICES") == "1"
_install_lock = threading.Lock()


def _unavailable(message: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(message + " and CHATAUTH_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


def ensure_installed() -> str:
    """The path of ``node``, with the provider's packages installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        _unavailable("Node.js (node and npm) is not installed: no OIDC provider")
    with _install_lock:
        if not (HERE / "node_modules" / "oidc-provider" / "package.json").exists():
            command = "ci" if (HERE / "package-lock.json").exists() else "install"
            result = subprocess.run(
                [npm, command, "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=HERE,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if result.returncode != 0:
                # npm is here but the install failed: that is a broken set-up,
                # not a missing tool, so fail rather than skip.
                pytest.fail(
                    f"npm {command} in {HERE} failed:\n{result.stdout}{result.stderr}",
                    pytrace=False,
                )
    return node


@dataclass
class OIDCProvider:
    """A running ``server.mjs``."""

    issuer: str
    process: subprocess.Popen
    log: Path

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def next_id_token(self, mode: str) -> None:
        """Make the provider spoil the ID token of its next token response."""
        response = httpx.post(
            f"{self.issuer}/__test/next-id-token", json={"mode": mode}, timeout=10
        )
        response.raise_for_status()

    def logout_token(
        self, claims: dict, *, header: dict | None = None, key: str = "provider"
    ) -> str:
        """A JWT of exactly ``claims``, signed with the provider's own key (or,
        ``key="foreign"``, another key under the same ``kid``)."""
        response = httpx.post(
            f"{self.issuer}/__test/logout-token",
            json={"claims": claims, "header": header or {}, "key": key},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["token"]

    def backchannel_log(self) -> list[dict]:
        """The back-channel logouts delivered so far (see ``server.mjs``)."""
        response = httpx.get(f"{self.issuer}/__test/backchannel-log", timeout=10)
        response.raise_for_status()
        return response.json()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        stop_process(self.process)


def start_provider(
    clients: list[dict], tmp_dir: Path, *, port: int | None = None, timeout: float = 30
) -> OIDCProvider:
    node = ensure_installed()
    port = port or free_port()
    log = tmp_dir / f"oidc-provider-{port}.log"
    env = {
        **os.environ,
        "OIDC_PORT": str(port),
        "OIDC_CLIENTS": json.dumps(clients),
        "NODE_ENV": "test",
    }
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [node, str(HERE / "server.mjs")],
            cwd=HERE,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    ready: list[str] = []
    reader = threading.Thread(
        target=lambda: ready.append(process.stdout.readline().decode()), daemon=True
    )
    reader.start()
    reader.join(timeout)
    provider = OIDCProvider(f"http://127.0.0.1:{port}", process, log)
    if not ready or not ready[0].startswith("READY "):
        provider.stop()
        raise RuntimeError(f"OIDC provider did not start:\n{provider.output()}")
    issuer = json.loads(ready[0][len("READY ") :])["issuer"]
    assert issuer == provider.issuer
    return provider


# --- playing the user at the provider ---------------------------------------------


class _Forms(HTMLParser):
    """The forms of a page: action, method and the inputs' names and values."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append(
                {
                    "action": a.get("action", ""),
                    "method": a.get("method", "get"),
                    "inputs": {},
                }
            )
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["inputs"][a["name"]] = a.get("value") or ""
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])


@dataclass
class Browser:
    """A user agent at the provider (its own cookie jar), driven by the tests."""

    login: str = "alice"
    client: httpx.Client = field(
        default_factory=lambda: httpx.Client(
            follow_redirects=False, timeout=10, verify=False
        )
    )
    steps: list[str] = field(default_factory=list)

    def authorize(self, url: str, stop_at: str, *, abort: bool = False) -> str:
        """Follow ``url`` through login and consent; return the URL the provider
        redirects to that starts with ``stop_at`` (the client's callback)."""
        deadline = time.monotonic() + 20
        for _ in range(20):
            if url.startswith(stop_at):
                return url
            assert time.monotonic() < deadline, self.steps
            self.steps.append(url)
            response = self.client.get(url)
            while response.status_code in (301, 302, 303, 307, 308):
                url = urljoin(url, response.headers["location"])
                if url.startswith(stop_at):
                    return url
                self.steps.append(url)
                response = self.client.get(url)
            assert response.status_code == 200, (response.status_code, response.text)
            page = _Forms()
            page.feed(response.text)
            if abort:
                link = next(h for h in page.links if h.endswith("/abort"))
                url = urljoin(url, link)
                continue
            form = page.forms[0]
            data = dict(form["inputs"])
            if data.get("prompt") == "login":
                data.update(login=self.login, password="any password")
            response = self.client.post(urljoin(url, form["action"]), data=data)
            assert response.status_code in (302, 303), response.text
            url = urljoin(url, response.headers["location"])
        raise AssertionError(f"no redirect to {stop_at}: {self.steps}")

    def end_session(self, issuer: str, **params: str) -> str:
        """Sign out at the provider (RP-initiated logout's ``end_session``
        endpoint, with ``params``), confirming its "sign me out" form; the URL
        the provider sends the browser to afterwards.  The provider delivers
        its back-channel logouts before it answers."""
        response = self.client.get(f"{issuer}/session/end", params=params)
        assert response.status_code == 200, (response.status_code, response.text)
        page = _Forms()
        page.feed(response.text)
        form = next(f for f in page.forms if "xsrf" in f["inputs"])
        response = self.client.post(
            urljoin(issuer + "/", form["action"]),
            data={**form["inputs"], "logout": "yes"},
        )
        assert response.status_code in (302, 303), response.text
        return urljoin(issuer + "/", response.headers["location"])

    def close(self) -> None:
        self.client.close()
