"""Django sessions ("web sessions") as chatauth credentials.

A signed-in page's session is a credential of its own for chatauth: it mints
copilot tokens for the widget (:mod:`chatauth.copilot`) and opens chat sockets
with its cookie.  It holds while Django says so (the session exists, its user
loads, its session hash matches the password) *and* chatauth does: it logged
in after the user's last logout everywhere or deactivation
(``UserState.sessions_not_before``), and it was not ended.

Each session has a denylist key, :func:`chatauth.tokens.session_key_id` of its
session key: ending it (:func:`end`) refuses the copilot tokens minted for it
and closes the sockets opened with its cookie, on every worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from importlib import import_module
from types import SimpleNamespace
from typing import Any

from django.conf import settings as django_settings
from django.contrib.auth import SESSION_KEY, get_user, get_user_model
from django.contrib.auth.signals import user_logged_in
from django.contrib.sessions.backends.base import SessionBase
from django.core.exceptions import ValidationError
from django.dispatch import receiver
from django.utils import timezone

from chatauth import denylist, revocation
from chatauth.constants import TokenType
from chatauth.credentials import VerifiedToken, session_key_id
from chatauth.exceptions import TokenError
from chatauth.models import ProviderLogin

logger = logging.getLogger("chatauth.websessions")

#: When the session's user logged in (``time.time()``), set at ``login()``.
SESSION_AUTH_AT = "_chatauth_auth_at"
#: Django's session keys are 32 characters; anything much longer is not one.
MAX_SESSION_KEY = 64
#: What the session of a login through a provider holds about it:
#: ``{"id": <ProviderLogin pk>, "key": <the session key its row names>,
#: "end_session": <the provider's end_session_endpoint, for RP logout>}``.
#: Django keeps a session's data when it changes its key (``cycle_key()``, a
#: password change's ``update_session_auth_hash``): the row follows the key
#: (:func:`follow_key`).
SESSION_LOGIN = "_chatauth_provider_login"


def store(session_key: str | None = None) -> SessionBase:
    """A ``SessionStore`` of the configured engine."""
    engine = import_module(django_settings.SESSION_ENGINE)
    session: SessionBase = engine.SessionStore(session_key)
    return session


def auth_time(session: Any) -> float:
    """When ``session``'s user logged in; 1.0 for a session older than chatauth's
    stamp (so it holds until the user is logged out everywhere)."""
    value = session.get(SESSION_AUTH_AT)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 1.0
    return float(value)


def check(user_pk: Any, session: Any) -> None:
    """Refuse a Django session whose user was logged out everywhere, deactivated
    or deleted since it logged in; raises like :func:`chatauth.revocation.check`.
    Django's own checks (the session hash) are the caller's: ``request.user``
    comes from them."""
    as_credential = VerifiedToken(
        claims={},
        token_type=TokenType.SESSION,
        key="",
        user_pk=user_pk,
        issued_at=auth_time(session),
        expires_at=0.0,
    )
    revocation.check_user(denylist.user_state(user_pk), as_credential)


def end_if_revoked(request: Any) -> bool:
    """End ``request``'s Django session (flush it, the user anonymous) if its
    user was logged out everywhere, deactivated or deleted since it logged in.
    True if it was ended."""
    from django.contrib.auth.models import AnonymousUser

    session = getattr(request, "session", None)
    if session is None:
        return False
    user_pk = session.get(SESSION_KEY)
    if user_pk is None:
        return False
    try:
        check(user_pk, session)
    except TokenError:
        session.flush()
        request.user = AnonymousUser()
        return True
    return False


def identity(session_key: str) -> VerifiedToken:
    """The logged-in user of Django session ``session_key``, as a credential.

    Django's own ``get_user()`` decides who it is (backend, session hash,
    fallbacks), so a password change or ``logout()`` ends it here exactly as
    over HTTP; then chatauth's revocation check (its key, the user's state).
    Raises :class:`TokenError`.
    """
    from chatauth.adapter import get_adapter

    if len(session_key) > MAX_SESSION_KEY:
        raise TokenError(code="not_authenticated")
    session = store(session_key)
    # get_user() reads nothing of the request but its session.
    user = get_user(SimpleNamespace(session=session))  # type: ignore[arg-type]
    adapter = get_adapter()
    if not user.is_authenticated or not adapter.can_authenticate(user):
        raise TokenError(code="not_authenticated")
    claims = adapter.user_claims(user)
    claims["user_id"] = str(user.pk)
    key = session.session_key or session_key
    verified = VerifiedToken(
        claims=claims,
        token_type=TokenType.SESSION,
        key=session_key_id(key),
        user_pk=user.pk,
        issued_at=auth_time(session),
        expires_at=session.get_expiry_date().timestamp(),
        extra={"session_key": key, "user": user},
    )
    return revocation.check(verified)


def still_valid(credentials: Sequence[VerifiedToken]) -> list[bool]:
    """Whether Django still holds each web-session credential (the sweep): the
    session exists, unexpired, for the same user, with a session hash that
    matches the user's password.  chatauth's own part (denylist, user state) is
    :func:`chatauth.revocation.verdicts`.

    Sessions in the database (``db``, ``cached_db`` engines) are read in one
    query, their users in another; other engines are asked one by one.
    """
    if not credentials:
        return []
    keys = [v.extra["session_key"] for v in credentials]
    sessions = load_many(keys)
    User = get_user_model()
    pks = {
        str(data[SESSION_KEY])
        for data in sessions.values()
        if data and data.get(SESSION_KEY) is not None
    }
    try:
        found = User._default_manager.filter(pk__in=list(pks))
        users = {str(u.pk): u for u in found}
    except (ValueError, TypeError, ValidationError):  # a pk of the wrong type
        users = {}
    results = []
    for verified, key in zip(credentials, keys, strict=True):
        data = sessions.get(key)
        user = users.get(str(data.get(SESSION_KEY))) if data else None
        results.append(
            data is not None  # (it is whenever user is not None)
            and user is not None
            and str(user.pk) == str(verified.user_pk)
            and _hash_matches(data, user)
        )
    return results


def load_many(keys: list[str]) -> dict[str, dict[str, Any] | None]:
    """The data of each live session among ``keys`` (None: gone or expired)."""
    session = store()
    model_class = getattr(type(session), "get_model_class", None)
    if model_class is None:
        loaded = {}
        for key in keys:
            other = store(key)
            data = other.load()
            loaded[key] = data if other.session_key == key and data else None
        return loaded
    model = model_class()
    rows = model.objects.filter(session_key__in=keys, expire_date__gt=timezone.now())
    found = {row.session_key: session.decode(row.session_data) for row in rows}
    return {key: found.get(key) for key in keys}


def _hash_matches(data: dict[str, Any], user: Any) -> bool:
    from django.contrib.auth import HASH_SESSION_KEY
    from django.utils.crypto import constant_time_compare

    if not hasattr(user, "get_session_auth_hash"):
        return True
    session_hash = data.get(HASH_SESSION_KEY) or ""
    return any(
        constant_time_compare(session_hash, candidate)
        for candidate in (
            user.get_session_auth_hash(),
            *user.get_session_auth_fallback_hash(),
        )
    )


def end(
    session_key: str,
    *,
    reason: str,
    user_pk: Any = None,
    expires_at: float | None = None,
    forget_login: bool = True,
) -> bool:
    """End what chatauth derived from Django session ``session_key``: its
    copilot tokens are refused and the sockets opened with its cookie close,
    on every worker; so does, with ``forget_login``, the record of the
    provider login that made it (:mod:`chatauth.oauth.rp_logout`).  (Deleting the
    session itself is Django's ``flush()``.)

    Not ``forget_login`` when the key may just have changed (a session row
    deleted: ``cycle_key()`` deletes the old key's row too, and the login goes
    on under the new key; the record follows it,
    :func:`follow_key`).  Records of sessions that
    are really gone are deleted by ``chatauth_prune``.
    """
    if expires_at is None:
        expires_at = time.time() + django_settings.SESSION_COOKIE_AGE
    if forget_login:
        ProviderLogin.objects.filter(session_key=session_key).delete()
    return revocation.revoke_key(
        session_key_id(session_key),
        kind=TokenType.SESSION,
        reason=reason,
        expires_at=expires_at,
        user_pk=user_pk,
    )


def follow_key(request: Any) -> None:
    """Point the record of the provider login behind ``request``'s session at
    the session's current key, if Django changed it (``cycle_key()``: a
    password change keeping its session, a new ``login()`` of the same user):
    the provider's logout must end the session under its new key.  Costs
    nothing unless the key changed (the session's data says which key its row
    names).  :class:`~chatauth.middleware.SessionRevocationMiddleware` calls
    it before and after each view."""
    session = getattr(request, "session", None)
    if session is None:
        return
    record = session.get(SESSION_LOGIN)
    key = session.session_key
    if not isinstance(record, dict) or not key or record.get("key") == key:
        return
    user_pk = session.get(SESSION_KEY)
    if user_pk is None or not isinstance(record.get("id"), int):
        return
    ProviderLogin.objects.filter(pk=record["id"], user_id=user_pk).update(
        session_key=key
    )
    session[SESSION_LOGIN] = {**record, "key": key}


@receiver(user_logged_in)
def _stamp(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    # Only a session that ``login()`` tied to this user (not an API login's
    # request, whose session nobody keeps).
    if session is not None and str(session.get(SESSION_KEY)) == str(user.pk):
        session[SESSION_AUTH_AT] = time.time()
