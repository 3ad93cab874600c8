"""The audit log: one :class:`~chatauth.models.AuditEvent` row per auth event.

Rows are written by receivers of Django's auth signals and of
:mod:`chatauth.signals`, so every login path is audited the same way.  Only ids
reach a row: never a password, a whole token, an API key or the secret.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import (
    user_logged_in,
    user_logged_out,
    user_login_failed,
)
from django.db import DatabaseError, transaction
from django.dispatch import receiver
from django.utils import timezone

from chatauth import signals
from chatauth.constants import Method
from chatauth.internal import bulk
from chatauth.internal.http import client_ip, scope_client, user_agent
from chatauth.models import AuditEvent

logger = logging.getLogger("chatauth.audit")
Event = AuditEvent.Event


def identifier_of(user: Any) -> str:
    if user is None:
        return ""
    return str(getattr(user, get_user_model().USERNAME_FIELD, "") or "")[:255]


def record(
    event: str,
    *,
    user: Any = None,
    identifier: str = "",
    method: str = "",
    success: bool = True,
    reason: str = "",
    request: Any = None,
    scope: dict[str, Any] | None = None,
    token_id: str = "",
) -> AuditEvent | None:
    """Write one audit row.  A failing write is logged, never raised to the caller."""
    request = getattr(request, "_request", request)  # DRF Request -> HttpRequest
    if scope is not None:
        ip, ua = scope_client(scope)
    else:
        ip, ua = client_ip(request), user_agent(request)
    user_pk = getattr(user, "pk", None)
    try:
        # A savepoint: a failed audit write must not poison the caller's transaction.
        with transaction.atomic():
            return AuditEvent.objects.create(
                event=event,
                user_id=user_pk if user_pk is not None and user_pk != "" else None,
                identifier=(identifier or identifier_of(user))[:255],
                method=method[:16],
                success=success,
                reason=reason[:64],
                ip=ip,
                user_agent=ua,
                token_id=token_id[:80],
            )
    except DatabaseError:
        logger.exception("could not write audit event %s", event)
        return None


@receiver(user_logged_in)
def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    record(
        Event.LOGIN,
        user=user,
        # django.contrib.auth.login() sends no method: a path that logs in through
        # it (OAuth) names its method on the request instead.
        method=kwargs.get("method") or getattr(request, "chatauth_method", ""),
        request=request,
        scope=kwargs.get("scope"),
        token_id=kwargs.get("token_id", ""),
    )


@receiver(user_login_failed)
def _login_failed(sender: Any, credentials: dict[str, Any], **kwargs: Any) -> None:
    # ``credentials`` was cleansed by Django (the password is ``****``); only the
    # username is kept, and only as typed, truncated.
    method = kwargs.get("method", "")
    if not method and sender == "django.contrib.auth":
        # Sent by authenticate() itself, which is always given credentials: a
        # password login (chatauth's own, the admin's or another login form).
        method = Method.PASSWORD
    record(
        Event.LOGIN_FAILED,
        identifier=str(credentials.get("username", ""))[:255],
        method=method,
        success=False,
        reason=kwargs.get("reason", "invalid_credentials"),
        request=kwargs.get("request"),
        scope=kwargs.get("scope"),
    )


@receiver(user_logged_out)
def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    record(
        Event.LOGOUT,
        user=user,
        method=kwargs.get("method", ""),
        reason="everywhere" if kwargs.get("everywhere") else "",
        request=request,
        scope=kwargs.get("scope"),
        token_id=kwargs.get("token_id", ""),
    )


@receiver(signals.token_refreshed)
def _refreshed(sender: Any, user: Any, old_jti: str, request: Any, **kw: Any) -> None:
    record(Event.REFRESH, user=user, method="token", request=request, token_id=old_jti)


@receiver(signals.token_issued)
def _issued(sender: Any, user: Any, token_type: str, jti: str, **kw: Any) -> None:
    if token_type == "copilot":  # access/refresh pairs are covered by the login row
        record(
            Event.TOKEN_ISSUED,
            user=user,
            method=kw.get("method", ""),
            reason=token_type,
            request=kw.get("request"),
            token_id=jti,
        )


@receiver(signals.token_revoked)
def _revoked(sender: Any, token: Any, reason: str, user_pk: Any, **kw: Any) -> None:
    record(
        Event.REVOKE,
        user=get_user_model()(pk=user_pk) if user_pk else None,
        identifier=token.identifier,
        reason=reason,
        token_id=token.key,
    )


@receiver(signals.user_tokens_revoked)
def _user_revoked(sender: Any, user: Any, reason: str, **kw: Any) -> None:
    record(Event.REVOKE, user=user, reason=reason)


@receiver(signals.api_key_used)
def _api_key(sender: Any, api_key: Any, request: Any, success: bool, **kw: Any) -> None:
    record(
        Event.API_KEY_USED if success else Event.API_KEY_REFUSED,
        identifier=api_key.name if api_key else "",
        method="api_key",
        success=success,
        request=request,
    )


@receiver(signals.auth_refused)
def _refused(sender: Any, event: str, **kw: Any) -> None:
    record(
        event,
        identifier=kw.get("identifier", ""),
        method=kw.get("method", ""),
        success=False,
        reason=kw.get("reason", ""),
        request=kw.get("request"),
        scope=kw.get("scope"),
    )


# --- Chat sessions: written in batches by the live-session writer -----------------


class _Batch(list[dict[str, Any]]):
    """The rows collected by :func:`collected`, stamped with one time: the
    moment the batch is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.at = timezone.now()


