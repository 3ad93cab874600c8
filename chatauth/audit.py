"""The audit log: one :class:`~chatauth.models.AuditEvent` row per auth event.

Rows are written by receivers of Django's auth signals and of
:mod:`chatauth.signals`, so every login path is audited the same way.  Only ids
reach a row: never a password, a whole token, an API key or the secret.

Each row names its *actor* when someone other than the user may have caused it
(:func:`current_actor`): the request's authenticated user (a staff member in the
admin: set by :class:`chatauth.middleware.SessionRevocationMiddleware` for every
request), a management command (``command:<name>``), an identity provider, or
``system``; :mod:`chatauth.actors` keeps track of it (its functions are named
here too: ``audit.set_actor``, ``audit.acting_as``).
"""

from __future__ import annotations

import atexit
import logging
import threading
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
from chatauth.actors import MAX_ACTOR, current_actor, identifier_of
from chatauth.actors import acting_as as acting_as
from chatauth.actors import actor_of as actor_of
from chatauth.actors import reset_actor as reset_actor
from chatauth.actors import set_actor as set_actor
from chatauth.constants import Method
from chatauth.internal.http import client_ip, scope_client, user_agent
from chatauth.models import AuditEvent

logger = logging.getLogger("chatauth.audit")
Event = AuditEvent.Event


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
    actor: str | None = None,
) -> AuditEvent | None:
    """Write one audit row.  A failing write is logged, never raised to the caller.

    ``actor``: who caused it; by default :func:`current_actor`.
    """
    request = getattr(request, "_request", request)  # DRF Request -> HttpRequest
    if scope is not None:
        ip, ua = scope_client(scope)
    else:
        ip, ua = client_ip(request), user_agent(request)
    user_pk = getattr(user, "pk", None)
    if user_pk is not None and _gone(user_pk):
        user_pk = None  # being deleted: keep the identifier, not the link
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
                actor=(current_actor() if actor is None else actor)[:MAX_ACTOR],
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
        method=str(kwargs.get("method") or getattr(request, "chatauth_method", "")),
        request=request,
        scope=kwargs.get("scope"),
        token_id=kwargs.get("token_id", ""),
    )


@receiver(user_login_failed)
def _login_failed(sender: Any, credentials: dict[str, Any], **kwargs: Any) -> None:
    from chatauth import throttling

    # ``credentials`` was cleansed by Django (the password is ``****``); the
    # username is kept only if it names an account (see ``typed_identifier``).
    method = kwargs.get("method", "")
    reason = kwargs.get("reason", "")
    if sender == "django.contrib.auth":
        # Sent by authenticate() itself, which is always given credentials: a
        # password login (chatauth's own, the admin's or another login form).
        method = method or Method.PASSWORD
        if throttling.take_refusal() is not None:
            reason = "throttled"  # refused by chatauth.backends before any check
    username = str(credentials.get("username", ""))
    if reason == "throttled":
        # Nothing was checked: counted, not stored one row each.
        refusals.count(
            Event.LOGIN_FAILED,
            reason=reason,
            method=method,
            identifier=typed_identifier(username),
            request=kwargs.get("request"),
            scope=kwargs.get("scope"),
        )
        return
    record(
        Event.LOGIN_FAILED,
        identifier=typed_identifier(username),
        method=method,
        success=False,
        reason=reason or "invalid_credentials",
        request=kwargs.get("request"),
        scope=kwargs.get("scope"),
        actor="",
    )


def typed_identifier(username: str) -> str:
    """What a failed login row keeps of the username typed: itself when it
    names an account, else a keyed hash -- people type their password into
    the username box, and the audit log must never hold one.  The hash still
    lets an operator see the same unknown name tried again and again."""
    from django.utils.crypto import salted_hmac

    username = username[:255]
    User = get_user_model()
    try:
        exists = User._default_manager.filter(
            **{User.USERNAME_FIELD: username}
        ).exists()
    except (ValueError, TypeError, DatabaseError):  # e.g. a NUL on PostgreSQL
        exists = False
    if exists:
        return username
    # SHA-1 named explicitly: the same typed name keeps the same digest in the
    # log across Django upgrades (Django 6.1 warns its default will change).
    digest = salted_hmac(
        "chatauth.audit.typed_identifier", username, algorithm="sha1"
    ).hexdigest()
    return f"~{digest[:24]}"


@receiver(user_logged_out)
def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    record(
        Event.LOGOUT,
        user=user,
        method=kwargs.get("method") or Method.SESSION,
        reason="everywhere" if kwargs.get("everywhere") else "",
        request=request,
        scope=kwargs.get("scope"),
        token_id=kwargs.get("token_id", ""),
    )


@receiver(signals.token_refreshed)
def _refreshed(sender: Any, user: Any, old_jti: str, request: Any, **kw: Any) -> None:
    record(Event.REFRESH, user=user, method="token", request=request, token_id=old_jti)


@receiver(signals.refresh_token_reused)
def _reused(sender: Any, user_pk: Any, jti: str, request: Any, **kw: Any) -> None:
    record(
        Event.REFRESH_REUSED,
        user=get_user_model()(pk=user_pk) if user_pk else None,
        identifier=kw.get("identifier", ""),
        method="token",
        success=False,
        reason="family_revoked",
        request=request,
        token_id=jti,
    )


