"""Minting and the one verification function: what is accepted, what never is."""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.test import override_settings

from chatauth import tokens
from chatauth.constants import TokenType
from chatauth.exceptions import TokenError, TokenExpired, TokenRevoked
from chatauth.models import Profile
from tests.conftest import bearer, chainlit_token

pytestmark = pytest.mark.django_db


def secret() -> str:
    return os.environ["CHATAUTH_SECRET"]


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def forge(payload: dict, key=None, algorithm: str = "HS256", **headers) -> str:
    return jwt.encode(
        payload, secret() if key is None else key, algorithm=algorithm, headers=headers
    )


def b64(data: dict) -> str:
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def access(user) -> str:
    Profile.objects.create(user=user, display_name="Alice", metadata={"plan": "pro"})
    return str(tokens.issue_pair(user).access)


def assert_refused(api, token: str) -> dict:
    response = api.get("/auth/me", **bearer(token))
    assert response.status_code == 401, response.content
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str)
    assert response["WWW-Authenticate"].startswith("Bearer")
    return body


# --- What a minted token holds --------------------------------------------------------


def test_access_token_claims(user, access):
    claims = claims_of(access)
    assert claims["token_type"] == "access"
    assert claims["identifier"] == "alice"
    assert claims["display_name"] == "Alice"
    assert claims["metadata"] == {"plan": "pro"}
    assert claims["user_id"] == str(user.pk)
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert claims["exp"] - claims["iat"] == pytest.approx(15 * 60, abs=1)
    assert jwt.get_unverified_header(access)["alg"] == "HS256"


def test_pair_response_shape(user):
    pair = tokens.issue_pair(user).as_response()
    assert set(pair) == {
        "access_token",
        "refresh_token",
        "token_type",
        "expires_in",
        "user",
    }
    assert pair["token_type"] == "bearer"
    assert pair["expires_in"] == 900
    refresh = claims_of(pair["refresh_token"])
    assert refresh["token_type"] == "refresh"
    assert refresh["exp"] - refresh["iat"] == pytest.approx(7 * 86400, abs=1)


def test_copilot_token_lifetime(user):
    default = claims_of(str(tokens.issue_copilot_token(user)))
    assert default["token_type"] == "copilot"
    assert default["exp"] - default["chatauth_iat"] == pytest.approx(15 * 86400, abs=1)
    short = claims_of(str(tokens.issue_copilot_token(user, timedelta(seconds=60))))
    assert short["exp"] - short["chatauth_iat"] == pytest.approx(60, abs=1)


def test_lifetimes_follow_settings(user):
    with override_settings(CHATAUTH={"ACCESS_TOKEN_LIFETIME": 30}):
        claims = claims_of(str(tokens.issue_pair(user).access))
    assert claims["exp"] - claims["iat"] == pytest.approx(30, abs=1)


def test_verified_token(user, access):
    verified = tokens.verify_token(access)
    assert verified.token_type == TokenType.ACCESS
    assert verified.key == claims_of(access)["jti"]
    assert str(verified.user_pk) == str(user.pk)
    assert verified.user_dict() == {
        "identifier": "alice",
        "display_name": "Alice",
        "metadata": {"plan": "pro"},
    }


def test_me_with_access_and_copilot_tokens(api, user, access):
    response = api.get("/auth/me", **bearer(access))
    assert response.status_code == 200
    assert response.json() == {
        "identifier": "alice",
        "display_name": "Alice",
        "metadata": {"plan": "pro"},
    }
    copilot = str(tokens.issue_copilot_token(user))
    assert api.get("/auth/me", **bearer(copilot)).json()["identifier"] == "alice"


# --- Never accepted -------------------------------------------------------------------


def test_alg_none_refused(api, access):
    payload = claims_of(access)
    unsigned = jwt.encode(payload, None, algorithm="none")
    assert jwt.get_unverified_header(unsigned)["alg"] == "none"
    assert_refused(api, unsigned)
    # Hand-built variants: "None", and a token with a signature kept from the original.
    signature = access.rsplit(".", 1)[1]
    for alg in ("none", "None", "NONE"):
        assert_refused(api, f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(payload)}.")
        assert_refused(
            api, f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(payload)}.{signature}"
        )


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_other_hmac_algorithm_refused(api, access):
    assert_refused(api, forge(claims_of(access), algorithm="HS512"))
    assert_refused(api, forge(claims_of(access), algorithm="HS384"))