_collector: ContextVar[_Batch | None] = ContextVar(
    "chatauth_audit_collector", default=None
)


@contextmanager
def collected() -> Iterator[list[dict[str, Any]]]:
    """Collect the chat-session events sent inside the block and write them with
    one multi-row INSERT at its end (the caller's transaction, if any, holds
    both); the list holds each row's field values.

    The live-session writer records hundreds of sessions per commit; one INSERT
    (and savepoint) per event would cost more than the sessions themselves.
    """
    rows = _Batch()
    token = _collector.set(rows)
    try:
        yield rows
    finally:
        _collector.reset(token)
    if rows:
        bulk.insert_rows(AuditEvent, rows)


def _session_event(
    event: str, session: Any, scope: dict[str, Any] | None, reason: str
) -> None:
    auth = (scope or {}).get("chatauth")
    identifier = auth.token.identifier if auth is not None else ""
    batch = _collector.get()
    if batch is None:
        record(
            event,
            user=get_user_model()(pk=session.user_id),  # no query for the real row
            identifier=identifier,
            method=Method.WEBSOCKET,
            reason=reason,
            scope=scope,
            token_id=session.token_key,
        )
        return
    # The session row holds the client's address and agent already, taken from
    # this same scope when the socket opened: no second parse of its headers.
    ip, ua = session.ip, session.user_agent
    batch.append(
        {
            "event": event,
            "user_id": session.user_id,
            "identifier": identifier[:255],
            "method": Method.WEBSOCKET,
            "success": True,
            "reason": reason[:64],
            "ip": ip,
            "user_agent": ua,
            "token_id": session.token_key[:80],
            "created_at": batch.at,
        }
    )


@receiver(signals.chat_session_opened)
def _session_opened(sender: Any, session: Any, scope: Any = None, **kw: Any) -> None:
    auth = (scope or {}).get("chatauth")
    # How the socket authenticated: header, subprotocol, cookie, session, query
    # or message.
    _session_event(Event.SESSION_OPENED, session, scope, auth.source if auth else "")


@receiver(signals.chat_session_closed)
def _session_closed(sender: Any, session: Any, code: int, **kw: Any) -> None:
    _session_event(Event.SESSION_CLOSED, session, kw.get("scope"), str(code))
