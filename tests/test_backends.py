"""Every door that calls ``authenticate()`` is throttled (chatauth.backends).

Django's admin login form, a plain ``LoginView``, direct ``authenticate()`` and
``aauthenticate()`` calls, and DRF's ``BasicAuthentication`` share the counts of
``auth/login``: guessing through one door does not reset or dodge another.
"""

from __future__ import annotations

import re

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import aauthenticate, authenticate
from django.core.management import call_command
from django.test import Client, RequestFactory, override_settings

from chatauth import throttling
from chatauth.backends import ThrottledModelBackend
from chatauth.models import AuditEvent
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

IP = "198.51.100.7"


def request(ip: str | None = IP):
    made = RequestFactory().post("/")
    if ip is None:
        del made.META["REMOTE_ADDR"]
    else:
        made.META["REMOTE_ADDR"] = ip
    return made


def form_login(client: Client, path: str, password: str, ip: str = IP):
    page = client.get(path, REMOTE_ADDR=ip)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
    return client.post(
        path,
        {
            "csrfmiddlewaretoken": token[1].decode(),
            "username": "alice",
            "password": password,
        },
        REMOTE_ADDR=ip,
    )


@pytest.mark.parametrize("door", ["/admin/login/", "/accounts/login/"])
def test_django_login_forms_are_throttled(make_user, door):
    make_user("alice", is_staff=True)
    client = Client(enforce_csrf_checks=True)
    for _ in range(10):
        response = form_login(client, door, "wrong password")
        assert response.status_code == 200  # the form again, with its error
    # The right password, now: the form's own error, 429 and Retry-After.
    response = form_login(client, door, PASSWORD)
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 300
    assert b"errornote" in response.content or b"error" in response.content
    assert "_auth_user_id" not in client.session
    rows = AuditEvent.objects.filter(event="login_failed")
    assert rows.filter(reason="invalid_credentials").count() == 10
    assert rows.filter(reason="throttled").count() == 1
    # auth/login shares the counts: the same account is locked there too.
    api = Client()
    locked = api.post(
        "/auth/login",
        {"username": "alice", "password": PASSWORD},
        content_type="application/json",
        REMOTE_ADDR="203.0.113.50",
    )
    assert locked.status_code == 429


@pytest.mark.django_db(transaction=True)  # auth/login checks in a worker thread
def test_auth_login_failures_lock_the_admin_form(make_user):
    make_user("alice", is_staff=True)
    api = Client()
    for i in range(10):
        api.post(
            "/auth/login",
            {"username": "alice", "password": "wrong"},
            content_type="application/json",
            REMOTE_ADDR=f"203.0.113.{i + 1}",
        )
    response = form_login(Client(), "/admin/login/", PASSWORD, ip="203.0.113.99")
    assert response.status_code == 429


def test_authenticate_itself_is_throttled_and_gives_back_successes(user):
    for _ in range(9):
        assert authenticate(request(), username="alice", password="wrong") is None
    for _ in range(20):  # successes cost nothing (DRF BasicAuthentication, ...)
        assert authenticate(request(), username="alice", password=PASSWORD) == user
    assert authenticate(request(), username="alice", password="wrong") is None
    # The limit: even the right password is not checked now.
    assert authenticate(request(), username="alice", password=PASSWORD) is None
    assert AuditEvent.objects.filter(reason="throttled").count() == 1


def test_aauthenticate_is_throttled_too(user):
    for _ in range(10):
        assert (
            async_to_sync(aauthenticate)(request(), username="alice", password="wrong")
            is None
        )
    assert (
        async_to_sync(aauthenticate)(request(), username="alice", password=PASSWORD)
        is None
    )
    # The refusal noted in the backend's thread reaches the audit row.
    assert AuditEvent.objects.filter(reason="throttled").count() == 1


def test_an_address_refused_does_not_count_against_the_username(make_user):
    """One address cannot lock arbitrary accounts out."""
    make_user("alice")
    make_user("bob")
    for i in range(10):
        authenticate(request(), username=f"nobody{i}", password="wrong")
    for _ in range(30):  # all refused by the address, none checked
        assert authenticate(request(), username="alice", password="x") is None
        assert authenticate(request(), username="bob", password="x") is None
    # From elsewhere, both accounts are intact.
    assert authenticate(request("192.0.2.1"), username="alice", password=PASSWORD)
    assert authenticate(request("192.0.2.1"), username="bob", password=PASSWORD)


def test_a_distributed_guesser_is_still_slowed(user):
    for i in range(10):
        authenticate(request(f"192.0.2.{i + 1}"), username="alice", password="x")
    assert (
        authenticate(request("192.0.2.200"), username="alice", password=PASSWORD)
        is None
    )


def test_requests_without_an_address_share_one_bucket(make_user):
    make_user("alice")
    for i in range(10):
        authenticate(request(None), username=f"u{i}", password="wrong")
    assert authenticate(request(None), username="alice", password=PASSWORD) is None
    assert authenticate(None, username="alice", password=PASSWORD) is None
    assert authenticate(request(IP), username="alice", password=PASSWORD)


