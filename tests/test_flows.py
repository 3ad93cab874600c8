"""The login, refresh and logout flows called directly (chatauth.flows): what each
announces (every signal argument), the exact error codes, and the branches the
HTTP routes reach only under a race or a side door."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth import BACKEND_SESSION_KEY, SESSION_KEY, user_logged_out
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.signals import user_login_failed
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.cache import caches
from django.test import RequestFactory, override_settings

import chatauth
from chatauth import flows, revocation, signals, throttling, tokens, websessions
from chatauth.exceptions import InvalidCredentials, InvalidToken, Throttled
from chatauth.models import AuditEvent, RevokedToken
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

IP = "198.51.100.7"


@pytest.fixture
def sent():
    """Every send of the signals below while the test runs: ``sent[name]`` is a
    list of the keyword arguments of each send (``sender`` included)."""
    watched = {
        "login_failed": user_login_failed,
        "logged_out": user_logged_out,
        "refreshed": signals.token_refreshed,
        "reused": signals.refresh_token_reused,
        "user_revoked": signals.user_tokens_revoked,
    }
    calls: dict[str, list[dict]] = {name: [] for name in watched}
    receivers = {}
    for name, signal in watched.items():

        def receiver(sender, signal=None, _name=name, **kwargs):
            calls[_name].append({"sender": sender, **kwargs})

        receivers[name] = receiver
        signal.connect(receiver, weak=False)
    yield calls
    for name, signal in watched.items():
        signal.disconnect(receivers[name])


def http_request(user=None):
    """A request from ``IP`` with a real (database) session, ``user`` logged in."""
    request = RequestFactory().post("/auth/logout", REMOTE_ADDR=IP)
    SessionMiddleware(lambda r: None).process_request(request)
    if user is not None:
        from django.contrib.auth import login

        login(request, user, backend="chatauth.backends.ThrottledModelBackend")
        request.session.set_expiry(600)  # not SESSION_COOKIE_AGE: its own
        request.session.save()
    return request


def counts(username: str) -> tuple[int | None, int | None]:
    cache = caches["default"]
    return (
        cache.get(throttling._address_key(IP)),
        cache.get(throttling._username_key(username)),
    )


def refused_code(call) -> tuple[str, str]:
    with pytest.raises(InvalidToken) as refused:
        call()
    return str(refused.value.detail), refused.value.detail.code


# --- Login ---------------------------------------------------------------------------


async def test_a_wrong_password_is_counted_once_and_announced_once(user, sent):
    request = http_request()
    with pytest.raises(InvalidCredentials):
        await flows.password_login(request, "alice", "wrong password")
    # Counted by the flow, against this request's address: the backend, seeing
    # the reservation, does not count it again.
    assert counts("alice") == (1, 1)
    # Django's authenticate() announced it (with this request); the flow adds
    # nothing to it.
    [failed] = sent["login_failed"]
    assert failed["request"] is request
    assert failed["credentials"]["username"] == "alice"


async def test_a_right_password_gives_the_attempt_back(user):
    request = http_request()
    assert await flows.password_login(request, "alice", PASSWORD) == user
    assert counts("alice") == (0, 0)


async def test_a_throttled_login_says_how_long_and_why(user, sent, monkeypatch):
    now = 1_700_000_000.0
    monkeypatch.setattr(time, "time", lambda: now)
    for _ in range(10):
        assert throttling.reserve("alice", IP).allowed
    now += 40
    request = http_request()
    with pytest.raises(Throttled) as refused:
        await flows.password_login(request, "alice", PASSWORD)
    assert refused.value.wait == 300 - 40
    assert sent["login_failed"] == [
        {
            "sender": "chatauth.flows",
            "credentials": {"username": "alice"},
            "request": request,
            "method": "password",
            "reason": "throttled",
        }
    ]


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [("none", "invalid_credentials"), ("raise", "hook_failed")],
)
async def test_a_callback_refusal_is_announced_with_its_reason(outcome, reason, sent):
    @chatauth.password_auth_callback
    def check(username, password):
        if outcome == "raise":
            raise RuntimeError("directory down")
        return None

    request = http_request()
    with pytest.raises(InvalidCredentials):
        await flows.password_login(request, "ann", "x")
    assert sent["login_failed"] == [
        {
            "sender": "chatauth.flows",
            "credentials": {"username": "ann"},
            "request": request,
            "method": "password",
            "reason": reason,
        }
    ]


async def test_an_inactive_user_from_a_callback_is_refused_and_announced(
    make_user, sent
):
    from asgiref.sync import sync_to_async

    await sync_to_async(make_user)("ann", is_active=False)

    @chatauth.password_auth_callback
    def check(username, password):
        return chatauth.User(username)

    request = http_request()
    with pytest.raises(InvalidCredentials):
        await flows.password_login(request, "ann", "x")
    [failed] = sent["login_failed"]
    assert (failed["reason"], failed["request"]) == ("user_inactive", request)


async def test_the_oauth_login_goes_through_the_first_backend(user):
    """Two backends configured: Django's login() needs to be told which one
    (the first) -- the user object from the callback names none."""
    from asgiref.sync import sync_to_async

    request = http_request()
    backends = [
        "chatauth.backends.ThrottledModelBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    with override_settings(AUTHENTICATION_BACKENDS=backends):
        await flows.web_login(request, user, "oauth")
    assert request.session[SESSION_KEY] == str(user.pk)
    assert request.session[BACKEND_SESSION_KEY] == backends[0]
    row = await sync_to_async(AuditEvent.objects.get)(event="login")
    assert row.method == "oauth"


# --- Refresh -------------------------------------------------------------------------


def test_a_refresh_announces_the_rotation(user, sent):
    old = tokens.issue_pair(user)
    request = http_request()
    new = flows.refresh(request, str(old.refresh))
    assert new.refresh["fam"] == old.refresh["fam"]
    assert sent["refreshed"] == [
        {
            "sender": flows.refresh,
            "user": user,
            "old_jti": old.refresh["jti"],
            "new_jti": new.refresh["jti"],
            "request": request,
        }
    ]
    assert RevokedToken.objects.get(key=old.refresh["jti"]).reason == "rotated"


def test_a_reused_refresh_token_ends_its_login_and_is_announced(user, sent):
    old = tokens.issue_pair(user)
    flows.refresh(None, str(old.refresh))
    request = http_request()
    assert refused_code(lambda: flows.refresh(request, str(old.refresh))) == (
        "Token has been revoked.",
        "token_revoked",
    )
    assert sent["reused"] == [
        {
            "sender": flows.refresh,
            "user_pk": str(user.pk),
            "jti": old.refresh["jti"],
            "identifier": "alice",
            "request": request,
        }
    ]
    family = RevokedToken.objects.get(key=old.refresh["fam"])
    assert family.reason == "refresh_reused"


def test_a_concurrent_rotation_is_a_reuse_too(user, sent):
    """Two refreshes with one token: the other one denied it (its row is in the
    database) after this one's revocation check read "not denied" from the
    cache.  The row's unique key decides: this one is the reuse."""
    old = tokens.issue_pair(user)
    verified = tokens.verify_signed(str(old.refresh), {"refresh"})
    revocation.check(verified)  # cached: not denied
    RevokedToken.objects.create(
        key=verified.key,
        token_type="refresh",
        reason="rotated",
        expires_at=revocation.timezone.now() + timedelta(days=1),
    )
    request = http_request()
    assert refused_code(lambda: flows.refresh(request, str(old.refresh))) == (
        "Token has been revoked.",
        "token_revoked",
    )
    [reused] = sent["reused"]
    assert (reused["jti"], reused["request"]) == (old.refresh["jti"], request)
    assert sent["refreshed"] == []
    assert RevokedToken.objects.get(key=old.refresh["fam"]).reason == "refresh_reused"


