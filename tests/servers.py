"""Real server processes for end-to-end tests: uvicorn serving ``project.asgi``.

``start_server(env)`` migrates nothing by itself: call :func:`migrate` first with the
same ``DATABASE_URL`` (a SQLite file or a PostgreSQL database).  Every server listens
on a free loopback port and is killed by ``stop()``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SECRET = "e2e-secret-" + "e" * 40
#: The uvicorn options the README's production command gives (DEPLOYMENT_FLAGS
#: there): bounded headers (h11: 16 KiB per request head), WebSocket frames
#: of at most twice chatauth's MAX_MESSAGE_BYTES with a short queue, and no
#: per-message compression (no decompression bombs).
UVICORN_LIMITS = (
    "--http", "h11", "--h11-max-incomplete-event-size", "16384",
    "--ws-max-size", "131072", "--ws-max-queue", "8",
    "--ws-per-message-deflate", "false",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    """The environment of a demo server: production-like (DEBUG off), loopback only."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "CHATAUTH_", "DATABASE_URL", "REDIS_URL"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="e2e-django-secret-" + "d" * 40,
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        # Plain HTTP on loopback: the production settings' Secure cookies and
        # HTTPS redirect off, as the README's local trial says.
        DJANGO_SECURE_COOKIES="0",
        DJANGO_SSL_REDIRECT="0",
        CHATAUTH_SECRET=SECRET,
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def run_manage(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess:
    """``manage.py *args`` in ``env``; its result whatever the exit status."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        timeout=timeout,
        capture_output=True,
        text=True,
    )


def manage(env: dict[str, str], *args: str, timeout: float = 60) -> str:
    """``manage.py *args`` in ``env``; its output, or CalledProcessError."""
    result = run_manage(env, *args, timeout=timeout)
    result.check_returncode()
    return result.stdout


def migrate(env: dict[str, str]) -> None:
    manage(env, "migrate", "--noinput", "-v0", timeout=120)


def stop_process(process: subprocess.Popen) -> None:
    """Terminate ``process``, killing it if it does not exit within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def create_users(
    env: dict[str, str], *users: tuple[str, str], admin: bool = False
) -> None:
    """Create ``(username, password)`` users in the database of ``env`` (the last
    one a superuser when ``admin``), through the server's own ``manage.py``."""
    lines = ["from django.contrib.auth import get_user_model as m"]
    for i, (username, password) in enumerate(users):
        make = "create_superuser" if admin and i == len(users) - 1 else "create_user"
        lines.append(f"m().objects.{make}({username!r}, password={password!r})")
    manage(env, "shell", "-c", "; ".join(lines))


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    log: Path
    env: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.process)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_server(
    env: dict[str, str],
    tmp_dir: Path,
    *,
    timeout: float = 30,
    port: int | None = None,
    app: str = "project.asgi:application",
    workers: int = 1,
    ready_path: str | None = None,
) -> Server:
    """Start uvicorn serving ``app`` and wait until it accepts (on ``port``, e.g.
    a stopped server's to bring it back, else a free one); with ``ready_path``,
    until that path answers HTTP (with several workers, accepting is not
    serving)."""
    port = port or free_port()
    log = tmp_dir / f"server-{port}-{uuid.uuid4().hex[:6]}.log"
    command = [
        sys.executable, "-m", "uvicorn", app,
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--log-level", "warning",
        *UVICORN_LIMITS,
    ]  # fmt: skip
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    server = Server(port, process, log, env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.output()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
            if ready_path is not None:
                httpx.get(server.url + ready_path, timeout=5)
            return server
        except (OSError, httpx.HTTPError):
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not start in {timeout}s:\n{server.output()}")


def wait_for_http(
    url: str, process: subprocess.Popen, *, timeout: float = 60, log: Path | None = None
) -> None:
    """Return once ``url`` answers HTTP at all (any status); RuntimeError, with
    the tail of ``log``, if ``process`` exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = (
                log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            )
            stop_process(process)
            raise RuntimeError(f"{url} did not come up:\n{tail}")
        time.sleep(0.1)


#: Where the suite builds Chainlit's own virtualenv (its dependencies are not
#: ours): see tests/test_chainlit_compat.py.
CHAINLIT_VENV = Path(
    os.environ.get("CHATAUTH_CHAINLIT_VENV")
    or Path.home() / ".cache" / "chatauth" / "chainlit-venv"
)


def start_chainlit(
    app_dir: Path, app: str, secret: str
) -> tuple[subprocess.Popen, str]:
    """``chainlit run`` of ``app`` (source) in ``app_dir`` on a free loopback
    port, with ``CHAINLIT_AUTH_SECRET`` set to ``secret`` and nothing else of
    this environment (Chainlit reads ``DATABASE_URL``, API keys and more from
    it); the process and its base URL once it answers."""
    (app_dir / "app.py").write_text(app)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(app_dir),  # importing chainlit writes .chainlit/ there
        "LANG": "C.UTF-8",
        "CHAINLIT_AUTH_SECRET": secret,
    }
    command = [str(CHAINLIT_VENV / "bin" / "chainlit"), "run", "app.py", "--headless"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    log = app_dir / "chainlit.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, cwd=app_dir, env=env, stdout=handle, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/auth/config", process, log=log)
    return process, url


PG_ADMIN = "postgresql://root@127.0.0.1:5432/postgres"


@contextmanager
def fresh_postgres(prefix: str) -> Iterator[tuple[str, str]]:
    """A new, empty PostgreSQL database for one suite's servers: its name and
    its ``DATABASE_URL``; dropped afterwards (its connections closed)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, f"postgres://root@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
