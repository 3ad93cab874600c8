"""OAuth / OpenID Connect login against a real OpenID provider on loopback.

The provider is npm ``oidc-provider`` in its own process (``tests/oidc/``); the
user's browser at the provider is httpx submitting its login and consent forms;
chatauth runs in Django's test client and talks to the provider over real HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from datetime import timedelta
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

import chatauth
from chatauth.adapter import DefaultAdapter
from chatauth.exceptions import HookError
from chatauth.models import AuditEvent, OAuthAccount, Profile
from tests.oidc.provider import Browser, start_provider

pytestmark = pytest.mark.django_db

CALLBACK = "http://testserver/auth/oauth/{}/callback"
FRONTEND = "http://testserver/app/"
OIDC_CLIENT = {
    "client_id": "chatauth-oidc",
    "client_secret": "oidc-client-secret-" + "x" * 24,
    "redirect_uris": [CALLBACK.format("local"), CALLBACK.format("local-2")],
}
GITHUB_CLIENT = {
    "client_id": "chatauth-github",
    "client_secret": "github-client-secret-" + "y" * 24,
    "redirect_uris": [CALLBACK.format("local-github")],
    "token_endpoint_auth_method": "client_secret_post",
}


@pytest.fixture(scope="module")
def oidc(tmp_path_factory):
    provider = start_provider(
        [OIDC_CLIENT, GITHUB_CLIENT], tmp_path_factory.mktemp("oidc")
    )
    yield provider
    provider.stop()


def providers(oidc) -> dict:
    return {
        "local": {
            "profile": "oidc",
            "server_metadata_url": oidc.discovery_url,
            "client_id": OIDC_CLIENT["client_id"],
            "client_secret": OIDC_CLIENT["client_secret"],
        },
        "local-github": {
            "profile": "github",
            "client_id": GITHUB_CLIENT["client_id"],
            "client_secret": GITHUB_CLIENT["client_secret"],
            "authorize_url": f"{oidc.issuer}/auth",
            "access_token_url": f"{oidc.issuer}/token",
            "api_base_url": f"{oidc.issuer}/gh/",
        },
    }


@pytest.fixture
def frontend(settings):
    """Set ``CHATAUTH["FRONTEND_URL"]`` plus ``extra`` (no provider needed)."""

    def apply(**extra):
        settings.CHATAUTH = {**settings.CHATAUTH, "FRONTEND_URL": FRONTEND, **extra}

    apply()
    return apply


@pytest.fixture
def configure(frontend, oidc):
    """Set ``CHATAUTH`` to the loopback providers plus ``extra``."""

    def apply(**extra):
        frontend(**{"OAUTH_PROVIDERS": providers(oidc), **extra})

    apply()
    return apply


@pytest.fixture
def browser():
    b = Browser()
    yield b
    b.close()


def start(client, provider: str = "local", **params) -> tuple[str, dict]:
    response = client.get(f"/auth/oauth/{provider}", params)
    assert response.status_code == 302, response.content
    url = response["Location"]
    return url, {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def login(client, browser, provider: str = "local", **params):
    """A whole login: start, the user at the provider, the callback."""
    url, _ = start(client, provider, **params)
    back = browser.authorize(url, CALLBACK.format(provider))
    return client.get(back.replace("http://testserver", ""))


def refused(response, reason: str) -> None:
    assert response.status_code == 302, response.content
    assert response["Location"] == f"{FRONTEND}?error={reason}"
    row = AuditEvent.objects.filter(event=AuditEvent.Event.OAUTH_REFUSED).first()
    assert row is not None and row.reason == reason and not row.success
    assert row.method == "oauth"


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


# --- the round trip ---------------------------------------------------------------


def test_round_trip_creates_user_and_linked_account(client, configure, browser, oidc):
    calls = []

    @chatauth.oauth_callback
    async def on_oauth(provider_id, token, raw_user_data, default_user, id_token):
        calls.append((provider_id, token, raw_user_data, default_user, id_token))
        return default_user

    url, params = start(client)
    # Authorization request: code flow, PKCE S256, state and nonce (RFC 7636,
    # OIDC Core §3.1.2.1), with the verifier and nonce kept in the browser's
    # signed state cookie only.
    assert url.startswith(oidc.issuer)
    assert params["response_type"] == "code"
    assert params["client_id"] == OIDC_CLIENT["client_id"]
    assert params["redirect_uri"] == CALLBACK.format("local")
    assert set(params["scope"].split()) == {"openid", "email", "profile"}
    assert params["code_challenge_method"] == "S256"
    flow = pending(client)[params["state"]]
    assert params["nonce"] == flow["nonce"] and len(flow["nonce"]) >= 20
    digest = hashlib.sha256(flow["code_verifier"].encode()).digest()
    assert (
        params["code_challenge"]
        == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    )
    assert flow["code_verifier"] not in url

    back = browser.authorize(url, CALLBACK.format("local"))
    query = parse_qs(urlsplit(back).query)
    assert query["state"] == [params["state"]] and query["code"]
    response = client.get(back.replace("http://testserver", ""))

    assert response.status_code == 302 and response["Location"] == FRONTEND
    user = get_user_model().objects.get(username="alice@example.test")
    assert client.session["_auth_user_id"] == str(user.pk)
    assert user.email == "alice@example.test"
    account = OAuthAccount.objects.get(user=user)
    assert (account.provider, account.subject) == ("local", "alice")
    assert account.email_verified and account.last_login_at is not None
    profile = Profile.objects.get(user=user)
    assert profile.display_name == "Alice Example"
    assert profile.metadata == {
        "provider": "local",
        "image": "https://images.example.test/alice.png",
    }
    # Chainlit's arguments, in Chainlit's order and types.
    [(provider_id, token, raw, default_user, id_token)] = calls
    assert provider_id == "local"
    assert isinstance(token, str) and token
    assert raw["sub"] == "alice" and raw["email"] == "alice@example.test"
    assert raw["email_verified"] is True and raw["name"] == "Alice Example"
    assert isinstance(default_user, chatauth.User)
    assert default_user.identifier == "alice@example.test"
    assert default_user.metadata["provider"] == "local"
    claims = jwt_claims(id_token)
    assert claims["nonce"] == flow["nonce"]
    assert claims["aud"] == OIDC_CLIENT["client_id"]
    assert claims["iss"] == oidc.issuer
    # Audited as an OAuth login (one row), the state is gone from the cookie.
    rows = AuditEvent.objects.filter(event=AuditEvent.Event.LOGIN)
    assert [(r.method, r.user_id, r.success) for r in rows] == [
        ("oauth", user.pk, True)
    ]
    assert params["state"] not in pending(client)
    # The session is a real Django login: the session-authenticated routes work.
    minted = client.post("/auth/copilot/token", content_type="application/json")
    assert minted.status_code == 200, minted.content
    assert minted.json()["user"]["identifier"] == "alice@example.test"


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_later_login_with_same_subject_finds_same_user(client, configure):
    first, second = Browser(login="bob"), Browser(login="bob")
    try:
        assert login(client, first)["Location"] == FRONTEND
        user_pk = client.session["_auth_user_id"]
        client.logout()

        @chatauth.oauth_callback
        def rename(provider_id, token, raw_user_data, default_user, id_token=None):
            default_user.display_name = "Robert"
            return default_user

        assert login(client, second)["Location"] == FRONTEND
    finally:
        first.close()
        second.close()
    assert client.session["_auth_user_id"] == user_pk
    assert OAuthAccount.objects.filter(provider="local", subject="bob").count() == 1
    assert Profile.objects.get(user_id=user_pk).display_name == "Robert"


def test_callback_without_id_token_argument_and_its_own_identifier(
    client, configure, browser
):
    """Chainlit's older four-argument callbacks work; a chosen identifier wins."""

    @chatauth.oauth_callback
    def pick(provider_id, token, raw_user_data, default_user):
        return chatauth.User(identifier=f"staff-{raw_user_data['sub']}")

    assert login(client, browser)["Location"] == FRONTEND
    user = get_user_model().objects.get(username="staff-alice")
    assert client.session["_auth_user_id"] == str(user.pk)


