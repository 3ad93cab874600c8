"""Provider-initiated logout for real: the provider ends its session and the chat ends.

A real OpenID provider (npm ``oidc-provider``, ``tests/oidc``) and the demo served
by uvicorn, configured from the environment only (``OAUTH_OIDC_*``).  The user
logs in through the provider with a browser's cookie jar, opens chat sockets
(with the session cookie, and with a copilot token minted for the session),
then signs out *at the provider*: the provider itself POSTs its back-channel
logout token to chatauth, and every socket of that login closes with 4410 --
on both workers when two share Redis -- while the user's other login holds.

Propagation is measured from the moment the provider received chatauth's 200
(its ``backchannel.success`` event, stamped on the same machine's clock) to the
moment the client saw the close frame.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import require_service
from tests.oidc.provider import Browser, start_provider
from tests.servers import free_port, migrate, server_env, start_server

pytestmark = pytest.mark.timeout(180)

CLIENT_ID = "live-client"
SECRET = "live-client-secret-" + "q" * 30
REDIS_URL = "redis://127.0.0.1:6379/0"
#: Runs of the propagation measure, and its target (the issue's).
RUNS = 20
TARGET_P99 = 0.050


@dataclass
class Site:
    provider: object
    servers: list

    @property
    def a(self):
        return self.servers[0]

    @property
    def b(self):
        return self.servers[-1]


def _site(tmp, *, workers: int, redis: bool):
    provider_port = free_port()
    ports = [free_port() for _ in range(workers)]
    extra = {}
    if redis:
        extra = {
            "REDIS_URL": REDIS_URL,
            "REDIS_PREFIX": f"chatauth-test-{uuid.uuid4().hex[:12]}",
        }
    env = server_env(
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        OAUTH_OIDC_CLIENT_ID=CLIENT_ID,
        OAUTH_OIDC_CLIENT_SECRET=SECRET,
        OAUTH_OIDC_DISCOVERY_URL=(
            f"http://127.0.0.1:{provider_port}/.well-known/openid-configuration"
        ),
        **extra,
    )
    migrate(env)
    servers, provider = [], None
    try:
        for port in ports:
            servers.append(start_server(env, tmp, port=port))
        a = servers[0]
        provider = start_provider(
            [
                {
                    "client_id": CLIENT_ID,
                    "client_secret": SECRET,
                    "redirect_uris": [
                        f"{s.url}/auth/oauth/oidc/callback" for s in servers
                    ],
                    # What the README says to register: chatauth's route, and
                    # that its logout tokens carry the sid.
                    "backchannel_logout_uri": (
                        f"{a.url}/auth/oauth/oidc/backchannel-logout"
                    ),
                    "backchannel_logout_session_required": True,
                }
            ],
            tmp,
            port=provider_port,
        )
        yield Site(provider, servers)
    finally:
        if provider is not None:
            provider.stop()
        for server in servers:
            server.stop()
    for server in servers:
        output = server.output()
        assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    """One server: SQLite, in-memory channel layer, file cache (the demo's)."""
    yield from _site(tmp_path_factory.mktemp("bcl-one"), workers=1, redis=False)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """Two servers sharing a SQLite file and Redis (cache and channel layer)."""
    require_service("Redis", "127.0.0.1", 6379)
    yield from _site(tmp_path_factory.mktemp("bcl-two"), workers=2, redis=True)


class Person:
    """A browser: one cookie jar for the provider and for chatauth."""

    def __init__(self, site: Site, name: str = "alice") -> None:
        self.site = site
        self.browser = Browser(login=name)
        self.jar = self.browser.client

    def log_in(self, server) -> Person:
        callback = f"{server.url}/auth/oauth/oidc/callback"
        start = self.jar.get(f"{server.url}/auth/oauth/oidc")
        assert start.status_code == 302, start.text
        back = self.browser.authorize(start.headers["location"], callback)
        done = self.jar.get(back)
        assert done.status_code == 302 and "error" not in done.headers["location"]
        return self

    @property
    def session_cookie(self) -> str:
        return f"sessionid={self.jar.cookies.get('sessionid', domain='127.0.0.1')}"

    def copilot_token(self, server) -> str:
        csrf = self.jar.cookies.get("csrftoken", domain="127.0.0.1")
        response = self.jar.post(
            f"{server.url}/auth/copilot/token", headers={"X-CSRFToken": csrf}
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def signed_in(self, server) -> bool:
        return self.jar.get(f"{server.url}/auth/sessions").status_code == 200

    def sign_out_at_provider(self) -> float:
        """End the provider session; when the provider's request returned."""
        self.browser.end_session(self.site.provider.issuer)
        return time.time()

    def close(self) -> None:
        self.browser.close()


def cookie_socket(server, person: Person):
    return connect(
        f"{server.ws_url}/ws/chat/",
        additional_headers={"Cookie": person.session_cookie},
        origin=server.url,  # the site's own page
    )


def token_socket(server, token: str):
    return connect(f"{server.ws_url}/ws/chat/", subprotocols=["chatauth.bearer", token])


async def opened(ws) -> dict:
    message = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert message["type"] == "session", message
    return message


async def closed_at(ws, timeout: float = 5.0) -> tuple[int, float]:
    """Wait for the server's close frame: its code and when it came."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as e:
            assert e.rcvd is not None, "the server never sent a close frame"
            return e.rcvd.code, time.time()


async def still_open(ws) -> bool:
    await ws.send(json.dumps({"type": "message", "content": "still here?"}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return reply == {"type": "message", "content": "still here?"}


def delivery(site: Site, before: int) -> dict:
    """The back-channel logout the provider delivered since ``before``."""
    log = site.provider.backchannel_log()[before:]
    assert len(log) == 1, log
    assert log[0]["ok"], log[0]
    return log[0]


async def _provider_logout_ends_the_login(site: Site, sockets_on: list) -> list:
    """Log alice in twice; sockets of the first login on ``sockets_on``; sign
    the first out at the provider.  Returns the propagation delays (s)."""
    alice = Person(site).log_in(site.a)
    other = Person(site).log_in(site.a)  # the same user, another provider session
    async with AsyncExitStack() as stack:
        stack.callback(alice.close)
        stack.callback(other.close)
        copilot = await asyncio.to_thread(alice.copilot_token, site.a)
        other_copilot = await asyncio.to_thread(other.copilot_token, site.a)
        sockets = []
        for server in sockets_on:
            sockets.append(
                await stack.enter_async_context(cookie_socket(server, alice))
            )
            sockets.append(
                await stack.enter_async_context(token_socket(server, copilot))
            )
        survivors = [
            await stack.enter_async_context(cookie_socket(site.b, other)),
            await stack.enter_async_context(token_socket(site.a, other_copilot)),
        ]
        for ws in sockets + survivors:
            await opened(ws)
        before = len(site.provider.backchannel_log())
        waiting = [asyncio.create_task(closed_at(ws)) for ws in sockets]

        await asyncio.to_thread(alice.sign_out_at_provider)

        results = await asyncio.gather(*waiting)
        answered = delivery(site, before)["at"] / 1000
        assert [code for code, _ in results] == [4410] * len(sockets)
        delays = [at - answered for _, at in results]
        # Every credential of that login is refused from now on, everywhere.
        async with httpx.AsyncClient(timeout=10) as http:
            for server in site.servers:
                me = await http.get(
                    f"{server.url}/auth/me",
                    headers={"Authorization": f"Bearer {copilot}"},
                )
                assert me.status_code == 401, me.text
                assert not await asyncio.to_thread(alice.signed_in, server)
                async with token_socket(server, copilot) as ws:
                    assert (await closed_at(ws))[0] == 4410
                try:
                    async with cookie_socket(server, alice) as ws:
                        assert (await closed_at(ws))[0] in (4401, 4410)
                except InvalidStatus as e:  # refused at the handshake
                    assert e.response.status_code in (401, 403)
        # The other login holds: its sockets, its session, its token.
        for ws in survivors:
            assert await still_open(ws)
        assert await asyncio.to_thread(other.signed_in, site.a)
        return delays


async def test_provider_logout_closes_that_logins_chat(one_worker):
    delays = await _provider_logout_ends_the_login(one_worker, [one_worker.a])
    assert max(delays) < 1.0, delays


async def test_provider_logout_closes_the_chat_on_both_workers(two_workers):
    """The provider calls worker A; the sockets on worker B close too (Redis)."""
    delays = await _provider_logout_ends_the_login(
        two_workers, [two_workers.a, two_workers.b]
    )
    assert max(delays) < 1.0, delays


async def test_propagation_from_the_providers_200_to_the_close(two_workers):
    """``RUNS`` logins, each with a socket on the worker the provider does *not*
    call; the time from chatauth's 200 reaching the provider to the close."""
    site = two_workers
    delays, end_to_end = [], []
    for _ in range(RUNS):
        person = Person(site).log_in(site.a)
        try:
            async with cookie_socket(site.b, person) as ws:
                await opened(ws)
                before = len(site.provider.backchannel_log())
                waiting = asyncio.create_task(closed_at(ws))
                signing_out = time.time()
                await asyncio.to_thread(person.sign_out_at_provider)
                code, at = await waiting
                assert code == 4410
                delays.append(at - delivery(site, before)["at"] / 1000)
                end_to_end.append(at - signing_out)
        finally:
            person.close()
    p99 = percentiles("chatauth's 200 at the provider -> close on worker B", delays)
    percentiles("the user's sign-out at the provider -> close on B", end_to_end)
    assert p99 <= TARGET_P99, [round(d * 1000, 1) for d in sorted(delays)]


def percentiles(what: str, values: list[float]) -> float:
    """Print min/p50/p99/max of ``values`` (seconds) in ms; return the p99."""
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    ms = [v * 1000 for v in (values[0], statistics.median(values), p99, values[-1])]
    print(
        f"\n{what}, {len(values)} runs: min {ms[0]:.1f} ms, p50 {ms[1]:.1f} ms, "
        f"p99 {ms[2]:.1f} ms, max {ms[3]:.1f} ms"
    )
    return p99
