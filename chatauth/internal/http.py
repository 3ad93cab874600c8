"""Request helpers: client address, user agent, cookies."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

MAX_USER_AGENT = 512


def client_ip(request: HttpRequest | None) -> str | None:
    """The peer address of ``request``.

    ``X-Forwarded-For`` is deliberately ignored here: it is set by whoever sends
    the request, so trusting it would let anyone pick the address that throttling
    and the audit log see.  Behind a proxy, let the server set ``REMOTE_ADDR``
    from the proxy's header (uvicorn ``--forwarded-allow-ips=<proxy>``) -- except
    for header login, which must see the proxy itself (see the README).
    """
    if request is None:
        return None
    ip = request.META.get("REMOTE_ADDR") or None
    # Not an address (a Unix-socket peer, a proxy's "unknown"): None, else the
    # audit row's GenericIPAddressField raises ValueError on PostgreSQL (a 500).
    return ip if ip and _is_ip(ip) else None


def _is_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


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
    ip = client[0] if client and isinstance(client[0], str) else None
    return (ip if ip and _is_ip(ip) else None), ua


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
