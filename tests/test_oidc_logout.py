"""OpenID Connect logout against a real provider (npm ``oidc-provider``):
back-channel logout tokens ending exactly the logins they name, every kind of
bad logout token refused and audited, and RP-initiated logout's URL.

chatauth runs in Django's test client; logins go through the real provider
(``tests/oidc``).  The logout tokens posted here are signed by the provider's
own key (its ``/__test/logout-token`` control), or by another key for a
forgery.  ``tests/test_oidc_logout_live.py`` has the provider itself deliver
them to real servers, with live chat sockets.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.contrib.auth import get_user_model, update_session_auth_hash
from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.models import Session
from django.db import DatabaseError
from django.db.models.signals import pre_save
from django.test import Client
from django.urls import include, path

import chatauth
from chatauth.models import AuditEvent, ProviderLogin, RevokedToken
from chatauth.oauth.logout_tokens import BACKCHANNEL_EVENT
from chatauth.oauth.rp_logout import unseal
from tests.conftest import bearer
from tests.oidc.provider import Browser, start_provider

pytestmark = pytest.mark.django_db

CALLBACK = "http://testserver/auth/oauth/{}/callback"
FRONTEND = "http://testserver/app/"
ROUTE = "/auth/oauth/{}/backchannel-logout"
CLIENT = {
    "client_id": "chatauth-bcl",
    "client_secret": "bcl-client-secret-" + "x" * 24,
    "redirect_uris": [CALLBACK.format("local")],
    # Nothing listens there: the provider's own deliveries are the live tests'.
    "backchannel_logout_uri": "http://127.0.0.1:9/auth/oauth/local/backchannel-logout",
    "backchannel_logout_session_required": True,
    "post_logout_redirect_uris": ["http://testserver/signed-out"],
}
DROP = object()


@pytest.fixture(scope="module")
def oidc(tmp_path_factory):
    provider = start_provider([CLIENT], tmp_path_factory.mktemp("oidc-logout"))
    yield provider
    provider.stop()


@pytest.fixture
def configure(settings, oidc):
    """``CHATAUTH`` with the provider as ``local`` (its config plus ``extra``)."""

    def apply(**extra):
        settings.CHATAUTH = {
            **settings.CHATAUTH,
            "FRONTEND_URL": FRONTEND,
            "OAUTH_PROVIDERS": {
                "local": {
                    "profile": "oidc",
                    "server_metadata_url": oidc.discovery_url,
                    "client_id": CLIENT["client_id"],
                    "client_secret": CLIENT["client_secret"],
                    **extra,
                },
                "local-github": {
                    "profile": "github",
                    "client_id": "gh",
                    "client_secret": "gh-secret",
                },
            },
        }

    apply()
    return apply


class Login:
    """One person's browser: its provider session and its chatauth session."""

    def __init__(self, name: str = "alice") -> None:
        self.browser = Browser(login=name)
        self.client = Client()
        self.id_token: str | None = None

    def log_in(self) -> Login:
        captured = []

        @chatauth.oauth_callback
        def keep(provider_id, token, raw_user_data, default_user, id_token):
            captured.append(id_token)
            return default_user

        start = self.client.get("/auth/oauth/local")
        assert start.status_code == 302, start.content
        back = self.browser.authorize(start["Location"], CALLBACK.format("local"))
        done = self.client.get(back.replace("http://testserver", ""))
        assert done.status_code == 302 and done["Location"] == FRONTEND, done
        self.id_token = captured[-1]
        return self

    @property
    def session_key(self) -> str:
        return self.client.session.session_key

    @property
    def row(self) -> ProviderLogin:
        return ProviderLogin.objects.get(session_key=self.session_key)

    def copilot_token(self) -> str:
        response = self.client.post("/auth/copilot/token")
        assert response.status_code == 200, response.content
        return response.json()["access_token"]

    def signed_in(self) -> bool:
        """Whether the site still knows this browser (its session-authenticated
        route answers)."""
        return self.client.get("/auth/sessions").status_code == 200

    def close(self) -> None:
        self.browser.close()