def test_rs256_refused(api, access):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert_refused(api, forge(claims_of(access), key=pem, algorithm="RS256"))


def test_bad_signature_refused(api, access):
    assert_refused(api, forge(claims_of(access), key="not-the-secret-" + "n" * 40))
    head, payload, signature = access.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert_refused(api, f"{head}.{payload}.{flipped}")
    # Same signature, changed claims.
    changed = {**claims_of(access), "identifier": "mallory"}
    assert_refused(api, f"{head}.{b64(changed)}.{signature}")


def test_expired_beyond_leeway_refused_within_leeway_accepted(api, access):
    now = time.time()
    expired = forge({**claims_of(access), "exp": int(now) - 60, "iat": now - 960})
    assert_refused(api, expired)
    with pytest.raises(TokenExpired):
        tokens.verify_token(expired)
    # The default leeway is 10 s: a token 2 s past exp still passes (clock skew).
    grace = forge({**claims_of(access), "exp": int(now) - 2, "iat": now - 900})
    assert api.get("/auth/me", **bearer(grace)).status_code == 200


def test_not_yet_valid_iat_refused(api, access):
    future = time.time() + 3600
    assert_refused(
        api, forge({**claims_of(access), "iat": future, "exp": future + 900})
    )


def test_missing_or_bad_exp_refused(api, access):
    claims = claims_of(access)
    del claims["exp"]
    assert_refused(api, forge(claims))
    assert_refused(api, forge({**claims, "exp": "tomorrow"}))
    assert_refused(api, forge({**claims, "exp": True}))


def test_refresh_as_access_refused(api, user):
    pair = tokens.issue_pair(user)
    assert_refused(api, str(pair.refresh))
    with pytest.raises(TokenError):
        tokens.verify_token(str(pair.refresh))


def test_access_as_refresh_refused(api, user):
    pair = tokens.issue_pair(user)
    for raw in (str(pair.access), str(tokens.issue_copilot_token(user))):
        response = api.post("/auth/token/refresh", {"refresh": raw}, format="json")
        assert response.status_code == 401
        assert set(response.json()) == {"detail"}
    chainlit = chainlit_token("alice")
    assert (
        api.post(
            "/auth/token/refresh", {"refresh": chainlit}, format="json"
        ).status_code
        == 401
    )


@pytest.mark.parametrize("token_type", ["admin", "", 1, None])
def test_unknown_type_claim_refused(api, access, token_type):
    claims = {**claims_of(access), "token_type": token_type}
    if token_type is None:
        # No type at all reads as a Chainlit token, which must name an identifier.
        del claims["identifier"]
    assert_refused(api, forge(claims))


def test_missing_jti_or_user_refused(api, access):
    claims = claims_of(access)
    assert_refused(api, forge({k: v for k, v in claims.items() if k != "jti"}))
    assert_refused(api, forge({k: v for k, v in claims.items() if k != "user_id"}))
    assert_refused(api, forge({**claims, "user_id": ["1"]}))


@pytest.mark.parametrize(
    "garbage",
    [
        "garbage",
        "a.b.c",
        "a.b",
        "...",
        "eyJ.eyJ.eyJ",
        "é.é.é",
        "x" * 9000,
        b64({"alg": "HS256"}) + "." + base64.urlsafe_b64encode(b"[1]").decode() + ".x",
        b64({"alg": "HS256"}) + ".bm90IGpzb24.x",
    ],
)
def test_garbage_refused(api, garbage):
    assert_refused(api, garbage)
    with pytest.raises(TokenError):
        tokens.verify_token(garbage)


