"""Tokens whose signature was checked are remembered (``VERIFIED_TOKEN_CACHE_SIZE``)
without weakening any check: exact string only, expiry on every use, revocation
on every use, forgotten when the settings change, bounded."""

from __future__ import annotations

import os
import time

import jwt
import pytest
from django.test import override_settings

from chatauth import revocation, tokens
from chatauth.exceptions import TokenError, TokenExpired, TokenRevoked
from chatauth.internal import signed

pytestmark = pytest.mark.django_db


@pytest.fixture
def pyjwt_calls(monkeypatch):
    """Counts calls into PyJWT's decode (the real one still runs)."""
    calls = []
    real = jwt.decode

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    return calls


def fresh_access(user) -> str:
    return str(tokens.issue_pair(user).access)


def test_a_token_presented_again_skips_the_signature_check(user, pyjwt_calls):
    raw = fresh_access(user)
    first = tokens.verify_token(raw)
    again = tokens.verify_token(raw)
    assert again == first
    assert pyjwt_calls == [raw]  # checked once
    assert signed.size() == 1


def test_only_the_exact_string_is_remembered(user, pyjwt_calls):
    raw = fresh_access(user)
    tokens.verify_token(raw)
    head, payload, signature = raw.split(".")
    tampered = (
        f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    )
    with pytest.raises(TokenError):
        tokens.verify_token(tampered)
    with pytest.raises(TokenError):
        tokens.verify_token(raw + "=")  # a padded re-spelling is not the token
    with pytest.raises(TokenError):
        tokens.verify_token(raw + "\n")
    assert signed.size() == 1


def test_expiry_is_checked_on_every_use(user):
    with override_settings(CHATAUTH={"LEEWAY": 0, "ACCESS_TOKEN_LIFETIME": 1}):
        raw = fresh_access(user)
        tokens.verify_token(raw)
        tokens.verify_token(raw)  # remembered
        time.sleep(1.1)
        with pytest.raises(TokenExpired):
            tokens.verify_token(raw)
        assert signed.size() == 0  # the expired entry is gone


def test_revocation_is_checked_on_every_use(user, pyjwt_calls):
    raw = fresh_access(user)
    verified = tokens.verify_token(raw)
    revocation.revoke_token(verified, reason="test")
    with pytest.raises(TokenRevoked):
        tokens.verify_token(raw)
    assert len(pyjwt_calls) == 1  # refused although its signature is remembered


def test_a_settings_change_forgets_everything(user):
    raw = fresh_access(user)
    tokens.verify_token(raw)
    # The secret is rotated and the old one dropped: the old token must fail.
    with override_settings(CHATAUTH={"SECRET": "another-secret-" + "x" * 40}):
        assert signed.size() == 0
        with pytest.raises(TokenError):
            tokens.verify_token(raw)


def test_each_use_gets_its_own_claims(user):
    raw = fresh_access(user)
    tokens.verify_token(raw).claims["metadata"]["injected"] = True
    tokens.verify_token(raw).claims["identifier"] = "mallory"
    verified = tokens.verify_token(raw)
    assert verified.identifier == "alice"
    assert "injected" not in verified.claims.get("metadata", {})


def test_bounded_least_recently_used_out_first(user, pyjwt_calls):
    with override_settings(CHATAUTH={"VERIFIED_TOKEN_CACHE_SIZE": 2}):
        a, b, c = (fresh_access(user) for _ in range(3))
        for raw in (a, b, a, c):  # a used again before c: b is the oldest
            tokens.verify_token(raw)
        assert signed.size() == 2
        pyjwt_calls.clear()
        tokens.verify_token(a)
        tokens.verify_token(c)
        assert pyjwt_calls == []
        tokens.verify_token(b)
        assert pyjwt_calls == [b]


