"""Failed-login throttling per username and per client address."""

from __future__ import annotations

import threading

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

import chatauth
from chatauth import throttling
from chatauth.models import AuditEvent
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


def test_reservation_is_atomic_across_threads():
    results = []
    barrier = threading.Barrier(16)

    def reserve():
        barrier.wait(10)
        results.append(throttling.reserve("carol", None).allowed)

    threads = [threading.Thread(target=reserve) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results.count(True) == 10 and results.count(False) == 6
