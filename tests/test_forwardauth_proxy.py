"""Forward auth in front of a real Chainlit server: nginx ``auth_request``
asking chatauth's ``auth/verify`` before every request it lets through.

Three real processes on loopback: chatauth (uvicorn serving the demo), a
Chainlit 2.x server sharing chatauth's secret (the virtualenv of
``tests/test_chainlit_compat.py``), and nginx from Debian with the recipe of
``docs/deployment.md`` (the config below is that recipe, ports filled in).
Chainlit alone cannot revoke a token: the tests show the same token refused at
the proxy the moment chatauth ends it, for plain HTTP and for the socket.io
handshake (long-polling and the WebSocket upgrade), while Chainlit itself
still accepts it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import PASSWORD, REQUIRE_SERVICES
from tests.servers import (
    create_users,
    free_port,
    migrate,
    server_env,
    start_server,
    stop_process,
    wait_for_http,
)
from tests.test_chainlit_compat import chainlit  # noqa: F401 (a fixture)

pytestmark = pytest.mark.timeout(600)

#: The recipe of docs/deployment.md ("Forward auth"), for one backend.
RECIPE = """
        location = /_chatauth/verify {{
            internal;
            proxy_pass http://chatauth/auth/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Upgrade "";
            proxy_set_header Connection "";
        }}
        location / {{
            auth_request /_chatauth/verify;
            auth_request_set $auth_user $upstream_http_x_auth_user;
            auth_request_set $auth_user_id $upstream_http_x_auth_user_id;
            auth_request_set $auth_display_name $upstream_http_x_auth_display_name;
            auth_request_set $auth_metadata $upstream_http_x_auth_metadata;
            # Every X-Auth-* header set here (empty: dropped), never the client's.
            proxy_set_header X-Auth-User $auth_user;
            proxy_set_header X-Auth-User-Id $auth_user_id;
            proxy_set_header X-Auth-Display-Name $auth_display_name;
            proxy_set_header X-Auth-Metadata $auth_metadata;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_pass http://{backend};
        }}
