"""Brute force and enumeration, against real servers.

* Throttling holds under concurrency: 40 simultaneous wrong-password attempts
  for one username (each from its own loopback address, so only the username
  scope can stop them), and 40 from one address (each for another username):
  at most ``LOGIN_FAILURE_LIMIT`` reach the password check -- counted as 401s
  and as ``login_failed``/``invalid_credentials`` audit rows -- and the rest
  are 429 with ``Retry-After``.  The same through Django's own doors, the
  admin's login form and a plain ``LoginView``, which call ``authenticate()``:
  the limit holds there, the right password is refused once it is reached,
  and ``auth/login`` refuses that account too (one count for every door).
* Unknown user and wrong password answer identically (status, body, headers but
  ``Date``), and take the same time: medians of 200 tries each, interleaved,
  differ by less than 10 %.  That server hashes with bcrypt at cost 8 instead of
  the demo's 12 (same code path, Django's ``BCryptSHA256PasswordHasher``), so
  the 400 tries take seconds, not minutes; the hash still dominates the request,
  so a path that skipped it would differ by far more than 10 %.
* API keys and passwords are compared in constant time (the comparisons go
  through ``constant_time_compare``, observed by a spy that calls the real one).
"""

from __future__ import annotations

import re
import sqlite3
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.utils import crypto

from tests.conftest import PASSWORD
from tests.servers import create_users, migrate, server_env, start_server

pytestmark = pytest.mark.timeout(150)

LIMIT = 10
ATTEMPTS = 40
TRIES = 200


def make_server(tmp_path_factory, name: str, **env):
    tmp = tmp_path_factory.mktemp(name)
    db = tmp / "db.sqlite3"
    env = server_env(
        DATABASE_URL=f"sqlite:///{db}",
        DJANGO_SETTINGS_MODULE="tests.security.server_settings",
        **env,
    )
    migrate(env)
    create_users(env, ("alice", PASSWORD))
    return start_server(env, tmp), db


@pytest.fixture(scope="module")
def throttled(tmp_path_factory):
    """The demo's throttle (10 failures) and hasher (bcrypt cost 12)."""
    server, db = make_server(tmp_path_factory, "throttle")
    yield server, db
    server.stop()
    assert "Traceback" not in server.output(), server.output()


@pytest.fixture(scope="module")
def open_door(tmp_path_factory):
    """No practical throttle, bcrypt cost 8: for timing many tries."""
    server, db = make_server(
        tmp_path_factory,
        "timing",
        CHATAUTH_TEST_BCRYPT_ROUNDS="8",
        CHATAUTH_TEST_LOGIN_LIMIT="100000",
    )
    yield server
    server.stop()
    assert "Traceback" not in server.output(), server.output()


def attempt(url: str, username: str, source: str, barrier: threading.Barrier):
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=60) as client:
        barrier.wait(timeout=30)
        return client.post(
            f"{url}/auth/login", json={"username": username, "password": "wrong!"}
        )


def storm(url: str, pairs: list[tuple[str, str]]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(pairs))
    with ThreadPoolExecutor(len(pairs)) as pool:
        futures = [pool.submit(attempt, url, u, ip, barrier) for u, ip in pairs]
        return [f.result(timeout=90) for f in futures]


def failed_rows(db, reason: str, identifier: str | None = None) -> int:
    query = (
        "SELECT count(*) FROM chatauth_auditevent "
        "WHERE event = 'login_failed' AND reason = ?"
    )
    params: list[str] = [reason]
    if identifier is not None:
        query += " AND identifier = ?"
        params.append(identifier)
    with sqlite3.connect(db) as conn:
        return conn.execute(query, params).fetchone()[0]


def assert_throttled(responses: list[httpx.Response]) -> int:
    statuses = sorted(r.status_code for r in responses)
    passed = statuses.count(401)
    assert set(statuses) <= {401, 429}, statuses
    assert 1 <= passed <= LIMIT, statuses
    assert statuses.count(429) == len(responses) - passed
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["detail"].startswith(
                "Too many failed attempts. Try again later."
            )
    print(
        f"\n{len(responses)} concurrent attempts: {passed} checked (401), "
        f"{len(responses) - passed} throttled (429)"
    )
    return passed


def test_per_username_limit_holds_under_concurrency(throttled):
    server, db = throttled
    # 40 different source addresses: the address scope never trips.
    pairs = [("alice", f"127.0.1.{i + 1}") for i in range(ATTEMPTS)]
    passed = assert_throttled(storm(server.url, pairs))
    assert failed_rows(db, "invalid_credentials", "alice") == passed
    # Still refused for the right password: the username is locked, not the guess.
    ok = httpx.post(
        f"{server.url}/auth/login",
        json={"username": "alice", "password": PASSWORD},
        timeout=30,
    )
    assert ok.status_code == 429


def test_per_address_limit_holds_under_concurrency(throttled):
    server, db = throttled
    before = failed_rows(db, "invalid_credentials")
    pairs = [(f"nobody-{i}", "127.0.2.1") for i in range(ATTEMPTS)]
    passed = assert_throttled(storm(server.url, pairs))
    assert failed_rows(db, "invalid_credentials") - before == passed
    # Another address is not affected.
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.2.2"))
    with other:
        response = other.post(
            f"{server.url}/auth/login",
            json={"username": "nobody-x", "password": "wrong!"},
            timeout=30,
        )
    assert response.status_code == 401