@pytest.fixture
def people():
    made: list[Login] = []

    def make(name: str = "alice") -> Login:
        made.append(Login(name).log_in())
        return made[-1]

    yield make
    for login in made:
        login.close()


def logout_token(oidc, *, key: str = "provider", header=None, **changes) -> str:
    """A logout token for ``local`` signed by the provider; ``changes`` replace
    claims (``DROP`` removes one)."""
    claims = {
        "iss": oidc.issuer,
        "aud": CLIENT["client_id"],
        "iat": int(time.time()),
        "exp": int(time.time()) + 120,
        "jti": uuid.uuid4().hex,
        "events": {BACKCHANNEL_EVENT: {}},
        "sub": "alice",
    }
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not DROP}
    return oidc.logout_token(claims, key=key, header=header)


def post(client, token: str, provider: str = "local"):
    return client.post(
        ROUTE.format(provider),
        data=urlencode({"logout_token": token}),
        content_type="application/x-www-form-urlencoded",
    )


# --- what a login keeps --------------------------------------------------------------


def test_a_login_keeps_its_provider_session(configure, people, oidc):
    alice = people()
    row = alice.row
    user = get_user_model().objects.get(username="alice@example.test")
    assert (row.provider, row.subject, row.user_id) == ("local", "alice", user.pk)
    from tests.test_oauth import jwt_claims

    assert row.sid and row.sid == jwt_claims(alice.id_token)["sid"]
    # The ID token is the provider's: kept only where RP-initiated logout needs it.
    assert row.id_token == ""
    assert Session.objects.filter(session_key=row.session_key).exists()


# --- back-channel logout: what ends ---------------------------------------------------


def test_sid_logout_ends_that_login_only(configure, people, oidc, client, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="chatauth")
    first, second = people(), people()  # the same user, two provider sessions
    assert first.row.sid != second.row.sid
    first_copilot, second_copilot = first.copilot_token(), second.copilot_token()
    token = logout_token(oidc, sid=first.row.sid)
    first_key = first.session_key

    response = post(client, token)

    assert response.status_code == 200, response.content
    assert response.content == b""
    assert response["Cache-Control"] == "no-store"
    # The first login is over: its Django session, its copilot token, its record.
    assert not Session.objects.filter(session_key=first_key).exists()
    assert not first.signed_in()
    assert client.get("/auth/me", **bearer(first_copilot)).status_code == 401
    assert not ProviderLogin.objects.filter(session_key=first_key).exists()
    # The second holds.
    assert second.signed_in()
    assert client.get("/auth/me", **bearer(second_copilot)).status_code == 200
    # Audited as a logout by the provider, never with the token.
    user = get_user_model().objects.get()
    [row] = AuditEvent.objects.filter(event=AuditEvent.Event.LOGOUT)
    assert (row.user_id, row.method, row.actor) == (
        user.pk,
        "backchannel",
        "provider:local",
    )
    revoke = AuditEvent.objects.get(event=AuditEvent.Event.REVOKE)
    assert revoke.actor == "provider:local" and revoke.reason == "logout"
    assert caplog.records  # (the check below saw what was logged)
    assert token not in caplog.text
    for field in ("identifier", "reason", "token_id", "user_agent", "actor"):
        assert not AuditEvent.objects.filter(**{f"{field}__contains": token[:40]})


def test_sub_logout_ends_every_login_of_that_subject_through_that_provider(
    configure, people, oidc, client
):
    from chatauth import flows

    first, second = people(), people()
    bob = people("bob")
    user = get_user_model().objects.get(username="alice@example.test")
    # The same user's login of another kind (a token pair, as a password or
    # header login mints): not made through the provider, it stays.
    pair = flows.complete_login(None, user, "password").as_response()

    response = post(client, logout_token(oidc, sub="alice"))

    assert response.status_code == 200
    assert not first.signed_in() and not second.signed_in()
    assert bob.signed_in()
    assert client.get("/auth/me", **bearer(pair["access_token"])).status_code == 200
    logouts = AuditEvent.objects.filter(event=AuditEvent.Event.LOGOUT)
    assert logouts.count() == 2
    assert set(logouts.values_list("actor", flat=True)) == {"provider:local"}


