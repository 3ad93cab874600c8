"""The heartbeat's sweep and the re-check: what no message announced still closes.

Each test ends a credential *behind the channel layer's back* -- a bulk
``QuerySet.update()`` (no signals), a row written directly, a cache that forgot
-- and checks that the live socket closes within a heartbeat anyway, and that a
socket whose credential holds is left alone.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.models import Session
from django.core.cache import caches
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chatauth import revocation, tokens, websessions
from chatauth.constants import CloseCode
from chatauth.models import APIKey, ChatSession, RevokedToken
from tests.test_consumers import (
    expect_close,
    hang_up,
    http,
    open_session,
    row,
)
from tests.test_middleware import cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

BEAT = 0.2


@pytest.fixture(autouse=True)
def _short_heartbeat(settings):
    settings.CHATAUTH = {**settings.CHATAUTH, "HEARTBEAT_INTERVAL": BEAT}


async def still_open(comm) -> None:
    """The socket answers after several heartbeats."""
    await asyncio.sleep(BEAT * 4)
    await comm.send_json_to({"type": "ping"})
    assert (await comm.receive_json_from(timeout=5)) == {"type": "pong"}


async def closes_within_a_beat(comm, started: float, code=CloseCode.REVOKED) -> None:
    await expect_close(comm, code, timeout=BEAT * 3 + 2)
    assert time.monotonic() - started < BEAT * 3 + 2


async def test_a_denylist_row_nobody_announced(user, pair):
    comm, session = await open_session(pair["access_token"])
    other_token = await sync_to_async(lambda: str(tokens.issue_pair(user).access))()
    other, _ = await open_session(other_token)
    await row(session["session_id"])
    claims = tokens.decode(pair["access_token"])
    await RevokedToken.objects.acreate(
        key=claims["jti"],
        user=user,
        token_type="access",
        expires_at=timezone.now() + timedelta(hours=1),
    )
    await sync_to_async(caches["default"].clear)()  # the cache never heard of it
    started = time.monotonic()
    await closes_within_a_beat(comm, started)
    await still_open(other)
    await hang_up(other)


async def test_a_bulk_deactivation_closes_sockets_and_refuses_http(user, pair):
    comm, session = await open_session(pair["access_token"])
    await row(session["session_id"])
    me = await http("get", "/auth/me", **{"HTTP_AUTHORIZATION": "Bearer x"})
    assert me.status_code == 401
    ok = await http(
        "get", "/auth/me", HTTP_AUTHORIZATION=f"Bearer {pair['access_token']}"
    )
    assert ok.status_code == 200  # the cache now says "active"
    started = time.monotonic()
    await type(user).objects.filter(pk=user.pk).aupdate(is_active=False)  # no signal
    await closes_within_a_beat(comm, started)
    # The sweep told the cache too: HTTP refuses at once, not after its TTL.
    refused = await http(
        "get", "/auth/me", HTTP_AUTHORIZATION=f"Bearer {pair['access_token']}"
    )
    assert refused.status_code == 401


async def test_a_row_closed_or_deleted_elsewhere(user, pair):
    first, one = await open_session(pair["access_token"])
    second, two = await open_session(pair["access_token"])
    await row(one["session_id"])
    await row(two["session_id"])
    started = time.monotonic()
    # Closed with an update (no message sent), and deleted with raw SQL (no
    # signal): the sweep finds both.
    await ChatSession.objects.filter(pk=one["session_id"]).aupdate(
        closed_at=timezone.now()
    )
    table = ChatSession._meta.db_table

    def delete_raw():
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE id = %s",  # noqa: S608 (a test's own SQL)
                [ChatSession._meta.pk.get_db_prep_value(two["session_id"], connection)],
            )

    await sync_to_async(delete_raw)()
    await closes_within_a_beat(first, started)
    await closes_within_a_beat(second, started)


async def test_an_api_key_revoked_with_an_update(user):
    key, _ = await sync_to_async(APIKey.objects.create_key)("partner")
    token = await sync_to_async(
        lambda: str(tokens.issue_copilot_token(user, api_key=key))
    )()
    comm, session = await open_session(token)
    await row(session["session_id"])
    started = time.monotonic()
    await APIKey.objects.filter(pk=key.pk).aupdate(revoked_at=timezone.now())
    await closes_within_a_beat(comm, started)


async def test_an_expired_or_vanished_web_session(user):
    from django.conf import settings

    client = await sync_to_async(Client)()
    await sync_to_async(client.force_login)(user)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    comm, session = await open_session(
        headers=cookie(settings.SESSION_COOKIE_NAME, key)
    )
    await row(session["session_id"])
    started = time.monotonic()
    await Session.objects.filter(session_key=key).aupdate(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    await closes_within_a_beat(comm, started)


async def test_password_change_closes_every_socket_of_the_user(user, pair):
    """At once (no heartbeat needed): the token socket, the socket of another
    web session, and the socket of the session Django keeps -- re-keyed by
    update_session_auth_hash, so the old key's socket closes and the new key
    opens one."""
    from django.conf import settings
    from django.contrib.auth import update_session_auth_hash

    name = settings.SESSION_COOKIE_NAME
    kept, other = await sync_to_async(Client)(), await sync_to_async(Client)()
    await sync_to_async(kept.force_login)(user)
    await sync_to_async(other.force_login)(user)

    def change_password():
        request = kept.get("/").wsgi_request
        request.user.set_password("changed through the form 1")
        request.user.save()
        update_session_auth_hash(request, request.user)
        request.session.save()
        return request.session.session_key

    by_token, _ = await open_session(pair["access_token"])
    by_other, _ = await open_session(headers=cookie(name, other.cookies[name].value))
    before = kept.cookies[name].value
    by_kept, _ = await open_session(headers=cookie(name, before))
    started = time.monotonic()
    new_key = await sync_to_async(change_password)()
    await expect_close(by_token, CloseCode.REVOKED, timeout=2)
    await expect_close(by_other, CloseCode.REVOKED, timeout=2)
    assert time.monotonic() - started < 2
    # update_session_auth_hash cycled the kept session's key: the socket opened
    # with the old key closes (its key was deleted), and the new key opens one.
    await expect_close(by_kept, CloseCode.REVOKED, timeout=2)
    again, _ = await open_session(headers=cookie(name, new_key))
    await still_open(again)
    await hang_up(again)


def test_a_sweep_batch_costs_a_handful_of_queries(user, make_user):
    """Whatever the number of sessions in a batch: open rows, touch, denylist,
    users (and the API key table when an API-key token is among them)."""
    from chatauth.chatsessions.sweep import sweep
    from chatauth.consumers import ChatConsumer
    from chatauth.identities import TokenAuth

    consumers = []
    users = [user, *(make_user() for _ in range(19))]
    for n in range(100):
        owner = users[n % len(users)]
        verified = tokens.verify_token(str(tokens.issue_pair(owner).access))
        consumer = ChatConsumer()
        consumer.auth = TokenAuth(verified, "header")
        consumer.session_id = ChatSession.objects.create(user=owner).pk
        consumers.append(consumer)
    with CaptureQueriesContext(connection) as queries:
        codes = sweep(consumers)
    assert codes == [None] * 100
    assert len(queries) <= 5, [q["sql"][:80] for q in queries]
    revocation.revoke_user(users[1])
    codes = sweep(consumers)
    assert codes == [
        CloseCode.REVOKED if n % len(users) == 1 else None for n in range(100)
    ]


def test_web_session_validity_in_one_batch(user, make_user):
    clients = []
    for owner in (user, make_user()):
        client = Client()
        client.force_login(owner)
        clients.append(client)
    credentials = [websessions.identity(c.session.session_key) for c in clients]
    assert websessions.still_valid(credentials) == [True, True]
    clients[0].post("/accounts/logout/")
    assert websessions.still_valid(credentials) == [False, True]


async def test_a_session_whose_data_lost_its_login_does_not_stop_the_sweep(user, pair):
    """One odd session (its login removed from its data while its socket is
    open) closes; the sweep goes on for every other socket."""
    from django.conf import settings

    client = await sync_to_async(Client)()
    await sync_to_async(client.force_login)(user)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    odd, session = await open_session(headers=cookie(settings.SESSION_COOKIE_NAME, key))
    by_token, other = await open_session(pair["access_token"])
    await row(session["session_id"])
    await row(other["session_id"])

    def drop_the_login():
        store = websessions.store(key)
        store.load()
        store.pop("_auth_user_id", None)
        store.save()

    await sync_to_async(drop_the_login)()
    started = time.monotonic()
    await closes_within_a_beat(odd, started)
    # And the sweep still works for the rest: a bulk deactivation is found.
    await type(user).objects.filter(pk=user.pk).aupdate(is_active=False)
    await closes_within_a_beat(by_token, time.monotonic())


# --- One batch, decided directly (sessions.sweep) -------------------------------


def _consumer(verified, session_id):
    from chatauth.consumers import ChatConsumer
    from chatauth.identities import TokenAuth

    consumer = ChatConsumer()
    consumer.auth = TokenAuth(verified, "header")
    consumer.session_id = session_id
    return consumer


def test_a_sweep_batch_decides_each_socket(user, monkeypatch):
    """Each socket's verdict, and the first reason wins: revoked before
    expired, a revoked token before a closed row; open rows touched."""
    from dataclasses import replace

    from chatauth.chatsessions.sweep import sweep
    from chatauth.identities import TokenAuth, WebSessionAuth

    def access():
        return tokens.verify_token(str(tokens.issue_pair(user).access))

    holding, expiring, revoked_expired, closed_revoked, closed, web = (
        access() for _ in range(6)
    )
    client = Client()
    client.force_login(user)
    web = websessions.identity(client.session.session_key)
    earlier = timezone.now() - timedelta(minutes=5)
    rows = [
        ChatSession.objects.create(user=user, last_seen_at=earlier) for _ in range(6)
    ]
    # Another worker's socket: not in this batch, not touched by it.
    elsewhere = ChatSession.objects.create(user=user, last_seen_at=earlier)
    for done in rows[3:5]:
        ChatSession.objects.filter(pk=done.pk).update(closed_at=earlier)
    revocation.revoke_token(revoked_expired, reason="test")
    revocation.revoke_token(closed_revoked, reason="test")
    consumers = [
        _consumer(v, r.pk)
        for v, r in zip(
            (holding, expiring, revoked_expired, closed_revoked, closed, web),
            rows,
            strict=True,
        )
    ]
    # The clock at the exact second ``expiring`` expires (the tokens minted
    # with it expire then too: those that must not are given a later expiry).
    now = expiring.expires_at
    consumers[0].auth = TokenAuth(replace(holding, expires_at=now + 0.001), "header")
    consumers[2].auth = TokenAuth(
        replace(revoked_expired, expires_at=now - 1), "header"
    )
    consumers[4].auth = TokenAuth(replace(closed, expires_at=now + 60), "header")
    consumers[5].auth = WebSessionAuth(web)  # a socket opened with the cookie
    monkeypatch.setattr(time, "time", lambda: now)
    assert sweep(consumers) == [
        None,
        CloseCode.UNAUTHORIZED,
        CloseCode.REVOKED,
        CloseCode.REVOKED,
        CloseCode.REVOKED,
        None,
    ]
    touched = set(
        ChatSession.objects.filter(last_seen_at__gt=earlier).values_list(
            "pk", flat=True
        )
    )
    assert touched == {r.pk for r in (rows[0], rows[1], rows[2], rows[5])}
    assert elsewhere.pk not in touched
    # The web session expires behind everyone's back (an update: no signal, no
    # denylist row): its socket is told it was revoked.
    Session.objects.filter(session_key=client.session.session_key).update(
        expire_date=earlier
    )
    assert sweep(consumers[5:]) == [CloseCode.REVOKED]
    assert sweep([_consumer(expiring, rows[4].pk)]) == [CloseCode.UNAUTHORIZED]
