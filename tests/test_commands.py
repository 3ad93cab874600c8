"""Management commands: chatauth_token, _apikey, _revoke and _prune."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import jwt
import pytest
from django.core.management import ManagementUtility, call_command
from django.core.management.base import CommandError
from django.utils import timezone

from chatauth import tokens
from chatauth.models import APIKey, AuditEvent, ChatSession, Profile, RevokedToken
from tests.conftest import bearer

pytestmark = pytest.mark.django_db

COMMANDS = [
    "chatauth_token",
    "chatauth_apikey",
    "chatauth_revoke",
    "chatauth_prune",
    "chatauth_unlock",
    "chatauth_identifiers",
]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def run_cli(*args: str) -> int:
    """Run as from the command line (argparse errors exit, as manage.py does).

    A command that gets as far as running closes every connection afterwards
    (``BaseCommand.run_from_argv``), so tests doing that need ``transaction=True``.
    """
    try:
        ManagementUtility(["manage.py", *args]).execute()
    except SystemExit as e:
        return e.code or 0
    return 0


@pytest.mark.parametrize("name", COMMANDS)
def test_help(name, capsys):
    assert run_cli(name, "--help") == 0
    out = capsys.readouterr().out
    assert f"usage: manage.py {name}" in out
    assert len(out) > 200


def test_apikey_subcommand_help(capsys):
    assert run_cli("chatauth_apikey", "create", "--help") == 0
    assert "name" in capsys.readouterr().out


# --- chatauth_token ------------------------------------------------------------------


def test_token_works_on_me(api):
    raw = run("chatauth_token", "frank").strip()
    response = api.get("/auth/me", **bearer(raw))
    assert response.status_code == 200
    assert response.json() == {
        "identifier": "frank",
        "display_name": None,
        "metadata": {},
    }
    claims = jwt.decode(raw, options={"verify_signature": False})
    assert claims["token_type"] == "copilot"
    assert claims["exp"] - claims["chatauth_iat"] == pytest.approx(15 * 86400, abs=1)


def test_token_with_display_name_metadata_and_ttl(api, user):
    raw = run(
        "chatauth_token",
        "alice",
        "--display-name",
        "Alice A.",
        "--metadata",
        '{"plan": "pro"}',
        "--ttl",
        "120",
    ).strip()
    assert api.get("/auth/me", **bearer(raw)).json() == {
        "identifier": "alice",
        "display_name": "Alice A.",
        "metadata": {"plan": "pro"},
    }
    claims = tokens.decode(raw)
    assert claims["exp"] - claims["chatauth_iat"] == pytest.approx(120, abs=1)
    assert Profile.objects.get(user=user).metadata == {"plan": "pro"}


def test_token_keeps_the_profile_unless_told(user):
    Profile.objects.create(user=user, display_name="Kept", metadata={"k": 1})
    raw = run("chatauth_token", "alice").strip()
    assert tokens.verify_token(raw).user_dict()["display_name"] == "Kept"
    assert Profile.objects.get(user=user).metadata == {"k": 1}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "args",
    [
        ["--metadata", "{not json"],
        ["--metadata", "[1, 2]"],
        ["--metadata", '"text"'],
        ["--metadata", '{"nul": "\\u0000"}'],
        ["--ttl", "0"],
        ["--ttl", "-5"],
        ["--ttl", str(11 * 365 * 86400)],
    ],
)
def test_token_bad_arguments_exit_2(args, capsys):
    with pytest.raises(CommandError) as excinfo:
        run("chatauth_token", "frank", *args)
    assert excinfo.value.returncode == 2
    assert run_cli("chatauth_token", "frank", *args) == 2
    err = capsys.readouterr().err
    assert err.strip() and "Traceback" not in err


@pytest.mark.parametrize(
    "args", [["--ttl", "soon"], [], ["a", "b"], ["frank", "--nope"], ["  "]]
)
def test_token_argparse_errors_exit_2(args, capsys):
    assert run_cli("chatauth_token", *args) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_token_identifier_too_long_exit_2():
    with pytest.raises(CommandError) as excinfo:
        run("chatauth_token", "x" * 200)
    assert excinfo.value.returncode == 2


# --- chatauth_apikey -----------------------------------------------------------------


def test_apikey_create_list_revoke(api):
    raw = run("chatauth_apikey", "create", "partner").strip()
    assert raw.startswith("ca_")
    key = APIKey.objects.get(name="partner")
    assert raw not in (key.hashed_key, key.prefix)  # stored hashed
    assert APIKey.objects.get_from_key(raw) == key

    listed = run("chatauth_apikey", "list")
    assert "partner" in listed and "active" in listed and raw not in listed
    auth = {"HTTP_AUTHORIZATION": f"Api-Key {raw}"}
    ok = api.post("/auth/copilot/token", {"identifier": "gus"}, format="json", **auth)
    assert ok.status_code == 200

    assert "partner" in run("chatauth_apikey", "revoke", "partner")
    assert "revoked" in run("chatauth_apikey", "list")
    refused = api.post(
        "/auth/copilot/token", {"identifier": "gus"}, format="json", **auth
    )
    assert refused.status_code == 401
    assert AuditEvent.objects.filter(event="api_key_refused").count() == 1


@pytest.mark.django_db(transaction=True)
def test_apikey_errors_exit_2(capsys):
    run("chatauth_apikey", "create", "partner")
    for args in (
        ["create", "partner"],  # exists
        ["create", "x" * 101],
        ["create", "   "],
        ["revoke", "nobody"],
    ):
        with pytest.raises(CommandError) as excinfo:
            run("chatauth_apikey", *args)
        assert excinfo.value.returncode == 2, args
    assert run_cli("chatauth_apikey") == 2
    assert run_cli("chatauth_apikey", "explode") == 2
    assert run_cli("chatauth_apikey", "revoke", "nobody") == 2
    run("chatauth_apikey", "revoke", "partner")
    with pytest.raises(CommandError):
        run("chatauth_apikey", "revoke", "partner")  # already revoked


# --- chatauth_revoke -----------------------------------------------------------------


def test_revoke_logs_the_user_out_everywhere(api, user):
    earlier = [
        str(tokens.issue_pair(user).access),
        str(tokens.issue_copilot_token(user)),
    ]
    for raw in earlier:
        assert api.get("/auth/me", **bearer(raw)).status_code == 200
    assert "alice" in run("chatauth_revoke", "alice")
    for raw in earlier:
        assert api.get("/auth/me", **bearer(raw)).status_code == 401
    assert AuditEvent.objects.filter(event="revoke", reason="command").exists()


@pytest.mark.django_db(transaction=True)
def test_revoke_unknown_user_exit_2():
    with pytest.raises(CommandError) as excinfo:
        run("chatauth_revoke", "nobody")
    assert excinfo.value.returncode == 2
    assert run_cli("chatauth_revoke", "nobody") == 2
    assert run_cli("chatauth_revoke") == 2


# --- chatauth_prune ------------------------------------------------------------------


def test_prune(user):
    now = timezone.now()
    RevokedToken.objects.create(
        key="expired", token_type="access", expires_at=now - timedelta(seconds=1)
    )
    RevokedToken.objects.create(
        key="live", token_type="access", expires_at=now + timedelta(hours=1)
    )
    ended = ChatSession.objects.create(user=user, closed_at=now - timedelta(days=2))
    recent = ChatSession.objects.create(user=user, closed_at=now - timedelta(hours=1))
    alive = ChatSession.objects.create(user=user)
    stale = ChatSession.objects.create(
        user=user, last_seen_at=now - timedelta(minutes=10)
    )

    out = run("chatauth_prune", "--keep-days", "1")
    assert "1 expired denylist" in out
    assert list(RevokedToken.objects.values_list("key", flat=True)) == ["live"]
    remaining = set(ChatSession.objects.values_list("pk", flat=True))
    assert remaining == {recent.pk, alive.pk, stale.pk}
    assert ended.pk not in remaining
    stale.refresh_from_db()
    assert stale.closed_at is not None
    alive.refresh_from_db()
    assert alive.closed_at is None

    run("chatauth_prune")  # keep no closed rows: the stale one closed above goes too
    assert set(ChatSession.objects.values_list("pk", flat=True)) == {alive.pk}


@pytest.mark.django_db(transaction=True)
def test_prune_bad_arguments_exit_2():
    with pytest.raises(CommandError) as excinfo:
        run("chatauth_prune", "--keep-days", "-1")
    assert excinfo.value.returncode == 2
    assert run_cli("chatauth_prune", "--keep-days", "many") == 2


def test_apikey_scope_from_the_command(capsys):
    from django.contrib.auth.models import Group

    Group.objects.create(name="partners")
    call_command(
        "chatauth_apikey",
        "create",
        "scoped",
        "--identifiers",
        "*@partner.example",
        "--group",
        "partners",
        "--profiles",
    )
    key = APIKey.objects.get(name="scoped")
    assert (key.identifiers, key.group.name, key.may_mint_for_staff) == (
        "*@partner.example",
        "partners",
        False,
    )
    assert key.may_update_profiles
    capsys.readouterr()
    call_command("chatauth_apikey", "list")
    assert (
        "for *@partner.example in group partners +profiles" in capsys.readouterr().out
    )
    with pytest.raises(CommandError) as excinfo:
        call_command("chatauth_apikey", "create", "x", "--group", "nobody")
    assert excinfo.value.returncode == 2