def test_refusing_callback_yields_no_session(client, configure, browser):
    @chatauth.oauth_callback
    async def nobody(provider_id, token, raw_user_data, default_user, id_token):
        return None

    response = login(client, browser)
    refused(response, "callback_refused")
    assert not logged_in(client)
    assert not get_user_model().objects.exists()
    assert not OAuthAccount.objects.exists()
    row = AuditEvent.objects.get(event=AuditEvent.Event.OAUTH_REFUSED)
    assert row.identifier == "alice@example.test"


def test_raising_callback_is_a_refusal(client, configure, browser):
    @chatauth.oauth_callback
    def broken(provider_id, token, raw_user_data, default_user, id_token):
        raise RuntimeError("bug in the project's callback")

    refused(login(client, browser), "callback_failed")
    assert not logged_in(client)


def test_github_profile_uses_primary_verified_email(client, configure):
    calls = []

    @chatauth.oauth_callback
    def on_oauth(provider_id, token, raw_user_data, default_user, id_token):
        calls.append((raw_user_data, default_user, id_token))
        return default_user

    url, params = start(client, "local-github")
    assert "nonce" not in params  # plain OAuth 2.0: no ID token, no nonce
    assert params["code_challenge_method"] == "S256"
    grace = Browser(login="grace")
    try:
        back = grace.authorize(url, CALLBACK.format("local-github"))
    finally:
        grace.close()
    response = client.get(back.replace("http://testserver", ""))
    assert response["Location"] == FRONTEND
    [(raw, default_user, id_token)] = calls
    assert id_token is None
    assert raw["login"] == "grace" and len(raw["emails"]) == 3
    # Not the public/noreply or a secondary address: the primary verified one.
    assert default_user.identifier == "grace@example.test"
    assert default_user.metadata["image"] == "https://images.example.test/grace.png"
    account = OAuthAccount.objects.get(provider="local-github")
    assert account.subject == str(raw["id"]) and account.email_verified