@pytest.mark.parametrize("value", [None, 42, b"\xff\xfe", "", ["a"], {"a": 1}])
def test_verify_refuses_non_tokens_with_token_error(value):
    with pytest.raises(TokenError):
        tokens.verify_token(value)


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Bearerxyz abc", "bearer  ", "Token abc", "Basic YTpi"],
)
def test_malformed_authorization_headers(api, header):
    response = api.get("/auth/me", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert set(response.json()) == {"detail"}


def test_lowercase_bearer_scheme_accepted(api, access):
    # RFC 7235 §2.1: the auth-scheme is case-insensitive.
    assert api.get("/auth/me", HTTP_AUTHORIZATION=f"bearer {access}").status_code == 200


# --- User state -----------------------------------------------------------------------


def test_deactivated_user_refused_at_once(api, user, access):
    assert api.get("/auth/me", **bearer(access)).status_code == 200  # now cached
    user.is_active = False
    user.save()
    assert_refused(api, access)
    with pytest.raises(TokenError) as excinfo:
        tokens.verify_token(access)
    assert excinfo.value.code == "user_inactive"


def test_deleted_user_refused_at_once(api, user, access):
    assert api.get("/auth/me", **bearer(access)).status_code == 200
    user.delete()
    assert_refused(api, access)
    with pytest.raises(TokenError) as excinfo:
        tokens.verify_token(access)
    assert excinfo.value.code == "user_not_found"


def test_token_for_a_user_that_never_existed_refused(api, access):
    assert_refused(api, forge({**claims_of(access), "user_id": "999999"}))
    assert_refused(api, forge({**claims_of(access), "user_id": "not-a-pk"}))


# --- Chainlit compatibility -----------------------------------------------------------


def test_chainlit_token_works_on_me(api):
    token = chainlit_token("carol", {"team": "blue"})
    assert set(claims_of(token)) == {"identifier", "metadata", "exp"}
    response = api.get("/auth/me", **bearer(token))
    assert response.status_code == 200, response.content
    assert response.json() == {
        "identifier": "carol",
        "display_name": None,
        "metadata": {"team": "blue"},
    }
    verified = tokens.verify_token(token)
    assert verified.token_type == TokenType.CHAINLIT
    assert verified.key.startswith("s-")


def test_chainlit_token_for_an_existing_user(api, user):
    token = chainlit_token("alice")
    assert tokens.verify_token(token).user_pk == user.pk


def test_chainlit_token_refused_after_logout(api):
    token = chainlit_token("carol")
    assert api.get("/auth/me", **bearer(token)).status_code == 200
    assert api.post("/auth/logout", **bearer(token)).status_code == 200
    assert_refused(api, token)
    with pytest.raises(TokenRevoked):
        tokens.verify_token(token)


def test_chainlit_token_refused_when_turned_off(api):
    token = chainlit_token("carol")
    with override_settings(CHATAUTH={"ACCEPT_CHAINLIT_TOKENS": False}):
        assert_refused(api, token)
    assert api.get("/auth/me", **bearer(token)).status_code == 200


@pytest.mark.parametrize(
    "claims",
    [
        {"identifier": ""},
        {"identifier": 42},
        {"identifier": "x" * 256},
        {"identifier": "x" * 200},  # fits the claim, not the username column
        {"identifier": "nul\x00byte"},
        {"identifier": "carol", "metadata": ["not", "a", "dict"]},
        {"identifier": "carol", "metadata": {"nul": "\x00"}},
    ],
)
def test_bad_chainlit_tokens_refused(api, claims):
    payload = {"metadata": {}, "exp": int(time.time()) + 600, **claims}
    assert_refused(api, forge(payload))


def test_chainlit_token_signed_with_another_secret_refused(api):
    payload = {"identifier": "carol", "metadata": {}, "exp": int(time.time()) + 600}
    assert_refused(api, forge(payload, key="chainlit-other-secret-" + "c" * 30))


# --- Limits at N and N + 1 ------------------------------------------------------------


def chainlit_token_of_length(length: int) -> str:
    """A well-signed Chainlit-format token exactly ``length`` characters long."""
    for pad in range(length):
        for extra in ("", "x", "xy"):
            token = chainlit_token("alice", {"pad": "p" * pad, "e": extra})
            if len(token) == length:
                return token
            if len(token) > length + 8:
                break
    raise AssertionError(f"no token of {length} characters")


def test_the_token_length_limit_is_8192_characters():
    assert tokens.MAX_TOKEN_LENGTH == 8192
    longest = chainlit_token_of_length(8192)
    assert tokens.decode(longest)["identifier"] == "alice"
    too_long = chainlit_token_of_length(8193)
    with pytest.raises(TokenError):
        tokens.decode(too_long)  # well signed, but refused before any parsing


@pytest.mark.parametrize("length", [1, 255])
def test_a_chainlit_identifier_of_1_to_255_characters_is_accepted(length):
    verified = tokens.verify_signed(chainlit_token("a" * length))
    assert verified.identifier == "a" * length


@pytest.mark.parametrize("identifier", ["", "a" * 256])
def test_a_chainlit_identifier_of_0_or_256_characters_is_refused(identifier):
    with pytest.raises(TokenError):
        tokens.verify_signed(chainlit_token(identifier))


# --- Clock skew: copilot tokens for a Chainlit server ---------------------------------


def test_copilot_token_backdates_iat_and_keeps_the_exact_time(user):
    before = time.time()
    claims = claims_of(str(tokens.issue_copilot_token(user)))
    after = time.time()
    # The exact issue time, to the millisecond, in the private claim ...
    assert before - 0.001 <= claims[tokens.ISSUED_AT_CLAIM] <= after + 0.001
    # ... and a standard iat backdated by LEEWAY (10 s), whole seconds, for a
    # verifier with no leeway (Chainlit's PyJWT) on a clock up to 10 s behind.
    assert isinstance(claims["iat"], int)
    assert claims[tokens.ISSUED_AT_CLAIM] - claims["iat"] == pytest.approx(10, abs=1)
    verified = tokens.verify_token(str(tokens.issue_copilot_token(user)))
    assert verified.issued_at > claims["iat"] + 9  # the exact one is compared


def test_logout_everywhere_still_refuses_backdated_copilot_tokens(user):
    from chatauth import revocation

    before = tokens.issue_copilot_token(user)
    revocation.revoke_user(user)
    with pytest.raises(TokenRevoked):
        tokens.verify_token(str(before))
    # Minted right after the logout: its iat is older than the logout, but
    # the exact time is not, so it is accepted (backdating must not refuse it).
    after = tokens.issue_copilot_token(user)
    assert after["iat"] < time.time() - 9
    assert str(tokens.verify_token(str(after)).user_pk) == str(user.pk)


def test_old_copilot_tokens_without_the_private_claim_still_work(user):
    claims = claims_of(str(tokens.issue_copilot_token(user)))
    del claims[tokens.ISSUED_AT_CLAIM]
    claims["iat"] = time.time()
    raw = forge(claims)
    assert tokens.verify_token(raw).issued_at == pytest.approx(claims["iat"])


@pytest.mark.parametrize("value", ["soon", True, [1], "FUTURE"])
def test_a_bad_or_future_private_issue_time_is_refused(user, value):
    claims = claims_of(str(tokens.issue_copilot_token(user)))
    claims[tokens.ISSUED_AT_CLAIM] = time.time() + 60 if value == "FUTURE" else value
    raw = forge(claims)
    with pytest.raises(TokenError):
        tokens.verify_token(raw)


# --- The exact issue time: copilot tokens only, and only what is plausible ----------


def copilot_claims(user) -> dict:
    return claims_of(str(tokens.issue_copilot_token(user)))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({tokens.ISSUED_AT_CLAIM: float("nan")}, id="nan"),
        pytest.param({tokens.ISSUED_AT_CLAIM: float("inf")}, id="infinity"),
        pytest.param({tokens.ISSUED_AT_CLAIM: "1"}, id="a string"),
        pytest.param({"iat": float("nan")}, id="nan iat"),
        pytest.param({"exp": float("nan")}, id="nan exp"),
        pytest.param({"iat": None}, id="no iat beside it"),
        # Far later than its iat: it would move the issue time past a logout.
        pytest.param({"shift": 3600}, id="an hour after iat"),
        pytest.param({"shift": -1}, id="before iat"),
    ],
)
def test_an_implausible_exact_issue_time_is_refused(user, change):
    claims = copilot_claims(user)
    change = dict(change)
    shift = change.pop("shift", None)
    if shift is not None:
        claims[tokens.ISSUED_AT_CLAIM] = claims["iat"] + shift
    for name, value in change.items():
        if value is None:
            claims.pop(name)
        else:
            claims[name] = value
    with pytest.raises(TokenError):
        tokens.verify_token(forge(claims))


