"""Failed-login throttling per username and per client address."""

from __future__ import annotations

import threading

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

import chatauth
from chatauth import throttling
from chatauth.models import AuditEvent
from tests.caches import file_caches
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def attempt(username, password="wrong password", ip="198.51.100.1", client=None):
    return (client or APIClient()).post(
        "/auth/login",
        {"username": username, "password": password},
        format="json",
        REMOTE_ADDR=ip,
    )


def assert_throttled(response):
    assert response.status_code == 429, response.content
    assert set(response.json()) == {"detail"}
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= 300
    return retry_after


def test_ten_failures_per_username(user):
    for i in range(10):
        # Different addresses: only the username scope counts here.
        assert attempt("alice", ip=f"198.51.100.{i + 1}").status_code == 401
    assert_throttled(attempt("alice", ip="198.51.100.200"))
    # Even the right password is refused while throttled: no oracle.
    assert_throttled(attempt("alice", PASSWORD, ip="198.51.100.201"))
    # Username matching ignores case and surrounding space.
    assert_throttled(attempt(" ALICE ", ip="198.51.100.202"))
    # Other users are not affected.
    assert attempt("bob", ip="198.51.100.203").status_code == 401
    throttled = AuditEvent.objects.filter(event="login_failed", reason="throttled")
    assert throttled.count() == 3


def test_ten_failures_per_address(user):
    for i in range(10):
        assert attempt(f"user{i}", ip="203.0.113.7").status_code == 401
    assert_throttled(attempt("alice", PASSWORD, ip="203.0.113.7"))
    assert attempt("alice", PASSWORD, ip="203.0.113.8").status_code == 200


def test_unknown_user_and_wrong_password_identical_until_throttled(user):
    unknown, wrong = [], []
    for i in range(11):
        unknown.append(attempt("nobody", ip=f"192.0.2.{i + 1}"))
        wrong.append(attempt("alice", ip=f"192.0.2.{i + 101}"))
    for a, b in zip(unknown, wrong, strict=True):
        assert (a.status_code, a.content) == (b.status_code, b.content)
    assert [r.status_code for r in unknown] == [401] * 10 + [429]


def test_success_gives_the_attempt_back(user):
    for _ in range(9):
        assert attempt("alice").status_code == 401
    for _ in range(5):
        assert attempt("alice", PASSWORD).status_code == 200
    assert attempt("alice").status_code == 401
    assert_throttled(attempt("alice"))


def test_limit_follows_settings(user):
    with override_settings(CHATAUTH={"LOGIN_FAILURE_LIMIT": 2}):
        assert attempt("alice").status_code == 401
        assert attempt("alice").status_code == 401
        assert_throttled(attempt("alice"))


def test_reset(user):
    for _ in range(10):
        attempt("alice", ip="198.51.100.9")
    assert_throttled(attempt("alice", PASSWORD, ip="198.51.100.9"))
    throttling.reset("alice", "198.51.100.9")
    assert attempt("alice", PASSWORD, ip="198.51.100.9").status_code == 200


def test_concurrent_attempts_cannot_exceed_the_limit():
    checked = []
    lock = threading.Lock()

    @chatauth.password_auth_callback
    def auth(username, password):
        with lock:
            checked.append(password)
        return None

    statuses = []
    barrier = threading.Barrier(24)

    def guess(n):
        from django.db import connection

        try:
            barrier.wait(10)
            response = attempt("victim", f"guess-{n}", ip=f"198.51.100.{n + 1}")
            statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(statuses) == 24
    assert statuses.count(401) == 10
    assert statuses.count(429) == 14
    assert len(checked) == 10  # no more guesses than the limit were verified