# --- linking ------------------------------------------------------------------------


class TrustingAdapter(DefaultAdapter):
    """A project's adapter that knows its local emails are verified."""

    def email_verified(self, user, email):
        return True


def oauth_login(client, name: str):
    who = Browser(login=name)
    try:
        return login(client, who)
    finally:
        who.close()


def test_an_existing_local_account_is_never_joined_by_default(
    client, configure, make_user
):
    """As django-allauth: someone may have created the account with the
    victim's address and a password of their own (pre-account hijacking)."""
    existing = make_user("dave@example.test", email="dave@example.test")
    refused(oauth_login(client, "dave"), "account_exists")
    assert not OAuthAccount.objects.exists()
    # Opted in, but the local account's email is not known to be verified.
    configure(OAUTH_LINK_BY_EMAIL=True)
    refused(oauth_login(client, "dave"), "account_exists")
    assert not OAuthAccount.objects.exists()
    assert existing.pk  # untouched


def test_joins_a_local_account_when_both_sides_verified_the_email(
    client, configure, make_user
):
    existing = make_user("dave@example.test", email="dave@example.test")
    configure(OAUTH_LINK_BY_EMAIL=True, ADAPTER="tests.test_oauth.TrustingAdapter")
    assert oauth_login(client, "dave")["Location"] == FRONTEND
    assert client.session["_auth_user_id"] == str(existing.pk)
    assert OAuthAccount.objects.get(subject="dave").user == existing


