"""Query strings out of the ASGI server's logs.

chatauth refuses tokens in query strings (unless ``ALLOW_QUERY_STRING_TOKEN``),
but the server has logged the request line before chatauth saw it: uvicorn
writes the path *with* its query string to its access log
(``uvicorn.access``) and to its WebSocket lines (``uvicorn.error``:
``"WebSocket /ws/chat/?token=..." [accepted]``).  A token, an OAuth ``code`` or
``state`` sent that way would stay in every log archive.

:func:`install` (called at start-up while ``REDACT_QUERY_STRINGS`` is on, the
default) adds :class:`RedactQueryStrings` to those loggers in each worker
process, whatever logging configuration the project has.  daphne logs paths
without their query strings already.
"""

from __future__ import annotations

import logging

#: Loggers whose records carry request paths as arguments.
LOGGERS = ("uvicorn.access", "uvicorn.error")
REDACTED = "?[redacted]"


def redact(value: object) -> object:
    """``value`` without its query string, if it is a path that has one."""
    if isinstance(value, str) and value.startswith("/") and "?" in value:
        return value.split("?", 1)[0] + REDACTED
    return value


class RedactQueryStrings(logging.Filter):
    """Rewrite the path arguments of a record: ``/auth/me?token=x`` is logged as
    ``/auth/me?[redacted]``.  Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(redact(a) for a in args)
        return True


def install() -> None:
    """Add the filter to :data:`LOGGERS` (once), if ``REDACT_QUERY_STRINGS``."""
    from chatauth.conf import settings

    if not settings.REDACT_QUERY_STRINGS:
        return
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQueryStrings) for f in logger.filters):
            logger.addFilter(RedactQueryStrings())