def test_sid_and_sub_must_both_match(configure, people, oidc, client):
    alice = people()
    response = post(client, logout_token(oidc, sid=alice.row.sid, sub="mallory"))
    assert response.status_code == 200  # valid, but names no login here
    assert alice.signed_in()
    row = AuditEvent.objects.get(event=AuditEvent.Event.LOGOUT)
    assert (row.reason, row.actor, row.user_id) == (
        "no_session",
        "provider:local",
        None,
    )


def test_an_ended_login_is_not_ended_twice(configure, people, oidc, client):
    alice = people()
    sid = alice.row.sid
    assert alice.client.post("/auth/logout", content_type="application/json").json()
    assert not ProviderLogin.objects.exists()  # went with the session
    assert post(client, logout_token(oidc, sid=sid)).status_code == 200
    logouts = AuditEvent.objects.filter(event=AuditEvent.Event.LOGOUT)
    assert list(logouts.values_list("reason", "method")) == [
        ("no_session", "backchannel"),
        ("", "session"),
    ]


def test_on_logout_hooks_run_without_a_request(configure, people, oidc, client):
    alice = people()
    calls = []

    @chatauth.on_logout
    def bye(request, response):
        calls.append((request, response))

    assert post(client, logout_token(oidc, sid=alice.row.sid)).status_code == 200
    assert calls == [(None, None)]


# --- back-channel logout: what is refused ------------------------------------------

now = time.time
REFUSALS = {
    # name: (changes to the claims / how it is signed, audited reason)
    "forged": ({"key": "foreign"}, "bad_signature"),
    "wrong-audience": ({"aud": "some-other-client"}, "wrong_audience"),
    "other-authorized-party": (
        {"aud": [CLIENT["client_id"], "other"], "azp": "other"},
        "wrong_audience",
    ),
    "wrong-issuer": ({"iss": "http://127.0.0.1:1/evil"}, "wrong_issuer"),
    "nonce": ({"nonce": "n-0S6_WzA2Mj"}, "nonce"),
    "several-audiences-no-azp": (
        {"aud": [CLIENT["client_id"], "other"]},
        "wrong_audience",
    ),
    "missing-events": ({"events": DROP}, "invalid_events"),
    "other-event": ({"events": {"http://example.test/other": {}}}, "invalid_events"),
    "event-a-string": ({"events": {BACKCHANNEL_EVENT: "x"}}, "invalid_events"),
    "event-a-list": ({"events": {BACKCHANNEL_EVENT: []}}, "invalid_events"),
    "events-a-list": ({"events": [BACKCHANNEL_EVENT]}, "invalid_events"),
    "old-iat": ({"iat": "OLD"}, "stale"),
    "future-iat": ({"iat": "FUTURE"}, "invalid_iat"),
    "no-iat": ({"iat": DROP}, "invalid_iat"),
    "expired": ({"exp": "PAST"}, "expired"),
    "neither-sid-nor-sub": ({"sub": DROP}, "missing_sid_sub"),
    "no-jti": ({"jti": DROP}, "missing_jti"),
    "alg-none": ({"alg": "none"}, "bad_signature"),
    "hs256": ({"alg": "HS256"}, "bad_signature"),
    "id-token-typ": ({"typ": "at+jwt"}, "malformed"),
}


