"""Another process of the deployment, for the ``lifecycle``, ``ws_logout`` and
``soak`` benchmarks: it mints credentials and ends them through the ORM, as a
``manage.py shell``, a management command or an admin worker would, and says
when.

``python -m bench.site.actor`` in a bench server's environment (same
``DATABASE_URL``, ``REDIS_URL``, prefix and switches) reads one JSON request a
line on stdin and answers each, in order, with one JSON line on stdout::

    {"id": 7, "op": "password", "username": "lc-w0"}
    {"id": 7, "ok": true, "result": null, "started": 1234.5678, "done": 1234.5891}

``started`` and ``done`` are ``time.perf_counter()`` just before and just after
the write that ends the credential (``save()``, ``delete()``); what only
prepares it (loading the row, hashing the new password) comes before
``started``.  On Linux ``perf_counter`` is ``CLOCK_MONOTONIC``, one clock for
every process of the machine, so the benchmark compares these times with the
moment its socket read the close frame.  It ends when stdin closes.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.site.settings")

clock = time.perf_counter
#: How often ``delete_session`` looks for the row the writer has not written yet.
ROW_POLL = 0.005


def _user(username: str) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model()._default_manager.get(username=username)


def users(prefix: str, count: int) -> int:
    """Users ``<prefix>0`` .. ``<prefix><count - 1>`` (unusable passwords: they
    only ever hold minted tokens); how many were created."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    User = get_user_model()
    names = [f"{prefix}{i}" for i in range(count)]
    existing = set(
        User._default_manager.filter(username__startswith=prefix).values_list(
            "username", flat=True
        )
    )
    unusable = make_password(None)
    created = User._default_manager.bulk_create(
        [User(username=n, password=unusable) for n in names if n not in existing],
        batch_size=500,
    )
    return len(created)


def tokens(usernames: list[str]) -> list[str]:
    """One access token per entry (a new login each: its own refresh family),
    minted as ``auth/login`` mints them."""
    from django.contrib.auth import get_user_model

    from chatauth.tokens import issue_pair

    wanted = set(usernames)
    found = {
        u.username: u
        for u in get_user_model()._default_manager.filter(username__in=list(wanted))
    }
    missing = wanted - set(found)
    if missing:
        raise LookupError(f"no such users: {sorted(missing)[:3]}")
    return [str(issue_pair(found[name]).access) for name in usernames]


def pairs(usernames: list[str]) -> list[dict[str, str]]:
    """As :func:`tokens`, the refresh token too: ``{"access_token",
    "refresh_token"}`` per entry, as ``auth/login`` answers (a new login each,
    without its bcrypt check and without its ``login`` audit row)."""
    from django.contrib.auth import get_user_model

    from chatauth.tokens import issue_pair

    found = {
        u.username: u
        for u in get_user_model()._default_manager.filter(
            username__in=list(set(usernames))
        )
    }
    missing = set(usernames) - set(found)
    if missing:
        raise LookupError(f"no such users: {sorted(missing)[:3]}")
    minted = [issue_pair(found[name]) for name in usernames]
    return [
        {"access_token": str(p.access), "refresh_token": str(p.refresh)} for p in minted
    ]


def copilot(username: str, key_name: str) -> str:
    """A new API key named ``key_name`` and a copilot token it minted for the
    user (what ``POST auth/copilot/token`` with that key returns)."""
    from chatauth.models import APIKey
    from chatauth.tokens import issue_copilot_token

    key, _raw = APIKey.objects.create_key(key_name)
    return str(issue_copilot_token(_user(username), api_key=key))


def password(username: str) -> tuple[float, float, None]:
    """``user.set_password(...); user.save()``: the hash changes."""
    user = _user(username)
    user.set_password(secrets.token_urlsafe(12))  # bcrypt: before ``started``
    started = clock()
    user.save()
    return started, clock(), None


def deactivate(username: str) -> tuple[float, float, None]:
    user = _user(username)
    user.is_active = False
    started = clock()
    user.save()
    return started, clock(), None


def activate(username: str) -> None:
    user = _user(username)
    user.is_active = True
    user.save()


def revoke_key(name: str) -> tuple[float, float, None]:
    """``key.revoked_at = now; key.save()``, as the admin action and
    ``chatauth_apikey revoke`` do."""
    from django.utils import timezone

    from chatauth.models import APIKey

    key = APIKey.objects.get(name=name)
    key.revoked_at = timezone.now()
    started = clock()
    key.save()
    return started, clock(), None


def delete_session(session_id: str, wait: float = 2.0) -> tuple[float, float, int]:
    """Delete the live ``ChatSession`` row of a socket.  The row is written up
    to ``FLUSH_DELAY`` after the socket's ``session`` frame: wait for it first
    (up to ``wait`` seconds; deleting nothing would prove nothing)."""
    from chatauth.models import ChatSession

    rows = ChatSession.objects.filter(pk=session_id)
    deadline = clock() + wait
    while not rows.exists():
        if clock() > deadline:
            raise LookupError(f"chat session {session_id} not written in {wait} s")
        time.sleep(ROW_POLL)
    started = clock()
    deleted, _ = ChatSession.objects.filter(pk=session_id).delete()
    return started, clock(), deleted


OPS: dict[str, Callable[..., Any]] = {
    "ping": lambda: None,
    "users": users,
    "tokens": tokens,
    "pairs": pairs,
    "copilot": copilot,
    "password": password,
    "deactivate": deactivate,
    "activate": activate,
    "revoke_key": revoke_key,
    "delete_session": delete_session,
}
#: Ops that return ``(started, done, result)``.
TIMED = frozenset({"password", "deactivate", "revoke_key", "delete_session"})


def serve(lines: Any, out: Any) -> None:
    for line in lines:
        request = json.loads(line)
        answer: dict[str, Any] = {"id": request.pop("id")}
        op = request.pop("op")
        try:
            result = OPS[op](**request)
            if op in TIMED:
                answer["started"], answer["done"], result = result
            answer.update(ok=True, result=result)
        except Exception as e:  # the benchmark tallies it; this process goes on
            answer.update(ok=False, error=f"{type(e).__name__}: {e}"[:300])
        out.write(json.dumps(answer) + "\n")
        out.flush()


def main() -> None:
    import django

    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not break the protocol
    django.setup()
    serve(sys.stdin, out)


if __name__ == "__main__":
    main()
