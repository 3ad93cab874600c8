"""Django (HTTP) middleware: :class:`SessionRevocationMiddleware`.

chatauth's guard on Django's request cycle: web sessions (Django's) whose user
was logged out everywhere or deactivated end before any view sees them.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings as django_settings

from chatauth import audit, websessions


class SessionRevocationMiddleware:
    """chatauth's guard on Django's own request cycle; put it in ``MIDDLEWARE``
    after ``AuthenticationMiddleware`` (``manage.py check``: ``chatauth.E007``).

    * A web session (Django's) logged in before its user's last logout everywhere or
      deactivation is ended (flushed) before any view sees it: the admin, the
      project's pages and chatauth's routes alike refuse it, whichever worker
      or process ended the user's access.
    * A login form whose attempt ``chatauth.backends`` throttled is answered
      ``429`` with ``Retry-After`` (the form shows its own error).
    * A page that embeds a copilot token (the template tags) is sent with
      ``Cache-Control: no-store``: no browser or shared cache keeps the token.
    * Whatever the request changes is audited with its user as actor (a staff
      member deactivating a user in the admin is named on that row).

    Requests without a session cookie (API clients with bearer tokens) cost
    nothing here.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        token = audit.set_actor(lambda: audit.actor_of(getattr(request, "user", None)))
        try:
            has_session = self._has_session(request)
            if has_session:
                self._check(request)
            response = self.get_response(request)
            if has_session:
                websessions.follow_key(request)
        finally:
            audit.reset_actor(token)
        return _finish(request, response)

    async def __acall__(self, request: Any) -> Any:
        token = audit.set_actor(lambda: audit.actor_of(getattr(request, "user", None)))
        try:
            has_session = self._has_session(request)
            if has_session:
                await sync_to_async(self._check)(request)
            response = await self.get_response(request)
            if has_session:
                await sync_to_async(websessions.follow_key)(request)
        finally:
            audit.reset_actor(token)
        return _finish(request, response)

    @staticmethod
    def _has_session(request: Any) -> bool:
        return (
            hasattr(request, "session")
            and django_settings.SESSION_COOKIE_NAME in request.COOKIES
        )

    @staticmethod
    def _check(request: Any) -> None:
        if not websessions.end_if_revoked(request):
            websessions.follow_key(request)


def _finish(request: Any, response: Any) -> Any:
    from django.utils.cache import add_never_cache_headers

    from chatauth.backends import RETRY_AFTER, UNAVAILABLE
    from chatauth.copilot import EMBEDS_TOKEN

    retry_after = getattr(request, RETRY_AFTER, None)
    if response.status_code == 200 and retry_after:
        response.status_code = 429
        response["Retry-After"] = str(retry_after)
    elif response.status_code == 200 and getattr(request, UNAVAILABLE, False):
        response.status_code = 503  # the throttle could not count: try again
        response["Retry-After"] = "30"
    if getattr(request, EMBEDS_TOKEN, False):
        add_never_cache_headers(response)
    return response