def test_staff_accounts_are_joined_only_when_allowed(client, configure, make_user):
    make_user("dave@example.test", email="dave@example.test", is_staff=True)
    configure(OAUTH_LINK_BY_EMAIL=True, ADAPTER="tests.test_oauth.TrustingAdapter")
    refused(oauth_login(client, "dave"), "account_exists")
    configure(
        OAUTH_LINK_BY_EMAIL=True,
        OAUTH_LINK_STAFF=True,
        ADAPTER="tests.test_oauth.TrustingAdapter",
    )
    assert oauth_login(client, "dave")["Location"] == FRONTEND


def test_unverified_email_never_links_or_becomes_identifier(
    client, configure, make_user
):
    victim = make_user("unverified-erin", email="unverified-erin@example.test")
    erin = Browser(login="unverified-erin")
    try:
        assert login(client, erin)["Location"] == FRONTEND
    finally:
        erin.close()
    account = OAuthAccount.objects.get(subject="unverified-erin")
    assert not account.email_verified
    assert account.user != victim
    assert account.user.username == "local:unverified-erin"
    assert client.session["_auth_user_id"] == str(account.user.pk)


def test_unverified_account_colliding_with_local_user_is_refused(
    client, configure, make_user
):
    # GitHub login "unverified-frank" has no verified email: the identifier is the
    # login, which a local user already has.  Taking it over would be a hijack.
    make_user("unverified-frank")
    frank = Browser(login="unverified-frank")
    try:
        url, _ = start(client, "local-github")
        back = frank.authorize(url, CALLBACK.format("local-github"))
    finally:
        frank.close()
    refused(client.get(back.replace("http://testserver", "")), "account_exists")
    assert not logged_in(client)
    assert not OAuthAccount.objects.exists()


def test_inactive_user_is_refused_and_nothing_is_linked(client, configure, make_user):
    make_user("carol@example.test", email="carol@example.test", is_active=False)
    configure(OAUTH_LINK_BY_EMAIL=True, ADAPTER="tests.test_oauth.TrustingAdapter")
    refused(oauth_login(client, "carol"), "user_inactive")
    assert not logged_in(client)
    assert not OAuthAccount.objects.exists()


class NoRawDataAdapter(DefaultAdapter):
    """A project's adapter that keeps none of what the provider said."""

    def oauth_account_fields(self, identity):
        return {**super().oauth_account_fields(identity), "extra_data": {}}


class InviteOnlyAdapter(DefaultAdapter):
    """A project's adapter with no sign-up through OAuth: only identities
    linked already log in."""

    def create_oauth_user(self, identity, chat_user):
        raise HookError("sign-up is by invitation")


def test_a_project_adapter_decides_what_the_link_keeps(client, configure):
    assert oauth_login(client, "dave")["Location"] == FRONTEND
    account = OAuthAccount.objects.get(subject="dave")
    assert account.extra_data["sub"] == "dave"  # by default, what it said
    configure(ADAPTER="tests.test_oauth.NoRawDataAdapter")
    # The link of a later login is updated, a new one created, through it.
    assert oauth_login(Client(), "dave")["Location"] == FRONTEND
    assert oauth_login(Client(), "erin")["Location"] == FRONTEND
    for account in OAuthAccount.objects.all():
        assert account.extra_data == {}
        assert account.email == f"{account.subject}@example.test"
        assert account.email_verified


def test_a_project_adapter_can_refuse_new_users(client, configure):
    assert oauth_login(client, "dave")["Location"] == FRONTEND
    configure(ADAPTER="tests.test_oauth.InviteOnlyAdapter")
    refused(oauth_login(Client(), "erin"), "invalid_user")
    assert not get_user_model().objects.filter(username="erin@example.test").exists()
    assert not OAuthAccount.objects.filter(subject="erin").exists()
    # An identity linked already still logs in.
    again = Client()
    assert oauth_login(again, "dave")["Location"] == FRONTEND
    assert logged_in(again)


# --- state, ID token, provider failures --------------------------------------------