def test_a_token_revoked_otherwise_is_refused_but_no_reuse(user, sent):
    old = tokens.issue_pair(user)
    revocation.revoke_token(
        tokens.verify_signed(str(old.refresh), {"refresh"}), reason="logout"
    )
    assert refused_code(lambda: flows.refresh(None, str(old.refresh))) == (
        "Token has been revoked.",
        "token_revoked",
    )
    assert sent["reused"] == []
    assert not RevokedToken.objects.filter(key=old.refresh["fam"]).exists()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("not-a-token", ("Token is invalid.", "token_not_valid")),
        ("access", ("Token has wrong type.", "token_not_valid")),
        ("expired", ("Token has expired.", "token_expired")),
    ],
)
def test_an_unusable_refresh_token_is_refused_with_its_code(user, raw, expected):
    if raw == "access":
        raw = str(tokens.issue_pair(user).access)
    elif raw == "expired":
        with override_settings(
            CHATAUTH={"REFRESH_TOKEN_LIFETIME": timedelta(seconds=-60), "LEEWAY": 0}
        ):
            raw = str(tokens.issue_pair(user).refresh)
    assert refused_code(lambda: flows.refresh(None, raw)) == expected


def test_a_user_deactivated_behind_the_caches_back_cannot_refresh(user, sent):
    """A queryset update() sends no signal: the cached user state still says
    active; the refresh reads the user itself and refuses."""
    old = tokens.issue_pair(user)
    revocation.check(tokens.verify_signed(str(old.refresh), {"refresh"}))
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    assert refused_code(lambda: flows.refresh(None, str(old.refresh))) == (
        "User is inactive.",
        "user_inactive",
    )
    assert sent["refreshed"] == []


