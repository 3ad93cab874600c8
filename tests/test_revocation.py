"""Server-side revocation: the denylist, logout everywhere, cache and database."""

from __future__ import annotations

import threading
import time
import warnings
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.cache import caches
from django.test import override_settings
from django.utils import timezone

from chatauth import revocation, signals, tokens
from chatauth.constants import token_group, user_group
from chatauth.exceptions import TokenError, TokenRevoked
from chatauth.models import Profile, RevokedToken
from tests.caches import cache_down

pytestmark = pytest.mark.django_db


def test_revoke_token_once(user):
    pair = tokens.issue_pair(user)
    verified = tokens.verify_token(str(pair.access))
    assert revocation.revoke_token(verified, reason="test") is True
    assert revocation.revoke_token(verified, reason="test") is False
    row = RevokedToken.objects.get()
    assert row.key == pair.access["jti"]
    assert (row.user_id, row.token_type, row.reason) == (user.pk, "access", "test")
    # Kept until the token could no longer be accepted anyway.
    assert row.expires_at >= timezone.now() + timedelta(minutes=14)
    with pytest.raises(TokenRevoked):
        tokens.verify_token(str(pair.access))
    # The refresh token of the same pair is another token.
    assert tokens.verify_token(str(pair.refresh), expected={"refresh"})


def test_database_is_the_source_of_truth(user):
    raw = str(tokens.issue_pair(user).access)
    revocation.revoke_token(tokens.verify_token(raw))
    caches["default"].clear()  # a cache flush (or a cold Redis) forgets nothing
    with pytest.raises(TokenRevoked):
        tokens.verify_token(raw)


def test_a_cached_pass_does_not_outlive_a_revocation(user):
    raw = str(tokens.issue_pair(user).access)
    verified = tokens.verify_token(raw)  # caches "not revoked"
    tokens.verify_token(raw)
    revocation.revoke_token(verified)
    with pytest.raises(TokenRevoked):
        tokens.verify_token(raw)


GATED = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "gated": {
        "BACKEND": "tests.caches.GatedLocMemCache",
        "LOCATION": "gated-revocation",
    },
}


def check_paused_before_caching(
    raw: str, kind: str, revoke, refused: type[TokenError] = TokenRevoked
) -> None:
    """Run a check that has read the database and is about to cache what it read
    (a ``kind`` entry); revoke meanwhile; then let the check finish."""
    from tests.caches import GatedLocMemCache

    reached, go = threading.Event(), threading.Event()
    worker = threading.current_thread()

    def gate(operation, key, value):
        if threading.current_thread() is not worker and f":{kind}:" in key:
            reached.set()
            assert go.wait(10)

    results = []

    def check():
        try:
            results.append(tokens.verify_token(raw))
        except TokenError as e:
            results.append(e)
        finally:
            from django.db import connection

            connection.close()

    with override_settings(CACHES=GATED, CHATAUTH={"CACHE_ALIAS": "gated"}):
        caches["gated"].clear()
        GatedLocMemCache.gate = gate
        try:
            thread = threading.Thread(target=check)
            thread.start()
            assert reached.wait(10)
            revoke()  # on "another worker", while the check holds a stale answer
            go.set()
            thread.join(10)
        finally:
            GatedLocMemCache.gate = None
        assert not thread.is_alive()
        assert not isinstance(results[0], TokenError)  # it began before the revocation
        with pytest.raises(refused):
            tokens.verify_token(raw)


@pytest.mark.django_db(transaction=True)
def test_concurrent_check_cannot_undo_a_token_revocation(user):
    raw = str(tokens.issue_pair(user).access)
    claims = tokens.decode(raw)
    verified = tokens.classify(claims, raw)
    check_paused_before_caching(raw, "deny", lambda: revocation.revoke_token(verified))


