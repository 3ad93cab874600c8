"""Every event that ends a credential, on every path that can cause it.

In-process: each event is caused the way a project would cause it (``save()``,
``delete()``, Django's ``logout()``, a ``Session`` row deleted, an admin form),
and the test checks what is refused afterwards, what each live socket's
channel-layer group is told, and the audit row with its actor.  The same events
over real servers, one and two workers, are ``tests/test_lifecycle_matrix.py``.
"""

from __future__ import annotations

import time

import jwt
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.sessions.models import Session
from django.core.cache import caches
from django.core.management import call_command
from django.test import Client, override_settings

import chatauth
from chatauth import copilot, revocation, tokens, websessions
from chatauth.constants import token_group, user_group
from chatauth.exceptions import TokenError, TokenRevoked
from chatauth.models import APIKey, AuditEvent, ChatSession, RevokedToken
from tests.conftest import PASSWORD, bearer, chainlit_token

pytestmark = pytest.mark.django_db


class Probe:
    """A channel-layer channel in some groups: what live sockets there hear."""

    def __init__(self, *groups: str) -> None:
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        for group in groups:
            async_to_sync(self.layer.group_add)(group, self.channel)

    def messages(self) -> list[dict]:
        async def drain() -> list[dict]:
            import asyncio

            found = []
            while True:
                try:
                    async with asyncio.timeout(0.05):
                        found.append(await self.layer.receive(self.channel))
                except TimeoutError:
                    return found

        return async_to_sync(drain)()


@pytest.fixture(autouse=True)
def _fresh_layer():
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


ACCESS_LIKE = ("access", "copilot", "chainlit")


def kinds_of(name: str) -> tuple[str, ...]:
    return ("refresh",) if name == "refresh" else ACCESS_LIKE


def refused(raw: str, expected=ACCESS_LIKE) -> TokenError:
    with pytest.raises(TokenError) as excinfo:
        tokens.verify_token(raw, expected=expected)
    return excinfo.value


def ok(raw: str, expected=ACCESS_LIKE) -> None:
    tokens.verify_token(raw, expected=expected)


@pytest.fixture
def credentials(user):
    """One credential of every token kind for alice, and a web session."""
    key, _ = APIKey.objects.create_key("partner")
    pair = tokens.issue_pair(user)
    client = Client()
    client.force_login(user)
    request = type("R", (), {"session": client.session})()
    found = {
        "access": str(pair.access),
        "refresh": str(pair.refresh),
        "copilot_session": str(
            tokens.issue_copilot_token(user, web_session=client.session)
        ),
        "copilot_api_key": str(tokens.issue_copilot_token(user, api_key=key)),
        "chainlit": chainlit_token("alice"),
    }
    for name, raw in found.items():
        ok(raw, kinds_of(name))
    time.sleep(0.002)  # every one of them strictly before the event
    return found, client, request


def all_refused(found: dict[str, str]) -> None:
    for name, raw in found.items():
        refused(raw, kinds_of(name))


def revoke_rows(reason: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event="revoke", reason=reason))


# --- Password -----------------------------------------------------------------


def test_password_change_ends_every_token_of_the_user(user, credentials):
    found, client, _ = credentials
    probe = Probe(user_group(user.pk))
    user.set_password("a new password 123")
    user.save()
    all_refused(found)
    # The user's sockets close (Django keeps the session that made the change,
    # under a new key: a socket reconnects with it).
    [message] = probe.messages()
    assert message == {
        "type": "chatauth.revoked",
        "reason": "password_changed",
        "code": 4410,
    }
    [row] = revoke_rows("password_changed")
    assert row.user_id == user.pk and row.actor == "system"
    # Django ends the web session itself (its hash no longer matches).
    assert client.get("/").wsgi_request.user.is_anonymous
    time.sleep(0.002)
    ok(str(tokens.issue_pair(user).access))  # a login after the change