def _spoil(oidc, changes: dict) -> str:
    changes = dict(changes)
    key = changes.pop("key", "provider")
    times = {"OLD": now() - 3600, "FUTURE": now() + 3600, "PAST": now() - 60}
    changes = {
        k: times.get(v, v) if isinstance(v, str) else v for k, v in changes.items()
    }
    if changes.get("alg") == "none":
        import base64
        import json

        token = logout_token(oidc)
        b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=")  # noqa: E731
        header = b64({"alg": "none", "typ": "logout+jwt"}).decode()
        return f"{header}.{token.split('.')[1]}."
    if changes.get("alg") == "HS256":
        import jwt

        claims = {
            "iss": oidc.issuer,
            "aud": CLIENT["client_id"],
            "iat": int(now()),
            "jti": uuid.uuid4().hex,
            "events": {BACKCHANNEL_EVENT: {}},
            "sub": "alice",
        }
        return jwt.encode(claims, CLIENT["client_secret"], algorithm="HS256")
    if "typ" in changes:
        return logout_token(oidc, header={"typ": changes.pop("typ")}, **changes)
    return logout_token(oidc, key=key, **changes)


#: Refused before the provider's signature was checked: anybody's doing.
UNSIGNED = {"bad_signature", "malformed", "too_large"}


def assert_refused(response, reason: str, *, signed: bool | None = None) -> None:
    """A 400 as §2.8 wants, audited with ``reason``; with the provider as
    actor only if it signed what was refused."""
    assert response.status_code == 400, (response.status_code, response.content)
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["error"] == "invalid_request"
    assert isinstance(body["error_description"], str) and body["error_description"]
    row = AuditEvent.objects.get(event=AuditEvent.Event.BACKCHANNEL_REFUSED)
    if signed is None:
        signed = reason not in UNSIGNED
    assert (row.reason, row.identifier, row.method, row.success) == (
        reason,
        "provider:local",
        "backchannel",
        False,
    )
    assert row.actor == ("provider:local" if signed else "")


@pytest.mark.parametrize("name", list(REFUSALS))
def test_bad_logout_tokens_are_refused_and_audited(
    configure, people, oidc, client, name
):
    """Each change alone is refused, for its own reason; the same token made
    the same way without it is accepted."""
    alice = people()
    changes, reason = REFUSALS[name]
    token = _spoil(oidc, changes)
    assert_refused(post(client, token), reason)
    assert alice.signed_in()
    assert not AuditEvent.objects.filter(event=AuditEvent.Event.LOGOUT).exists()
    # Without the change: accepted, and alice's login ends.
    assert post(client, _spoil(oidc, {})).status_code == 200
    assert not alice.signed_in()


@pytest.mark.parametrize(
    "changes",
    [
        {"typ": "JWT"},
        {"typ": None},
        {"typ": "logout+jwt"},
        {"aud": [CLIENT["client_id"], "other"], "azp": CLIENT["client_id"]},
        {"aud": [CLIENT["client_id"]]},
        {"exp": DROP},
    ],
    ids=["typ-JWT", "no-typ", "typ-logout", "azp-ours", "one-aud-list", "no-exp"],
)
def test_what_providers_send_is_accepted(configure, people, oidc, client, changes):
    alice = people()
    assert post(client, _spoil(oidc, changes)).status_code == 200
    assert not alice.signed_in()


def test_a_replayed_logout_token_is_refused(configure, people, oidc, client):
    alice = people()
    token = logout_token(oidc, sub=DROP, sid=alice.row.sid)
    assert post(client, token).status_code == 200
    # A new login in a new provider session of the same subject.
    again = people()
    assert_refused(post(client, token), "replayed")
    assert again.signed_in()
    row = RevokedToken.objects.get(token_type="logout_token")
    assert row.key.startswith("j-") and token not in row.key
    # Kept as long as the token could be accepted at all, not longer.
    assert row.expires_at.timestamp() < time.time() + 5 * 60 + 30


def test_sid_is_required_when_the_registration_says_so(configure, people, oidc, client):
    configure(backchannel_logout_session_required=True)
    alice = people()
    assert_refused(post(client, logout_token(oidc)), "missing_sid")
    assert alice.signed_in()


