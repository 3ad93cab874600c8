"""The chat socket's fast paths keep the guarantees of the slow ones.

* ``revocation.check(..., cache_only=True)`` decides from the cache or says it
  cannot (never "valid" on a miss);
* ``averify_token`` on the event loop refuses what ``verify_token`` refuses;
* ``chatauth.internal.bulk`` stores exactly what the ORM stores.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from chatauth import revocation, tokens
from chatauth.exceptions import TokenError, TokenRevoked
from chatauth.internal import bulk
from chatauth.internal.cache import get_cache, is_local
from chatauth.models import AuditEvent, ChatSession
from tests.conftest import chainlit_token

pytestmark = pytest.mark.django_db(transaction=True)


def test_cache_only_check_never_passes_a_miss(user):
    verified = tokens.classify(*_decoded(tokens.issue_pair(user).access))
    get_cache().clear()
    with pytest.raises(revocation.NeedsDatabase):
        revocation.check(verified, cache_only=True)
    revocation.check(verified)  # the full check fills the cache
    assert revocation.check(verified, cache_only=True) == verified
    revocation.revoke_token(verified, reason="test")
    with pytest.raises(TokenRevoked):
        revocation.check(verified, cache_only=True)


def test_cache_only_check_sees_logout_everywhere(user):
    verified = tokens.verify_token(str(tokens.issue_pair(user).access))
    revocation.revoke_user(user)
    with pytest.raises(TokenRevoked):
        revocation.check(verified, cache_only=True)


async def test_averify_token_on_the_loop_refuses_like_the_thread(user):
    assert is_local()  # the test settings' cache: the on-loop path is taken
    raw = str((await sync_to_async(tokens.issue_pair)(user)).access)
    verified = await tokens.averify_token(raw)  # cold cache: via the database
    assert (await tokens.averify_token(raw)).key == verified.key  # warm: on loop
    with pytest.raises(TokenError):
        await tokens.averify_token(raw[:-2] + ("A" if raw[-2] != "A" else "B") + "A")
    await _arevoke(verified)
    with pytest.raises(TokenRevoked):
        await tokens.averify_token(raw)


async def test_averify_token_chainlit_token_goes_to_the_database(db):
    verified = await tokens.averify_token(chainlit_token("carol"))
    assert verified.user_pk is not None  # the user was found (or created)


def no_worker_thread(monkeypatch):
    """The revocation check must not leave the event loop (no database)."""

    def refuse(verified):
        raise AssertionError("went to a worker thread")

    monkeypatch.setattr(tokens, "_check_in_worker", refuse)
    monkeypatch.setattr(tokens, "_full_check", refuse)


async def test_a_warm_cache_decides_on_the_loop(user, monkeypatch):
    pair = await sync_to_async(tokens.issue_pair)(user)
    access, refresh = str(pair.access), str(pair.refresh)
    await tokens.averify_token(access)  # cold cache: via the database
    await tokens.averify_token(refresh, {"refresh"})
    carol = chainlit_token("carol")
    found = await tokens.averify_token(carol)  # finds (creates) carol
    no_worker_thread(monkeypatch)
    assert (await tokens.averify_token(access)).user_pk == str(user.pk)
    verified = await tokens.averify_token(refresh, {"refresh"})
    assert verified.token_type == "refresh"
    assert (await tokens.averify_token(carol)).user_pk == found.user_pk


async def test_a_cold_cache_goes_to_a_worker_thread(user, monkeypatch):
    raw = str((await sync_to_async(tokens.issue_pair)(user)).access)
    no_worker_thread(monkeypatch)
    with pytest.raises(AssertionError, match="worker thread"):
        await tokens.averify_token(raw)


def test_bulk_insert_matches_the_orm(user):
    now = timezone.now()
    rows = [
        {
            "event": AuditEvent.Event.SESSION_OPENED,
            "user_id": user.pk,
            "identifier": "ü" * 3,
            "method": "websocket",
            "reason": "header",
            "ip": "2001:db8::1",
            "user_agent": "agent",
            "token_id": "k",
            "created_at": now,
        },
        {"event": AuditEvent.Event.SESSION_CLOSED, "user_id": None, "ip": None},
    ]
    bulk.insert_rows(AuditEvent, rows)
    first, second = AuditEvent.objects.order_by("pk")
    assert (first.identifier, first.ip, first.created_at) == (
        "ü" * 3,
        "2001:db8::1",
        now,
    )
    assert (first.user_id, first.success) == (user.pk, True)
    # Missing values take the field defaults, as Model() would.
    assert (second.method, second.success, second.user_id) == ("", True, None)
    assert abs(second.created_at - now) < timedelta(minutes=1)

    session_id = uuid.uuid4()
    row = ChatSession(id=session_id, user_id=user.pk, ip="127.0.0.1", close_code=4410)
    bulk.insert([row])
    saved = ChatSession.objects.get(pk=session_id)
    assert (saved.ip, saved.close_code, saved.opened_at) == (
        "127.0.0.1",
        4410,
        row.opened_at,
    )
    assert not row._state.adding


def test_bulk_insert_splits_at_the_backend_limit(user):
    # SQLite allows 999 parameters per statement: 12 columns × 200 rows needs
    # several statements.
    bulk.insert_rows(
        AuditEvent, [{"event": "login", "user_id": user.pk} for _ in range(200)]
    )
    assert AuditEvent.objects.filter(user=user, event="login").count() == 200


def _decoded(token: tokens.ChatToken) -> tuple[dict, str]:
    raw = str(token)
    return tokens.decode(raw), raw


async def _arevoke(verified: tokens.VerifiedToken) -> None:
    await sync_to_async(revocation.revoke_token)(verified, reason="test")
