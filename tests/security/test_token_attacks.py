"""Token attacks, one row each, refused with the exact answer on HTTP and the socket.

Each row forges or replays a token against a real user's, then presents it to
``GET auth/me`` (the access-token version) and ``POST auth/token/refresh`` (the
refresh-token version), expecting ``401 {"detail": <exact text>}`` with a
``WWW-Authenticate`` challenge, and the access version to ``ws/chat/``
through the demo's ASGI application (routing, origin check,
middleware, consumer), expecting the contract's close code: 4401 for a bad
credential, 4410 for a revoked one.  The controls at the end show the same
harness *accepting* the legitimate versions, so no row passes by accident.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from asgiref.sync import sync_to_async
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from chatauth import revocation, tokens
from chatauth.constants import CloseCode
from tests.conftest import bearer, chainlit_token
from tests.security.conftest import b64, claims_of, forge, socket_outcome

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    # The HS512 row signs with the real (HS256-sized) secret on purpose.
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

SECRET = tokens.get_secret  # read when used: rows may rotate it
INVALID = "Token is invalid."
EXPIRED = "Token has expired."
REVOKED = "Token has been revoked."
WRONG_TYPE = "Token has wrong type."
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PRIVATE = _RSA.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
)
RSA_PUBLIC = _RSA.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


@dataclass
class Ctx:
    """A user with a live access/refresh pair and a copilot token."""

    user: Any
    access: str
    refresh: str
    copilot: str

    def raw(self, kind: str) -> str:
        return {"access": self.access, "refresh": self.refresh}[kind]

    def claims(self, kind: str) -> dict[str, Any]:
        return claims_of(self.raw(kind))


def make_ctx() -> Ctx:
    user = get_user_model().objects.create_user("alice", password="pw-" + "x" * 20)
    pair = tokens.issue_pair(user)
    copilot = tokens.issue_copilot_token(user)
    return Ctx(user, str(pair.access), str(pair.refresh), str(copilot))


def with_exp(ctx: Ctx, kind: str, **changes: Any) -> str:
    return jwt.encode({**ctx.claims(kind), **changes}, SECRET(), algorithm="HS256")


def rs256(ctx: Ctx, kind: str, headers: dict | None = None) -> str:
    return jwt.encode(ctx.claims(kind), RSA_PRIVATE, algorithm="RS256", headers=headers)


def public_jwk() -> dict[str, Any]:
    numbers = _RSA.public_key().public_numbers()
    as_b64 = lambda n: b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))  # noqa: E731
    return {"kty": "RSA", "e": as_b64(numbers.e), "n": as_b64(numbers.n)}


def bad_signature(ctx: Ctx, kind: str) -> str:
    head, body, sig = ctx.raw(kind).split(".")
    # The *first* character: the last one of a base64url signature carries
    # padding bits, and flipping those would not change the decoded bytes.
    flipped = "A" if sig[0] != "A" else "B"
    return f"{head}.{body}.{flipped}{sig[1:]}"


def swapped_payload(ctx: Ctx, kind: str) -> str:
    """Elevated claims with the genuine signature of the original token."""
    head, _, sig = ctx.raw(kind).split(".")
    claims = {**ctx.claims(kind), "identifier": "admin", "user_id": "1"}
    import json

    return f"{head}.{b64(json.dumps(claims))}.{sig}"


def revoke_by_logout(ctx: Ctx, kind: str) -> str:
    client = APIClient()
    data = {"refresh": ctx.refresh} if kind == "refresh" else {}
    response = client.post("/auth/logout", data, format="json", **bearer(ctx.access))
    assert response.status_code == 200, response.content
    return ctx.raw(kind)


def replay_rotated(ctx: Ctx, kind: str) -> str:
    response = APIClient().post(
        "/auth/token/refresh", {"refresh": ctx.refresh}, format="json"
    )
    assert response.status_code == 200, response.content
    return ctx.refresh


def logged_out_everywhere(ctx: Ctx, kind: str) -> str:
    revocation.revoke_user(ctx.user, reason="test")
    return ctx.raw(kind)


def deleted_user(ctx: Ctx, kind: str) -> str:
    ctx.user.delete()
    return ctx.raw(kind)


def deactivated_user(ctx: Ctx, kind: str) -> str:
    ctx.user.is_active = False
    ctx.user.save()
    return ctx.raw(kind)


def revoked_chainlit_padded(ctx: Ctx, kind: str) -> str:
    """A Chainlit token (no ``jti``: denied by its hash) revoked, then replayed
    with base64 padding appended, which PyJWT decodes to the same signature."""
    token = chainlit_token("carol")
    response = APIClient().post("/auth/logout", format="json", **bearer(token))
    assert response.status_code == 200, response.content
    return token + "="


@dataclass(frozen=True)
class Attack:
    name: str
    make: Callable[[Ctx, str], str]
    detail: str  # the exact 401 body's detail
    close: int  # the exact close code of the socket (access-token rows)
    kinds: tuple[str, ...] = ("access", "refresh")  # which token the attack bends
    settings: dict[str, Any] = field(default_factory=dict)


ATTACKS = [
    Attack("alg_none", lambda c, k: forge(c.claims(k), None, alg="none"), INVALID,
           CloseCode.UNAUTHORIZED),
    Attack("alg_None_mixed_case", lambda c, k: forge(c.claims(k), None, alg="None"),
           INVALID, CloseCode.UNAUTHORIZED),
    Attack("alg_none_with_real_signature",
           lambda c, k: forge(c.claims(k), SECRET(), alg="none"),
           INVALID, CloseCode.UNAUTHORIZED),
    Attack("rs256_signed_with_attacker_key", rs256, INVALID, CloseCode.UNAUTHORIZED),
    Attack("hs256_with_rsa_public_pem_as_secret",
           lambda c, k: forge(c.claims(k), RSA_PUBLIC), INVALID,
           CloseCode.UNAUTHORIZED),
    Attack("hs512_with_the_real_secret",
           lambda c, k: jwt.encode(c.claims(k), SECRET(), algorithm="HS512"),
           INVALID, CloseCode.UNAUTHORIZED),
    Attack("kid_pointing_elsewhere",
           lambda c, k: forge(c.claims(k), "attacker-secret-" + "a" * 32,
                              headers={"kid": "../../../../dev/null"}),
           INVALID, CloseCode.UNAUTHORIZED),
    Attack("jku_header_to_attacker_jwks",
           lambda c, k: rs256(c, k, {"jku": "http://127.0.0.1:9/jwks.json",
                                     "kid": "attacker"}),
           INVALID, CloseCode.UNAUTHORIZED),
    Attack("embedded_jwk_header",
           lambda c, k: rs256(c, k, {"jwk": public_jwk()}),
           INVALID, CloseCode.UNAUTHORIZED),
    Attack("bad_signature", bad_signature, INVALID, CloseCode.UNAUTHORIZED),
    Attack("genuine_signature_over_swapped_payload", swapped_payload, INVALID,
           CloseCode.UNAUTHORIZED),
    Attack("truncated_signature", lambda c, k: c.raw(k)[:-5], INVALID,
           CloseCode.UNAUTHORIZED),
    Attack("signature_removed", lambda c, k: c.raw(k).rsplit(".", 1)[0] + ".",
           INVALID, CloseCode.UNAUTHORIZED),
    Attack("two_segments", lambda c, k: c.raw(k).rsplit(".", 1)[0], INVALID,
           CloseCode.UNAUTHORIZED),
    Attack("half_a_token", lambda c, k: c.raw(k)[: len(c.raw(k)) // 2], INVALID,
           CloseCode.UNAUTHORIZED),
    Attack("padded_with_one_equals", lambda c, k: c.raw(k) + "=", INVALID,
           CloseCode.UNAUTHORIZED),
    Attack("padded_with_two_equals", lambda c, k: c.raw(k) + "==", INVALID,
           CloseCode.UNAUTHORIZED),
    Attack("fourth_segment", lambda c, k: c.raw(k) + ".e30", INVALID,
           CloseCode.UNAUTHORIZED),
    # (auth/token/refresh answers an oversized one with 400 from its schema.)
    Attack("oversized", lambda c, k: c.raw(k) + "A" * 9000, INVALID,
           CloseCode.UNAUTHORIZED, kinds=("access",)),
    Attack("expired_beyond_leeway",
           lambda c, k: with_exp(c, k, exp=int(time.time()) - 30), EXPIRED,
           CloseCode.UNAUTHORIZED),
    Attack("not_yet_valid_nbf",
           lambda c, k: with_exp(c, k, nbf=int(time.time()) + 3600), INVALID,
           CloseCode.UNAUTHORIZED),
    Attack("issued_in_the_future_iat",
           lambda c, k: with_exp(c, k, iat=int(time.time()) + 3600), INVALID,
           CloseCode.UNAUTHORIZED),
    Attack("refresh_used_as_access", lambda c, k: c.refresh, WRONG_TYPE,
           CloseCode.UNAUTHORIZED, kinds=("access",)),
    Attack("access_used_as_refresh", lambda c, k: c.access, WRONG_TYPE,
           CloseCode.UNAUTHORIZED, kinds=("refresh",)),
    Attack("copilot_used_as_refresh", lambda c, k: c.copilot, WRONG_TYPE,
           CloseCode.UNAUTHORIZED, kinds=("refresh",)),
    Attack("revoked_jti", revoke_by_logout, REVOKED, CloseCode.REVOKED),
    Attack("rotated_refresh_replayed", replay_rotated, REVOKED, CloseCode.UNAUTHORIZED,
           kinds=("refresh",)),
    Attack("issued_before_logout_everywhere", logged_out_everywhere, REVOKED,
           CloseCode.REVOKED),
    # An access ended by an admin (deleted, deactivated): 4410, "log in again".
    Attack("user_deleted", deleted_user, "User not found.", CloseCode.REVOKED),
    Attack("user_deactivated", deactivated_user, "User is inactive.",
           CloseCode.REVOKED),
    Attack("chainlit_token_when_not_accepted",
           lambda c, k: chainlit_token("carol"), "Chainlit tokens are not accepted.",
           CloseCode.UNAUTHORIZED, kinds=("access",),
           settings={"ACCEPT_CHAINLIT_TOKENS": False}),
    Attack("revoked_chainlit_token_replayed_padded", revoked_chainlit_padded, INVALID,
           CloseCode.UNAUTHORIZED, kinds=("access",)),
    Attack("old_secret_after_rotation", lambda c, k: c.raw(k), INVALID,
           CloseCode.UNAUTHORIZED,
           settings={"SECRET": "rotated-secret-" + "r" * 40, "PREVIOUS_SECRETS": []}),
]  # fmt: skip

CASES = [
    pytest.param(attack, kind, id=f"{attack.name}-{kind}")
    for attack in ATTACKS
    for kind in attack.kinds
]


def http_answer(token: str, kind: str):
    client = APIClient()
    if kind == "refresh":
        return client.post("/auth/token/refresh", {"refresh": token}, format="json")
    return client.get("/auth/me", **bearer(token))


@pytest.fixture
def chatauth_settings(settings):
    def apply(**options):
        settings.CHATAUTH = {**settings.CHATAUTH, **options}

    return apply


@pytest.mark.parametrize(("attack", "kind"), CASES)
async def test_attack_is_refused(attack, kind, chatauth_settings, fresh_layer):
    ctx = await sync_to_async(make_ctx)()
    token = await sync_to_async(attack.make)(ctx, kind)
    if attack.settings:
        chatauth_settings(**attack.settings)

    response = await sync_to_async(http_answer)(token, kind)
    assert response.status_code == 401, (response.status_code, response.content)
    assert response.json() == {"detail": attack.detail}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")

    if kind == "access":  # a refresh token on the socket is "refresh_used_as_access"
        assert await socket_outcome(token) == attack.close


# --- Controls: the legitimate versions go through the same harness --------------------


async def test_controls_are_accepted(chatauth_settings, fresh_layer):
    ctx = await sync_to_async(make_ctx)()
    within_leeway = await sync_to_async(with_exp)(
        ctx, "access", exp=int(time.time()) - 3
    )
    accepted = [ctx.access, ctx.copilot, within_leeway, chainlit_token("carol")]
    for token in accepted:
        response = await sync_to_async(http_answer)(token, "access")
        assert response.status_code == 200, response.content
        assert await socket_outcome(token) == "session"
    # The old secret after rotation, while it is still in PREVIOUS_SECRETS.
    old = tokens.get_secret()
    chatauth_settings(SECRET="rotated-secret-" + "r" * 40, PREVIOUS_SECRETS=[old])
    response = await sync_to_async(http_answer)(ctx.access, "access")
    assert response.status_code == 200, response.content
    assert await socket_outcome(ctx.access) == "session"
    response = await sync_to_async(http_answer)(ctx.refresh, "refresh")
    assert response.status_code == 200, response.content
    # ... and the new pair is signed with the new secret only.
    fresh = response.json()["access_token"]
    jwt.decode(fresh, "rotated-secret-" + "r" * 40, algorithms=["HS256"])
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(fresh, old, algorithms=["HS256"])