@pytest.mark.parametrize(
    "body, content_type",
    [
        ("logout_token=not.a.jwt", "application/x-www-form-urlencoded"),
        ("logout_token=" + "a" * 9000, "application/x-www-form-urlencoded"),
        ("logout_token=e30.e30.e30", "application/x-www-form-urlencoded"),
        ("logout_token=a.b.c.d.e", "application/x-www-form-urlencoded"),
        ("", "application/x-www-form-urlencoded"),
        ("logout_token=a.b.c&logout_token=a.b.c", "application/x-www-form-urlencoded"),
        ("token=a.b.c", "application/x-www-form-urlencoded"),
        ('{"logout_token": "a.b.c"}', "application/json"),
        ("logout_token=%ff%fe.%00.x", "application/x-www-form-urlencoded"),
        ("logout_token=\u00e9.b.c", "application/x-www-form-urlencoded"),
        ("&&&===", "application/x-www-form-urlencoded"),
        ("a=1&" * 40 + "logout_token=a.b.c", "application/x-www-form-urlencoded"),
    ],
    ids=[
        "not-a-jwt",
        "long-token",
        "empty-segments",
        "encrypted-shape",
        "empty-body",
        "two-tokens",
        "no-token",
        "json",
        "percent-garbage",
        "non-ascii",
        "broken-form",
        "many-fields",
    ],
)
def test_malformed_requests_are_400_never_500(configure, client, body, content_type):
    response = client.post(ROUTE.format("local"), data=body, content_type=content_type)
    assert_refused(response, "malformed")


def test_an_oversized_body_is_refused(configure, client):
    token = "a" * (20 * 1024)
    assert_refused(post(client, token), "too_large")


def test_unknown_key_ids_read_the_jwks_again_at_most_once_a_minute(
    configure, oidc, client, monkeypatch
):
    """Key rotation: a token naming a key id not in the JWKS makes chatauth read
    the JWKS again -- but a stream of made-up key ids must not become a stream
    of requests to the provider."""
    from chatauth.oauth.providers import OAuthApp, _apps

    forced = []
    fetch = OAuthApp.fetch_jwk_set

    async def counting(self, force=False):
        forced.append(force)
        return await fetch(self, force=force)

    monkeypatch.setattr(OAuthApp, "fetch_jwk_set", counting)

    def unknown_kid():
        return logout_token(oidc, header={"kid": "rotated-" + uuid.uuid4().hex})

    assert_refused(post(client, unknown_kid()), "bad_signature")
    assert forced.count(True) == 1
    AuditEvent.objects.all().delete()
    assert_refused(post(client, unknown_kid()), "bad_signature")
    assert forced.count(True) == 1  # not again within the minute
    assert len(forced) == 3
    # Nor by another worker: the mark is in the shared cache, not in the
    # process (a fresh client object stands for the other worker's).
    _apps.clear()
    AuditEvent.objects.all().delete()
    assert_refused(post(client, unknown_kid()), "bad_signature")
    assert forced.count(True) == 1


def test_only_openid_providers_with_it_on_have_the_route(configure, client, oidc):
    assert client.post(ROUTE.format("nobody")).status_code == 404
    assert client.post(ROUTE.format("local-github")).status_code == 404
    configure(backchannel_logout=False)
    assert client.post(ROUTE.format("local")).status_code == 404
    assert client.get(ROUTE.format("local")).status_code in (404, 405)


def test_the_route_answers_json_whatever_the_accept_header(configure, client):
    response = client.post(
        ROUTE.format("local"),
        data="logout_token=x",
        content_type="application/x-www-form-urlencoded",
        HTTP_ACCEPT="text/html",
    )
    assert_refused(response, "malformed")


# --- RP-initiated logout ---------------------------------------------------------


