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