def test_the_exact_issue_time_counts_on_copilot_tokens_only(user):
    """On any other token it is refused, not honoured: a Chainlit-format token
    minted elsewhere must not choose its own issue time."""
    access = claims_of(str(tokens.issue_pair(user).access))
    access[tokens.ISSUED_AT_CLAIM] = access["iat"]
    with pytest.raises(TokenError):
        tokens.verify_token(forge(access))
    chainlit = claims_of(chainlit_token("alice"))
    chainlit[tokens.ISSUED_AT_CLAIM] = time.time()
    with pytest.raises(TokenError):
        tokens.verify_token(forge(chainlit))


# --- Edges the mutation run found untested --------------------------------------------


def test_a_token_issued_at_the_logout_everywhere_instant_is_refused(user):
    """``issued_at <= not_before`` is refused, the instant itself included."""
    from chatauth import revocation

    revocation.revoke_user(user)
    state = revocation.load_user_state(user.pk)
    claims = claims_of(str(tokens.issue_pair(user).access))
    for name in ("jti",):
        claims[name] = claims[name] + "-edge"
    claims["iat"] = state.tokens_not_before  # exactly then
    with pytest.raises(TokenRevoked):
        tokens.verify_token(forge(claims))
    claims["iat"] = state.tokens_not_before + 0.001  # a millisecond after
    claims["jti"] += "-after"
    assert str(tokens.verify_token(forge(claims)).user_pk) == str(user.pk)