@pytest.mark.django_db(transaction=True)
def test_concurrent_check_cannot_undo_a_logout_everywhere(user):
    raw = str(tokens.issue_pair(user).access)
    check_paused_before_caching(raw, "user", lambda: revocation.revoke_user(user))


@pytest.mark.django_db(transaction=True)
def test_concurrent_check_cannot_undo_a_deactivation(user):
    raw = str(tokens.issue_pair(user).access)

    def deactivate():
        user.is_active = False
        user.save()

    check_paused_before_caching(raw, "user", deactivate, refused=TokenError)


@pytest.mark.django_db(transaction=True)
def test_concurrent_check_cannot_undo_a_deletion(user):
    raw = str(tokens.issue_pair(user).access)
    check_paused_before_caching(raw, "user", user.delete, refused=TokenError)


def test_cache_outage_fails_closed(user):
    raw = str(tokens.issue_pair(user).access)
    revocation.revoke_token(tokens.verify_token(raw))
    with cache_down():
        with pytest.raises(TokenRevoked):
            tokens.verify_token(raw)
        fresh = str(tokens.issue_pair(user).access)
        assert tokens.verify_token(fresh).identifier == "alice"


def test_revoke_user_refuses_every_earlier_token(user, make_user):
    bob = make_user("bob")
    earlier = [str(tokens.issue_pair(user).access) for _ in range(3)]
    earlier.append(str(tokens.issue_pair(user).refresh))
    earlier.append(str(tokens.issue_copilot_token(user)))
    bobs = str(tokens.issue_pair(bob).access)
    for raw in earlier:
        tokens.verify_token(raw, expected={"access", "refresh", "copilot"})
    revocation.revoke_user(user)
    for raw in earlier:
        with pytest.raises(TokenRevoked):
            tokens.verify_token(raw, expected={"access", "refresh", "copilot"})
    assert tokens.verify_token(bobs).identifier == "bob"
    time.sleep(0.002)  # past the not-before instant (millisecond resolution)
    after = str(tokens.issue_pair(user).access)
    assert tokens.verify_token(after).identifier == "alice"
    assert Profile.objects.get(user=user).tokens_not_before is not None


def test_revoke_user_refuses_chainlit_tokens(user):
    from tests.conftest import chainlit_token

    raw = chainlit_token("alice")
    assert tokens.verify_token(raw).user_pk == user.pk
    revocation.revoke_user(user)
    with pytest.raises(TokenRevoked):
        tokens.verify_token(raw)


def test_profile_changes_are_seen_at_once(user):
    raw = str(tokens.issue_pair(user).access)
    tokens.verify_token(raw)  # user state cached
    Profile.objects.update_or_create(
        user=user, defaults={"tokens_not_before": timezone.now() + timedelta(seconds=1)}
    )
    with pytest.raises(TokenRevoked):
        tokens.verify_token(raw)


def test_deactivation_and_reactivation(user):
    raw = str(tokens.issue_pair(user).access)
    tokens.verify_token(raw)
    user.is_active = False
    user.save()
    with pytest.raises(TokenError) as excinfo:
        tokens.verify_token(raw)
    assert excinfo.value.code == "user_inactive"
    user.is_active = True
    user.save()
    # A deactivation ends the user's credentials for good: reactivating the
    # user does not bring a token issued before it back (a stolen one would
    # come back too).
    with pytest.raises(TokenRevoked):
        tokens.verify_token(raw)
    time.sleep(0.002)
    assert tokens.verify_token(str(tokens.issue_pair(user).access))


def test_signals_sent(user):
    seen = []

    def on_token(sender, key, kind, reason, user_pk, **kwargs):
        seen.append(("token", key, kind, reason, str(user_pk)))

    def on_user(sender, user, reason, **kwargs):
        seen.append(("user", user.pk, reason))

    signals.token_revoked.connect(on_token)
    signals.user_tokens_revoked.connect(on_user)
    try:
        verified = tokens.verify_token(str(tokens.issue_pair(user).access))
        revocation.revoke_token(verified, reason="r1")
        revocation.revoke_token(verified, reason="r1")  # no second signal
        revocation.revoke_user(user, reason="r2")
    finally:
        signals.token_revoked.disconnect(on_token)
        signals.user_tokens_revoked.disconnect(on_user)
    assert seen == [
        ("token", verified.key, "access", "r1", str(user.pk)),
        ("user", user.pk, "r2"),
    ]