def reserve_at_once(identifier: str, count: int = 16) -> list[bool]:
    """``count`` threads reserve an attempt for ``identifier`` at the same
    moment; whether each was allowed."""
    results = []
    barrier = threading.Barrier(count)

    def reserve():
        barrier.wait(10)
        results.append(throttling.reserve(identifier, None).allowed)

    threads = [threading.Thread(target=reserve) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_reservation_is_atomic_across_threads():
    results = reserve_at_once("carol")
    assert results.count(True) == 10 and results.count(False) == 6


def test_reservation_is_exact_on_the_demos_file_cache(tmp_path):
    """The embedded default keeps counts in files, whose ``incr`` reads then
    writes: reservations are serialised within the process."""
    with override_settings(
        CACHES=file_caches(tmp_path), CHATAUTH={"CACHE_ALIAS": "files"}
    ):
        results = reserve_at_once("dave")
    assert results.count(True) == 10 and results.count(False) == 6


def test_client_address_behind_a_trusted_proxy():
    from django.test import RequestFactory

    from chatauth.internal.http import client_ip, scope_client

    def ip(peer, forwarded=None):
        request = RequestFactory().get("/", REMOTE_ADDR=peer)
        if forwarded is not None:
            request.META["HTTP_X_FORWARDED_FOR"] = forwarded
        scope = {
            "client": (peer, 1234),
            "headers": [(b"x-forwarded-for", forwarded.encode())] if forwarded else [],
        }
        assert scope_client(scope)[0] == client_ip(request)
        return client_ip(request)

    with override_settings(CHATAUTH={"TRUSTED_PROXIES": ["10.0.0.0/24"]}):
        assert ip("10.0.0.5", "203.0.113.9") == "203.0.113.9"
        # What the client wrote itself is left of what the proxies appended.
        assert ip("10.0.0.5", "1.2.3.4, 203.0.113.9, 10.0.0.7") == "203.0.113.9"
        assert ip("10.0.0.5", "unknown") is None  # the shared bucket
        assert ip("10.0.0.5", "203.0.113.9, garbage") is None
        assert ip("10.0.0.5") == "10.0.0.5"
        # An untrusted peer's header is never read.
        assert ip("198.51.100.1", "203.0.113.9") == "198.51.100.1"


def test_per_address_limits_hold_behind_the_header_login_proxy(user):
    """The deployment header login needs (workers see the proxy itself): each
    client behind the proxy still has its own bucket."""
    with override_settings(CHATAUTH={"TRUSTED_PROXIES": ["10.0.0.5"]}):
        client = APIClient()

        def through_proxy(username, password, address):
            return client.post(
                "/auth/login",
                {"username": username, "password": password},
                format="json",
                REMOTE_ADDR="10.0.0.5",
                HTTP_X_FORWARDED_FOR=address,
            )

        for i in range(10):
            assert through_proxy(f"u{i}", "x", "203.0.113.1").status_code == 401
        assert through_proxy("alice", PASSWORD, "203.0.113.1").status_code == 429
        assert through_proxy("alice", PASSWORD, "203.0.113.2").status_code == 200


# --- The edges, on a clock the test moves --------------------------------------

WINDOW = 300  # LOGIN_FAILURE_WINDOW's default, in seconds
IP = "198.51.100.1"
T0 = 1_700_000_000.0


@pytest.fixture
def clock(monkeypatch):
    """The time of the throttle and of the local-memory cache's expiry, moved by
    the test: ``clock.now``."""
    import time

    class Clock:
        now = T0

    monkeypatch.setattr(time, "time", lambda: Clock.now)
    return Clock


def fail(times: int, username: str = "alice", ip: str = "198.51.100.1") -> None:
    for _ in range(times):
        assert throttling.reserve(username, ip).allowed


def test_retry_after_is_exactly_what_is_left_of_the_window(user, clock):
    for _ in range(10):
        assert attempt("alice").status_code == 401  # the window starts at T0
        clock.now += 1.25
    # 12.5 s into the window: 287.5 s left, rounded up (never "now", never 0).
    response = attempt("alice")
    assert response.status_code == 429
    assert response["Retry-After"] == "288"
    assert throttling.take_refusal() is None  # noted, audited, then forgotten
    clock.now = T0 + WINDOW - 0.25
    assert attempt("alice")["Retry-After"] == "1"
    clock.now = T0 + WINDOW  # the window is over: a new one
    assert attempt("alice").status_code == 401


def test_the_refusal_names_the_bucket_that_refused(clock):
    fail(10, "alice", "198.51.100.1")
    assert throttling.reserve("bob", "198.51.100.1") == throttling.Reservation(
        (throttling._address_key("198.51.100.1"),), False, WINDOW
    )
    assert throttling.reserve("", "198.51.100.2") == throttling.Reservation(
        (throttling._address_key("198.51.100.2"),), True, 0
    )
    assert throttling.reserve("carol", "198.51.100.2") == throttling.Reservation(
        (throttling._address_key("198.51.100.2"), throttling._username_key("carol")),
        True,
        0,
    )


def test_a_username_refusal_costs_the_address_nothing(clock):
    from django.core.cache import caches

    for i in range(10):
        fail(1, "alice", f"198.51.100.{i + 1}")
    refused = throttling.reserve("alice", "203.0.113.5")
    assert refused == throttling.Reservation(
        (throttling._username_key("alice"),), False, WINDOW
    )
    assert caches["default"].get(throttling._address_key("203.0.113.5")) == 0


def test_a_counter_that_expires_between_add_and_incr_starts_a_new_window(clock):
    """The race fallback: the counter vanishes after ``add`` and before
    ``incr``; the attempt opens a new window, counted as its first."""
    from tests.caches import VanishingLocMemCache

    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "vanishing": {"BACKEND": "tests.caches.VanishingLocMemCache"},
    }
    limit = 3
    with override_settings(
        CACHES=caches,
        CHATAUTH={"CACHE_ALIAS": "vanishing", "LOGIN_FAILURE_LIMIT": limit},
    ):
        # No username: the address's counter alone (the one ``incr`` below).
        fail(limit - 1, "", IP)  # an old window's start stays behind
        clock.now += 100
        VanishingLocMemCache.vanish = True
        assert throttling.reserve("", IP).allowed
        # The new window starts now and counts this attempt once.
        fail(limit - 1, "", IP)
        clock.now += 10
        refused = throttling.reserve("", IP)
        assert (refused.allowed, refused.retry_after) == (False, WINDOW - 10)
        # Both of its keys end with the window.
        clock.now += WINDOW - 10
        fail(limit, "", IP)
        assert throttling.reserve("", IP).retry_after == WINDOW