@pytest.mark.parametrize("setting", ["AUDIENCE", "ISSUER"])
def test_a_configured_audience_or_issuer_is_enforced(user, setting):
    claim = {"AUDIENCE": "aud", "ISSUER": "iss"}[setting]
    with override_settings(
        CHATAUTH={"SECRET": os.environ["CHATAUTH_SECRET"], setting: "chat.example"}
    ):
        tokens.reset_backend()
        try:
            minted = str(tokens.issue_pair(user).access)
            assert claims_of(minted)[claim] == "chat.example"
            assert str(tokens.verify_token(minted).user_pk) == str(user.pk)
            for value in (None, "elsewhere.example"):
                claims = claims_of(minted)
                claims["jti"] += f"-{value}"
                if value is None:
                    del claims[claim]
                else:
                    claims[claim] = value
                with pytest.raises(TokenError):
                    tokens.verify_token(forge(claims))
        finally:
            tokens.reset_backend()


# --- Edges the second mutation run found untested -------------------------------------


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def test_denylist_keys_keep_the_form_stored_rows_have():
    """Denylist rows and tombstones outlive a deploy: the keys a new version
    computes must be the ones earlier versions stored (and that the lineage
    claims' patterns accept)."""
    assert tokens.identifier_id("alice") == "i-" + _sha("alice")[:40]
    # Of the normal form: " alice " and "alice" name one user, one tombstone.
    assert tokens.identifier_id(" alice ") == tokens.identifier_id("alice")
    assert tokens.session_key_id("s3ss10n") == "d-" + _sha("s3ss10n")[:40]
    assert tokens.api_key_id("12") == "k-12"
    raw = chainlit_token("carol")  # no jti: keyed by its signed part
    header_and_payload = raw.rsplit(".", 1)[0]
    assert tokens.verify_signed(raw).key == "s-" + _sha(header_and_payload)


def test_revoking_one_token_without_a_jti_leaves_the_others(user):
    from chatauth import revocation

    first, second = chainlit_token("alice"), chainlit_token("alice", {"n": 2})
    revocation.revoke_token(tokens.verify_token(first))
    with pytest.raises(TokenRevoked):
        tokens.verify_token(first)
    assert tokens.verify_token(second).user_pk == user.pk


