"""The one login flow, the one refresh and the one logout flow.

Every entry point runs these: ``auth/login`` and ``auth/header`` log in through
:func:`complete_login` (a token pair), the OAuth callback through
:func:`web_login` (a Django session); ``POST auth/logout`` and the chat
socket's ``{"type": "logout"}`` log out through :func:`logout` (Django's own
``logout()`` reaches the same end through :mod:`chatauth.lifecycle`); the admin
and ``chatauth_revoke`` log users out everywhere through :func:`logout_everywhere`.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.signals import (
    user_logged_in,
    user_logged_out,
    user_login_failed,
)
from django.db import transaction
from django.http import HttpRequest

from chatauth import hooks, revocation, signals, throttling, websessions
from chatauth.adapter import get_adapter
from chatauth.backends import RESERVED
from chatauth.constants import Method, TokenType
from chatauth.credentials import VerifiedToken, verify_signed
from chatauth.exceptions import (
    HookError,
    InvalidCredentials,
    InvalidToken,
    Throttled,
    TokenError,
    TokenRevoked,
)
from chatauth.internal.calls import call
from chatauth.internal.http import client_ip
from chatauth.models import RevokedToken
from chatauth.tokens import TokenPair, issue_pair

logger = logging.getLogger("chatauth.flows")


# --- Login ---------------------------------------------------------------------------


def login_failed(
    request: HttpRequest | None, username: str, method: str, reason: str
) -> None:
    """Announce (and so audit) a refused login that ``authenticate()`` did not."""
    user_login_failed.send(
        sender=__name__,
        credentials={"username": username},
        request=request,
        method=method,
        reason=reason,
    )


async def password_login(request: HttpRequest, username: str, password: str) -> Any:
    """Check a username and password: the ``password_auth_callback``, else
    ``authenticate()``.  Returns the user; raises :class:`Throttled` or
    :class:`InvalidCredentials` (one answer for unknown user, wrong password,
    inactive user and a failing callback).

    The attempt is counted here, before any check, whatever the project's
    backends; ``chatauth.backends`` then does not count it again.
    """
    # Off the event loop: the cache may be Redis (round trips) or files.
    reservation = await sync_to_async(throttling.reserve, thread_sensitive=False)(
        username, client_ip(request)
    )
    if not reservation.allowed:
        await sync_to_async(login_failed)(
            request, username, Method.PASSWORD, "throttled"
        )
        raise Throttled(wait=reservation.retry_after)
    setattr(request, RESERVED, reservation)
    adapter = get_adapter()
    try:
        user = await adapter.authenticate_password(request, username, password)
    except HookError:
        user, reason = None, "hook_failed"
    else:
        reason = "invalid_credentials"
    if user is not None and not adapter.can_authenticate(user):
        user, reason = None, "user_inactive"
    if user is None:
        # Django's authenticate() has sent user_login_failed already.
        if hooks.get_hook("password_auth_callback") or reason != (
            "invalid_credentials"
        ):
            await sync_to_async(login_failed)(
                request, username, Method.PASSWORD, reason
            )
        raise InvalidCredentials()
    await sync_to_async(throttling.release, thread_sensitive=False)(reservation)
    return user


@transaction.atomic  # last_login and the audit row: one commit, not two
def complete_login(request: HttpRequest | None, user: Any, method: str) -> TokenPair:
    """Mint the pair of a user who just proved who they are (a new login: its
    own refresh family), and announce it."""
    pair = issue_pair(user)
    user_logged_in.send(
        sender=user.__class__,
        request=request,
        user=user,
        method=method,
        token_id=pair.access["jti"],
    )
    return pair


async def web_login(request: HttpRequest, user: Any, method: str) -> None:
    """Log ``user`` into ``request``'s Django session (the OAuth callback):
    Django's ``login()`` (a new session key against fixation, the CSRF token
    rotated, ``user_logged_in`` sent and audited with ``method``), through the
    first configured backend, which loads the user back by pk."""
    from django.conf import settings as django_settings
    from django.contrib.auth import alogin

    # (read by the login signal's audit receiver; not an HttpRequest attribute)
    request.chatauth_method = method  # type: ignore[attr-defined]
    await alogin(request, user, backend=django_settings.AUTHENTICATION_BACKENDS[0])


# --- Refresh -------------------------------------------------------------------------


def refresh(request: HttpRequest | None, raw: str) -> TokenPair:
    """Rotate refresh token ``raw``: a new pair of the same login; the old token
    is denied from then on.  Raises :class:`InvalidToken`.

    Presenting a rotated-out refresh token again means two parties hold it:
    the whole login (its family) is revoked, the attacker's chain with it, and
    the reuse is audited (RFC 9700 §4.14.2).
    """
    try:
        old = verify_signed(raw, {TokenType.REFRESH})
        revocation.check(old)
    except TokenRevoked as e:
        if RevokedToken.objects.filter(key=old.key, reason="rotated").exists():
            _reused(request, old)
        raise InvalidToken(e.detail, code=e.code) from e
    except TokenError as e:
        raise InvalidToken(e.detail, code=e.code) from e
    # Rotation: the first request to deny the old token wins; a concurrent
    # second use finds it denied: a reuse like any other.
    if not revocation.revoke_token(old, reason="rotated"):
        _reused(request, old)
        raise InvalidToken(code="token_revoked")
    user = get_user_model()._default_manager.filter(pk=old.user_pk).first()
    if user is None or not get_adapter().can_authenticate(user):
        raise InvalidToken(code="user_inactive")
    pair = issue_pair(user, family=old.family)
    signals.token_refreshed.send(
        sender=refresh,
        user=user,
        old_jti=old.key,
        new_jti=pair.refresh["jti"],
        request=request,
    )
    return pair


def _reused(request: HttpRequest | None, old: VerifiedToken) -> None:
    revocation.revoke_family(old, reason="refresh_reused")
    signals.refresh_token_reused.send(
        sender=refresh,
        user_pk=old.user_pk,
        jti=old.key,
        identifier=old.identifier,
        request=request,
    )


# --- Logout --------------------------------------------------------------------------


def logout(
    request: HttpRequest | None,
    user: Any,
    *,
    credential: VerifiedToken | None = None,
    refresh_token: str | None = None,
    everywhere: bool = False,
    method: str,
    response: Any = None,
    scope: dict[str, Any] | None = None,
) -> None:
    """Log ``user`` out: what ``POST auth/logout`` and the chat socket's
    ``{"type": "logout"}`` both do.

    * ``credential`` (the token or Django session the caller used) ends, with
      the login it belongs to (its refresh family); so does ``refresh_token``
      if it is the same user's;
    * the request's own Django session ends (flushed; its copilot tokens and
      sockets with it);
    * ``everywhere``: every token and web session of the user, everywhere;
    * the ``on_logout`` hooks run with ``(request, response)`` (both None on a
      socket); then ``user_logged_out`` is sent (and audited).

    Every live socket holding an ended credential closes with 4410, on every
    worker.
    """
    if credential is not None:
        _end_credential(credential)
    if refresh_token:
        _end_refresh(refresh_token, user)
    session = getattr(request, "session", None)
    if session is not None and session.get(SESSION_KEY) is not None:
        websessions.end(
            session.session_key,
            reason="logout",
            user_pk=user.pk,
            expires_at=session.get_expiry_date().timestamp(),
        )
    if session is not None:
        # What django.contrib.auth.logout() does, minus its user_logged_out
        # signal: the one sent below carries the method and token id.
        session.flush()
        # (request is not None here: a session to flush came from it)
        request.user = AnonymousUser()  # type: ignore[union-attr]
    if everywhere:
        revocation.revoke_user(user, reason="logout_everywhere")
    for hook in hooks.get_hooks("on_logout"):
        try:
            call(hook, request, response)
        except Exception:
            logger.exception("on_logout hook %s raised", hook.__qualname__)
    user_logged_out.send(
        sender=type(user),
        request=request,
        user=user,
        method=method,
        everywhere=everywhere,
        token_id=credential.key if credential is not None else "",
        scope=scope,
        chatauth=True,
    )


def _end_credential(credential: VerifiedToken) -> None:
    if credential.token_type == TokenType.SESSION:
        session_key = credential.extra["session_key"]
        websessions.end(  # first: its deletion below is then nothing new
            session_key,
            reason="logout",
            user_pk=credential.user_pk,
            expires_at=credential.expires_at,
        )
        websessions.store(session_key).delete()
        return
    revocation.revoke_token(credential, reason="logout")
    revocation.revoke_family(credential, reason="logout")


def _end_refresh(raw: str, user: Any) -> None:
    try:
        refresh_token = verify_signed(raw, {TokenType.REFRESH})
    except TokenError:
        return  # unusable anyway: nothing to revoke
    if str(refresh_token.user_pk) == str(user.pk):
        revocation.revoke_token(refresh_token, reason="logout")
        revocation.revoke_family(refresh_token, reason="logout")


def logout_everywhere(user: Any, *, reason: str = "logout_everywhere") -> None:
    """Every token and web session of ``user`` refused from now on, every live
    socket closed, on every worker (the admin action, ``chatauth_revoke``)."""
    revocation.revoke_user(user, reason=reason)
