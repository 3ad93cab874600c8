"""Copilot tokens minted for a browser session, and their end with that session.

A host page embeds the widget with a copilot token minted for ``request.user``
(the ``{% copilot_widget %}`` tag, or ``POST auth/copilot/token`` with the session
cookie).  Such a token is a credential *derived from the session*: when the user
signs out of the site, every token minted for that session must stop working and
every chat opened with one must close, or a tab left open (or a copied token)
would outlive the sign-out.  So each one carries the session's key (its
``sid`` claim, see :mod:`chatauth.tokens`), never outlives the session's
expiry, and ends with it: ``logout()``, a flush or a deletion of the session
(:mod:`chatauth.lifecycle`) denies that key, which refuses the tokens and
closes their sockets on every worker.

The tag reuses the session's current token while it is valid, belongs to the
same user and session with the same claims, and has more than half the life
left that a new one would get: a page view does not mint (and audit) a new
token each time.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest

from chatauth import signals, websessions
from chatauth.adapter import get_adapter
from chatauth.conf import settings
from chatauth.constants import Method, TokenType
from chatauth.credentials import SESSION_CLAIM, session_key_id
from chatauth.exceptions import TokenError
from chatauth.tokens import CopilotToken, issue_copilot_token, verify_token

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from chatauth.models import APIKey

#: Session key: the raw token the session's pages currently embed.
SESSION_KEY = "_chatauth_copilot"
#: Set on a request whose page embeds a token: the response must not be cached
#: (:class:`chatauth.middleware.SessionRevocationMiddleware` says so).
EMBEDS_TOKEN = "_chatauth_embeds_token"


def _reusable(raw: Any, request: HttpRequest, user: AbstractBaseUser) -> bool:
    if not isinstance(raw, str):
        return False
    try:
        verified = verify_token(raw, expected={TokenType.COPILOT})
    except TokenError:
        return False
    session = request.session
    now = time.time()
    # What a token minted now would get: the setting, capped by the session.
    fresh = min(
        settings.COPILOT_TOKEN_LIFETIME.total_seconds(),
        session.get_expiry_date().timestamp() - now,
    )
    return (
        str(verified.user_pk) == str(user.pk)
        and verified.claims.get(SESSION_CLAIM)
        == session_key_id(session.session_key or "")
        and verified.expires_at - now > fresh / 2
        and verified.user_dict() == get_adapter().user_claims(user)
    )


def mint(
    request: HttpRequest,
    user: AbstractBaseUser,
    *,
    api_key: APIKey | None = None,
    family: str | None = None,
) -> CopilotToken:
    """Mint (and audit) a copilot token for ``user``: with ``api_key``, tied to
    that key; with ``family``, tied to that login (an access token's); else for
    the request's session, tied to it and made its current token."""
    by_session = api_key is None and family is None
    session = getattr(request, "session", None) if by_session else None
    if session is not None and not session.session_key:
        session.save()  # a key to tie the token to
    token = issue_copilot_token(
        user, web_session=session, api_key=api_key, family=family
    )
    if api_key is not None:
        method = Method.API_KEY
    elif family is not None:
        method = Method.TOKEN
    else:
        method = Method.SESSION
    signals.token_issued.send(
        sender=mint,
        user=user,
        token_type=TokenType.COPILOT,
        jti=token["jti"],
        method=method,
        request=request,
    )
    if session is not None:
        session[SESSION_KEY] = str(token)
    return token


def expires_in(token: CopilotToken) -> int:
    """Seconds ``token`` has left when minted, as the response says it
    (``exp`` is whole seconds, rounded down: the lifetime is a ceiling)."""
    exp: int = token["exp"]
    return max(0, math.ceil(exp - token.current_time.timestamp()))


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
    setattr(request, EMBEDS_TOKEN, True)
    session = getattr(request, "session", None)
    if session is not None:
        current: str | None = session.get(SESSION_KEY)
        if _reusable(current, request, user):
            return current
    return str(mint(request, user))


def session_is_current(request: HttpRequest) -> bool:
    """False when ``request``'s Django session predates a logout-everywhere of
    its user: the session is then ended here (flushed), as if logged out."""
    return not websessions.end_if_revoked(request)
