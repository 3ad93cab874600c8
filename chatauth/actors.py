"""Who acts: the actor an audit row names when someone other than the user may
have caused it (see :mod:`chatauth.audit`).

The request's authenticated user (set by
:class:`chatauth.middleware.SessionRevocationMiddleware` for every request), an
API key, an identity provider (:func:`acting_as`), else this process's
management command (``command:<name>``), else ``system``.  The names here stay
importable from :mod:`chatauth.audit`.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from django.contrib.auth import get_user_model

logger = logging.getLogger("chatauth.audit")
#: The length of ``AuditEvent.actor``.
MAX_ACTOR = 150


def identifier_of(user: Any) -> str:
    """The user's ``USERNAME_FIELD`` value, as an audit row holds it."""
    if user is None:
        return ""
    return str(getattr(user, get_user_model().USERNAME_FIELD, "") or "")[:255]


#: Who acts: a name, or a callable that tells it when a row is written.
Actor = str | Callable[[], str]

_actor: ContextVar[Actor | None] = ContextVar("chatauth_actor", default=None)


def actor_of(user: Any) -> str:
    """``user:<identifier>`` for an authenticated user, else ``""``."""
    if user is None or not getattr(user, "is_authenticated", False):
        return ""
    identifier = getattr(user, "identifier", None) or identifier_of(user)
    return f"user:{identifier}"[:MAX_ACTOR]


def set_actor(actor: Actor) -> Token[Actor | None]:
    """Name who acts in this context (a string, or a callable read only when a
    row is written); returns a token for :func:`reset_actor`."""
    return _actor.set(actor)


def reset_actor(token: Token[Actor | None]) -> None:
    _actor.reset(token)


@contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Everything audited inside the block names ``actor``."""
    token = set_actor(actor)
    try:
        yield
    finally:
        reset_actor(token)


def current_actor() -> str:
    """Who acts now: what :func:`acting_as` said, else this process's command
    (``command:changepassword``, ``command:shell``), else ``system``."""
    actor = _actor.get()
    if actor is None:
        return _process_actor()
    if callable(actor):
        try:
            actor = actor()
        except Exception:  # a lazy request user that cannot load any more
            logger.warning("could not tell who acts", exc_info=True)
            return ""
    return str(actor)[:MAX_ACTOR]


@functools.cache
def _process_actor() -> str:
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    servers = {"runserver", "runworker"}  # their requests name their own actors
    if (
        program in ("manage.py", "django-admin", "django-admin.py")
        and len(sys.argv) > 1
        and sys.argv[1] not in servers
    ):
        return f"command:{sys.argv[1]}"[:MAX_ACTOR]
    return "system"