def test_a_jti_of_another_form_is_keyed_by_the_signed_part(user):
    from chatauth import revocation

    claims = claims_of(str(tokens.issue_pair(user).access))
    claims["jti"] = "not a jti!"
    raw = forge(claims)
    verified = tokens.verify_token(raw)
    assert verified.key == "s-" + _sha(raw.rsplit(".", 1)[0])
    revocation.revoke_token(verified)
    with pytest.raises(TokenRevoked):
        tokens.verify_token(raw)


def test_each_lineage_claim_is_read_whichever_others_are_missing(user):
    from chatauth import revocation

    claims = claims_of(str(tokens.issue_copilot_token(user)))  # no fam, no sid
    claims["akey"] = "k-7"
    raw = forge(claims)
    assert tokens.verify_token(raw).lineage == ("k-7",)
    revocation.revoke_key("k-7", kind="api_key", reason="t", expires_at=claims["exp"])
    with pytest.raises(TokenRevoked):
        tokens.verify_token(raw)


def test_lineage_of_each_token_form(user):
    pair = tokens.issue_pair(user)
    assert tokens.verify_signed(str(pair.access)).lineage == (pair.access["fam"],)
    assert tokens.verify_signed(str(pair.refresh), {"refresh"}).lineage == (
        pair.refresh["fam"],
    )
    chainlit = tokens.verify_signed(chainlit_token("Carol"))
    assert chainlit.lineage == (tokens.identifier_id("Carol"),)


@pytest.mark.parametrize("value", [42, "f-short", "f-" + "A" * 32])
def test_a_malformed_lineage_claim_is_a_token_error(user, value):
    claims = claims_of(str(tokens.issue_pair(user).access))
    claims["fam"] = value
    with pytest.raises(TokenError):
        tokens.verify_signed(forge(claims))


def test_the_exact_issue_time_may_be_iat_to_iat_plus_61_seconds(user):
    """Within [iat, iat + max(LEEWAY, 60 s) + 1 s]; LEEWAY is 10 s here."""
    claims = copilot_claims(user)
    claims["iat"] = int(time.time()) - 300  # so that no bound is in the future
    for shift in (0, 30, 61):
        claims[tokens.ISSUED_AT_CLAIM] = claims["iat"] + shift
        claims["jti"] += "x"
        verified = tokens.verify_token(forge(claims))
        assert verified.issued_at == claims["iat"] + shift
    for shift in (-0.001, 61.001, 61.5):
        claims[tokens.ISSUED_AT_CLAIM] = claims["iat"] + shift
        claims["jti"] += "x"
        with pytest.raises(TokenError):
            tokens.verify_token(forge(claims))


def test_the_exact_issue_time_may_be_leeway_ahead_and_no_more(user, monkeypatch):
    claims = copilot_claims(user)
    now = 2_000_000_000.0
    monkeypatch.setattr(time, "time", lambda: now)
    claims.update(iat=now, exp=now + 600)
    claims[tokens.ISSUED_AT_CLAIM] = now + 10  # LEEWAY ahead: a clock skew
    assert tokens.classify(claims, "h.p.s").issued_at == now + 10
    claims[tokens.ISSUED_AT_CLAIM] = now + 10.001
    with pytest.raises(TokenError):
        tokens.classify(claims, "h.p.s")


@pytest.mark.parametrize("exp", [None, float("inf"), float("nan"), "soon", True])
def test_classify_refuses_an_unusable_exp(user, exp):
    claims = claims_of(str(tokens.issue_pair(user).access))
    if exp is None:
        del claims["exp"]
    else:
        claims["exp"] = exp
    with pytest.raises(TokenError):
        tokens.classify(claims, "h.p.s")