def test_logout_answers_the_provider_logout_url_when_configured(
    configure, people, oidc
):
    configure(post_logout_redirect_uri="/signed-out")
    alice = people()
    # Kept server side, encrypted: not the token, and no part of it.
    stored = alice.row.id_token
    assert stored and alice.id_token not in stored
    assert alice.id_token.split(".")[1][:40] not in stored
    assert unseal(stored) == alice.id_token
    response = alice.client.post("/auth/logout", content_type="application/json")
    assert response.status_code == 200
    url = response.json()["provider_logout_url"]
    parts = urlsplit(url)
    assert (
        f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{oidc.issuer}/session/end"
    )
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "client_id": CLIENT["client_id"],
        "id_token_hint": alice.id_token,
        "post_logout_redirect_uri": "http://testserver/signed-out",
    }
    assert not alice.signed_in()
    assert not ProviderLogin.objects.exists()
    # The provider accepts it: its "sign me out" page, then back to the site.
    landed = alice.browser.end_session(oidc.issuer, **query)
    assert landed == "http://testserver/signed-out"
    # The id_token never reaches the audit log.
    assert not AuditEvent.objects.filter(token_id__contains=alice.id_token[:40])


def test_logout_has_no_provider_url_unless_configured(configure, people):
    alice = people()
    response = alice.client.post("/auth/logout", content_type="application/json")
    assert response.json() == {"detail": "Logged out."}


def test_rp_logout_defaults_to_the_front_end(configure, people):
    configure(rp_initiated_logout=True)
    alice = people()
    url = alice.client.post("/auth/logout", content_type="application/json").json()[
        "provider_logout_url"
    ]
    assert parse_qs(urlsplit(url).query)["post_logout_redirect_uri"] == [FRONTEND]


# --- checks ----------------------------------------------------------------------


def test_checks_for_provider_logout(settings):
    from chatauth.checks import check_provider_logout

    settings.CHATAUTH = {
        **settings.CHATAUTH,
        "OAUTH_PROVIDERS": {
            "gh": {
                "profile": "github",
                "client_id": "x",
                "backchannel_logout": True,
                "post_logout_redirect_uri": "https://chat.example.com/",
            },
            "sso": {
                "server_metadata_url": "https://sso.example.com/.well-known/x",
                "client_id": "y",
                "post_logout_redirect_uri": "chat.example.com/bye",
            },
            "fine": {
                "server_metadata_url": "https://sso.example.com/.well-known/x",
                "client_id": "z",
                "post_logout_redirect_uri": "/",
                "backchannel_logout_session_required": True,
            },
        },
    }
    found = {(e.id, e.msg.split("'")[1]) for e in check_provider_logout()}
    assert found == {("chatauth.E014", "gh"), ("chatauth.E015", "sso")}


def test_a_kept_id_token_the_secret_no_longer_opens_is_left_out(
    configure, people, settings
):
    """After a secret rotation, an ID token sealed with a secret still listed in
    PREVIOUS_SECRETS is a hint; one sealed with a secret gone is left out, and
    the URL names the client instead."""
    configure(rp_initiated_logout=True)
    old_secret = settings.CHATAUTH["SECRET"]
    rotated, dropped = people(), people()
    settings.CHATAUTH = {
        **settings.CHATAUTH,
        "SECRET": "rotated-secret-" + "r" * 40,
        "PREVIOUS_SECRETS": [old_secret],
    }
    query = _logout_query(rotated)
    assert query["id_token_hint"] == rotated.id_token
    settings.CHATAUTH = {**settings.CHATAUTH, "PREVIOUS_SECRETS": []}
    query = _logout_query(dropped)
    assert "id_token_hint" not in query
    assert query["client_id"] == CLIENT["client_id"]


def _logout_query(login: Login) -> dict:
    response = login.client.post("/auth/logout", content_type="application/json")
    assert response.status_code == 200, response.content
    url = response.json()["provider_logout_url"]
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_an_id_token_too_long_for_a_url_is_not_kept(configure, people, monkeypatch):
    from chatauth.oauth import rp_logout

    configure(rp_initiated_logout=True)
    monkeypatch.setattr(rp_logout, "MAX_ID_TOKEN_LENGTH", 100)
    alice = people()
    assert alice.row.id_token == ""
    query = _logout_query(alice)
    assert "id_token_hint" not in query and query["client_id"] == CLIENT["client_id"]