def form_attempt(
    url: str,
    path: str,
    username: str,
    password: str,
    source: str,
    barrier: threading.Barrier | None = None,
) -> httpx.Response:
    """A browser's login through a Django form: the page (CSRF cookie and token),
    then the post."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=60) as client:
        page = client.get(url + path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
        if barrier is not None:
            barrier.wait(timeout=30)
        return client.post(
            url + path,
            data={
                "csrfmiddlewaretoken": token,
                "username": username,
                "password": password,
            },
            headers={"Referer": url + path},
        )


@pytest.mark.parametrize(
    ("door", "subnet"), [("/admin/login/", "127.0.3"), ("/accounts/login/", "127.0.4")]
)
def test_django_login_forms_hold_the_limit(throttled, door, subnet):
    server, db = throttled
    username = f"root-{subnet.rsplit('.', 1)[1]}"
    create_users(server.env, (username, PASSWORD), admin=True)
    barrier = threading.Barrier(ATTEMPTS)
    with ThreadPoolExecutor(ATTEMPTS) as pool:
        futures = [
            pool.submit(
                form_attempt,
                server.url,
                door,
                username,
                f"guess-{i}",
                f"{subnet}.{i + 1}",
                barrier,
            )
            for i in range(ATTEMPTS)
        ]
        statuses = sorted(f.result(timeout=90).status_code for f in futures)
    # Checked: the form again with its error (200); refused unchecked: 429.
    checked = statuses.count(200)
    assert set(statuses) <= {200, 429} and 1 <= checked <= LIMIT, statuses
    assert failed_rows(db, "invalid_credentials", username) == checked
    print(f"\n{door}: {ATTEMPTS} concurrent guesses, {checked} checked")
    right = form_attempt(server.url, door, username, PASSWORD, f"{subnet}.200")
    assert right.status_code == 429 and int(right.headers["Retry-After"]) >= 1
    assert "sessionid" not in right.cookies
    api = httpx.post(
        f"{server.url}/auth/login",
        json={"username": username, "password": PASSWORD},
        timeout=30,
    )
    assert api.status_code == 429


def comparable(response: httpx.Response) -> tuple:
    headers = sorted((k, v) for k, v in response.headers.items() if k != "date")
    return response.status_code, response.content, headers


def test_unknown_user_and_wrong_password_are_indistinguishable(open_door):
    login = f"{open_door.url}/auth/login"
    unknown, wrong = [], []
    with httpx.Client(timeout=30) as client:
        first_unknown = client.post(
            login, json={"username": "mallory", "password": "x"}
        )
        first_wrong = client.post(login, json={"username": "alice", "password": "x"})
        assert first_unknown.status_code == 401
        assert comparable(first_unknown) == comparable(first_wrong)
        for i in range(TRIES):
            # Interleaved, so drift (other processes, caches) hits both alike.
            for username, times in (("mallory", unknown), ("alice", wrong)):
                start = time.perf_counter()
                response = client.post(
                    login, json={"username": username, "password": f"guess-{i}"}
                )
                times.append(time.perf_counter() - start)
                assert comparable(response) == comparable(first_unknown)
    median_unknown, median_wrong = statistics.median(unknown), statistics.median(wrong)
    difference = abs(median_unknown - median_wrong) / max(median_unknown, median_wrong)
    print(
        f"\nlogin timing over {TRIES} tries each (bcrypt cost 8): unknown user "
        f"{median_unknown * 1000:.2f} ms, wrong password {median_wrong * 1000:.2f} ms "
        f"(median), difference {difference:.1%}"
    )
    assert difference < 0.10
    # The hash dominates: without it a request costs a fraction of this.
    assert median_wrong > 0.005


# --- Constant-time comparisons (in process) -------------------------------------------


@pytest.fixture
def compare_spy(monkeypatch):
    """Record calls to ``constant_time_compare`` where chatauth and Django's
    hashers look it up; each call is passed on to the real function."""
    calls: list[tuple[str, str]] = []
    real = crypto.constant_time_compare

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    import django.contrib.auth.hashers as hashers

    import chatauth.models

    monkeypatch.setattr(chatauth.models, "constant_time_compare", spy)
    monkeypatch.setattr(hashers, "constant_time_compare", spy)
    return calls


@pytest.mark.django_db
def test_api_keys_are_compared_in_constant_time(api, compare_spy):
    from chatauth.models import APIKey, hash_key

    row, raw = APIKey.objects.create_key("bruteforce")
    prefix = raw.split(".", 1)[0]
    wrong_secret = f"{prefix}.{'A' * len(raw.split('.', 1)[1])}"
    wrong_prefix = "ca_ffffffff." + raw.split(".", 1)[1]
    answers = []
    for candidate in (wrong_secret, wrong_prefix, "ca_", "Api-Key", raw[:-1]):
        response = api.post(
            "/auth/copilot/token",
            {"identifier": "bob"},
            format="json",
            HTTP_AUTHORIZATION=f"Api-Key {candidate}",
        )
        answers.append((response.status_code, response.content))
    assert answers == [(401, b'{"detail":"Invalid API key."}')] * len(answers)
    # The right prefix with a wrong secret reached the comparison, with hashes.
    assert (row.hashed_key, hash_key(wrong_secret)) in compare_spy
    compare_spy.clear()
    response = api.post(
        "/auth/copilot/token",
        {"identifier": "bob"},
        format="json",
        HTTP_AUTHORIZATION=f"Api-Key {raw}",
    )
    assert response.status_code == 200
    assert (row.hashed_key, row.hashed_key) in compare_spy


@pytest.mark.django_db(transaction=True)  # login checks on a worker thread
def test_passwords_are_compared_in_constant_time(user, login, compare_spy):
    assert login(password="wrong").status_code == 401
    assert len(compare_spy) == 1  # Django's hasher: encoded vs re-encoded
    stored, computed = compare_spy[0]
    assert stored == user.password and computed != stored
    compare_spy.clear()
    assert login().status_code == 200
    assert compare_spy == [(user.password, user.password)]
