"""Copilot tokens minted for a browser session, and their end with that session.

A host page embeds the widget with a copilot token minted for ``request.user``
(the ``{% copilot_widget %}`` tag, or ``POST auth/copilot/token`` with the session
cookie).  Such a token is a credential *derived from the session*: when the user
signs out of the site, every token minted for that session must stop working and
every chat opened with one must close, or a tab left open (or a copied token)
would outlive the sign-out.  So each one is remembered in the session (its
``jti`` and expiry), and :func:`revoke_session_tokens` denies them all on sign-out
through Django's ``user_logged_out`` signal, which ``django.contrib.auth.logout()``
sends *before* it flushes the session.  Revoking a token tells its live sockets
(``revocation.revoke_token`` notifies the token's channel-layer group), so the
widget in another tab shows the signed-out state at once.

The tag reuses the session's current token while it is valid, belongs to the
same user with the same claims, and has more than half of its lifetime left:
a page view does not mint (and audit, and store) a new token each time, and the
number of live tokens per session stays small.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver
from django.http import HttpRequest

from chatauth import revocation, signals
from chatauth.adapter import get_adapter
from chatauth.conf import settings
from chatauth.constants import Method, TokenType
from chatauth.exceptions import TokenError
from chatauth.tokens import (
    CopilotToken,
    VerifiedToken,
    issue_copilot_token,
    verify_token,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

#: Session key: ``{"current": raw token, "live": [[jti, exp, user_pk], ...]}``.
SESSION_KEY = "_chatauth_copilot"
#: At most this many unexpired tokens are remembered per session; minting one
#: more revokes the oldest, so none escapes the revocation at sign-out.
MAX_SESSION_TOKENS = 20


def _state(request: HttpRequest) -> dict[str, Any]:
    state = request.session.get(SESSION_KEY)
    if not isinstance(state, dict):
        return {"current": None, "live": []}
    live = [e for e in state.get("live", []) if isinstance(e, list) and len(e) == 3]
    return {"current": state.get("current"), "live": live}


def _as_verified(entry: list[Any]) -> VerifiedToken:
    jti, exp, user_pk = entry
    return VerifiedToken(
        claims={},
        token_type=TokenType.COPILOT,
        key=jti,
        user_pk=user_pk,
        issued_at=0.0,
        expires_at=float(exp),
    )


def _reusable(raw: Any, user: AbstractBaseUser) -> bool:
    if not isinstance(raw, str):
        return False
    try:
        verified = verify_token(raw, expected={TokenType.COPILOT})
    except TokenError:
        return False
    half_life = settings.COPILOT_TOKEN_LIFETIME.total_seconds() / 2
    return (
        str(verified.user_pk) == str(user.pk)
        and verified.expires_at - time.time() > half_life
        and verified.user_dict() == get_adapter().user_claims(user)
    )


def remember(request: HttpRequest, token: CopilotToken, user: AbstractBaseUser) -> None:
    """Tie ``token`` (just minted for ``user``) to ``request``'s session: it becomes
    the session's current token and is revoked when the session signs out."""
    if not hasattr(request, "session"):
        return  # no session to end it: it lives to its expiry like any other
    state = _state(request)
    now = time.time()
    live = [e for e in state["live"] if float(e[1]) > now]
    live.append([token["jti"], token["exp"], str(user.pk)])
    while len(live) > MAX_SESSION_TOKENS:
        revocation.revoke_token(_as_verified(live.pop(0)), reason="superseded")
    request.session[SESSION_KEY] = {"current": str(token), "live": live}


def mint_for_session(request: HttpRequest, user: AbstractBaseUser) -> str:
    """Mint a copilot token for the session's ``user`` and :func:`remember` it."""
    token = issue_copilot_token(user)
    signals.token_issued.send(
        sender=mint_for_session,
        user=user,
        token_type=TokenType.COPILOT,
        jti=token["jti"],
        method=Method.SESSION,
        request=request,
    )
    remember(request, token, user)
    return str(token)


def token_for_request(request: HttpRequest) -> str | None:
    """A copilot token for ``request.user`` (None for an anonymous visitor).

    Reuses the session's current token when it is still good for more than half
    its lifetime and carries the user's current claims; mints one otherwise.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    if not get_adapter().can_authenticate(user):
        return None
    if not session_is_current(request):
        return None
    if hasattr(request, "session"):
        current = _state(request)["current"]
        if _reusable(current, user):
            return current
    return mint_for_session(request, user)


def session_is_current(request: HttpRequest) -> bool:
    """False when ``request``'s Django session predates a logout-everywhere of
    its user: the session is then ended here (flushed), as if logged out."""
    session = getattr(request, "session", None)
    user = getattr(request, "user", None)
    if session is None or user is None or not user.is_authenticated:
        return True
    try:
        revocation.check_session(user.pk, session)
    except TokenError:
        session.flush()
        request.user = AnonymousUser()
        return False
    return True


def revoke_session_tokens(request: HttpRequest, *, reason: str = "logout") -> int:
    """Revoke every copilot token minted for ``request``'s session; close their
    chats.  Returns how many were still live."""
    session = getattr(request, "session", None)
    if session is None:
        return 0
    state = _state(request)
    now = time.time()
    count = 0
    for entry in state["live"]:
        if float(entry[1]) > now:
            revocation.revoke_token(_as_verified(entry), reason=reason)
            count += 1
    session.pop(SESSION_KEY, None)
    return count


@receiver(user_logged_out)
def _signed_out(sender: Any, request: HttpRequest | None, **kwargs: Any) -> None:
    if request is not None:
        revoke_session_tokens(request)
