"""Where the benchmarks run: a scratch directory, migrated SQLite files, real
uvicorn processes on free loopback ports, and Django set up in this process.

One :class:`Workspace` per run.  It migrates one template database (with the
bench users in it, their passwords hashed at the demo's real bcrypt cost) and
hands each benchmark its own copy, so no benchmark sees another's rows.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.servers import Server, manage, migrate, server_env
from tests.servers import start_server as start_uvicorn

SETTINGS = "bench.site.settings"
APP = "bench.site.asgi:application"
USERS = tuple(f"bench-{i}" for i in range(8))
PASSWORD = "bench horse battery staple"

# Hash once (bcrypt at the demo's cost is slow by design) and give every bench
# user the same hash: each login still runs one full bcrypt check.
_CREATE_USERS = """
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
encoded = make_password({password!r})
User = get_user_model()
User.objects.bulk_create(
    [User(username=name, password=encoded) for name in {users!r}]
)
"""


class Workspace:
    """A scratch directory with databases and servers, removed by :meth:`close`."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="chatauth-bench-"))
        #: Starts every Redis key and channel of this run (``bench.site.settings``).
        self.prefix = f"chatauth-bench-{uuid.uuid4().hex[:8]}"
        self._template: Path | None = None
        self._servers: list[Server] = []

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a bench server (or ``manage.py``): DEBUG off."""
        return server_env(
            DJANGO_SETTINGS_MODULE=SETTINGS, BENCH_PREFIX=self.prefix, **extra
        )

    def database(self, name: str) -> str:
        """A fresh copy of the migrated template database; its ``DATABASE_URL``."""
        if self._template is None:
            template = self.dir / "template.sqlite3"
            env = self.env(DATABASE_URL=f"sqlite:///{template}")
            migrate(env)
            manage(
                env, "shell", "-c", _CREATE_USERS.format(password=PASSWORD, users=USERS)
            )
            self._template = template
        path = self.dir / f"{name}-{uuid.uuid4().hex[:6]}.sqlite3"
        shutil.copyfile(self._template, path)
        return f"sqlite:///{path}"

    @contextlib.contextmanager
    def server(
        self, name: str, *, app: str = APP, workers: int = 1, **env: str
    ) -> Iterator[Server]:
        """A uvicorn process serving ``app`` on its own database copy (or on the
        ``DATABASE_URL`` given, e.g. one shared by two servers), stopped on exit.
        Pass ``REDIS_URL=...`` for the Redis cache and channel layer."""
        if "DATABASE_URL" not in env:
            env["DATABASE_URL"] = self.database(name)
        server = start_server(self.env(**env), self.dir, app=app, workers=workers)
        self._servers.append(server)
        try:
            yield server
        except BaseException:
            # The workspace (and the log) is gone after the run: show it now.
            tail = server.output()[-3000:].strip()
            if tail:
                print(f"--- {name} server log (tail) ---\n{tail}", file=sys.stderr)
            raise
        finally:
            server.stop()
            self._servers.remove(server)

    def close(self) -> None:
        for server in list(self._servers):
            server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_server(
    env: dict[str, str],
    log_dir: Path,
    *,
    app: str = APP,
    workers: int = 1,
    timeout: float = 60,
) -> Server:
    """Start uvicorn on a free loopback port; return once it answers HTTP."""
    return start_uvicorn(
        env,
        log_dir,
        app=app,
        workers=workers,
        timeout=timeout,
        ready_path="/auth/config",
    )


_workspace: Workspace | None = None


def workspace() -> Workspace:
    """This run's workspace (created on first use, removed at exit)."""
    global _workspace
    if _workspace is None:
        _workspace = Workspace()
        atexit.register(close_workspace)
    return _workspace


def close_workspace() -> None:
    global _workspace
    if _workspace is not None:
        _workspace.close()
        _workspace = None


def setup_django() -> None:
    """Configure Django in this process (bench settings, a database of its own).

    Idempotent.  In-process benchmarks share this one database.  The process's
    own ``DJANGO_*``/``CHATAUTH_*`` variables are replaced by the bench's.
    """
    import django
    from django.apps import apps

    if apps.ready:
        return
    env = workspace().env(DATABASE_URL=workspace().database("inprocess"))
    for key in ("DJANGO_", "CHATAUTH_", "DATABASE_URL", "REDIS_URL", "BENCH_"):
        for name in [k for k in os.environ if k.startswith(key)]:
            del os.environ[name]
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})
    django.setup()


def login(server: Server, username: str = USERS[0]) -> dict:
    """Log in over HTTP, the real path; return the token pair."""
    response = httpx.post(
        f"{server.url}/auth/login",
        json={"username": username, "password": PASSWORD},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


REDIS = ("127.0.0.1", 6379)


def redis_up() -> bool:
    """Whether the Redis the Redis-backed benchmarks use is reachable."""
    try:
        with socket.create_connection(REDIS, timeout=0.5):
            return True
    except OSError:
        return False