def test_live_sessions_are_told(user):
    """Revocations reach the channel-layer groups of the token and the user."""
    layer = get_channel_layer()
    token_channel = async_to_sync(layer.new_channel)()
    user_channel = async_to_sync(layer.new_channel)()
    verified = tokens.verify_token(str(tokens.issue_pair(user).access))
    async_to_sync(layer.group_add)(token_group(verified.key), token_channel)
    async_to_sync(layer.group_add)(user_group(user.pk), user_channel)

    revocation.revoke_token(verified, reason="logout")
    message = async_to_sync(layer.receive)(token_channel)
    assert message == {"type": "chatauth.revoked", "reason": "logout", "code": 4410}

    revocation.revoke_user(user, reason="logout_everywhere")
    message = async_to_sync(layer.receive)(user_channel)
    assert message["type"] == "chatauth.revoked"
    assert (message["reason"], message["code"]) == ("logout_everywhere", 4410)

    user.is_active = False
    user.save()
    message = async_to_sync(layer.receive)(user_channel)
    assert message["reason"] == "deactivated"


def test_logout_everywhere_refuses_a_token_whose_iat_was_rounded_up(user, monkeypatch):
    """``iat`` is rounded to the millisecond, so a token minted 0.4 ms before
    "log out everywhere" can carry an ``iat`` 0.1 ms *after* it: the 1 ms
    margin refuses it all the same."""
    from datetime import UTC, datetime

    import rest_framework_simplejwt.tokens as simplejwt_tokens

    second = float(int(time.time()))
    minted = datetime.fromtimestamp(second + 0.0006, tz=UTC)  # iat: .001
    logged_out = datetime.fromtimestamp(second + 0.0009, tz=UTC)  # after minting
    monkeypatch.setattr(simplejwt_tokens, "aware_utcnow", lambda: minted)
    access = str(tokens.issue_pair(user).access)
    assert tokens.verify_token(access).issued_at == second + 0.001
    monkeypatch.setattr(timezone, "now", lambda: logged_out)
    revocation.revoke_user(user)
    with pytest.raises(TokenRevoked):
        tokens.verify_token(access)
    # One minted 1.5 ms after the logout (iat .002, past the margin) is not.
    minted = datetime.fromtimestamp(second + 0.0024, tz=UTC)
    later = str(tokens.issue_pair(user).access)
    assert tokens.verify_token(later).issued_at == second + 0.002


# --- Edges the second mutation run found untested -------------------------------------


def test_a_tombstone_is_renewed_to_now_and_never_shortened(db):
    """An identifier's tombstone denied again (a second user of the name
    deleted) moves to now, with the new reason; it is kept until the later
    of the two expiries."""
    from datetime import UTC, datetime

    key = tokens.identifier_id("ghost")
    far, near = time.time() + 86400, time.time() + 60
    leeway = timedelta(seconds=10)

    def deny(reason: str, expires_at: float) -> bool:
        return revocation.revoke_key(
            key, kind="identifier", reason=reason, expires_at=expires_at
        )

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a naive datetime: never stored
        assert deny("user_deleted", far) is True
    first = RevokedToken.objects.get(key=key)
    assert first.expires_at == datetime.fromtimestamp(far, tz=UTC) + leeway
    time.sleep(0.002)
    renamed = "user_renamed_" + "x" * 30  # cut to the column's 32 characters
    assert deny(renamed, near) is True  # a new denial, not "already"
    second = RevokedToken.objects.get(key=key)
    assert second.revoked_at > first.revoked_at
    assert second.reason == renamed[:32]
    assert second.expires_at == first.expires_at  # not shortened to ``near``
    farther = time.time() + 2 * 86400
    assert deny("user_deleted", farther) is True
    third = RevokedToken.objects.get(key=key)
    assert third.expires_at == datetime.fromtimestamp(farther, tz=UTC) + leeway
    # The cache says so at once: denied as of the renewal.
    cached = caches["default"].get(f"chatauth:deny:{key}")
    assert cached == pytest.approx(third.revoked_at.timestamp())


