"""Shared fixtures: users, tokens, clients, hooks, and service availability."""

from __future__ import annotations

import os
import re
import socket
import time
import uuid

import jwt
import pytest
from django.core.cache import caches
from django.test import override_settings

REQUIRE_SERVICES = os.environ.get("CHATAUTH_REQUIRE_SERVICES") == "1"
PASSWORD = "correct horse battery staple"


def service_up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, with CHATAUTH_REQUIRE_SERVICES=1, fail) when a service is down."""
    if service_up(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " and CHATAUTH_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def on_redis():
    """chatauth on the machine's Redis (``CACHE_ALIAS`` "redis", a key prefix of
    its own, removed afterwards): the cache object."""
    from chatauth.internal import cache as chatauth_cache
    from tests.caches import REDIS, forget_prefix, redis_caches

    require_service("Redis", "127.0.0.1", 6379)
    with override_settings(
        CACHES=redis_caches(REDIS), CHATAUTH={"CACHE_ALIAS": "redis"}
    ):
        yield chatauth_cache.get_cache()
        forget_prefix(chatauth_cache.get_cache())


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """One SQLite test database file per process, a forked one included.

    tests/settings.py names the file after the process that read the settings; a
    process forked after that (``make mutation`` forks one per mutant, two at a
    time) would share its parent's file and drop it under a sibling's feet.
    """
    from django.conf import settings

    database = settings.DATABASES["default"]
    name = database.get("TEST", {}).get("NAME") or ""
    match = re.fullmatch(r"(.*chatauth-test-)(\d+)(\.db)", name)
    if match and int(match[2]) != os.getpid():
        own = f"{match[1]}{os.getpid()}{match[3]}"
        database["TEST"]["NAME"] = database["NAME"] = own


@pytest.fixture(scope="session", autouse=True)
def _writer_released(django_db_setup, django_db_blocker):
    """The session writer keeps its connection a moment after its last job:
    give it back before the test database is dropped."""
    yield
    from chatauth.chatsessions import writer

    with django_db_blocker.unblock():
        writer.release_writer_connections()


@pytest.fixture(autouse=True)
def _clean_state():
    """Each test starts with no hooks, an empty cache and default settings."""
    from chatauth import hooks
    from chatauth.conf import settings

    hooks.clear()
    caches["default"].clear()
    settings.reload()
    yield
    hooks.clear()
    caches["default"].clear()


@pytest.fixture
def chat(settings):
    """Set CHATAUTH options for a test: ``chat(ON_MESSAGE=..., ...)``."""

    def configure(**options):
        settings.CHATAUTH = {**settings.CHATAUTH, **options}

    return configure


@pytest.fixture
def make_user(django_user_model):
    def make(username: str | None = None, password: str = PASSWORD, **fields):
        username = username or f"user-{uuid.uuid4().hex[:8]}"
        return django_user_model.objects.create_user(
            username=username, password=password, **fields
        )

    return make


@pytest.fixture
def user(make_user):
    return make_user("alice")


@pytest.fixture
def api():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def login(api):
    """POST auth/login; returns the response."""

    def do(username: str = "alice", password: str = PASSWORD, **extra):
        return api.post(
            "/auth/login",
            {"username": username, "password": password},
            format="json",
            **extra,
        )

    return do


@pytest.fixture
def pair(user, login):
    response = login()
    assert response.status_code == 200, response.content
    return response.json()


def chainlit_token(identifier: str, metadata: dict | None = None, **claims) -> str:
    """A token minted exactly as Chainlit's docs do it (PyJWT, HS256)."""
    payload = {
        "identifier": identifier,
        "metadata": metadata or {},
        "exp": int(time.time()) + 3600,
        **claims,
    }
    return jwt.encode(payload, os.environ["CHATAUTH_SECRET"], algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory):
    """One real uvicorn process serving the demo on a migrated SQLite file.

    In-memory channel layer and local-memory cache, as ``make demo`` runs it.
    Yields a :class:`tests.servers.Server`; stopped at the end of the session.
    """
    from tests.servers import migrate, server_env, start_server

    tmp = tmp_path_factory.mktemp("demo-server")
    env = server_env(
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        # Header login on, as the README turns it on: loopback is the proxy.
        CHATAUTH_TRUSTED_PROXIES="127.0.0.1",
    )
    migrate(env)
    server = start_server(env, tmp)
    yield server
    server.stop()