def test_size_zero_turns_it_off(user, pyjwt_calls):
    with override_settings(CHATAUTH={"VERIFIED_TOKEN_CACHE_SIZE": 0}):
        raw = fresh_access(user)
        tokens.verify_token(raw)
        tokens.verify_token(raw)
        assert len(pyjwt_calls) == 2
        assert signed.size() == 0


def test_refused_tokens_are_never_remembered(user):
    raw = fresh_access(user)
    wrong = jwt.encode(
        jwt.decode(raw, options={"verify_signature": False}),
        "not-the-secret-" + "y" * 40,
        algorithm="HS256",
    )
    for _ in range(2):
        with pytest.raises(TokenError):
            tokens.verify_token(wrong)
    assert signed.size() == 0
    assert os.environ["CHATAUTH_SECRET"]  # the test really used another secret


def test_expiry_as_pyjwt_counts_it():
    """PyJWT compares ``int(exp)``: a fractional ``exp`` buys no extra time."""
    now = time.time()
    signed.put("t", {"exp": float(int(now)) + 0.99}, 10, signed.generation())
    assert signed.get("t", 0) is None


def test_a_check_begun_before_a_settings_change_is_not_remembered():
    began = signed.generation()
    signed.clear()  # what settings.reload() does
    signed.put("t", {"exp": time.time() + 60}, 10, began)
    assert signed.size() == 0


@pytest.mark.parametrize("size", ["4096", None, 1.5, True, -3])
def test_a_bad_size_remembers_nothing_and_never_raises(user, size):
    with override_settings(CHATAUTH={"VERIFIED_TOKEN_CACHE_SIZE": size}):
        raw = fresh_access(user)
        assert tokens.verify_token(raw).identifier == "alice"
        assert signed.size() == 0


@pytest.fixture
def clock(monkeypatch):
    """``time.time()`` as the test sets it: ``clock.now``."""

    class Clock:
        now = 1_700_000_000.0

    monkeypatch.setattr(time, "time", lambda: Clock.now)
    return Clock


def test_a_hit_ends_exactly_at_exp_plus_leeway(clock):
    exp = int(clock.now) + 60
    signed.put("t", {"exp": exp, "sub": "1"}, 10, signed.generation())
    clock.now = exp + 10 - 0.001  # the last instant PyJWT still accepts it
    assert signed.get("t", 10) == {"exp": exp, "sub": "1"}
    clock.now = exp + 10  # PyJWT refuses it from here: so does the cache
    assert signed.get("t", 10) is None
    assert signed.size() == 0  # and forgets it
    clock.now = exp - 1
    assert signed.get("t", 10) is None  # gone, not merely hidden


def test_without_leeway_a_hit_ends_at_exp(clock):
    exp = int(clock.now) + 60
    signed.put("t", {"exp": exp}, 10, signed.generation())
    clock.now = exp - 0.001
    assert signed.get("t", 0) == {"exp": exp}
    clock.now = exp
    assert signed.get("t", 0) is None


def test_a_size_of_one_remembers_one_token(clock):
    exp = int(clock.now) + 60
    signed.put("a", {"exp": exp}, 1, signed.generation())
    assert signed.size() == 1
    assert signed.get("a", 0) == {"exp": exp}
    signed.put("b", {"exp": exp}, 1, signed.generation())
    assert (signed.size(), signed.get("a", 0)) == (1, None)
    assert signed.get("b", 0) == {"exp": exp}


@pytest.mark.parametrize(
    "claims", [{}, {"exp": None}, {"exp": "1999999999"}, {"exp": float("nan")}]
)
def test_claims_without_a_usable_exp_are_not_remembered_and_never_raise(claims):
    signed.put("t", claims, 10, signed.generation())
    assert signed.size() == 0
    assert signed.get("t", 10) is None


def test_claims_that_are_not_plain_json_are_not_remembered(clock):
    exp = int(clock.now) + 60
    signed.put("t", {"exp": exp, "score": float("inf")}, 10, signed.generation())
    assert signed.size() == 0
