"""The settings object: defaults, reload in place, import strings, secret order."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from chatauth import tokens
from chatauth.conf import DEFAULTS, ChatAuthSettings, settings


def test_defaults_match_the_design():
    fresh = ChatAuthSettings()
    with override_settings(CHATAUTH={}):
        fresh.reload()
        assert fresh.ACCESS_TOKEN_LIFETIME == timedelta(minutes=15)
        assert fresh.REFRESH_TOKEN_LIFETIME == timedelta(days=7)
        assert fresh.COPILOT_TOKEN_LIFETIME == timedelta(days=15)
        assert fresh.AUTH_TIMEOUT == 10
        assert fresh.MAX_MESSAGE_BYTES == 64 * 1024
        assert fresh.LOGIN_FAILURE_LIMIT == 10
        assert fresh.LOGIN_FAILURE_WINDOW == timedelta(minutes=5)
        assert fresh.ACCEPT_CHAINLIT_TOKENS is True
        assert fresh.ALLOW_QUERY_STRING_TOKEN is False
        assert fresh.ALGORITHM == "HS256"


def test_import_strings_come_back_imported():
    from chatauth.adapter import DefaultAdapter
    from chatauth.handlers import echo

    assert settings.ADAPTER is DefaultAdapter
    assert settings.ON_MESSAGE is echo


def test_override_settings_reloads_in_place():
    obj = settings
    assert settings.LOGIN_FAILURE_LIMIT == 10
    with override_settings(CHATAUTH={"LOGIN_FAILURE_LIMIT": 3, "LEEWAY": 2}):
        assert obj is settings
        assert settings.LOGIN_FAILURE_LIMIT == 3
        # Numbers are accepted where a timedelta is expected.
        assert settings.LEEWAY == timedelta(seconds=2)
    assert settings.LOGIN_FAILURE_LIMIT == 10
    assert settings.LEEWAY == DEFAULTS["LEEWAY"]


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="NO_SUCH_SETTING"):
        settings.NO_SUCH_SETTING  # noqa: B018


@pytest.mark.parametrize("path", ["nowhere.at.all", "chatauth.adapter.Missing", "x"])
def test_bad_import_string_names_the_setting(path):
    with override_settings(CHATAUTH={"ADAPTER": path}):
        with pytest.raises(ImproperlyConfigured) as excinfo:
            settings.ADAPTER  # noqa: B018
    assert "ADAPTER" in str(excinfo.value)
    assert path in str(excinfo.value)


def test_secret_resolution_order(monkeypatch):
    monkeypatch.setenv("CHATAUTH_SECRET", "from-chatauth-env")
    monkeypatch.setenv("CHAINLIT_AUTH_SECRET", "from-chainlit-env")
    with override_settings(CHATAUTH={"SECRET": "from-settings"}):
        assert settings.SECRET == "from-settings"
    with override_settings(CHATAUTH={"SECRET": None}):
        assert settings.SECRET == "from-chatauth-env"
        monkeypatch.delenv("CHATAUTH_SECRET")
        settings.reload()
        assert settings.SECRET == "from-chainlit-env"
        monkeypatch.delenv("CHAINLIT_AUTH_SECRET")
        settings.reload()
        assert not settings.SECRET
        with pytest.raises(ImproperlyConfigured, match="CHATAUTH_SECRET"):
            tokens.get_secret()


@pytest.mark.django_db
def test_changing_the_secret_changes_the_signing_key(user):
    token = str(tokens.issue_pair(user).access)
    assert tokens.verify_token(token).identifier == "alice"
    with override_settings(CHATAUTH={"SECRET": "another-secret-" + "x" * 40}):
        with pytest.raises(tokens.TokenError):
            tokens.verify_token(token)
    assert tokens.verify_token(token).identifier == "alice"


def _old_secret() -> str:
    import os

    return os.environ["CHATAUTH_SECRET"]


@pytest.mark.django_db
def test_previous_secrets_verify_but_do_not_sign(user):
    old = _old_secret()
    token = str(tokens.issue_pair(user).access)
    new = "rotated-secret-" + "r" * 40
    with override_settings(CHATAUTH={"SECRET": new, "PREVIOUS_SECRETS": [old]}):
        assert tokens.verify_token(token).identifier == "alice"
        fresh = str(tokens.issue_pair(user).access)
    with override_settings(CHATAUTH={"SECRET": old}):
        with pytest.raises(tokens.TokenError):
            tokens.verify_token(fresh)