@pytest.mark.parametrize(
    "path",
    ["unusable", "deferred", "constructor", "queryset_update", "proxy_model"],
)
def test_any_path_that_changes_the_hash_counts(user, credentials, path):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    found, _, _ = credentials
    User = get_user_model()
    if path == "unusable":
        user.set_unusable_password()
        user.save(update_fields=["password"])
    elif path == "deferred":  # the hash was never loaded
        loaded = User.objects.only("pk").get(pk=user.pk)
        loaded.set_password("another one 77")
        loaded.save()
    elif path == "constructor":  # no set_password(), no snapshot to compare
        User(pk=user.pk, username="alice", password=make_password("x y z 123")).save()
    elif path == "queryset_update":  # no signal at all
        User.objects.filter(pk=user.pk).update(password=make_password("q 12345"))
        caches["default"].clear()  # (what the sweep or the cache's TTL does)
    else:
        from chatauth import lifecycle

        class Staff(User):
            class Meta:
                proxy = True
                app_label = "auth"

        lifecycle.connect()  # what ready() does for the project's own proxies
        member = Staff.objects.get(pk=user.pk)
        member.set_password("through a proxy 1")
        member.save()
    for name in ("access", "refresh", "copilot_session", "copilot_api_key"):
        refused(found[name], kinds_of(name))


def test_a_password_set_but_not_saved_yet_is_no_change(user, credentials):
    found, _, _ = credentials
    user.set_password("not written yet 1")
    user.save(update_fields=["email"])
    ok(found["access"])
    user.save()  # now it is
    refused(found["access"])


def test_changepassword_command_is_a_password_change(user, credentials, monkeypatch):
    found, _, _ = credentials
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "another long password 9")
    call_command("changepassword", "alice", stdout=None)
    all_refused(found)
    assert revoke_rows("password_changed")


def test_saving_a_user_without_changing_what_matters_ends_nothing(user, credentials):
    found, _, _ = credentials
    user.first_name = "Alice"
    user.save()
    user.refresh_from_db()  # a fresh instance, saved through update_fields
    user.last_login = None
    user.save(update_fields=["last_login"])
    only = user.__class__.objects.only("pk").get(pk=user.pk)  # password deferred
    only.save(update_fields=["first_name"])
    for name, raw in found.items():
        ok(
            raw,
            ("refresh",) if name == "refresh" else ("access", "copilot", "chainlit"),
        )


def test_the_session_that_changed_the_password_goes_on_under_a_new_key(user):
    """Django's PasswordChangeView keeps its own session (update_session_auth_hash,
    under a new key): it opens sockets again; another session does not."""
    from django.contrib.auth import update_session_auth_hash

    kept, other = Client(), Client()
    kept.force_login(user)
    other.force_login(user)
    kept_key, other_key = kept.session.session_key, other.session.session_key
    assert websessions.identity(kept_key) and websessions.identity(other_key)
    request = kept.get("/").wsgi_request
    request.user.set_password("changed through the form 1")
    request.user.save()
    update_session_auth_hash(request, request.user)
    request.session.save()
    assert websessions.identity(request.session.session_key).user_pk == user.pk
    with pytest.raises(TokenError):
        websessions.identity(other_key)


# --- Deactivation, deletion, identifiers ----------------------------------------


def test_deactivation_ends_tokens_and_web_sessions_for_good(user, credentials):
    found, client, _ = credentials
    probe = Probe(user_group(user.pk))
    user.is_active = False
    user.save()
    all_refused(found)
    assert probe.messages()[0]["reason"] == "deactivated"
    user.is_active = True
    user.save()
    all_refused(found)  # reactivated: what it held before stays ended
    with pytest.raises(TokenRevoked):
        websessions.check(user.pk, client.session)


def test_saving_an_inactive_user_again_is_not_a_new_deactivation(user):
    user.is_active = False
    user.save()
    user.first_name = "x"
    user.save()
    assert len(revoke_rows("deactivated")) == 1


def test_deleting_a_user_ends_everything_and_its_identifier(user, credentials):
    found, _, _ = credentials
    ChatSession.objects.create(user=user, channel_name="specific.x!y")
    probe = Probe(user_group(user.pk))
    user.delete()
    all_refused(found)
    assert "user_deleted" in {m["reason"] for m in probe.messages()}
    from django.contrib.auth import get_user_model

    # The refused Chainlit token did not bring the user back.
    assert not get_user_model().objects.filter(username="alice").exists()
    # A new user with the same name: the old Chainlit token (it names the
    # identifier, not the user) stays refused; the new user's own tokens work.
    again = get_user_model().objects.create_user("alice", password=PASSWORD)
    with pytest.raises(TokenRevoked):
        tokens.verify_token(found["chainlit"])
    ok(str(tokens.issue_pair(again).access))
    # A Chainlit token minted after the deletion, of the longest lifetime
    # allowed, is accepted (one shorter counts as issued before it: refused).
    longest = int(time.time()) + 1 + 15 * 86400  # (whole seconds: after it)
    ok(chainlit_token("alice", exp=longest))
    refused(chainlit_token("alice"))
    # The rows about the deleted user keep its identifier, not a dangling link.
    row = AuditEvent.objects.get(event="revoke", reason="user_deleted")
    assert (row.user_id, row.identifier) == (None, "alice")
    assert AuditEvent.objects.filter(reason="chat_session_deleted").exists()


