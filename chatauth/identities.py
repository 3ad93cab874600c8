"""Who is at the other end of a chat socket: a token, or a Django web session.

``scope["chatauth"]`` of an authenticated socket is a :class:`SocketAuth`, one of
two kinds, told apart by their class (never by a string):

:class:`TokenAuth`
    a token (access, copilot or Chainlit-format) from the handshake or a first
    ``{"type": "auth"}`` frame; the cache can often re-check it with no I/O;
:class:`WebSessionAuth`
    Django's session cookie of a signed-in user (a *web session*); Django's own
    checks of it need the database, and one that stopped holding was ended
    (logged out, flushed, its password changed): 4410, never 4401.

Both carry a :class:`~chatauth.tokens.VerifiedToken` (the claims, the denylist
keys, the expiry) so that every other part of chatauth treats them alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from chatauth import revocation
from chatauth.constants import CloseCode
from chatauth.credentials import VerifiedToken
from chatauth.exceptions import TokenError, close_code
from chatauth.internal.cache import is_local as is_local_cache

#: :meth:`SocketAuth.check_on_loop` could not decide without I/O.
UNDECIDED = object()


class Source:
    """Where a socket's credential came from (``SocketAuth.source``, audit reason)."""

    HEADER = "header"
    SUBPROTOCOL = "subprotocol"
    QUERY = "query"
    COOKIE = "cookie"  # settings.AUTH_COOKIE: an access token
    WEB_SESSION = "session"  # Django's session cookie
    MESSAGE = "message"  # a first {"type": "auth"} frame


@dataclass(frozen=True, slots=True)
class SocketAuth:
    """``scope["chatauth"]`` of an authenticated socket: a :class:`TokenAuth` or
    a :class:`WebSessionAuth`."""

    token: VerifiedToken
    source: str
    subprotocol: str | None = None

    @property
    def claims(self) -> dict[str, Any]:
        return self.token.claims

    def check_on_loop(self) -> int | object | None:
        """The revocation check again, on the event loop, when it needs no I/O:
        None if the credential still holds, the close code if not,
        :data:`UNDECIDED` when it needs :meth:`acheck`."""
        return UNDECIDED

    async def acheck(self) -> None:
        """The revocation check again, wherever it must run; raises
        :class:`~chatauth.exceptions.TokenError` if the credential ended."""
        await sync_to_async(self.check_in_thread, thread_sensitive=False)()

    def check_in_thread(self) -> None:
        """The revocation check again, the database deciding (Django's own
        checks of a web session ran at the handshake; one ended since is on
        the denylist)."""
        try:
            revocation.check(self.token)
        finally:
            close_old_connections()  # a pool thread, not a request thread

    def ended_code(self, error: TokenError) -> int:
        """The close code of a credential that held at connect and no longer
        does."""
        return close_code(error)


@dataclass(frozen=True, slots=True)
class TokenAuth(SocketAuth):
    """A socket opened with a token."""

    def check_on_loop(self) -> int | object | None:
        if not is_local_cache():
            return UNDECIDED
        try:
            revocation.check(self.token, cache_only=True)
        except revocation.NeedsDatabase:
            return UNDECIDED
        except TokenError as e:
            return close_code(e)
        return None

    async def acheck(self) -> None:
        try:
            # Redis read on the loop when the cache can decide (no thread hop).
            await revocation.acheck(self.token)
        except revocation.NeedsDatabase:
            await SocketAuth.acheck(self)


@dataclass(frozen=True, slots=True)
class WebSessionAuth(SocketAuth):
    """A socket opened with Django's session cookie (a web session)."""

    source: str = Source.WEB_SESSION

    def ended_code(self, error: TokenError) -> int:
        # A web session that Django refuses now (logged out, flushed, its
        # password changed) was ended: 4410, as for a revoked token.
        return CloseCode.REVOKED
