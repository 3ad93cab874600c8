"""Async views authenticate with ``aauthenticate`` only where it belongs."""

from __future__ import annotations

from chatauth.authentication import APIKeyAuthentication, JWTAuthentication
from chatauth.internal.apiview import _async_authenticate


class CookieJWT(JWTAuthentication):
    """A project's subclass that overrides only the sync method."""

    def authenticate(self, request):
        return None


class CookieJWTBoth(CookieJWT):
    async def aauthenticate(self, request):
        return None


def test_aauthenticate_is_used_with_its_own_authenticate():
    auth = JWTAuthentication()
    assert _async_authenticate(auth) == auth.aauthenticate


def test_a_subclass_overriding_authenticate_only_runs_authenticate():
    assert _async_authenticate(CookieJWT()) is None
    both = CookieJWTBoth()
    assert _async_authenticate(both) == both.aauthenticate


def test_authentication_without_aauthenticate():
    assert _async_authenticate(APIKeyAuthentication()) is None
