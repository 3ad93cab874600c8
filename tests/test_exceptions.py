"""The error table (chatauth.exceptions.ERRORS): one row per code, its message
translatable, its HTTP status and close code the documented ones, and every
exception, call site, close-code lookup and schema answer reading from it."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from django.utils import translation
from django.utils.functional import Promise
from rest_framework import exceptions as drf

import chatauth
from chatauth import exceptions, revocation
from chatauth.constants import CloseCode
from chatauth.exceptions import (
    ERRORS,
    ChatAuthError,
    Coded,
    InvalidCredentials,
    NotAuthenticated,
    TokenError,
    TokenExpired,
    TokenRevoked,
    close_code,
)
from chatauth.schema import error_responses

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(chatauth.__file__).parent


def documented_statuses() -> set[int]:
    """The error statuses docs/http-api.md's conventions name."""
    page = (ROOT / "docs" / "http-api.md").read_text(encoding="utf-8")
    conventions = page.split("- **Errors**", 1)[1].split("\n- **", 1)[0]
    return {int(found) for found in re.findall(r"`(\d{3})`", conventions)}


#: The close code each status refuses a socket with (docs/websocket.md).
CLOSE_FOR_STATUS = {
    400: {CloseCode.PROTOCOL_ERROR},
    401: {CloseCode.UNAUTHORIZED, CloseCode.REVOKED},
    403: {CloseCode.FORBIDDEN},
    404: {None},  # a route that does not exist: nothing a socket meets
    413: {CloseCode.TOO_LARGE},
    429: {CloseCode.RATE_LIMITED},
    503: {CloseCode.SERVER_ERROR, CloseCode.UNAVAILABLE},
}


def test_documented_statuses_are_read_from_the_http_page():
    assert documented_statuses() == {400, 401, 403, 404, 413, 429, 503}


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_every_code_has_a_documented_status_and_close_code(code):
    row = ERRORS[code]
    assert row.code == code
    assert row.status in documented_statuses()
    assert row.close_code is None or row.close_code in set(CloseCode)
    assert row.close_code in CLOSE_FOR_STATUS[row.status], row
    if row.close_code is not None:
        assert close_code(code) == int(row.close_code)
    # Codes of the 400s and 401s that a socket meets, never the generic one.
    assert row.close_code != CloseCode.NORMAL


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_every_message_is_lazy(code):
    message = ERRORS[code].message
    assert isinstance(message, Promise)  # gettext_lazy: translated when shown
    assert str(message).endswith(".") and str(message)[0].isupper()


def test_messages_are_translated_when_shown_not_when_imported():
    # DRF's catalogue has these msgids: the same text, its translations too.
    assert str(ERRORS["not_authenticated"].message) == (
        "Authentication credentials were not provided."
    )
    with translation.override("fr"):
        assert str(ERRORS["not_authenticated"].message) == (
            "Informations d'authentification non fournies."
        )
        assert NotAuthenticated().detail == (
            "Informations d'authentification non fournies."
        )
    assert NotAuthenticated().detail == "Authentication credentials were not provided."


@pytest.fixture
def french(monkeypatch):
    """A French catalogue that knows chatauth's own messages too."""
    from django.utils.translation import trans_real

    catalogue = trans_real.translation("fr")
    original = catalogue.gettext
    words = {
        "Invalid credentials.": "Identifiants invalides.",
        "Token has been revoked.": "Le jeton a été révoqué.",
        "No such open session.": "Aucune session ouverte de ce nom.",
    }
    monkeypatch.setattr(
        catalogue, "gettext", lambda message: words.get(message) or original(message)
    )
    return words


def test_chatauth_messages_follow_the_active_language(french):
    with translation.override("fr"):
        assert InvalidCredentials().detail == "Identifiants invalides."
        assert TokenRevoked().detail == "Le jeton a été révoqué."
        assert exceptions.NotFound(code="session_not_found").detail == (
            "Aucune session ouverte de ce nom."
        )
    assert InvalidCredentials().detail == "Invalid credentials."
    assert TokenRevoked().detail == "Token has been revoked."


@pytest.mark.django_db(transaction=True)  # the login route's worker thread
def test_an_http_refusal_is_answered_in_the_active_language(french, user, login):
    with translation.override("fr"):
        response = login(password="wrong")
    assert response.status_code == 401
    assert response.json() == {"detail": "Identifiants invalides."}
    response = login(password="wrong")
    assert response.json() == {"detail": "Invalid credentials."}


def coded_classes() -> list[type]:
    return [
        value
        for value in vars(exceptions).values()
        if isinstance(value, type) and issubclass(value, Coded) and value is not Coded
    ]