def test_replayed_state_is_refused(client, configure, browser):
    url, params = start(client)
    back = browser.authorize(url, CALLBACK.format("local")).replace(
        "http://testserver", ""
    )
    # A state is single use, whatever its first use came to: here a refusal.
    first = client.get(
        "/auth/oauth/local/callback", {"state": params["state"], "error": "x"}
    )
    refused(first, "provider_error")
    refused(client.get(back), "invalid_state")
    assert not logged_in(client)


def test_replayed_callback_after_login_is_refused(client, configure, browser):
    url, _ = start(client)
    back = browser.authorize(url, CALLBACK.format("local")).replace(
        "http://testserver", ""
    )
    assert client.get(back)["Location"] == FRONTEND
    refused(client.get(back), "invalid_state")


def test_logins_started_in_two_tabs_both_work(client, configure):
    first_url, first = start(client)
    second_url, second = start(client)
    assert first["state"] != second["state"]
    assert first["nonce"] != second["nonce"]
    assert first["code_challenge"] != second["code_challenge"]
    tab = Browser()
    try:
        back = tab.authorize(first_url, CALLBACK.format("local"))
    finally:
        tab.close()
    assert client.get(back.replace("http://testserver", ""))["Location"] == FRONTEND
    # The second tab's state survived the first login.
    assert second["state"] in pending(client)