def test_logout_never_asks_the_provider(configure, people, monkeypatch):
    """The provider logout URL comes from what is known already: the discovery
    document this process read, else the endpoint the login recorded; never a
    request to the provider during logout."""
    from chatauth.oauth.providers import OAuthApp, _apps

    configure(rp_initiated_logout=True)
    first, second = people(), people()
    _apps.clear()  # this process's discovery document gone (as after its TTL)

    async def unreachable(self):
        raise AssertionError("logout asked the provider")

    monkeypatch.setattr(OAuthApp, "load_server_metadata", unreachable)
    assert _logout_query(first)["id_token_hint"] == first.id_token
    # A session without the recorded endpoint (recorded before it was known):
    # no URL, and the logout itself goes on.
    session = second.client.session
    record = dict(session["_chatauth_provider_login"])
    record.pop("end_session")
    session["_chatauth_provider_login"] = record
    session.save()
    response = second.client.post("/auth/logout", content_type="application/json")
    assert response.json() == {"detail": "Logged out."}
    assert not second.signed_in()


# --- failures ------------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError, DatabaseError])
def test_a_logout_that_fails_is_not_recorded_as_used(
    configure, people, oidc, client, error
):
    """If ending the logins fails, nothing of it stays -- the jti included --
    and the provider's retry of the same token is accepted."""
    alice = people()
    failures = []

    def failing(sender, **kwargs):
        if not failures:
            failures.append(kwargs.get("method"))
            raise error("the logout fails half-way")

    user_logged_out.connect(failing, dispatch_uid="test.failing_logout")
    try:
        token = logout_token(oidc, sid=alice.row.sid)
        client.raise_request_exception = False
        response = post(client, token)
        assert response.status_code == (503 if error is DatabaseError else 500)
        assert failures == ["backchannel"]
        assert alice.signed_in()  # rolled back: the login goes on
        assert not RevokedToken.objects.filter(token_type="logout_token").exists()

        retried = post(client, token)
    finally:
        user_logged_out.disconnect(dispatch_uid="test.failing_logout")
    assert retried.status_code == 200, retried.content
    assert not alice.signed_in()
    assert RevokedToken.objects.filter(token_type="logout_token").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_replays_end_the_login_once(configure, people, oidc):
    alice = people()
    token = logout_token(oidc, sid=alice.row.sid)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def attempt():
        from django.db import connection

        try:
            barrier.wait(10)
            statuses.append(post(Client(), token).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [200, 400]
    assert not alice.signed_in()
    assert AuditEvent.objects.filter(event=AuditEvent.Event.LOGOUT).count() == 1
    refused = AuditEvent.objects.get(event=AuditEvent.Event.BACKCHANNEL_REFUSED)
    assert (refused.reason, refused.actor) == ("replayed", "provider:local")


def test_a_login_that_cannot_be_recorded_is_undone(configure, oidc):
    """The record is what lets the provider end the login: without it, no
    login (the callback's usual refusal, no session)."""

    def failing(sender, **kwargs):
        raise DatabaseError("no room for the record")

    pre_save.connect(failing, sender=ProviderLogin, dispatch_uid="test.no_record")
    alice = Login()
    try:
        start = alice.client.get("/auth/oauth/local")
        back = alice.browser.authorize(start["Location"], CALLBACK.format("local"))
        done = alice.client.get(back.replace("http://testserver", ""))
    finally:
        pre_save.disconnect(sender=ProviderLogin, dispatch_uid="test.no_record")
        alice.close()
    assert done.status_code == 302
    assert done["Location"] == FRONTEND + "?error=server_error"
    assert not alice.signed_in()
    assert not ProviderLogin.objects.exists()
    assert not Session.objects.exists()
    refused = AuditEvent.objects.get(event=AuditEvent.Event.OAUTH_REFUSED)
    assert refused.reason == "server_error"


def test_header_checks_need_no_provider(configure, oidc, client, monkeypatch):
    """A token refused for its header is refused without reading anything of
    the provider (no request to make for garbage)."""
    from chatauth.oauth.providers import OAuthApp

    async def unreachable(self):
        raise AssertionError("asked the provider")

    monkeypatch.setattr(OAuthApp, "load_server_metadata", unreachable)
    assert_refused(post(client, _spoil(oidc, {"alg": "HS256"})), "bad_signature")
    AuditEvent.objects.all().delete()
    assert_refused(post(client, _spoil(oidc, {"typ": "at+jwt"})), "malformed")


# --- a session under a new key -------------------------------------------------------


def change_password(request):
    """What Django's PasswordChangeView does once the form is valid."""
    from django.http import HttpResponse

    request.user.set_password("a-new-password-" + uuid.uuid4().hex)
    request.user.save()
    update_session_auth_hash(request, request.user)
    return HttpResponse("changed")


urlpatterns = [
    path("test/password", change_password),
    path("", include("project.urls")),
]


@pytest.mark.urls(__name__)
@pytest.mark.parametrize(
    "engine",
    ["django.contrib.sessions.backends.db", "django.contrib.sessions.backends.cache"],
)
def test_a_password_change_keeps_the_login_ending_with_the_provider(
    configure, people, oidc, client, settings, engine
):
    """update_session_auth_hash() gives the session a new key (cycle_key()); the
    provider's logout must still end it, under its new key."""
    settings.SESSION_ENGINE = engine
    alice, other = people(), people()
    old_key = alice.session_key
    assert alice.client.post("/test/password").status_code == 200
    assert alice.session_key != old_key and alice.signed_in()
    assert alice.row.session_key == alice.session_key  # the record followed
    new_key = alice.session_key

    response = post(client, logout_token(oidc, sid=alice.row.sid))

    assert response.status_code == 200
    assert not alice.signed_in()
    assert not ProviderLogin.objects.filter(session_key=new_key).exists()
    row = AuditEvent.objects.get(event=AuditEvent.Event.LOGOUT)
    assert (row.actor, row.reason) == ("provider:local", "")
    # (The other login lost its session to the password change: Django's.)
    assert not other.signed_in()


def test_prune_keeps_what_lives_and_forgets_what_is_gone(
    configure, people, client, monkeypatch
):
    """chatauth_prune asks whether the session still exists, not when it was
    due to expire: a session whose expiry slid on (SESSION_SAVE_EVERY_REQUEST,
    set_expiry) keeps its record."""
    from datetime import timedelta

    from django.conf import settings as django_settings
    from django.core.management import call_command
    from django.utils import timezone

    sliding, ended = people(), people()
    ended_key = ended.session_key
    Session.objects.filter(session_key=ended_key).delete()
    # Far past the first expiry, before the slid one.
    later = timezone.now() + timedelta(
        seconds=django_settings.SESSION_COOKIE_AGE + 3600
    )
    Session.objects.filter(session_key=sliding.session_key).update(
        expire_date=later + timedelta(days=1)
    )
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: later)
    call_command("chatauth_prune", stdout=open("/dev/null", "w"))
    monkeypatch.setattr(timezone, "now", real_now)

    assert list(ProviderLogin.objects.values_list("session_key", flat=True)) == [
        sliding.session_key
    ]


def test_checks_warn_of_back_channel_logout_with_signed_cookies(settings, configure):
    from chatauth.checks import check_provider_logout

    assert not [e for e in check_provider_logout() if e.id == "chatauth.W020"]
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    [warning] = [e for e in check_provider_logout() if e.id == "chatauth.W020"]
    assert "'local'" in warning.msg
    configure(backchannel_logout=False)
    assert not [e for e in check_provider_logout() if e.id == "chatauth.W020"]