def test_a_renewed_tombstone_refuses_what_was_issued_before_the_renewal(db):
    from django.contrib.auth import get_user_model

    from tests.conftest import chainlit_token

    key = tokens.identifier_id("ghost")
    revocation.revoke_key(key, kind="identifier", reason="x", expires_at=time.time())
    time.sleep(1.1)  # whole seconds: a Chainlit token's issue time
    raw = chainlit_token("ghost", exp=int(time.time()) + 1 + 15 * 86400)
    assert tokens.verify_token(raw).identifier == "ghost"  # issued after it
    get_user_model().objects.filter(username="ghost").delete()
    time.sleep(1.1)
    revocation.revoke_key(key, kind="identifier", reason="y", expires_at=time.time())
    with pytest.raises(TokenRevoked):
        tokens.verify_token(raw)


def test_what_a_denylist_row_holds_is_cut_to_its_columns(user):
    verified = tokens.verify_token(str(tokens.issue_pair(user).access))
    kind, reason = "k" * 20, "r" * 40
    assert revocation.revoke_key(
        verified.key, kind=kind, reason=reason, expires_at=verified.expires_at
    )
    row = RevokedToken.objects.get(key=verified.key)
    assert (row.token_type, row.reason) == ("k" * 16, "r" * 32)


def test_a_repeated_revocation_overwrites_a_stale_cached_pass(user):
    """A check that read the database before the denial was committed may
    have cached "not denied": revoking again (False: already denied) puts the
    row's answer in the cache."""
    raw = str(tokens.issue_pair(user).access)
    verified = tokens.verify_token(raw)
    assert revocation.revoke_token(verified) is True
    row = RevokedToken.objects.get(key=verified.key)
    caches["default"].set(f"chatauth:deny:{verified.key}", 0, 300)  # the stale pass
    assert tokens.verify_token(raw).key == verified.key  # the cache is trusted
    assert revocation.revoke_token(verified) is False
    assert caches["default"].get(f"chatauth:deny:{verified.key}") == pytest.approx(
        row.revoked_at.timestamp()
    )
    with pytest.raises(TokenRevoked):
        tokens.verify_token(raw)


def test_a_denied_jti_is_refused_whatever_its_issue_time(user):
    """A token's own key is denied for good, even one spelled like an
    identifier's tombstone (``i-``) and issued a few seconds "after" its
    revocation (an ``iat`` ahead, within LEEWAY)."""
    from tests.test_tokens import claims_of, forge

    claims = claims_of(str(tokens.issue_pair(user).access))
    claims.update(jti="i-own-key", iat=time.time() + 5)
    raw = forge(claims)
    revocation.revoke_token(tokens.verify_token(raw))
    with pytest.raises(TokenRevoked):
        tokens.verify_token(raw)


def test_a_tombstone_refuses_what_was_issued_at_its_instant_and_not_after(db):
    from dataclasses import replace

    from tests.conftest import chainlit_token

    key = tokens.identifier_id("ghost")
    revocation.revoke_key(key, kind="identifier", reason="x", expires_at=time.time())
    revoked_at = RevokedToken.objects.get(key=key).revoked_at.timestamp()
    verified = tokens.verify_signed(chainlit_token("ghost"))
    with pytest.raises(TokenRevoked):
        revocation.check_denied(replace(verified, issued_at=revoked_at))
    revocation.check_denied(replace(verified, issued_at=revoked_at + 0.001))