@pytest.mark.parametrize("cls", coded_classes(), ids=lambda cls: cls.__name__)
def test_api_exceptions_are_built_from_the_table(cls):
    row = ERRORS[cls.default_code]
    assert cls.status_code == row.status
    assert cls.default_detail is row.message
    # The DRF class it refines answers with the same status (so DRF's handling,
    # the WWW-Authenticate challenge, Retry-After, stays right).
    drf_base = next(b for b in cls.__mro__[1:] if b.__module__.startswith("rest_"))
    if drf_base is not drf.APIException:
        assert drf_base.status_code == row.status
    error = cls()
    assert error.status_code == row.status
    assert error.detail == str(row.message)
    assert error.get_codes() == cls.default_code


@pytest.mark.parametrize(
    "cls", [TokenError, TokenExpired, TokenRevoked], ids=lambda c: c.__name__
)
def test_internal_errors_are_built_from_the_table(cls):
    assert cls.default_detail is ERRORS[cls.code].message
    assert cls().detail == str(ERRORS[cls.code].message)
    assert TokenError(code="user_inactive").detail == "User is inactive."
    assert TokenError("Token has wrong type.").detail == "Token has wrong type."


def test_close_codes_of_token_refusals():
    """4401 "refresh" for a bad or expired credential, 4410 "log in again"
    for one that was good and has been ended; 4401 for a code not in the table."""
    expected = {
        "token_not_valid": 4401,
        "token_expired": 4401,
        "not_authenticated": 4401,
        "user_inactive": 4410,
        "user_not_found": 4410,
        "token_revoked": 4410,
        "no_such_code": 4401,
    }
    for code, close in expected.items():
        error = TokenError(code=code)
        assert close_code(error) == close, code
        assert revocation.close_code(error) == close, code
    assert close_code(TokenRevoked()) == 4410
    assert close_code(TokenExpired()) == 4401


def ours(name: str) -> type | None:
    """The class of chatauth.exceptions named ``name`` (an error of its own)."""
    cls = getattr(exceptions, name, None)
    if isinstance(cls, type) and issubclass(cls, Coded | ChatAuthError):
        return cls
    return None


def raised_codes() -> list[tuple[type, str, str]]:
    """``(class, code, where)`` of every ``SomeError(code="...")`` and every
    ``code = "..."`` / ``default_code = "..."`` of a subclass, in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            where = f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", "")
                cls = ours(name)
                for keyword in node.keywords:
                    # code=e.code passes on a code checked where it was raised.
                    constant = isinstance(keyword.value, ast.Constant)
                    if cls and keyword.arg == "code" and constant:
                        found.append((cls, keyword.value.value, where))
            elif isinstance(node, ast.ClassDef):
                bases = [ours(getattr(b, "id", "")) for b in node.bases]
                cls = ours(node.name) or next((b for b in bases if b), None)
                for item in node.body:
                    target = item.targets[0] if isinstance(item, ast.Assign) else None
                    name = getattr(target, "id", None)
                    if cls and name in ("code", "default_code"):
                        found.append((cls, item.value.value, where))
    return found


def test_every_code_raised_is_in_the_table_with_the_status_of_its_class():
    codes = raised_codes()
    # The scan sees the call sites: a view's, the table's own classes'.
    assert ("session_not_found" in {code for _, code, _ in codes}) and len(codes) > 20
    for cls, code, where in codes:
        if (cls, code) == (ChatAuthError, "error"):
            continue  # the base class: every subclass names its own code
        assert code in ERRORS, f"{where}: {cls.__name__}(code={code!r})"
        if issubclass(cls, Coded):
            assert ERRORS[code].status == cls.status_code, f"{where}: {code}"


def test_schema_answers_are_read_from_the_table():
    responses = error_responses("invalid", "invalid_credentials", "token_revoked")
    assert sorted(responses) == [400, 401]
    description = str(responses[401].description)
    assert "invalid_credentials" in description and "token_revoked" in description
    assert "Invalid credentials." in description


@pytest.mark.django_db
def test_the_openapi_schema_describes_each_error_status_by_its_codes(api):
    schema = json.loads(api.get("/auth/schema").content)
    login = schema["paths"]["/auth/login"]["post"]["responses"]
    assert sorted(login) == ["200", "400", "401", "413", "429"]
    assert "invalid_credentials" in login["401"]["description"]
    assert "Invalid credentials." in login["401"]["description"]
    assert "throttled" in login["429"]["description"]
    delete = schema["paths"]["/auth/sessions/{session_id}"]["delete"]["responses"]
    assert sorted(delete) == ["204", "401", "404"]
    assert "No such open session." in delete["404"]["description"]