def test_a_chainlit_token_lives_at_most_the_longest_lifetime_plus_leeway(
    db, monkeypatch
):
    now = 2_000_000_000.0
    longest = 15 * 86400  # CHAINLIT_TOKEN_MAX_LIFETIME; LEEWAY is 10 s
    monkeypatch.setattr(time, "time", lambda: now)

    def classify(exp: float):
        return tokens.classify({"identifier": "carol", "exp": exp}, "h.p.s")

    # Without iat it counts as issued as early as it can have been.
    assert classify(now + longest + 10).issued_at == now + 10
    assert classify(now + longest + 5).issued_at == now + 5
    assert classify(now + 3600).issued_at == now + 3600 - longest
    with pytest.raises(TokenError) as refused:
        classify(now + longest + 10.001)
    assert refused.value.detail == "Token lives longer than allowed."


def test_logout_everywhere_refuses_a_chainlit_token_without_iat(user):
    from chatauth import revocation

    raw = chainlit_token("alice")  # exp an hour ahead: issued 15 days back
    assert tokens.verify_token(raw).issued_at < time.time() - 14 * 86400
    revocation.revoke_user(user)
    with pytest.raises(TokenRevoked):
        tokens.verify_token(raw)


def test_a_token_without_iat_counts_as_issued_before_any_logout(user):
    """An access token without ``iat`` cannot be placed in time: it counts as
    issued at the epoch, at or before every not-before, so it is refused."""
    claims = claims_of(str(tokens.issue_pair(user).access))
    del claims["iat"]
    raw = forge(claims)
    assert tokens.verify_signed(raw).issued_at == 0.0
    with pytest.raises(TokenRevoked):
        tokens.verify_token(raw)


def test_a_nul_in_a_chainlit_identifier_is_refused_before_any_lookup(db):
    with pytest.raises(TokenError):
        tokens.verify_signed(chainlit_token("nul\x00byte"))


def test_a_chainlit_token_creates_its_user_with_its_display_name(db):
    from django.contrib.auth import get_user_model

    raw = chainlit_token("dave", {"team": "red"}, display_name="Dave")
    verified = tokens.verify_token(raw)
    created = get_user_model().objects.get(username="dave")
    assert verified.user_pk == created.pk
    profile = Profile.objects.get(user=created)
    assert (profile.display_name, profile.metadata) == ("Dave", {"team": "red"})


def test_a_chainlit_token_does_not_rewrite_an_existing_users_profile(user):
    Profile.objects.create(user=user, display_name="Alice", metadata={"plan": "pro"})
    raw = chainlit_token("alice", {"plan": "free"}, display_name="Mallory")
    assert tokens.verify_token(raw).user_pk == user.pk
    profile = Profile.objects.get(user=user)
    assert (profile.display_name, profile.metadata) == ("Alice", {"plan": "pro"})


def test_a_chainlit_tokens_user_is_found_once_then_cached(
    user, django_assert_num_queries
):
    raw = chainlit_token("alice")
    assert tokens.verify_token(raw).user_pk == user.pk
    with django_assert_num_queries(0):  # identity, denylist and state cached
        assert tokens.verify_token(raw).user_pk == user.pk


def test_cache_only_never_goes_to_the_database(user, django_assert_num_queries):
    from chatauth import revocation

    raw = str(tokens.issue_pair(user).access)
    with django_assert_num_queries(0), pytest.raises(revocation.NeedsDatabase):
        tokens.verify_token(raw, cache_only=True)  # nothing cached yet
    assert tokens.verify_token(raw).user_pk == str(user.pk)  # now cached
    with django_assert_num_queries(0):
        assert tokens.verify_token(raw, cache_only=True).user_pk == str(user.pk)
    # A Chainlit-format token may need its user found or created: never here.
    from django.contrib.auth import get_user_model

    with django_assert_num_queries(0), pytest.raises(revocation.NeedsDatabase):
        tokens.verify_token(chainlit_token("zed"), cache_only=True)
    assert not get_user_model().objects.filter(username="zed").exists()