@receiver(signals.token_issued)
def _issued(sender: Any, user: Any, token_type: str, jti: str, **kw: Any) -> None:
    # Copilot and Chainlit-format tokens minted for a page or a key; access and
    # refresh pairs are covered by the login row.
    if token_type in ("copilot", "chainlit"):
        record(
            Event.TOKEN_ISSUED,
            user=user,
            method=kw.get("method", ""),
            reason=token_type,
            request=kw.get("request"),
            token_id=jti,
        )


@receiver(signals.token_revoked)
def _revoked(sender: Any, key: str, reason: str, user_pk: Any, **kw: Any) -> None:
    record(
        Event.REVOKE,
        # No query for the real row: the user may be gone (a deletion's
        # tombstone), and only its id is kept.
        user=get_user_model()(pk=user_pk) if user_pk else None,
        identifier=kw.get("identifier", ""),
        method=kw.get("kind", ""),
        reason=reason,
        token_id=key,
    )


#: Users being deleted: rows written meanwhile keep their identifier but no link
#: (a foreign key to a row deleted in the same transaction fails the commit).
_deleting: set[str] = set()


def unlink(user_pk: Any) -> None:
    """From now on, rows about ``user_pk`` do not link to it (being deleted)."""
    _deleting.add(str(user_pk))


def relink(user_pk: Any) -> None:
    _deleting.discard(str(user_pk))


def _gone(user_pk: Any) -> bool:
    return str(user_pk) in _deleting


@receiver(signals.user_tokens_revoked)
def _user_revoked(sender: Any, user: Any, reason: str, **kw: Any) -> None:
    record(Event.REVOKE, user=user, reason=reason)


@receiver(signals.chat_session_deleted)
def _chat_session_deleted(sender: Any, session: Any, **kw: Any) -> None:
    record(
        Event.REVOKE,
        user=get_user_model()(pk=session.user_id),
        method=Method.WEBSOCKET,
        reason="chat_session_deleted",
        token_id=str(session.pk),
    )


@receiver(signals.api_key_used)
def _api_key(sender: Any, api_key: Any, request: Any, success: bool, **kw: Any) -> None:
    if not success:  # an unknown or revoked key: nobody we know, counted
        refusals.count(
            Event.API_KEY_REFUSED, reason="invalid", method="api_key", request=request
        )
        return
    record(
        Event.API_KEY_USED,
        identifier=api_key.name,
        method="api_key",
        success=True,
        request=request,
    )


@receiver(signals.auth_refused)
def _refused(sender: Any, event: str, **kw: Any) -> None:
    refusals.count(
        event,
        reason=kw.get("reason", ""),
        method=kw.get("method", ""),
        identifier=kw.get("identifier", ""),
        request=kw.get("request"),
        scope=kw.get("scope"),
        actor=kw.get("actor", ""),
    )


# --- Refusals: counted, written at a bounded rate ------------------------------------


class Refusals:
    """Refusals of clients nobody knows (bad API keys, throttled logins,
    untrusted header logins, foreign origins, sockets without credentials,
    refused OAuth callbacks), counted in memory per (event, reason, method,
    identifier, address) and written as one row each, with its ``count``, at
    most every ``AUDIT_REFUSAL_INTERVAL``: a flood costs a few rows a minute,
    not one row per request.  A flush also runs at exit, and from
    ``chatauth_prune``.  Past :attr:`MAX_KEYS` distinct keys in one interval,
    further refusals are counted together without an address.
    """

    MAX_KEYS = 1000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str, str, str | None, str], int] = {}
        self._timer: threading.Timer | None = None

    def count(
        self,
        event: str,
        *,
        reason: str = "",
        method: str = "",
        identifier: str = "",
        request: Any = None,
        scope: dict[str, Any] | None = None,
        actor: str = "",
    ) -> None:
        from chatauth.conf import settings

        request = getattr(request, "_request", request)
        ip = scope_client(scope)[0] if scope is not None else client_ip(request)
        actor = actor[:MAX_ACTOR]
        key = (event, reason[:64], method[:16], identifier[:255], ip, actor)
        interval = settings.AUDIT_REFUSAL_INTERVAL.total_seconds()
        with self._lock:
            if key not in self._counts and len(self._counts) >= self.MAX_KEYS:
                key = (event, reason[:64], method[:16], "", None, actor)
            self._counts[key] = self._counts.get(key, 0) + 1
            if self._timer is None and interval > 0:
                self._timer = threading.Timer(interval, self._flush_in_thread)
                self._timer.daemon = True
                self._timer.start()
        if interval <= 0:  # 0: one row per refusal, at once
            self.flush()

    def flush(self) -> int:
        """Write what was counted; returns how many refusals that was."""
        with self._lock:
            counts, self._counts = self._counts, {}
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if not counts:
            return 0
        now = timezone.now()
        rows = [
            AuditEvent(
                event=event,
                identifier=identifier,
                method=method,
                success=False,
                reason=reason,
                ip=ip,
                actor=actor,
                count=n,
                created_at=now,
            )
            for (event, reason, method, identifier, ip, actor), n in counts.items()
        ]
        try:
            AuditEvent.objects.bulk_create(rows)
        except DatabaseError:
            logger.exception("could not write %d refusal rows", len(rows))
        return sum(counts.values())

    def _flush_in_thread(self) -> None:
        from django.db import close_old_connections

        try:
            self.flush()
        finally:
            close_old_connections()  # a timer thread, not a request thread


refusals = Refusals()
atexit.register(refusals.flush)
