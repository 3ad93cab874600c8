"""The audit log: one :class:`~chatauth.models.AuditEvent` row per auth event.

Rows are written by receivers of Django's auth signals and of
:mod:`chatauth.signals`, so every login path is audited the same way.  Only ids
reach a row: never a password, a whole token, an API key or the secret.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import (
    user_logged_in,
    user_logged_out,
    user_login_failed,
)
from django.db import DatabaseError
from django.dispatch import receiver

from chatauth import signals
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
        method=kwargs.get("method", ""),
        request=request,
        scope=kwargs.get("scope"),
        token_id=kwargs.get("token_id", ""),
    )


@receiver(user_login_failed)
def _login_failed(sender: Any, credentials: dict[str, Any], **kwargs: Any) -> None:
    # ``credentials`` was cleansed by Django (the password is ``****``); only the
    # username is kept, and only as typed, truncated.
    record(
        Event.LOGIN_FAILED,
        identifier=str(credentials.get("username", ""))[:255],
        method=kwargs.get("method", ""),
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
