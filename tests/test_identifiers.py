"""One normalisation of identifiers on every path that creates or finds a user."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import override_settings

from chatauth import hooks
from chatauth.adapter import get_adapter
from chatauth.identifiers import InvalidIdentifier, normalize

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("demo", "demo"),
        ("DEMO", "demo"),
        ("ｄｅｍｏ", "demo"),  # fullwidth
        ("  Alice@Example.COM ", "alice@example.com"),
        ("Straße", "strasse"),  # case folding, not lowercasing
        ("ﬁle", "file"),  # a ligature
        ("田中太郎", "田中太郎"),
        ("tanaka太郎", "tanaka太郎"),  # Latin with Han is not a look-alike mix
        ("Дмитрий", "дмитрий"),  # one script, whatever it is
    ],
)
def test_normal_forms(given, normal):
    assert normalize(given) == normal


@pytest.mark.parametrize(
    "given",
    [
        "demо",  # Cyrillic о among Latin letters
        "pаypal",  # Cyrillic а
        "Αlice",  # Greek capital alpha
        "de\u200bmo",  # a zero-width space
        "de\x00mo",
        "de\nmo",
        "",
        "   ",
        5,
    ],
)
def test_refused(given):
    with pytest.raises(InvalidIdentifier):
        normalize(given)


def test_case_preserved_when_asked():
    with override_settings(CHATAUTH={"IDENTIFIER_CASE": "preserve"}):
        assert normalize("ＤＥＭＯ") == "DEMO"


def create(identifier, **kwargs):
    return get_adapter().get_or_create_user(hooks.User(identifier, **kwargs))


def test_every_spelling_of_an_identifier_is_one_user():
    demo = create("demo")
    for spelling in ("DEMO", "ｄｅｍｏ", " Demo "):
        assert create(spelling).pk == demo.pk
    with pytest.raises(InvalidIdentifier):
        create("demо")
    assert get_user_model().objects.count() == 1


def test_users_from_before_are_found_case_insensitively(make_user):
    legacy = make_user("Admin")  # created by Django, not normalised
    assert create("admin").pk == legacy.pk
    make_user("ADMIN")  # a second spelling: no telling which is meant
    with pytest.raises(InvalidIdentifier):
        create("admin")


def test_a_display_name_of_none_keeps_the_stored_one():
    user = create("eve", display_name="Eve")
    create("eve", metadata={"a": 1})
    claims = get_adapter().user_claims(user)
    assert claims["display_name"] == "Eve" and claims["metadata"] == {"a": 1}


def test_the_identifiers_command_lists_then_normalises(make_user, capsys):
    make_user("Bob")
    make_user("ｃａｒｏｌ")
    make_user("dave")
    make_user("Eve")
    make_user("EVE")
    with pytest.raises(SystemExit):
        call_command("chatauth_identifiers")
    out = capsys.readouterr().out
    assert "not normal: 'Bob' -> 'bob'" in out and "collide as 'eve'" in out
    with pytest.raises(SystemExit):  # the collision is still there
        call_command("chatauth_identifiers", "--apply")
    names = set(get_user_model().objects.values_list("username", flat=True))
    assert names == {"bob", "carol", "dave", "Eve", "EVE"}