def test_no_password_no_throttle(user):
    """Backends without a password (remote user, tokens) have nothing to guess."""
    backend = ThrottledModelBackend()
    for _ in range(30):
        assert backend.authenticate(request(), username="alice") is None
    assert authenticate(request(), username="alice", password=PASSWORD) == user


@pytest.mark.parametrize(
    ("value", "kind"), [("alice", "username"), (IP, "address"), ("::1", "address")]
)
def test_chatauth_unlock(user, value, kind, capsys):
    ip = value if kind == "address" else None
    for i in range(10):
        authenticate(
            request(ip or f"192.0.2.{i}"),
            username="alice" if kind == "username" else f"x{i}",
            password="wrong",
        )
    assert authenticate(request(ip or IP), username="alice", password=PASSWORD) is None
    call_command("chatauth_unlock", value)
    assert f"Unlocked {kind} {value}." in capsys.readouterr().out
    assert authenticate(request(ip or IP), username="alice", password=PASSWORD) == user


def test_chatauth_unlock_bad_argument():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError) as excinfo:
        call_command("chatauth_unlock", "  ")
    assert excinfo.value.returncode == 2


def test_retry_after_is_the_time_left_in_the_window(user, monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(throttling.time, "time", lambda: now[0])
    for _ in range(10):
        authenticate(request(), username="alice", password="wrong")
    now[0] += 120
    reservation = throttling.reserve("alice", "192.0.2.77")
    assert (reservation.allowed, reservation.retry_after) == (False, 180)


def test_checks_flag_an_unthrottled_password_backend_and_a_missing_middleware():
    from chatauth.checks import check_login_doors

    with override_settings(
        AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.ModelBackend"]
    ):
        assert [e.id for e in check_login_doors()] == ["chatauth.E006"]
    with override_settings(
        AUTHENTICATION_BACKENDS=[
            "chatauth.backends.ThrottledModelBackend",
            "django.contrib.auth.backends.RemoteUserBackend",  # no password
        ]
    ):
        assert check_login_doors() == []
    from django.conf import settings

    without = [
        m
        for m in settings.MIDDLEWARE
        if m != "chatauth.middleware.SessionRevocationMiddleware"
    ]
    with override_settings(MIDDLEWARE=without):
        assert [e.id for e in check_login_doors()] == ["chatauth.E007"]
    misplaced = ["chatauth.middleware.SessionRevocationMiddleware", *without]
    with override_settings(MIDDLEWARE=misplaced):
        assert [e.id for e in check_login_doors()] == ["chatauth.E007"]


def test_ipv6_clients_are_counted_by_their_64_and_mapped_ipv4_as_ipv4(make_user):
    from chatauth.internal.http import address_bucket

    assert address_bucket("2001:db8:1:2::1") == address_bucket("2001:db8:1:2:ffff::9")
    assert address_bucket("2001:db8:1:2::1") != address_bucket("2001:db8:1:3::1")
    assert address_bucket("::ffff:192.0.2.5") == "192.0.2.5"
    make_user("alice")
    for i in range(10):  # ten addresses of one /64: one client
        authenticate(request(f"2001:db8:1:2::{i + 1}"), username=f"u{i}", password="x")
    refused = authenticate(
        request("2001:db8:1:2::ffff"), username="alice", password=PASSWORD
    )
    assert refused is None
    assert authenticate(request("2001:db8:9::1"), username="alice", password=PASSWORD)


def test_a_backend_keyed_by_email_is_counted_by_it_not_in_one_bucket(make_user):
    """ThrottleMixin on a backend that takes ``email=``: each address is
    counted by its email, never all of them under one empty name."""
    from django.test import override_settings

    make_user("alice", email="alice@example.test")
    make_user("bob", email="bob@example.test")

    with override_settings(
        AUTHENTICATION_BACKENDS=["tests.test_backends.EmailBackend"]
    ):
        for i in range(10):  # ten accounts tried, once each, from ten addresses
            authenticate(
                request(f"192.0.2.{i + 1}"), email=f"x{i}@example.test", password="x"
            )
        found = authenticate(
            request("192.0.2.50"), email="bob@example.test", password=PASSWORD
        )
        assert found is not None and found.username == "bob"


class _EmailBackend:
    """A password backend keyed by email, as some projects have."""

    def authenticate(self, request, email=None, password=None):
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(email=email).first()
        return user if user is not None and user.check_password(password) else None

    def get_user(self, user_id):
        from django.contrib.auth import get_user_model

        return get_user_model().objects.filter(pk=user_id).first()


def _throttled(backend_class):
    from chatauth.backends import ThrottleMixin

    return type(
        f"Throttled{backend_class.__name__}", (ThrottleMixin, backend_class), {}
    )


EmailBackend = _throttled(_EmailBackend)


def test_the_mixin_skips_a_backend_that_cannot_take_the_credentials(user):
    """As authenticate() does: remote-user credentials reach the next backend,
    not a TypeError (a 500)."""
    from django.contrib.auth.backends import RemoteUserBackend

    backend = _throttled(RemoteUserBackend)()
    assert backend.authenticate(request(), username="alice", password="x") is None
    assert backend.authenticate(request(), remote_user="alice") == user


def test_a_form_login_is_a_503_not_a_500_when_the_cache_is_down(make_user):
    from tests.caches import cache_down

    make_user("alice", is_staff=True)
    with cache_down():
        response = form_login(Client(), "/admin/login/", PASSWORD)
    assert response.status_code == 503
    assert "_auth_user_id" not in response.wsgi_request.session


def test_a_backend_that_takes_any_credentials_is_flagged():
    from chatauth.checks import check_login_doors

    with override_settings(
        AUTHENTICATION_BACKENDS=[
            "chatauth.backends.ThrottledModelBackend",
            "tests.test_backends.AnyCredentialsBackend",
        ]
    ):
        assert [e.id for e in check_login_doors()] == ["chatauth.W010"]


class AnyCredentialsBackend:
    def authenticate(self, request, **credentials):
        return None


# --- What each attempt is counted under, and what the backend is given ----------


def counted(ip: str | None, name: str = "") -> tuple[int | None, int | None]:
    """The failures counted now against address ``ip`` and username ``name``."""
    from django.core.cache import caches

    cache = caches["default"]
    return (
        cache.get(throttling._address_key(ip)),
        cache.get(throttling._username_key(name)) if name else None,
    )


def test_an_email_keyed_backend_counts_each_email_as_a_username(make_user):
    """Ten addresses guessing one email: its per-username limit holds."""
    make_user("bob", email="bob@example.test")
    with override_settings(
        AUTHENTICATION_BACKENDS=["tests.test_backends.EmailBackend"]
    ):
        for i in range(10):
            ip = f"192.0.2.{i + 1}"
            authenticate(request(ip), email="bob@example.test", password="x")
        assert counted("192.0.2.1", "bob@example.test") == (1, 10)
        refused = authenticate(
            request("192.0.2.50"), email="bob@example.test", password=PASSWORD
        )
        assert refused is None


def test_a_username_field_other_than_username_is_counted_by_it(make_user, monkeypatch):
    """A user model whose USERNAME_FIELD is ``email``: Django's forms still pass
    ``username=`` (counted), a caller may pass ``email=`` (counted the same)."""
    from django.contrib.auth import get_user_model

    make_user("bob", email="bob@example.test")
    monkeypatch.setattr(get_user_model(), "USERNAME_FIELD", "email")
    authenticate(request("192.0.2.1"), username="bob@example.test", password="x")
    assert counted("192.0.2.1", "bob@example.test") == (1, 1)
    for i in range(9):
        authenticate(
            request(f"192.0.2.{i + 2}"), email="bob@example.test", password="x"
        )
    assert counted("192.0.2.1", "bob@example.test") == (1, 10)
    assert (
        authenticate(request("192.0.2.50"), email="bob@example.test", password=PASSWORD)
        is None
    )


class _TokenBackend:
    """A password backend keyed by neither a username nor an email."""

    requests: list = []

    def authenticate(self, request, api_token=None, password=None):
        _TokenBackend.requests.append(request)
        return None

    def get_user(self, user_id):
        return None


TokenBackend = _throttled(_TokenBackend)


def test_a_backend_with_no_name_is_counted_by_address_only():
    """No name to count: not one bucket every such login in the world shares."""
    _TokenBackend.requests = []
    with override_settings(
        AUTHENTICATION_BACKENDS=["tests.test_backends.TokenBackend"]
    ):
        for i in range(12):
            ip = f"192.0.2.{i + 1}"
            assert authenticate(request(ip), api_token=f"t{i}", password="x") is None
            assert counted(ip) == (1, None)
        assert AuditEvent.objects.filter(reason="throttled").count() == 0
        assert len(_TokenBackend.requests) == 12  # each one checked


def test_the_backend_gets_the_request_with_and_without_a_password():
    _TokenBackend.requests = []
    backend = TokenBackend()
    with_password, without = request(), request()
    backend.authenticate(with_password, api_token="t", password="x")
    backend.authenticate(without, api_token="t")
    assert _TokenBackend.requests == [with_password, without]


def test_aauthenticate_counts_the_requests_own_address(user):
    made = request("192.0.2.77")
    async_to_sync(aauthenticate)(made, username="alice", password="wrong")
    assert counted("192.0.2.77", "alice") == (1, 1)
    assert counted(None) == (None, None)


def test_a_throttled_backend_raises_with_the_time_left(user, monkeypatch):
    import time

    now = 1_700_000_000.0
    monkeypatch.setattr(time, "time", lambda: now)
    for _ in range(10):
        authenticate(request(), username="alice", password="wrong")
    now += 100
    made = request()
    with pytest.raises(throttling.LoginThrottled) as refused:
        ThrottledModelBackend().authenticate(made, username="alice", password="x")
    assert refused.value.retry_after == 200
    from chatauth.backends import RETRY_AFTER

    assert getattr(made, RETRY_AFTER) == 200
    # Noted for the audit row of this failure (authenticate() would write it;
    # called directly, nothing did): taken here, so no later failure is
    # mistaken for a throttled one.
    assert throttling.take_refusal() == 200