def test_default_reasons_and_what_a_revocation_announces(user):
    seen = []

    def on_token(sender, **kwargs):
        seen.append((sender, kwargs["reason"], kwargs["identifier"], kwargs["kind"]))

    def on_user(sender, user, reason, **kwargs):
        seen.append((sender, reason))

    signals.token_revoked.connect(on_token)
    signals.user_tokens_revoked.connect(on_user)
    try:
        verified = tokens.verify_token(str(tokens.issue_pair(user).access))
        revocation.revoke_token(verified)
        revocation.revoke_family(verified, reason="logout")
        revocation.revoke_user(user)
    finally:
        signals.token_revoked.disconnect(on_token)
        signals.user_tokens_revoked.disconnect(on_user)
    assert seen == [
        (RevokedToken, "logout", "alice", "access"),
        (RevokedToken, "logout", "alice", "family"),
        (Profile, "logout_everywhere"),
    ]
    assert RevokedToken.objects.get(key=verified.key).reason == "logout"


def test_revoking_a_family_denies_it_for_the_refresh_lifetime(user):
    from datetime import UTC, datetime

    pair = tokens.issue_pair(user)
    copilot = tokens.verify_token(str(tokens.issue_copilot_token(user)))
    assert revocation.revoke_family(copilot, reason="logout") is False  # none
    assert not RevokedToken.objects.exists()
    started = time.time()
    verified = tokens.verify_token(str(pair.access))
    assert revocation.revoke_family(verified, reason="logout") is True
    row = RevokedToken.objects.get()
    assert (row.key, row.token_type) == (verified.family, "family")
    assert row.user_id == user.pk
    expected = datetime.fromtimestamp(started + 7 * 86400 + 10, tz=UTC)
    assert abs((row.expires_at - expected).total_seconds()) < 2
    with pytest.raises(TokenRevoked):
        tokens.verify_token(str(pair.refresh), expected={"refresh"})


def test_a_password_change_ends_tokens_but_not_web_sessions(user):
    raw = str(tokens.issue_pair(user).access)
    before = timezone.now()
    revocation.end_user(user, reason="password_changed", web_sessions=False)
    profile = Profile.objects.get(user=user)
    assert profile.sessions_not_before is None
    assert profile.tokens_not_before > before  # a millisecond past now
    with pytest.raises(TokenRevoked):
        tokens.verify_token(raw)
    state = revocation.load_user_state(user.pk)
    assert state.sessions_not_before == 0.0
    assert state.tokens_not_before == profile.tokens_not_before.timestamp()
    # The new state is stored in the cache at once (a stale one cannot stay).
    assert caches["default"].get(f"chatauth:user:{user.pk}") == state


def test_logout_everywhere_ends_web_sessions_too(user):
    revocation.revoke_user(user)
    profile = Profile.objects.get(user=user)
    assert profile.sessions_not_before == profile.tokens_not_before
    assert profile.tokens_not_before is not None


def nothing_for(layer, channel) -> bool:
    """No message arrives on ``channel`` within 50 ms."""
    import asyncio

    async def wait() -> bool:
        try:
            await asyncio.wait_for(layer.receive(channel), 0.05)
        except TimeoutError:
            return True
        return False

    return async_to_sync(wait)()


def test_close_messages_held_until_the_block_ends_and_sent_once(user):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(user_group(user.pk), channel)
    with revocation.notifying_after():
        revocation.notify(user_group(user.pk), reason="a")
        revocation.notify(user_group(user.pk), reason="a")  # the same: once
        revocation.notify(user_group(user.pk), reason="b", code=4401)
        assert nothing_for(layer, channel)
    assert async_to_sync(layer.receive)(channel) == {
        "type": "chatauth.revoked",
        "reason": "a",
        "code": 4410,
    }
    assert async_to_sync(layer.receive)(channel)["code"] == 4401
    with pytest.raises(RuntimeError), revocation.notifying_after():
        revocation.notify(user_group(user.pk), reason="c")
        raise RuntimeError("rolled back")
    assert nothing_for(layer, channel)  # "c": never sent
    revocation.notify(user_group(user.pk), reason="d")  # not held any more
    assert async_to_sync(layer.receive)(channel)["reason"] == "d"


