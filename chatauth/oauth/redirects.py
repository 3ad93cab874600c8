"""Where the browser is sent after an OAuth step: a ``next`` that stays on
this site (or the front end), query strings added, never cached.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

from django.http import HttpRequest, HttpResponseRedirect
from django.utils.http import url_has_allowed_host_and_scheme

from chatauth.conf import settings


def _allowed_hosts(request: HttpRequest) -> set[str]:
    hosts = {request.get_host()}
    frontend = urlsplit(str(settings.FRONTEND_URL))
    if frontend.netloc:
        hosts.add(frontend.netloc)
    return hosts


def safe_next(request: HttpRequest, url: str | None) -> str | None:
    """``url`` if it stays on this site or the configured front end, else None.

    Django's check rejects the tricks (``//evil``, ``/\\evil``, ``https:evil``,
    control characters) an open redirect is built from (CWE-601).
    """
    if not url or len(url) > 2048:
        return None
    if url_has_allowed_host_and_scheme(
        url, allowed_hosts=_allowed_hosts(request), require_https=request.is_secure()
    ):
        return url
    return None


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit(parts._replace(query=query))


def no_store(response: HttpResponseRedirect) -> HttpResponseRedirect:
    response["Cache-Control"] = "no-store"
    return response