"""
#: Two servers with that recipe: in front of Chainlit, and in front of a
#: backend that echoes the headers it receives (what the recipe passes on).
NGINX_CONF = """
worker_processes 1;
{user}
error_log {tmp}/error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; "" close; }}
    upstream chatauth {{ server 127.0.0.1:{chatauth}; }}
    upstream chainlit {{ server 127.0.0.1:{chainlit}; }}
    upstream echo {{ server 127.0.0.1:{echo}; }}
    server {{
        listen 127.0.0.1:{port};
        {in_front_of_chainlit}
    }}
    server {{
        listen 127.0.0.1:{echo_port};
        {in_front_of_echo}
    }}
}}
"""


@pytest.fixture(scope="module")
def chatauth_server(tmp_path_factory):
    """The demo, signing with the secret the Chainlit fixture was given."""
    tmp = tmp_path_factory.mktemp("forward-auth")
    env = server_env(
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        CHATAUTH_SECRET=os.environ["CHATAUTH_SECRET"],
    )
    migrate(env)
    create_users(env, ("proxied", PASSWORD))
    server = start_server(env, tmp)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, chatauth_server, chainlit, echo_server):  # noqa: F811
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        reason = "nginx is not installed (Debian: apt-get install nginx)"
        if REQUIRE_SERVICES:
            pytest.fail(reason + " and CHATAUTH_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("nginx")
    port, echo_port = free_port(), free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            # As root, nginx's workers would run as "nobody", who cannot read
            # the test's private temporary directory.
            user="user root;" if os.geteuid() == 0 else "",
            tmp=tmp,
            port=port,
            echo_port=echo_port,
            in_front_of_chainlit=RECIPE.format(backend="chainlit"),
            in_front_of_echo=RECIPE.format(backend="echo"),
            chatauth=chatauth_server.port,
            chainlit=chainlit.rsplit(":", 1)[1],
            echo=echo_server,
        )
    )
    process = subprocess.Popen(
        [binary, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", process, log=tmp / "error.log")
    except RuntimeError as e:
        pytest.fail(f"nginx did not start: {e}")
    yield {"chainlit": f"127.0.0.1:{port}", "echo": f"127.0.0.1:{echo_port}"}
    stop_process(process)


@pytest.fixture(scope="module")
def echo_server():
    """A backend that answers with the headers it received, as JSON."""

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = json.dumps({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def login(chatauth_server) -> str:
    response = httpx.post(
        f"{chatauth_server.url}/auth/login",
        json={"username": "proxied", "password": PASSWORD},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def logout(chatauth_server, token: str) -> None:
    response = httpx.post(
        f"{chatauth_server.url}/auth/logout",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_http_through_the_proxy(proxy, chatauth_server, chainlit):  # noqa: F811
    proxy = proxy["chainlit"]
    token = login(chatauth_server)
    auth = {"Authorization": f"Bearer {token}"}
    through = httpx.get(f"http://{proxy}/user", headers=auth, timeout=10)
    assert through.status_code == 200, through.text  # Chainlit answered
    assert through.json()["identifier"] == "proxied"
    assert httpx.get(f"http://{proxy}/user", timeout=10).status_code == 401
    logout(chatauth_server, token)
    refused = httpx.get(f"http://{proxy}/user", headers=auth, timeout=10)
    assert refused.status_code == 401  # nginx, on chatauth's word
    # Chainlit on its own still takes the ended token: only the proxy stops it.
    assert httpx.get(f"{chainlit}/user", headers=auth, timeout=10).status_code == 200


def test_socketio_handshake_through_the_proxy(proxy, chatauth_server):
    """Chainlit's browser client authenticates its socket with the
    ``access_token`` cookie: the proxy checks that cookie on the handshake,
    for long-polling and for the WebSocket upgrade."""
    proxy = proxy["chainlit"]
    token = login(chatauth_server)
    cookie = {"Cookie": f"access_token={token}"}
    path = "/ws/socket.io/?EIO=4&transport="
    polling = httpx.get(f"http://{proxy}{path}polling", headers=cookie, timeout=10)
    assert polling.status_code == 200 and polling.text.startswith("0{"), polling.text

    async def upgrade() -> str:
        async with connect(
            f"ws://{proxy}{path}websocket", additional_headers=cookie
        ) as ws:
            return str(await asyncio.wait_for(ws.recv(), 10))

    assert asyncio.run(upgrade()).startswith("0{")  # Engine.IO's open packet
    logout(chatauth_server, token)
    refused = httpx.get(f"http://{proxy}{path}polling", headers=cookie, timeout=10)
    assert refused.status_code == 401
    with pytest.raises(InvalidStatus) as upgrade_refused:
        asyncio.run(upgrade())
    assert upgrade_refused.value.response.status_code == 401


def test_the_backend_sees_chatauths_identity_never_the_clients(proxy, chatauth_server):
    """A client's own X-Auth-* headers never reach the backend: every one is
    chatauth's answer, or absent."""
    token = login(chatauth_server)
    spoofed = {
        "X-Auth-User": "root",
        "X-Auth-User-Id": "999",
        "X-Auth-Display-Name": "The Admin",
        "X-Auth-Metadata": '{"role": "admin"}',
    }
    seen = httpx.get(
        f"http://{proxy['echo']}/anything",
        headers={**spoofed, "Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    assert seen["x-auth-user"] == "proxied"
    assert seen["x-auth-user-id"].isdigit() and seen["x-auth-user-id"] != "999"
    assert "x-auth-display-name" not in seen  # none set: dropped, not the client's
    assert seen["x-auth-metadata"] == "{}"
    refused = httpx.get(f"http://{proxy['echo']}/", headers=spoofed, timeout=10)
    assert refused.status_code == 401
