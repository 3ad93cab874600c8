"""Where the benchmarks run: a scratch directory, migrated SQLite files, real
uvicorn processes on free loopback ports, and Django set up in this process.

One :class:`Workspace` per run.  It migrates one template database (with the
bench users in it, their passwords hashed at the demo's real bcrypt cost) and
hands each benchmark its own copy, so no benchmark sees another's rows; or a
fresh PostgreSQL database of its own (:meth:`Workspace.postgres`), dropped
after.  :class:`Actor` is another process of the deployment on the same
database (``bench.site.actor``), driven from a benchmark's event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.servers import ROOT, Server, manage, migrate, server_env
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
    def postgres(self, name: str) -> Iterator[str]:
        """A fresh PostgreSQL database on the local server, migrated, with the
        bench users in it; its ``DATABASE_URL``.  Dropped on exit (stop the
        servers using it first)."""
        import psycopg

        database = f"chatauth_bench_{self.prefix.rsplit('-', 1)[-1]}_{name}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        try:
            url = f"postgres://root@{PG[0]}:{PG[1]}/{database}"
            env = self.env(DATABASE_URL=url)
            migrate(env)
            manage(
                env, "shell", "-c", _CREATE_USERS.format(password=PASSWORD, users=USERS)
            )
            yield url
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

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
    """Configure Django in this process (bench settings, a database of its own,
    Django's local-memory cache).

    Idempotent.  In-process benchmarks share this one database and cache.  The
    process's own ``DJANGO_*``/``CHATAUTH_*`` variables are replaced by the
    bench's.  (The demo's cache without ``REDIS_URL`` is file-based; the
    in-process figures are the token check's own cost, so they read the cache
    from memory: ``BENCH_CACHE=locmem``.)
    """
    import django
    from django.apps import apps

    if apps.ready:
        return
    env = workspace().env(
        DATABASE_URL=workspace().database("inprocess"), BENCH_CACHE="locmem"
    )
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
PG = ("127.0.0.1", 5432)
PG_ADMIN = f"postgresql://root@{PG[0]}:{PG[1]}/postgres"


def _reachable(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False


def redis_up() -> bool:
    """Whether the Redis the Redis-backed benchmarks use is reachable."""
    return _reachable(REDIS)


def postgres_up() -> bool:
    """Whether the PostgreSQL server of :meth:`Workspace.postgres` is reachable."""
    return _reachable(PG)


class ActorError(Exception):
    """The actor process refused or failed a request (its message says why)."""


class Actor:
    """``python -m bench.site.actor`` in a bench environment: another process
    of the deployment, on the same database (and Redis), that mints credentials
    and ends them through the ORM on request.  Requests go one JSON line each
    on its stdin and are answered in order; several tasks may wait at once.

    Use ``async with Actor(env, log_dir) as actor:`` inside the event loop that
    calls it; ``await actor.call("password", username=...)`` returns the answer
    (for the ending ops ``started``/``done``: ``perf_counter()`` in the actor,
    the same clock as this process's on Linux).
    """

    #: Longest answer line (the tokens of thousands of sessions at once).
    LINE_LIMIT = 64 * 1024 * 1024

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log = log_dir / f"actor-{uuid.uuid4().hex[:6]}.log"
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        #: A request that timed out may still run later, when it would end a
        #: credential of a later sample: from then on every call fails.
        self.stuck = ""

    async def __aenter__(self) -> Actor:
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.site.actor",
                cwd=ROOT,
                env=self.env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=self.LINE_LIMIT,
            )
        self._reader = asyncio.ensure_future(self._read())
        try:
            await self.call("ping", timeout=60)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        try:
            while line := await self.process.stdout.readline():
                answer = json.loads(line)
                future = self._pending.pop(answer["id"], None)
                if future is not None and not future.done():
                    future.set_result(answer)
        finally:
            gone = ActorError(f"the actor exited: {self.output()[-500:]}")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(gone)
            self._pending.clear()

    async def call(self, op: str, *, timeout: float = 30, **args: Any) -> dict:
        """Send one request; its answer (raises :class:`ActorError` if not ok)."""
        assert self.process is not None and self.process.stdin is not None
        if self._reader is None or self._reader.done():
            raise ActorError(f"the actor exited: {self.output()[-500:]}")
        if self.stuck:
            raise ActorError(f"an earlier request timed out ({self.stuck})")
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        line = json.dumps({"id": request_id, "op": op, **args}) + "\n"
        self.process.stdin.write(line.encode())
        await self.process.stdin.drain()
        try:
            async with asyncio.timeout(timeout):
                answer = await future
        except TimeoutError:
            self.stuck = f"{op} after {timeout:g} s"
            raise ActorError(f"{op}: no answer in {timeout:g} s") from None
        if not answer["ok"]:
            raise ActorError(f"{op}: {answer['error']}")
        return answer

    async def aclose(self) -> None:
        process = self.process
        if process is None:
            return
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
