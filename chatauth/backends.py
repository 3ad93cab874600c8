"""Authentication backends that throttle every password check.

``authenticate()`` is the one door every password login in Django goes through:
the admin's login form, ``LoginView``, DRF's ``BasicAuthentication``, any
project code, and ``auth/login`` without a password callback.  Throttling it in
the backend throttles them all::

    AUTHENTICATION_BACKENDS = ["chatauth.backends.ThrottledModelBackend"]

(Django's ``ModelBackend``, throttled.)  Any other backend that checks a
password gets the same with :class:`ThrottleMixin`::

    class ThrottledLDAPBackend(ThrottleMixin, LDAPBackend): ...

``manage.py check`` reports a backend that takes a password unthrottled
(``chatauth.E006``).

A refused attempt raises :class:`~chatauth.throttling.LoginThrottled`, a
``PermissionDenied``: ``authenticate()`` stops there, sends
``user_login_failed`` (audited with reason ``throttled``) and returns None, so a
form shows its own invalid-login error; :class:`chatauth.middleware.
SessionRevocationMiddleware` turns such a page into a ``429`` with
``Retry-After``.  No password is checked while the limit holds, not even the
right one.
"""

from __future__ import annotations

import inspect
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from chatauth import throttling
from chatauth.exceptions import ServiceUnavailable
from chatauth.internal.http import client_ip

#: Set on the request by ``auth/login``, which reserved the attempt itself.
RESERVED = "_chatauth_reservation"
#: Set on a request whose attempt was refused: the Retry-After, in seconds.
RETRY_AFTER = "_chatauth_retry_after"
#: Set on a request whose attempt could not be counted (the cache is down).
UNAVAILABLE = "_chatauth_unavailable"


class ThrottleMixin:
    """Throttle a backend's password checks per client address and username
    (see :mod:`chatauth.throttling`).  Put it first among the bases."""

    def authenticate(self, request: HttpRequest | None, **credentials: Any) -> Any:
        # A mixin: the next backend in the MRO has authenticate(), object not.
        check = super().authenticate  # type: ignore[misc]
        try:
            # What authenticate() does with each backend: one that cannot take
            # these credentials is skipped (this method's own signature takes
            # anything, so it must ask the backend's).
            inspect.signature(check).bind(request, **credentials)
        except TypeError:
            return None
        password = credentials.get("password")
        if password is None or getattr(request, RESERVED, None) is not None:
            # No password to guess, or auth/login counted this attempt already.
            return check(request, **credentials)
        throttling.refuse(None)  # a refusal noted by an earlier call is not this
        try:
            reservation = throttling.reserve(_name(credentials), client_ip(request))
        except ServiceUnavailable as e:
            # Throttling cannot count: no password is checked (fail closed),
            # and a form answers 503, not a 500.
            if request is not None:
                setattr(request, UNAVAILABLE, True)
            raise PermissionDenied("Login is unavailable.") from e
        if not reservation.allowed:
            throttling.refuse(reservation.retry_after)
            if request is not None:
                setattr(request, RETRY_AFTER, reservation.retry_after)
            raise throttling.LoginThrottled(reservation.retry_after)
        user = check(request, **credentials)
        if user is not None:
            throttling.release(reservation)
        return user

    async def aauthenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        # ``aauthenticate()`` calls this, not ``authenticate``: without it an
        # async login (Django's own ``ModelBackend.aauthenticate``) would skip
        # the throttle.  The sync check runs in a thread (bcrypt, cache).
        return await sync_to_async(self.authenticate)(request, **kwargs)


def _name(credentials: dict[str, Any]) -> str:
    """The name an attempt is counted under: the username, however the caller
    passed it (``username``, the user model's ``USERNAME_FIELD``, ``email``)."""
    for key in ("username", get_user_model().USERNAME_FIELD, "email"):
        value = credentials.get(key)
        if value:
            return str(value)
    return ""


# ThrottleMixin takes the credentials as keywords only, as Django's
# authenticate() passes them; ModelBackend's signature names username and
# password, which may also be passed by position: mypy calls them incompatible.
class ThrottledModelBackend(ThrottleMixin, ModelBackend):  # type: ignore[misc]
    """Django's ``ModelBackend``, every password check throttled."""