def assert_denial_cached(
    user, monkeypatch, *, exp_in: int, kept_at: float, gone_at: float
) -> None:
    """A token expiring ``exp_in`` s from now is checked: its "not denied"
    answer is still in the cache ``kept_at`` s later and gone ``gone_at`` s later."""
    from tests.test_tokens import claims_of, forge

    claims = claims_of(str(tokens.issue_pair(user).access))
    claims["exp"] = int(time.time()) + exp_in
    verified = tokens.verify_token(forge(claims))
    key = f"chatauth:deny:{verified.key}"
    assert caches["default"].get(key) == 0
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + kept_at)
    assert caches["default"].get(key) == 0
    monkeypatch.setattr(time, "time", lambda: real() + gone_at)
    assert caches["default"].get(key) is None


def test_what_a_check_caches_lives_no_longer_than_the_token(user, monkeypatch):
    """The answer "not denied" is cached for min(cache_ttl(), the token's
    remaining life + LEEWAY), at least a second."""
    # + LEEWAY: 12-13 s < cache_ttl() (30 s)
    assert_denial_cached(user, monkeypatch, exp_in=3, kept_at=10.5, gone_at=13.5)


def test_the_password_version_keeps_the_form_tokens_carry():
    """Every token in circulation carries it: a new form would end them all."""
    from django.utils.crypto import salted_hmac

    def expected(encoded: str) -> str:
        mac = salted_hmac("chatauth.password_version", encoded, algorithm="sha1")
        return mac.hexdigest()[:16]

    assert revocation.password_version("pbkdf2$x") == expected("pbkdf2$x")
    assert revocation.password_version(None) == expected("")
    assert revocation.password_version("a") != revocation.password_version("b")


def test_the_cache_ttl_is_one_heartbeat_at_most_in_process_memory():
    for ttl, expected in ((300, 7.0), (5, 5.0)):
        options = {"DENYLIST_CACHE_TTL": ttl, "HEARTBEAT_INTERVAL": 7}
        with override_settings(CHATAUTH=options):
            assert revocation.cache_ttl() == expected
    shared = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/0",
        },
    }
    with override_settings(
        CACHES=shared,
        CHATAUTH={
            "CACHE_ALIAS": "redis",
            "DENYLIST_CACHE_TTL": 300,
            "HEARTBEAT_INTERVAL": 7,
        },
    ):
        assert revocation.cache_ttl() == 300.0  # other processes write to it


def test_a_cached_answer_lives_at_least_a_second(user, monkeypatch):
    """A token a moment from expiry (past it, within LEEWAY): its "not denied"
    is still cached, for one second."""
    time.sleep(1.01 - time.time() % 1)  # early in a second: no second ends below
    # Remaining life + LEEWAY: at most 1 s.
    assert_denial_cached(user, monkeypatch, exp_in=-9, kept_at=0.8, gone_at=1.2)


def test_a_cached_state_of_another_shape_is_read_again(user):
    raw = str(tokens.issue_pair(user).access)
    caches["default"].set(f"chatauth:user:{user.pk}", (True, 0.0, 0.0), 300)
    user.is_active = False
    type(user).objects.filter(pk=user.pk).update(is_active=False)  # no signal
    with pytest.raises(TokenError) as refused:
        tokens.verify_token(raw)
    assert refused.value.code == "user_inactive"
    assert revocation.user_state(user.pk).active is False


