"""Request helpers: client address, user agent, cookies."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

MAX_USER_AGENT = 512


def client_ip(request: HttpRequest | None) -> str | None:
    """The peer address of ``request``.

    ``X-Forwarded-For`` is deliberately ignored here: it is set by whoever sends
    the request, so trusting it would let anyone pick the address that throttling
    and the audit log see.  Behind a proxy, have the proxy set ``REMOTE_ADDR``
    (uvicorn ``--proxy-headers --forwarded-allow-ips``).
    """
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def user_agent(request: HttpRequest | None) -> str:
    if request is None:
        return ""
    return str(request.META.get("HTTP_USER_AGENT", ""))[:MAX_USER_AGENT]


def scope_client(scope: dict[str, Any]) -> tuple[str | None, str]:
    """``(ip, user agent)`` of an ASGI scope."""
    client = scope.get("client") or (None, None)
    ua = ""
    for name, value in scope.get("headers", []):
        if name == b"user-agent":
            ua = value.decode("latin-1")[:MAX_USER_AGENT]
            break
    return client[0], ua


def is_trusted_proxy(ip: str | None) -> bool:
    """Whether ``ip`` is inside ``CHATAUTH["TRUSTED_PROXIES"]`` (addresses or CIDRs)."""
    import ipaddress

    from chatauth.conf import settings

    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for entry in settings.TRUSTED_PROXIES:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False