def test_renaming_a_user_ends_chainlit_tokens_of_the_old_identifier(user):
    old = chainlit_token("alice")
    ok(old)
    time.sleep(0.002)
    user.username = "alice2"
    user.save()
    refused(old)
    ok(chainlit_token("alice2", exp=int(time.time()) + 15 * 86400))


# --- Web sessions ------------------------------------------------------------------


def test_django_logout_ends_what_the_session_minted(user, credentials):
    found, client, _ = credentials
    seen = []

    @chatauth.on_logout
    def bye(request, response):
        seen.append((request is not None, response))

    probe = Probe(token_group(tokens.session_key_id(client.session.session_key)))
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    refused(found["copilot_session"])
    for name in ("access", "copilot_api_key", "chainlit"):
        ok(found[name])  # not derived from that session
    ok(found["refresh"], ("refresh",))
    assert probe.messages()[0]["reason"] == "logout"
    assert seen == [(True, None)]
    row = AuditEvent.objects.get(event="logout")
    assert (row.user_id, row.method, row.actor) == (user.pk, "session", "user:alice")


def test_deleting_a_session_row_ends_what_it_minted(user, credentials):
    found, client, _ = credentials
    Session.objects.filter(session_key=client.session.session_key).delete()
    refused(found["copilot_session"])
    ok(found["access"])
    assert revoke_rows("web_session_ended")


def test_anonymous_expired_and_cycled_sessions_write_nothing(user):
    anonymous = Client()
    anonymous.get("/accounts/login/")  # a CSRF cookie only; no session row yet
    session = websessions.store()
    session["x"] = 1
    session.create()
    Session.objects.filter(session_key=session.session_key).delete()
    expired = Client()
    expired.force_login(user)
    Session.objects.filter(session_key=expired.session.session_key).update(
        expire_date="2000-01-01T00:00:00Z"
    )
    Session.objects.filter(session_key=expired.session.session_key).delete()
    Client().post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert not RevokedToken.objects.filter(token_type="session").exists()


def test_a_session_token_holds_until_the_session_ends(user, rf):
    client = Client()
    client.force_login(user)
    request = client.get("/").wsgi_request
    token = str(copilot.mint(request, user))
    request.session.save()
    ok(token)
    request.session.flush()  # without logout(): its row is deleted
    refused(token)


# --- Chat session rows -------------------------------------------------------------


def test_deleting_a_live_chat_session_row_closes_its_socket(user):
    probe = Probe()
    row = ChatSession.objects.create(user=user, channel_name=probe.channel)
    closed = ChatSession.objects.create(user=user, channel_name=probe.channel)
    ChatSession.objects.filter(pk=closed.pk).update(closed_at="2000-01-01T00:00:00Z")
    ChatSession.objects.filter(pk__in=[row.pk, closed.pk]).delete()
    [message] = probe.messages()
    assert message == {
        "type": "chatauth.revoked",
        "reason": "chat_session_deleted",
        "code": 4410,
    }
    [audit] = revoke_rows("chat_session_deleted")
    assert audit.token_id == str(row.pk)


# --- API keys ------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["save", "command", "delete", "update"])
def test_revoking_an_api_key_ends_the_tokens_it_minted(user, how):
    key, _ = APIKey.objects.create_key("partner")
    other, _ = APIKey.objects.create_key("other")
    minted = str(tokens.issue_copilot_token(user, api_key=key))
    kept = str(tokens.issue_copilot_token(user, api_key=other))
    ok(minted)
    probe = Probe(token_group(tokens.api_key_id(key.pk)))
    if how == "save":
        key.revoked_at = "2030-01-01T00:00:00Z"
        key.save()
    elif how == "command":
        call_command("chatauth_apikey", "revoke", "partner", stdout=None)
    elif how == "delete":
        key.delete()
    else:  # QuerySet.update(): no signal; the key's own row still says so
        APIKey.objects.filter(pk=key.pk).update(revoked_at="2030-01-01T00:00:00Z")
        caches["default"].clear()
    refused(minted)
    ok(kept)
    if how != "update":
        assert probe.messages()[0]["code"] == 4410