def test_is_denied_cached_reads_the_cache_only(user):
    verified = tokens.verify_token(str(tokens.issue_pair(user).access))
    assert revocation.is_denied_cached(verified.key) is False
    revocation.revoke_token(verified)
    assert revocation.is_denied_cached(verified.key) is True
    caches["default"].clear()
    assert revocation.is_denied_cached(verified.key) is False  # not the database


def test_user_states_of_missing_and_malformed_ids(user):
    states = revocation.load_user_states([user.pk, 999999, None])
    assert set(states) == {str(user.pk), "999999"}
    assert states["999999"] == revocation.GONE
    assert states[str(user.pk)].identifier == "alice"
    assert revocation.load_user_states(["not-a-pk"]) == {"not-a-pk": revocation.GONE}
    assert revocation.load_user_state("not-a-pk") == revocation.GONE
    assert revocation.load_user_state(None) == revocation.GONE


def test_an_api_keys_own_row_denies_it(user):
    from chatauth.models import APIKey

    key, _ = APIKey.objects.create_key("partner")
    other, _ = APIKey.objects.create_key("other")
    name, other_name = tokens.api_key_id(key.pk), tokens.api_key_id(other.pk)
    assert revocation.load_denied([name, other_name]) == {}
    APIKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())  # no signal
    denied = revocation.load_denied([name, other_name, "f-" + "0" * 32])
    assert set(denied) == {name}
    assert denied[name] == APIKey.objects.get(pk=key.pk).revoked_at.timestamp()


def test_user_state_reads_the_cache_unless_told_not_to(user):
    stale = revocation.UserState(False, 0.0, 0.0, "x", "alice")
    caches["default"].set(f"chatauth:user:{user.pk}", stale, 300)
    assert revocation.user_state(user.pk) == stale
    assert revocation.user_state(user.pk, cached=False).active is True


def test_each_identifier_has_its_own_cached_identity(user, django_assert_num_queries):
    from tests.conftest import chainlit_token

    alice, carol = chainlit_token("alice"), chainlit_token("carol")
    assert tokens.verify_token(alice).user_pk == user.pk
    carols = tokens.verify_token(carol).user_pk
    assert carols != user.pk
    with django_assert_num_queries(0):  # both identities cached, apart
        assert tokens.verify_token(alice).user_pk == user.pk
        assert tokens.verify_token(carol).user_pk == carols
    assert revocation.cached_identity("alice") == user.pk
    assert revocation.cached_identity("carol") == carols


def test_a_user_model_without_a_password_column(user, monkeypatch):
    """Its users' state has the password version of no password (a model
    such as tests/customuser's is read without the column)."""
    from chatauth import denylist

    monkeypatch.setattr(denylist, "has_field", lambda model, name: name != "password")
    state = revocation.load_user_state(user.pk)
    assert state.password_version == revocation.password_version(None)
    assert (state.active, state.identifier) == (True, "alice")


def test_a_cached_denial_lives_no_longer_than_its_token(user, monkeypatch):
    """A revocation's cache entry lives until the token can no longer be
    accepted (exp + LEEWAY), at least a second, not for ever."""
    from tests.test_tokens import claims_of, forge

    claims = claims_of(str(tokens.issue_pair(user).access))
    time.sleep(1.01 - time.time() % 1)  # early in a second: no second ends below
    claims["exp"] = int(time.time()) - 9  # remaining life + LEEWAY: at most 1 s
    verified = tokens.verify_token(forge(claims))
    revocation.revoke_token(verified)
    key = f"chatauth:deny:{verified.key}"
    assert caches["default"].get(key)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 0.8)
    assert caches["default"].get(key)
    monkeypatch.setattr(time, "time", lambda: real() + 1.2)
    assert caches["default"].get(key) is None


def test_end_user_ends_web_sessions_unless_told_not_to(user):
    revocation.end_user(user, reason="admin")
    profile = Profile.objects.get(user=user)
    assert profile.sessions_not_before == profile.tokens_not_before is not None


