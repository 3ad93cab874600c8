"""The logins a browser has in progress: ``state`` and what goes with it (the
PKCE verifier, the nonce, where to go next), kept in a signed cookie of that
browser, single use, bound to one provider, expiring after
``OAUTH_STATE_LIFETIME``.  An anonymous start writes nothing on the server.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.core import signing
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from chatauth.conf import settings
from chatauth.internal.cache import get_cache
from chatauth.oauth.errors import Refusal
from chatauth.oauth.providers import Provider

logger = logging.getLogger("chatauth.oauth")

#: The cookie of the logins in progress, one per provider (its path is the
#: provider's routes): ``{state: {...}}``, signed.  Like authlib's own
#: Starlette integration (a signed session cookie) it holds the PKCE verifier
#: and nonce, which only matter to whoever also holds the code; it is HttpOnly,
#: SameSite=Lax (the provider's redirect is a top-level GET) and Secure as
#: Django's session cookie is.  No server-side row per anonymous start.
STATE_COOKIE = "chatauth_oauth"
_STATE_SALT = "chatauth.oauth.state"
#: Logins a browser may have in progress at once (tabs); older ones are dropped.
MAX_PENDING = 5


def add_pending(
    pending: dict[str, Any], state: str, flow: dict[str, Any]
) -> dict[str, Any]:
    """``pending`` with the login ``state`` added (``flow``, and when it
    expires); expired logins dropped, and past :data:`MAX_PENDING` the oldest."""
    now = time.time()
    # Oldest first; expired ones go, and past MAX_PENDING the oldest too.
    pending = {
        s: f
        for s, f in sorted(pending.items(), key=lambda i: i[1].get("expires", 0))
        if f.get("expires", 0) > now
    }
    while len(pending) >= MAX_PENDING:
        pending.pop(next(iter(pending)))
    pending[state] = {
        **flow,
        "expires": now + settings.OAUTH_STATE_LIFETIME.total_seconds(),
    }
    return pending


async def take_state(
    request: HttpRequest, provider: Provider, pending: dict[str, Any]
) -> dict[str, Any]:
    """The login in progress that ``request``'s ``state`` names, taken out of
    ``pending``; :class:`Refusal` (``invalid_state``) unless it may go on."""
    state = request.GET.get("state")
    flow: dict[str, Any] | None = (
        pending.pop(state, None) if isinstance(state, str) else None
    )
    # CSRF on the redirect endpoint (RFC 6749 §10.12): the state must be one
    # this browser started, for this provider (mix-up, RFC 9207), unexpired,
    # and never used before (single use, whatever cookie is replayed).
    if (
        flow is None
        or state is None  # (never, with a flow)
        or flow.get("provider") != provider.id
        or flow.get("expires", 0) <= time.time()
        or not await first_use(state)
    ):
        raise Refusal("invalid_state")
    return flow


def read_pending(request: HttpRequest) -> dict[str, Any]:
    """The logins this browser has in progress with one provider (the cookie's
    path selects the provider); {} for a missing, forged or expired cookie."""
    raw = request.COOKIES.get(STATE_COOKIE)
    if not raw:
        return {}
    try:
        pending = signing.loads(
            raw,
            salt=_STATE_SALT,
            max_age=settings.OAUTH_STATE_LIFETIME.total_seconds(),
        )
    except signing.BadSignature:
        return {}
    if not isinstance(pending, dict):
        return {}
    return {s: f for s, f in pending.items() if isinstance(f, dict)}


def write_pending(
    response: HttpResponseRedirect, provider: Provider, pending: dict[str, Any]
) -> None:
    path = reverse("chatauth:oauth-start", kwargs={"provider": provider.id})
    if not pending:
        response.delete_cookie(STATE_COOKIE, path=path)
        return
    response.set_cookie(
        STATE_COOKIE,
        signing.dumps(pending, salt=_STATE_SALT, compress=True),
        max_age=int(settings.OAUTH_STATE_LIFETIME.total_seconds()),
        path=path,  # the provider's start and callback routes only
        secure=django_settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )


async def first_use(state: str) -> bool:
    """Record that ``state`` was used; False if it had been (a replayed cookie)."""
    digest = hashlib.sha256(state.encode()).hexdigest()
    key = f"{settings.CACHE_PREFIX}:oauth-used:{digest}"
    lifetime = int(settings.OAUTH_STATE_LIFETIME.total_seconds()) + 1
    try:
        return bool(await sync_to_async(get_cache().add)(key, 1, lifetime))
    except Exception:  # no cache: the cookie's own single use stands
        logger.warning("cache unavailable; an OAuth state's single use not recorded")
        return True