def test_an_anonymous_start_writes_nothing_on_the_server(client, configure):
    from django.contrib.sessions.models import Session

    for _ in range(20):
        start(client)
    assert Session.objects.count() == 0
    cookie = client.cookies["chatauth_oauth"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert cookie["path"] == "/auth/oauth/local"
    assert len(pending(client)) == 5  # the most recent ones (tabs)


def test_a_replayed_state_cookie_is_refused(client, configure, browser):
    url, params = start(client)
    saved = client.cookies["chatauth_oauth"].value
    back = browser.authorize(url, CALLBACK.format("local"))
    path = back.replace("http://testserver", "")
    assert client.get(path)["Location"] == FRONTEND
    client.logout()
    client.cookies["chatauth_oauth"] = saved  # the state used already, again
    refused(client.get(path), "invalid_state")


def pending(client, provider="local") -> dict:
    """The logins in progress, as the browser's signed cookie holds them."""
    from django.core import signing

    cookie = client.cookies.get("chatauth_oauth")
    if cookie is None or not cookie.value:
        return {}
    return signing.loads(cookie.value, salt="chatauth.oauth.state")


def test_missing_or_unknown_state_is_refused(client, configure):
    start(client)
    refused(client.get("/auth/oauth/local/callback", {"code": "abc"}), "invalid_state")
    refused(
        client.get("/auth/oauth/local/callback", {"code": "abc", "state": "forged"}),
        "invalid_state",
    )
    assert AuditEvent.objects.filter(reason="invalid_state").count() == 2


def test_state_of_another_browser_is_refused(client, configure, browser):
    """Login CSRF: the attacker's own callback URL, opened in the victim's browser."""
    from django.test import Client

    attacker = Client()
    url, _ = start(attacker)
    back = browser.authorize(url, CALLBACK.format("local"))
    refused(client.get(back.replace("http://testserver", "")), "invalid_state")
    assert not logged_in(client)


def test_state_is_bound_to_its_provider(client, configure, browser):
    url, params = start(client, "local")
    response = client.get(
        "/auth/oauth/local-github/callback", {"code": "x", "state": params["state"]}
    )
    refused(response, "invalid_state")


def test_expired_state_is_refused(client, configure, browser):
    configure(OAUTH_STATE_LIFETIME=timedelta(0))
    refused(login(client, browser), "invalid_state")


@pytest.mark.parametrize(
    "mode",
    [
        "wrong_nonce",
        "tampered",
        "expired",
        "alg_none",
        "wrong_audience",
        "wrong_issuer",
    ],
)
def test_bad_id_token_is_refused(client, configure, browser, oidc, mode):
    calls = []
    chatauth.oauth_callback(lambda *args: calls.append(args) or args[3])
    url, _ = start(client)
    back = browser.authorize(url, CALLBACK.format("local"))
    oidc.next_id_token(mode)  # the token response to the callback's code exchange
    refused(client.get(back.replace("http://testserver", "")), "invalid_id_token")
    assert not logged_in(client) and not calls
    assert not get_user_model().objects.exists()


def test_error_from_the_provider_is_refused(client, configure, browser):
    url, _ = start(client)
    back = browser.authorize(url, CALLBACK.format("local"), abort=True)
    assert parse_qs(urlsplit(back).query)["error"] == ["access_denied"]
    refused(client.get(back.replace("http://testserver", "")), "access_denied")
    assert not logged_in(client)


def test_provider_error_text_is_not_echoed(client, configure):
    _, params = start(client)
    response = client.get(
        "/auth/oauth/local/callback",
        {"state": params["state"], "error": "<script>alert(1)</script>"},
    )
    refused(response, "provider_error")


def test_rejected_code_is_refused(client, configure, oidc):
    _, params = start(client)
    response = client.get(
        "/auth/oauth/local/callback",
        {"state": params["state"], "code": "made-up", "iss": oidc.issuer},
    )
    refused(response, "provider_error")


def test_issuer_mix_up_is_refused(client, configure, browser):
    url, _ = start(client)
    back = browser.authorize(url, CALLBACK.format("local"))
    assert "iss=" in back  # RFC 9207: the provider names itself
    evil = back.replace("iss=", "iss=http%3A%2F%2Fevil.example%2F&was=")
    refused(client.get(evil.replace("http://testserver", "")), "invalid_issuer")


@pytest.fixture
def black_hole():
    """A loopback socket that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_provider_that_times_out_on_code_exchange(client, frontend, black_hole):
    frontend(
        OAUTH_TIMEOUT=0.5,
        OAUTH_PROVIDERS={
            "slow": {
                "profile": "github",
                "client_id": "c",
                "client_secret": "s",
                "authorize_url": f"{black_hole}/authorize",
                "access_token_url": f"{black_hole}/token",
                "api_base_url": f"{black_hole}/api/",
            }
        },
    )
    _, params = start(client, "slow")
    response = client.get(
        "/auth/oauth/slow/callback", {"state": params["state"], "code": "c0de"}
    )
    refused(response, "provider_unavailable")


def test_provider_that_times_out_on_discovery(client, frontend, black_hole):
    frontend(
        OAUTH_TIMEOUT=0.5,
        OAUTH_PROVIDERS={
            "slow": {
                "profile": "oidc",
                "client_id": "c",
                "server_metadata_url": f"{black_hole}/.well-known/openid-configuration",
            }
        },
    )
    refused(client.get("/auth/oauth/slow"), "provider_unavailable")


# --- routes, redirects, config --------------------------------------------------------


def test_unknown_provider_is_404_json(client, frontend):
    for path in ("/auth/oauth/nope", "/auth/oauth/nope/callback"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "Unknown OAuth provider."}


@pytest.mark.parametrize(
    ("next_url", "target"),
    [
        ("/chat/room-1?x=1", "/chat/room-1?x=1"),
        ("http://testserver/app/thread/2", "http://testserver/app/thread/2"),
        ("https://evil.example/steal", FRONTEND),
        ("//evil.example/steal", FRONTEND),
        ("/\\evil.example", FRONTEND),
        ("javascript:alert(1)", FRONTEND),
    ],
)
def test_next_is_honoured_only_on_this_site(
    client, configure, browser, next_url, target
):
    assert login(client, browser, next=next_url)["Location"] == target


def test_config_lists_the_providers(client, configure):
    assert client.get("/auth/config").json()["oauth"] == ["local", "local-github"]


# --- the demo, for real: uvicorn, a browser's cookie jar, settings from env -------


def test_round_trip_through_the_real_demo_server(tmp_path):
    """The demo configured from the environment only (``OAUTH_OIDC_*``), served by
    uvicorn; one httpx client is the browser for both sites."""
    from tests.servers import free_port, migrate, server_env, start_server

    provider_port = free_port()
    client_id, secret = "demo-client", "demo-secret-" + "z" * 30
    env = server_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        OAUTH_OIDC_CLIENT_ID=client_id,
        OAUTH_OIDC_CLIENT_SECRET=secret,
        OAUTH_OIDC_DISCOVERY_URL=(
            f"http://127.0.0.1:{provider_port}/.well-known/openid-configuration"
        ),
    )
    migrate(env)
    server = start_server(env, tmp_path)
    callback = f"{server.url}/auth/oauth/oidc/callback"
    provider = None
    try:
        provider = start_provider(
            [
                {
                    "client_id": client_id,
                    "client_secret": secret,
                    "redirect_uris": [callback],
                }
            ],
            tmp_path,
            port=provider_port,
        )
        user = Browser(login="uma")
        try:
            jar = user.client
            assert jar.get(f"{server.url}/auth/config").json()["oauth"] == ["oidc"]
            page = jar.get(f"{server.url}/accounts/login/").text
            assert "/auth/oauth/PROVIDER" in page  # the login page's buttons
            assert jar.get(f"{server.url}/auth/sessions").status_code in (401, 403)
            start = jar.get(f"{server.url}/auth/oauth/oidc", params={"next": "/x"})
            assert start.status_code == 302
            back = user.authorize(start.headers["location"], callback)
            done = jar.get(back)
            assert done.status_code == 302 and done.headers["location"] == "/x"
            # The Django session works on the session-authenticated routes.
            assert jar.get(f"{server.url}/auth/sessions").status_code == 200
            replay = jar.get(back)
            assert replay.headers["location"] == "/?error=invalid_state"
        finally:
            user.close()
    finally:
        if provider is not None:
            provider.stop()
        server.stop()
    assert "Traceback" not in server.output()


# --- what a provider says is input ---------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "s" * 300,  # a subject longer than its column: refused, never cut
        "tab\there",  # a control character
        "zero\u200bwidth",  # an invisible one
    ],
    ids=["long-subject", "control-character", "zero-width"],
)
def test_claims_that_cannot_be_stored_as_said_are_refused(client, configure, name):
    refused(oauth_login(client, name), "invalid_claims")
    assert not OAuthAccount.objects.exists()
    assert not get_user_model().objects.exists()
    assert AuditEvent.objects.filter(reason="invalid_claims").count() == 1


def test_subjects_sharing_their_first_255_characters_are_two_identities():
    from chatauth.oauth import Identity, Refusal, checked

    long = "s" * 255
    assert checked(Identity(subject=long)).subject == long
    with pytest.raises(Refusal):
        checked(Identity(subject=long + "x"))


def test_a_callback_without_iss_is_refused_when_the_provider_promises_it(
    client, configure, browser
):
    """RFC 9207: the provider's metadata says every response carries ``iss``
    (authorization_response_iss_parameter_supported): one without it may be
    another provider's (a mix-up attack)."""
    url, _ = start(client)
    back = browser.authorize(url, CALLBACK.format("local"))
    parts = urlsplit(back)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "iss"]
    assert len(query) < len(parse_qsl(parts.query))  # it did send one
    stripped = parts._replace(query=urlencode(query)).geturl()
    refused(client.get(stripped.replace("http://testserver", "")), "invalid_issuer")
    assert not logged_in(client)


def test_identifiers_from_a_provider_are_normalised(client, configure):
    """The provider's handle as the identifier: case and width folded."""
    assert oauth_login(client, "Frank")["Location"] == FRONTEND
    user = get_user_model().objects.get()
    assert user.username == "frank@example.test"
