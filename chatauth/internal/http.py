"""Request helpers: client address, user agent, cookies."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest

MAX_USER_AGENT = 512


def peer_ip(request: HttpRequest | None) -> str | None:
    """The address the request came from (``REMOTE_ADDR``): the client, or the
    proxy in front of it.  None for what is not an address (a Unix-socket peer,
    a proxy's ``unknown``): the audit row's ``GenericIPAddressField`` would
    raise on PostgreSQL (a 500)."""
    if request is None:
        return None
    ip = request.META.get("REMOTE_ADDR") or None
    return ip if ip and _is_ip(ip) else None


def client_ip(request: HttpRequest | None) -> str | None:
    """The client's address, as throttling and the audit log count it.

    The peer, unless the peer is one of ``CHATAUTH["TRUSTED_PROXIES"]``: then
    the right-most ``X-Forwarded-For`` address that is not a trusted proxy
    (each proxy appends the address it saw; what a client wrote itself is to
    the left and never read).  So per-address limits keep working behind the
    proxy that header login trusts (its workers see the proxy itself, uvicorn
    ``--no-proxy-headers``).  A forwarded value that is not an address is
    None: the shared bucket of unknown clients, never "no limit".
    """
    peer = peer_ip(request)
    if request is None or not is_trusted_proxy(peer):
        return peer
    return _forwarded_client(request.META.get("HTTP_X_FORWARDED_FOR"), peer)


def _forwarded_client(forwarded: str | None, peer: str | None) -> str | None:
    if not forwarded:
        return peer
    for hop in reversed([h.strip() for h in forwarded.split(",")]):
        if not _is_ip(hop):
            return None
        if not is_trusted_proxy(hop):
            return hop
    return peer  # every hop a trusted proxy: the request started among them


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def user_agent(request: HttpRequest | None) -> str:
    if request is None:
        return ""
    return str(request.META.get("HTTP_USER_AGENT", ""))[:MAX_USER_AGENT]


def scope_client(scope: Mapping[str, Any]) -> tuple[str | None, str]:
    """``(ip, user agent)`` of an ASGI scope; the ip as :func:`client_ip`
    decides it."""
    client = scope.get("client") or (None, None)
    ua = ""
    forwarded: list[bytes] = []
    for name, value in scope.get("headers", []):
        if name == b"user-agent" and not ua:
            ua = value.decode("latin-1")[:MAX_USER_AGENT]
        elif name == b"x-forwarded-for":
            forwarded.append(value)
    ip = client[0] if client and isinstance(client[0], str) else None
    peer = ip if ip and _is_ip(ip) else None
    if is_trusted_proxy(peer):
        peer = _forwarded_client(b", ".join(forwarded).decode("latin-1"), peer)
    return peer, ua


def is_trusted_proxy(ip: str | None) -> bool:
    """Whether ``ip`` is inside ``CHATAUTH["TRUSTED_PROXIES"]`` (addresses or CIDRs)."""
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


# --- Origins (RFC 6454) ---------------------------------------------------------------

#: ``scheme://host[:port]``: lowercase scheme http(s), a host name, an IPv4
#: address or a bracketed IPv6 address, an optional port; nothing else.
_ORIGIN_RE = re.compile(
    r"(?P<scheme>https?)://"
    r"(?P<host>[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]


def parse_origin(value: str) -> Origin | None:
    """``(scheme, host, port)`` of a serialized origin, the default port made
    explicit; None for anything that is not exactly one ("null", a path, user
    info, a wildcard, a malformed port...)."""
    found = _ORIGIN_RE.fullmatch(value.lower())
    if found is None:
        return None
    scheme, host = found["scheme"], found["host"]
    port = int(found["port"]) if found["port"] else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        return None
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
    return scheme, host, port


def split_host(value: str, scheme: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``Host`` header for ``scheme`` (http/https)."""
    parsed = parse_origin(f"{scheme}://{value.strip()}")
    return None if parsed is None else parsed[1:]


def address_bucket(ip: str | None) -> str | None:
    """What counts as one client address for limits: an IPv4 address, an
    IPv4-mapped IPv6 address as the IPv4 one, and an IPv6 address by its /64
    (one subscriber's network: a host picks any address in it at will)."""
    if ip is None:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
