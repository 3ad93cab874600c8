"""Header login (``POST auth/header``): trusted proxies only, and the built-in
``chatauth.contrib.proxy_header_auth`` callback configured by settings alone."""

from __future__ import annotations

import sys
import time

import httpx
import jwt
import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured

import chatauth
from chatauth import hooks
from chatauth.models import APIKey, AuditEvent, Profile

pytestmark = pytest.mark.django_db

UNTRUSTED = "203.0.113.7"  # TEST-NET-3 (RFC 5737)


def post(api, remote_addr: str = "127.0.0.1", **headers):
    """``POST auth/header`` from ``remote_addr`` with ``headers`` (WSGI names)."""
    return api.post("/auth/header", REMOTE_ADDR=remote_addr, **headers)


@pytest.fixture
def proxy_callback():
    """Chainlit's documented example: trust the proxy's forwarded user."""
    seen = []

    @chatauth.header_auth_callback
    def from_proxy(headers):
        seen.append(headers)
        # Mixed case on purpose: the mapping is case-insensitive.
        user = headers.get("X-FORWARDED-USER")
        if not user:
            return None
        return chatauth.User(
            identifier=user,
            display_name=headers.get("x-forwarded-name"),
            metadata={"provider": "header"},
        )

    return seen


def test_login_from_trusted_proxy(api, proxy_callback):
    response = post(api, HTTP_X_FORWARDED_USER="hana", HTTP_X_FORWARDED_NAME="Hana")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["user"] == {
        "identifier": "hana",
        "display_name": "Hana",
        "metadata": {"provider": "header"},
    }
    me = api.get("/auth/me", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert me.json()["identifier"] == "hana"
    user = get_user_model().objects.get(username="hana")
    row = AuditEvent.objects.get(event=AuditEvent.Event.LOGIN)
    assert (row.user_id, row.method, row.ip) == (user.pk, "header", "127.0.0.1")
    assert len(proxy_callback) == 1


def test_refused_from_untrusted_address(api, proxy_callback):
    response = post(api, UNTRUSTED, HTTP_X_FORWARDED_USER="hana")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid credentials."}
    assert proxy_callback == []  # the headers were never even read
    assert not get_user_model().objects.exists()
    row = AuditEvent.objects.get()
    assert row.event == AuditEvent.Event.HEADER_REFUSED
    assert (row.reason, row.ip, row.success) == ("untrusted_proxy", UNTRUSTED, False)


@pytest.mark.parametrize(
    "spoof",
    [
        {"HTTP_X_FORWARDED_FOR": "127.0.0.1"},
        {"HTTP_X_FORWARDED_FOR": f"127.0.0.1, {UNTRUSTED}"},
        {"HTTP_X_REAL_IP": "127.0.0.1"},
        {"HTTP_FORWARDED": "for=127.0.0.1;proto=https"},
        {"HTTP_X_CLIENT_IP": "127.0.0.1", "HTTP_TRUE_CLIENT_IP": "127.0.0.1"},
    ],
)
def test_spoofed_forwarding_headers_do_not_make_an_address_trusted(
    api, proxy_callback, spoof
):
    response = post(api, UNTRUSTED, HTTP_X_FORWARDED_USER="root", **spoof)
    assert response.status_code == 401
    assert proxy_callback == []
    row = AuditEvent.objects.get(event=AuditEvent.Event.HEADER_REFUSED)
    assert row.ip == UNTRUSTED  # the audit log records the real peer too


def test_trusted_proxies_are_addresses_and_networks(api, settings, proxy_callback):
    settings.CHATAUTH = {
        **settings.CHATAUTH,
        "TRUSTED_PROXIES": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.10"],
    }
    for addr, status in [
        ("10.20.30.40", 200),
        ("2001:db8::5", 200),
        ("192.0.2.10", 200),
        ("192.0.2.11", 401),
        ("11.0.0.1", 401),
        ("127.0.0.1", 401),  # no longer listed
        ("not-an-address", 401),
    ]:
        response = post(api, addr, HTTP_X_FORWARDED_USER="ivan")
        assert response.status_code == status, (addr, response.content)


def test_no_trusted_proxies_means_no_header_login(api, settings, proxy_callback):
    settings.CHATAUTH = {**settings.CHATAUTH, "TRUSTED_PROXIES": []}
    assert post(api, HTTP_X_FORWARDED_USER="ivan").status_code == 401


def test_callback_refusing_is_401_and_audited(api, proxy_callback):
    response = post(api)  # no X-Forwarded-User: the callback returns None
    assert response.status_code == 401
    row = AuditEvent.objects.get(event=AuditEvent.Event.LOGIN_FAILED)
    assert (row.method, row.reason) == ("header", "invalid_credentials")


def test_disabled_without_a_callback(api):
    response = post(api, HTTP_X_FORWARDED_USER="ivan")
    assert response.status_code == 401
    assert response.json() == {"detail": "Header login is not enabled."}


def test_chainlit_example_api_key_from_database(api):
    """Chainlit's ``x-api-key`` example, the key looked up in the database."""
    _, raw = APIKey.objects.create_key("gateway")

    @chatauth.header_auth_callback
    async def by_api_key(headers):
        from asgiref.sync import sync_to_async

        key = await sync_to_async(APIKey.objects.get_from_key)(
            headers.get("x-api-key", "")
        )
        return chatauth.User(identifier=f"service-{key.name}") if key else None

    assert post(api, HTTP_X_API_KEY=raw).json()["user"]["identifier"] == (
        "service-gateway"
    )
    assert post(api, HTTP_X_API_KEY=raw + "x").status_code == 401


def test_chainlit_example_bearer_jwt(api):
    """Chainlit's example: a JWT from an upstream identity service, verified by
    the callback with its own key."""
    key = "upstream-signing-key-" + "u" * 24

    @chatauth.header_auth_callback
    def upstream(headers):
        raw = headers.get("authorization", "").removeprefix("Bearer ")
        try:
            claims = jwt.decode(raw, key, algorithms=["HS256"])
        except jwt.PyJWTError:
            return None
        return chatauth.User(identifier=claims["sub"])

    good = jwt.encode({"sub": "jules", "exp": time.time() + 60}, key)
    forged = jwt.encode({"sub": "jules", "exp": time.time() + 60}, "wrong-" + key)
    assert post(api, HTTP_AUTHORIZATION=f"Bearer {good}").status_code == 200
    assert post(api, HTTP_AUTHORIZATION=f"Bearer {forged}").status_code == 401


# --- chatauth.contrib.proxy_header_auth ----------------------------------------------


@pytest.fixture
def contrib(settings, monkeypatch):
    """Enable the contrib callback exactly as a project does: by settings alone."""

    def enable(**options):
        settings.CHATAUTH = {
            **settings.CHATAUTH,
            "HOOKS": "chatauth.contrib.proxy_header_auth",
            "PROXY_HEADER_AUTH": options,
        }
        # A fresh import, as at start-up (the autouse fixture cleared the hooks).
        monkeypatch.delitem(
            sys.modules, "chatauth.contrib.proxy_header_auth", raising=False
        )
        hooks.load_hooks()
        assert hooks.get_hook("header_auth_callback").__module__ == (
            "chatauth.contrib.proxy_header_auth"
        )

    return enable


def test_contrib_oauth2_proxy(api, contrib):
    contrib(proxy="oauth2-proxy")
    response = post(
        api,
        HTTP_X_FORWARDED_USER="kim",
        HTTP_X_FORWARDED_EMAIL="kim@example.com",
        HTTP_X_FORWARDED_PREFERRED_USERNAME="Kim K",
        HTTP_X_FORWARDED_GROUPS="staff, chat-users",
    )
    assert response.status_code == 200, response.content
    assert response.json()["user"] == {
        "identifier": "kim@example.com",
        "display_name": "Kim K",
        "metadata": {
            "provider": "header",
            "proxy": "oauth2-proxy",
            "email": "kim@example.com",
            "groups": ["staff", "chat-users"],
        },
    }
    user = get_user_model().objects.get(username="kim@example.com")
    assert Profile.objects.get(user=user).display_name == "Kim K"


def test_contrib_defaults_to_oauth2_proxy(api, contrib):
    contrib()
    response = post(api, HTTP_X_FORWARDED_USER="lee")
    assert response.json()["user"]["identifier"] == "lee"  # no email: the user


def test_contrib_authelia(api, contrib):
    contrib(proxy="authelia", identifier="user")
    response = post(
        api,
        HTTP_REMOTE_USER="mia",
        HTTP_REMOTE_EMAIL="mia@example.com",
        HTTP_REMOTE_NAME="Mia M",
        HTTP_REMOTE_GROUPS="admins",
    )
    user = response.json()["user"]
    assert (user["identifier"], user["display_name"]) == ("mia", "Mia M")
    assert user["metadata"]["groups"] == ["admins"]


def test_contrib_cloudflare_access(api, contrib):
    contrib(proxy="cloudflare")
    response = post(api, HTTP_CF_ACCESS_AUTHENTICATED_USER_EMAIL="noa@example.com")
    assert response.json()["user"]["identifier"] == "noa@example.com"
    assert response.json()["user"]["metadata"]["proxy"] == "cloudflare"


@pytest.mark.parametrize(
    ("proxy", "injected"),
    [
        ("oauth2-proxy", {"HTTP_REMOTE_USER": "admin"}),
        ("authelia", {"HTTP_X_FORWARDED_USER": "admin"}),
        ("cloudflare", {"HTTP_X_FORWARDED_EMAIL": "admin@example.com"}),
        ("authelia", {"HTTP_CF_ACCESS_AUTHENTICATED_USER_EMAIL": "admin@example.com"}),
    ],
)
def test_contrib_reads_only_its_proxys_headers(api, contrib, proxy, injected):
    """A proxy passes through the headers it does not set: another proxy's header
    names are client-controlled there and must not log anyone in."""
    contrib(proxy=proxy)
    assert post(api, **injected).status_code == 401
    assert not get_user_model().objects.exists()


def test_contrib_required_groups(api, contrib):
    contrib(proxy="authelia", groups=["chat-users", "staff"])
    outsider = post(api, HTTP_REMOTE_USER="oli", HTTP_REMOTE_GROUPS="guests")
    assert outsider.status_code == 401
    member = post(api, HTTP_REMOTE_USER="oli", HTTP_REMOTE_GROUPS="guests,staff")
    assert member.status_code == 200


def test_contrib_header_names_can_be_overridden(api, contrib):
    contrib(proxy="oauth2-proxy", headers={"user": "X-Auth-Request-User"})
    assert post(api, HTTP_X_FORWARDED_USER="pat").status_code == 401
    response = post(api, HTTP_X_AUTH_REQUEST_USER="pat")
    assert response.json()["user"]["identifier"] == "pat"


@pytest.mark.parametrize(
    "value", ["a" * 300, "eve\x00admin", "eve\r\nX-Other: 1", "   "]
)
def test_contrib_ignores_values_no_proxy_sends(api, contrib, value):
    contrib(proxy="authelia")
    assert post(api, HTTP_REMOTE_USER=value).status_code == 401


def test_contrib_still_needs_a_trusted_proxy(api, contrib):
    contrib(proxy="authelia")
    assert post(api, UNTRUSTED, HTTP_REMOTE_USER="quinn").status_code == 401


def test_contrib_unknown_proxy_is_a_configuration_error(api, contrib):
    from chatauth.contrib import proxy_header_auth

    contrib(proxy="nginx")
    with pytest.raises(ImproperlyConfigured, match="nginx"):
        proxy_header_auth.config()
    # At request time the failing callback is a refusal, never a 500.
    assert post(api, HTTP_X_FORWARDED_USER="sam").status_code == 401


# --- a real server: the peer address is the socket's -----------------------------


def test_real_server_trusts_only_the_socket_peer(demo_server):
    """uvicorn serving the demo (``TRUSTED_PROXIES`` = loopback 127.0.0.1/::1, the
    demo's ``from_proxy`` callback): a client on 127.0.0.2 stays untrusted whatever
    forwarding headers it sends."""
    url = f"{demo_server.url}/auth/header"
    headers = {"X-Forwarded-User": "rafa"}
    with httpx.Client(timeout=10) as local:
        assert local.post(url, headers=headers).status_code == 200
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, timeout=10) as other:
        for spoof in (
            {},
            {"X-Forwarded-For": "127.0.0.1"},
            {"X-Real-IP": "127.0.0.1", "Forwarded": "for=127.0.0.1"},
        ):
            response = other.post(url, headers={**headers, **spoof})
            assert response.status_code == 401, (spoof, response.text)