# --- Refresh families ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_reusing_a_rotated_refresh_token_ends_the_login(api, pair, login):
    other = login().json()
    first = api.post(
        "/auth/token/refresh", {"refresh": pair["refresh_token"]}, format="json"
    )
    assert first.status_code == 200
    new = first.json()
    probe = Probe(token_group(tokens.decode(new["access_token"])["fam"]))
    replay = api.post(
        "/auth/token/refresh", {"refresh": pair["refresh_token"]}, format="json"
    )
    assert replay.status_code == 401
    # The thief's (or the victim's) newer tokens die with the login.
    assert api.get("/auth/me", **bearer(new["access_token"])).status_code == 401
    again = api.post(
        "/auth/token/refresh", {"refresh": new["refresh_token"]}, format="json"
    )
    assert again.status_code == 401
    assert api.get("/auth/me", **bearer(other["access_token"])).status_code == 200
    assert probe.messages()[0]["reason"] == "refresh_reused"
    row = AuditEvent.objects.get(event="refresh_reused")
    assert (
        row.success is False
        and row.token_id == tokens.decode(pair["refresh_token"])["jti"]
    )


def test_a_pair_from_a_refresh_continues_the_login(user):
    pair = tokens.issue_pair(user)
    again = tokens.issue_pair(user, family=pair.access["fam"])
    assert again.access["fam"] == again.refresh["fam"] == pair.access["fam"]
    assert tokens.issue_pair(user).access["fam"] != pair.access["fam"]


def test_lineage_claims_must_have_the_form_chatauth_writes(user):
    import os

    good = tokens.issue_pair(user).access.payload
    for claim, value in [("fam", "x"), ("sid", 5), ("akey", "k-1; drop"), ("fam", "")]:
        raw = jwt.encode(
            {**good, claim: value}, os.environ["CHATAUTH_SECRET"], algorithm="HS256"
        )
        refused(raw)


# --- Chainlit-format tokens (no iat) ------------------------------------------------


def test_chainlit_tokens_longer_than_the_maximum_are_refused(db):
    longest = 15 * 86400
    ok(chainlit_token("carol", exp=int(time.time()) + longest - 60))
    refused(chainlit_token("carol", exp=int(time.time()) + longest + 3600))
    with override_settings(CHATAUTH={"CHAINLIT_TOKEN_MAX_LIFETIME": 3600}):
        refused(chainlit_token("carol", exp=int(time.time()) + 7200))
        ok(chainlit_token("carol", exp=int(time.time()) + 3000))
    with override_settings(CHATAUTH={"CHAINLIT_TOKEN_LIFETIME": 3600}):  # old name
        refused(chainlit_token("carol", exp=int(time.time()) + 7200))


def test_logout_everywhere_covers_every_accepted_chainlit_token(user):
    """Issue time is taken as exp - maximum: every token accepted at the moment
    of the logout has an issue time before it."""
    with override_settings(CHATAUTH={"CHAINLIT_TOKEN_MAX_LIFETIME": 3600}):
        now = int(time.time())
        accepted = [chainlit_token("alice", exp=now + s) for s in (60, 1800, 3599)]
        for raw in accepted:
            ok(raw)
        time.sleep(0.002)
        revocation.revoke_user(user)
        for raw in accepted:
            with pytest.raises(TokenRevoked):
                tokens.verify_token(raw)
        # One minted now with the full lifetime is after the logout.
        time.sleep(1.1)
        ok(chainlit_token("alice", exp=int(time.time()) + 3600))


def test_a_second_user_of_a_name_deleted_too_takes_its_chainlit_tokens_along(user):
    """The identifier's tombstone moves to each deletion, not only the first."""
    from django.contrib.auth import get_user_model

    user.delete()
    time.sleep(1.1)  # (whole seconds: a token's exp, so its issue time)
    second = get_user_model().objects.create_user("alice", password=PASSWORD)
    token = chainlit_token("alice", exp=int(time.time()) + 1 + 15 * 86400)
    ok(token)
    time.sleep(1.1)  # past its issue time (exp minus the longest lifetime)
    second.delete()
    refused(token)
    assert not get_user_model().objects.filter(username="alice").exists()
