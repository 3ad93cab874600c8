"""Query strings out of the ASGI server's log lines (chatauth.accesslog); the
real uvicorn log is checked in tests/test_deploy_audit.py."""

from __future__ import annotations

import logging

import pytest
from django.test import override_settings

from chatauth import accesslog


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, msg, args, None
    )


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/auth/me?token=abc.def.ghi", "/auth/me?[redacted]"),
        ("/auth/oauth/x/callback?code=c&state=s", "/auth/oauth/x/callback?[redacted]"),
        ("/ws/chat/?access_token=t", "/ws/chat/?[redacted]"),
        ("/auth/me", "/auth/me"),
        ("/?", "/?[redacted]"),
    ],
)
def test_access_line_loses_its_query_string(path, logged):
    line = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", path, "1.1", 401)
    assert accesslog.RedactQueryStrings().filter(line) is True
    assert line.getMessage() == f'127.0.0.1:5000 - "GET {logged} HTTP/1.1" 401'


def test_websocket_line_and_other_arguments_untouched():
    line = record('%s - "WebSocket %s" [accepted]', "1.2.3.4:5", "/ws/chat/?token=x")
    accesslog.RedactQueryStrings().filter(line)
    assert (
        line.getMessage() == '1.2.3.4:5 - "WebSocket /ws/chat/?[redacted]" [accepted]'
    )
    plain = record("%s took %d ms?", "not a path?x=1", 3)
    accesslog.RedactQueryStrings().filter(plain)
    assert plain.getMessage() == "not a path?x=1 took 3 ms?"


def test_installed_on_uvicorns_loggers_once():
    accesslog.install()
    accesslog.install()
    for name in accesslog.LOGGERS:
        filters = logging.getLogger(name).filters
        assert sum(isinstance(f, accesslog.RedactQueryStrings) for f in filters) == 1


def test_not_installed_when_switched_off():
    logger = logging.getLogger("uvicorn.access")
    saved = list(logger.filters)
    try:
        for f in saved:
            logger.removeFilter(f)
        with override_settings(CHATAUTH={"REDACT_QUERY_STRINGS": False}):
            accesslog.install()
        assert not any(
            isinstance(f, accesslog.RedactQueryStrings) for f in logger.filters
        )
    finally:
        for f in list(logger.filters):
            logger.removeFilter(f)
        for f in saved:
            logger.addFilter(f)