def test_the_race_fallback_counts_its_attempt_once(clock):
    from tests.caches import VanishingLocMemCache

    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "vanishing": {"BACKEND": "tests.caches.VanishingLocMemCache"},
    }
    with override_settings(
        CACHES=caches,
        CHATAUTH={"CACHE_ALIAS": "vanishing", "LOGIN_FAILURE_LIMIT": 1},
    ):
        VanishingLocMemCache.vanish = True
        assert throttling.reserve("", "198.51.100.1").allowed
        assert not throttling.reserve("", "198.51.100.1").allowed


def test_counts_end_with_their_window(clock):
    fail(10, "alice")
    assert not throttling.reserve("alice", "198.51.100.1").allowed
    clock.now += WINDOW
    fail(10, "alice")


def test_any_username_is_counted_even_one_that_is_not_valid_unicode(clock):
    # A lone surrogate cannot be encoded strictly: counted all the same.
    fail(10, "\ud800")
    assert not throttling.reserve("\ud800", "203.0.113.9").allowed


def test_the_throttle_fails_closed_when_its_cache_is_down(user):
    """A Redis cache with no server behind it (no redis-server needed)."""
    from chatauth.exceptions import ServiceUnavailable
    from tests.caches import cache_down

    with cache_down():
        with pytest.raises(ServiceUnavailable):
            throttling.reserve("alice", "198.51.100.1")
        response = attempt("alice", PASSWORD)
        assert response.status_code == 503
        assert "access_token" not in response.json()
        # A success's attempt cannot be given back: the login stands anyway.
        throttling.release(throttling.Reservation(("k",), True, 0))


def test_a_throttled_backend_says_how_long():
    error = throttling.LoginThrottled(42)
    assert error.retry_after == 42


def test_unlocking_unknown_frees_the_shared_bucket_of_unknown_addresses(clock):
    for i in range(10):
        fail(1, f"user{i}", None)
    assert not throttling.reserve("bob", None).allowed
    assert throttling.unlock("unknown") == "username"
    assert throttling.reserve("bob", None).allowed


def test_every_counter_key_lives_exactly_the_configured_window(clock):
    """A window shorter than the cache's default timeout (300 s): the count and
    its start both end with it, on the normal path and on the race fallback."""
    from datetime import timedelta

    from tests.caches import VanishingLocMemCache

    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "vanishing": {"BACKEND": "tests.caches.VanishingLocMemCache"},
    }
    window = 60
    with override_settings(
        CACHES=caches,
        CHATAUTH={
            "CACHE_ALIAS": "vanishing",
            "LOGIN_FAILURE_LIMIT": 2,
            "LOGIN_FAILURE_WINDOW": timedelta(seconds=window),
        },
    ):
        for path in ("add then incr", "race fallback"):
            VanishingLocMemCache.vanish = path == "race fallback"
            fail(2, "", IP)
            clock.now += 15
            assert throttling.reserve("", IP).retry_after == window - 15
            clock.now += window - 15  # the window is over: a new one, a full one
            fail(2, "", IP)
            assert throttling.reserve("", IP).retry_after == window
            clock.now += window