def test_a_refusal_of_another_code_closes_as_unauthorized():
    # A code the error table does not know: 4401; one it knows: its own.
    assert revocation.close_code(TokenError("odd", code="not_in_the_table")) == 4401
    assert revocation.close_code(TokenRevoked()) == 4410
    assert revocation.close_code(TokenError("x", code="user_inactive")) == 4410


def test_the_sweep_tells_the_cache_what_it_found(user):
    """What the sweep finds in the database behind the cache's back (a row
    written by another process, an ORM update) is written to the cache, so
    HTTP requests refuse it at once too."""
    from django.contrib.auth import get_user_model

    revoked = tokens.verify_token(str(tokens.issue_pair(user).access))
    kept = tokens.verify_token(str(tokens.issue_pair(user).access))
    RevokedToken.objects.create(
        key=revoked.key,
        token_type="access",
        reason="elsewhere",
        revoked_at=timezone.now(),
        expires_at=timezone.now() + timedelta(hours=1),
    )
    assert revocation.verdicts([revoked, kept]) == [4410, None]
    row = RevokedToken.objects.get(key=revoked.key)
    cached = caches["default"].get(f"chatauth:deny:{revoked.key}")
    assert cached == pytest.approx(row.revoked_at.timestamp())
    assert caches["default"].get(f"chatauth:deny:{kept.key}") == 0
    # A user deactivated by an ORM update: the new state is stored.
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    assert revocation.verdicts([kept]) == [4410]
    stored = caches["default"].get(f"chatauth:user:{user.pk}")
    assert stored == revocation.load_user_state(user.pk)
    assert stored.active is False


def test_revoke_key_announces_no_identifier_unless_given(db):
    seen = []

    def on_token(sender, **kwargs):
        seen.append(kwargs["identifier"])

    signals.token_revoked.connect(on_token)
    try:
        revocation.revoke_key(
            "f-" + "1" * 32, kind="family", reason="x", expires_at=time.time() + 60
        )
    finally:
        signals.token_revoked.disconnect(on_token)
    assert seen == [""]


def test_a_revocations_cache_entry_lives_until_exp_plus_leeway(user, monkeypatch):
    from tests.test_tokens import claims_of, forge

    claims = claims_of(str(tokens.issue_pair(user).access))
    claims["exp"] = int(time.time()) + 3  # + LEEWAY: 12 to 13 s
    verified = tokens.verify_signed(forge(claims))
    revocation.revoke_token(verified)
    key = f"chatauth:deny:{verified.key}"
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 11.5)
    assert caches["default"].get(key)
    monkeypatch.setattr(time, "time", lambda: real() + 13.5)
    assert caches["default"].get(key) is None


def test_a_revoked_chainlit_token_creates_nobody(user, django_assert_num_queries):
    """Once its identifier's user is deleted, a Chainlit-format token is
    refused before any user is looked up or created (what the cache held for
    it before the deletion notwithstanding)."""
    from django.contrib.auth import get_user_model

    from tests.conftest import chainlit_token

    raw = chainlit_token("alice")
    verified = tokens.verify_token(raw)  # identity and "not denied" cached
    with django_assert_num_queries(0):
        revocation.check_denied(verified)  # from the cache alone
    user.delete()  # the identifier's tombstone; its identity forgotten
    with pytest.raises(TokenRevoked):
        tokens.verify_token(raw)
    assert not get_user_model().objects.filter(username="alice").exists()


def test_a_token_of_a_renamed_user_tells_the_new_identifier(user):
    raw = str(tokens.issue_pair(user).access)
    same = tokens.verify_token(raw)
    assert (same.renamed_to, same.current_identifier) == (None, "alice")
    user.username = "alice2"
    user.save()
    full = tokens.verify_token(raw)
    for verified in (full, tokens.verify_token(raw, cache_only=True)):
        assert verified.identifier == "alice"  # what the token says
        assert (verified.renamed_to, verified.current_identifier) == ("alice2",) * 2