def test_a_renamed_users_identifier_is_found_again(user):
    """A Chainlit token for an identifier whose cached user was renamed since
    finds (here: creates) the user that now has it."""
    from django.contrib.auth import get_user_model

    assert tokens.verify_token(chainlit_token("alice")).user_pk == user.pk
    time.sleep(0.002)
    user.username = "alice2"
    user.save()
    time.sleep(1.1)  # a token minted after the rename (whole-second exp)
    raw = chainlit_token("alice", exp=int(time.time()) + 1 + 15 * 86400)
    verified = tokens.verify_token(raw)
    newcomer = get_user_model().objects.get(username="alice")
    assert verified.user_pk == newcomer.pk != user.pk


def test_a_token_given_as_bytes_is_read_as_its_ascii_text(user, access):
    assert tokens.verify_token(access.encode("ascii")).key == claims_of(access)["jti"]
    with pytest.raises(TokenError):
        tokens.verify_token(access.encode("ascii") + b"\xff")


def test_an_audience_claim_is_not_checked_unless_one_is_configured(user):
    """Without ``CHATAUTH["AUDIENCE"]`` a token's ``aud`` is not compared with
    anything (PyJWT would refuse any ``aud`` when given no audience)."""
    claims = claims_of(str(tokens.issue_pair(user).access))
    claims["aud"] = "another.example"
    assert str(tokens.verify_token(forge(claims)).user_pk) == str(user.pk)


def test_no_secret_is_a_configuration_error_naming_the_settings(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.delenv("CHATAUTH_SECRET", raising=False)
    monkeypatch.delenv("CHAINLIT_AUTH_SECRET", raising=False)
    with override_settings(CHATAUTH={"SECRET": None}):
        with pytest.raises(ImproperlyConfigured) as error:
            tokens.get_secret()
    assert str(error.value) == (
        "chatauth has no signing secret: set CHATAUTH['SECRET'] or the "
        "CHATAUTH_SECRET (or CHAINLIT_AUTH_SECRET) environment variable."
    )


def test_a_pair_carries_the_users_claims(user):
    pair = tokens.issue_pair(user)
    assert pair.user["identifier"] == "alice"
    assert pair.as_response()["user"] == pair.user
    refresh = tokens.verify_signed(str(pair.refresh), {"refresh"})
    assert refresh.identifier == "alice"


def test_a_copilot_token_for_a_web_session_ends_with_it(user):
    from django.contrib.sessions.backends.db import SessionStore

    short = SessionStore()
    short.set_expiry(60)
    short.create()
    claims = claims_of(str(tokens.issue_copilot_token(user, web_session=short)))
    assert claims["sid"] == tokens.session_key_id(short.session_key)
    assert claims["exp"] == int(short.get_expiry_date().timestamp())
    long = SessionStore()
    long.set_expiry(30 * 86400)
    long.create()
    claims = claims_of(str(tokens.issue_copilot_token(user, web_session=long)))
    assert claims["sid"] == tokens.session_key_id(long.session_key)
    assert claims["exp"] == pytest.approx(time.time() + 15 * 86400, abs=2)


def test_a_copilot_token_for_a_login_ends_with_it(user):
    from chatauth import revocation

    pair = tokens.issue_pair(user)
    alone = claims_of(str(tokens.issue_copilot_token(user)))
    assert "fam" not in alone and "sid" not in alone and "akey" not in alone
    copilot = str(tokens.issue_copilot_token(user, family=pair.access["fam"]))
    assert tokens.verify_token(copilot).lineage == (pair.access["fam"],)
    revocation.revoke_family(tokens.verify_token(str(pair.access)), reason="logout")
    with pytest.raises(TokenRevoked):
        tokens.verify_token(copilot)


def test_a_user_renamed_behind_the_caches_back_is_found_again(user):
    """Renamed by ``QuerySet.update()`` (no signal: the cached identity stays):
    once the user's state is read again, the identifier is found anew."""
    from django.contrib.auth import get_user_model

    from chatauth import revocation

    raw = chainlit_token("alice")
    assert tokens.verify_token(raw).user_pk == user.pk  # identity cached
    get_user_model().objects.filter(pk=user.pk).update(username="alice2")
    revocation.invalidate_user(user.pk)  # its cached state expired
    verified = tokens.verify_token(raw)
    newcomer = get_user_model().objects.get(username="alice")
    assert verified.user_pk == newcomer.pk != user.pk