# --- Logout --------------------------------------------------------------------------


def test_a_token_logout_ends_its_login_only_and_is_announced(user, sent):
    pair = tokens.issue_pair(user)
    other = tokens.issue_pair(user)
    credential = tokens.verify_token(str(pair.access))
    flows.logout(None, user, credential=credential, method="websocket", scope={"a": 1})
    assert dict(
        RevokedToken.objects.filter(
            key__in=[pair.access["jti"], pair.access["fam"]]
        ).values_list("key", "reason")
    ) == {pair.access["jti"]: "logout", pair.access["fam"]: "logout"}
    tokens.verify_token(str(other.access))  # not everywhere
    revocation.check(tokens.verify_token(str(other.access)))
    assert sent["user_revoked"] == []
    assert sent["logged_out"] == [
        {
            "sender": type(user),
            "request": None,
            "user": user,
            "method": "websocket",
            "everywhere": False,
            "token_id": pair.access["jti"],
            "scope": {"a": 1},
            "chatauth": True,
        }
    ]


def test_a_logout_with_its_refresh_token_ends_it_with_reason_logout(user):
    pair = tokens.issue_pair(user)
    separate = tokens.issue_pair(user)  # another login's refresh token
    credential = tokens.verify_token(str(pair.access))
    flows.logout(
        None,
        user,
        credential=credential,
        refresh_token=str(separate.refresh),
        method="token",
    )
    reasons = dict(RevokedToken.objects.values_list("key", "reason"))
    assert reasons[separate.refresh["jti"]] == "logout"
    assert reasons[separate.refresh["fam"]] == "logout"


def test_logging_out_a_django_session_ends_it(user, sent):
    request = http_request(user)
    session_key = request.session.session_key
    expires_at = request.session.get_expiry_date().timestamp()
    hook_calls = []

    @chatauth.on_logout
    def bye(request, response):
        hook_calls.append((request, response))

    response = object()
    flows.logout(request, user, method="session", response=response)
    row = RevokedToken.objects.get(key=websessions.session_key_id(session_key))
    assert (row.reason, row.token_type, str(row.user_id)) == (
        "logout",
        "session",
        str(user.pk),
    )
    leeway = timedelta(seconds=10)
    assert abs(row.expires_at.timestamp() - (expires_at + leeway.total_seconds())) < 1
    assert not websessions.store().exists(session_key)  # flushed
    assert request.session.get(SESSION_KEY) is None
    assert isinstance(request.user, AnonymousUser)
    assert hook_calls == [(request, response)]
    [out] = sent["logged_out"]
    assert (out["request"], out["token_id"], out["everywhere"]) == (request, "", False)


def test_a_request_without_a_login_has_no_session_to_end(user):
    request = http_request()  # a session, nobody logged in
    flows.logout(request, user, method="session")
    assert not RevokedToken.objects.exists()


def test_logging_out_a_session_credential_ends_that_session(user, client):
    """The chat socket's logout with a session cookie: its credential is the
    Django session itself."""
    client.force_login(user)
    session = client.session
    session.set_expiry(600)  # not SESSION_COOKIE_AGE: its own
    session.save()
    session_key = session.session_key
    credential = websessions.identity(session_key)
    assert abs(credential.expires_at - (time.time() + 600)) < 5
    flows.logout(None, user, credential=credential, method="websocket")
    row = RevokedToken.objects.get(key=websessions.session_key_id(session_key))
    assert (row.reason, str(row.user_id)) == ("logout", str(user.pk))
    expected = credential.expires_at + 10
    assert abs(row.expires_at.timestamp() - expected) < 1
    assert not websessions.store().exists(session_key)


def test_logout_everywhere_from_a_logout(user, sent):
    pair = tokens.issue_pair(user)
    credential = tokens.verify_token(str(pair.access))
    flows.logout(None, user, credential=credential, everywhere=True, method="token")
    assert sent["user_revoked"] == [
        {"sender": revocation.Profile, "user": user, "reason": "logout_everywhere"}
    ]
    assert sent["logged_out"][0]["everywhere"] is True


@pytest.mark.parametrize("reason", [None, "admin"])
def test_logout_everywhere_ends_every_token(user, sent, reason):
    pair = tokens.issue_pair(user)
    if reason is None:
        flows.logout_everywhere(user)
    else:
        flows.logout_everywhere(user, reason=reason)
    assert sent["user_revoked"] == [
        {
            "sender": revocation.Profile,
            "user": user,
            "reason": reason or "logout_everywhere",
        }
    ]
    with pytest.raises(chatauth.exceptions.TokenRevoked):
        revocation.check(tokens.verify_token(str(pair.access)))
