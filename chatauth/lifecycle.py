"""Every way a credential ends, whoever ends it.

A user's access can end through chatauth's routes, but also through Django's own
views, the admin, the ORM, a management command in another process.  So
revocation hangs on the *events*, not on chatauth's views: model signals and
Django's auth signals, which every one of those paths sends.

========================  ==================================================
event                     what ends
========================  ==================================================
password hash changed     every token of the user issued before, and their
(``save()``, any path)    sockets; Django's session hash ends the web
                          sessions (and keeps the one that made the change
                          through ``update_session_auth_hash``, under a new
                          key: sockets opened with the old one close).  A
                          hash upgraded at login counts too, as it does for
                          Django's own sessions; a path with no signal
                          (``QuerySet.update()``) is caught by the tokens'
                          password version.
user deactivated          every token and web session; every socket
user deleted              everything (the user is gone); Chainlit-format
                          tokens naming the identifier (a tombstone)
identifier changed        Chainlit-format tokens naming the old identifier
``logout()``, session     that web session's copilot tokens and sockets
flushed or deleted
chat session row deleted  that socket
API key revoked/deleted   the copilot tokens it minted, and their sockets
========================  ==================================================

Logout (one token, its login, everywhere) is :mod:`chatauth.flows`.  What the
database says is also re-read by each worker's heartbeat (the sweep in
:mod:`chatauth.consumers`), which closes what a lost message, a bulk
``QuerySet.update()`` (no signals) or another process without a shared channel
layer left open.  Each event is audited with its actor
(:func:`chatauth.audit.current_actor`).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from django.apps import apps
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models import Model
from django.db.models.signals import post_delete, post_init, post_save, pre_delete
from django.utils import timezone

from chatauth import audit, denylist, hooks, revocation, signals, websessions
from chatauth.conf import settings
from chatauth.constants import CloseCode, user_group
from chatauth.credentials import api_key_id, identifier_id, session_key_id
from chatauth.internal.calls import call
from chatauth.internal.models import has_field
from chatauth.models import APIKey, ChatSession, Profile

logger = logging.getLogger("chatauth.lifecycle")
#: What a loaded user row said, to tell what a save changed.
SNAPSHOT = "_chatauth_loaded"
_MISSING = object()


# --- Users ---------------------------------------------------------------------------


@functools.cache
def _watched_attnames(model: Any) -> tuple[tuple[str, str], ...]:
    """``(field, attname)`` of what a save can change that matters here."""
    names = ("password", "is_active", model.USERNAME_FIELD)
    return tuple(
        (name, model._meta.get_field(name).attname)
        for name in names
        if has_field(model, name)
    )


def _watched(user: Model) -> dict[str, Any]:
    # ``__dict__``, not ``getattr``: a deferred field must not cost a query.
    values = user.__dict__
    return {
        name: values.get(attname, _MISSING)
        for name, attname in _watched_attnames(type(user))
    }


def _user_loaded(sender: Any, instance: Any, **kwargs: Any) -> None:
    instance.__dict__[SNAPSHOT] = _watched(instance)


def _user_saved(
    sender: Any, instance: Any, created: bool, update_fields: Any = None, **kwargs: Any
) -> None:
    before = instance.__dict__.get(SNAPSHOT) or {}
    current = _watched(instance)
    # Only what this save wrote: ``save(update_fields=...)`` leaves the rest
    # (a ``set_password()`` not saved yet is not a change yet).  A field not
    # loaded (deferred) is written only if it was assigned meanwhile.
    written = {
        name
        for name, value in current.items()
        if value is not _MISSING and (update_fields is None or name in update_fields)
    }
    instance.__dict__[SNAPSHOT] = {
        name: current[name] if name in written else before.get(name, _MISSING)
        for name in current
    }
    if created or not written:
        return  # (update_last_login and the like: nothing that matters here)
    changed = {n for n in written if before.get(n, _MISSING) != current[n]}
    identifier = sender.USERNAME_FIELD
    if identifier in changed and before.get(identifier, _MISSING) is not _MISSING:
        _tombstone(str(before[identifier]), reason="identifier_changed")
    if current.get("is_active") is False and "is_active" in written:
        if before.get("is_active") is not False:
            revocation.end_user(instance, reason="deactivated", web_sessions=True)
        else:  # saved again while inactive: nothing new to audit
            denylist.invalidate_user(instance.pk, denylist.load_user_state(instance.pk))
            revocation.notify(user_group(instance.pk), reason="inactive")
    elif "password" in changed:
        # (An unknown previous hash counts as a change: a deferred field
        # assigned.  Whatever this misses -- a constructor's save, an update()
        # -- the tokens' password version refuses, see revocation.UserState.)
        revocation.end_user(instance, reason="password_changed", web_sessions=False)
    else:
        denylist.invalidate_user(instance.pk)


def _user_deleting(sender: Any, instance: Any, **kwargs: Any) -> None:
    # Rows deleted with the user (its chat sessions) are audited meanwhile.
    audit.unlink(instance.pk)


def _user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    try:
        denylist.invalidate_user(instance.pk, denylist.GONE)
        revocation.notify(user_group(instance.pk), reason="user_deleted")
        identifier = getattr(instance, sender.USERNAME_FIELD, None)
        if identifier:
            _tombstone(str(identifier), reason="user_deleted")
    finally:
        audit.relink(instance.pk)


def _tombstone(identifier: str, *, reason: str) -> None:
    """Refuse tokens that name ``identifier`` instead of a user id (Chainlit's
    format) and were issued until now: they were another user's."""
    revocation.forget_identity(identifier)
    longest = settings.CHAINLIT_TOKEN_MAX_LIFETIME.total_seconds()
    revocation.revoke_key(
        identifier_id(identifier),
        kind="identifier",
        reason=reason,
        # Every such token accepted until now expires by then.
        expires_at=time.time() + longest + settings.LEEWAY.total_seconds(),
        identifier=identifier,
    )


def _profile_saved(sender: Any, instance: Profile, **kwargs: Any) -> None:
    denylist.invalidate_user(instance.user_id)


# --- Django sessions ------------------------------------------------------------------


def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """Django's ``logout()`` (its ``LogoutView``, the admin's, project code): the
    session's copilot tokens and sockets end, and ``on_logout`` hooks run with
    ``(request, None)``.  chatauth's own logout flow did this already."""
    if kwargs.get("chatauth") or not getattr(user, "is_authenticated", False):
        return
    session = getattr(request, "session", None)
    if session is not None and session.session_key:
        websessions.end(
            session.session_key,
            reason="logout",
            user_pk=getattr(user, "pk", None),
            expires_at=session.get_expiry_date().timestamp(),
        )
    for hook in hooks.get_hooks("on_logout"):
        try:
            call(hook, request, None)  # no response: the view has not made it yet
        except Exception:
            logger.exception("on_logout hook %s raised", hook.__qualname__)


def _web_session_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A session row deleted (``flush()``, ``cycle_key()``, the admin, the ORM):
    if a user was logged in with it and it had not expired, what chatauth
    derived from it ends.  Expired rows (``clearsessions``) need nothing: their
    copilot tokens never outlive the session's expiry."""
    if instance.expire_date <= timezone.now():
        return
    try:
        user_pk = instance.get_decoded().get(SESSION_KEY)
    except Exception:  # undecodable data holds no login
        return
    if user_pk is None or revocation.is_denied_cached(
        session_key_id(instance.session_key)
    ):
        return  # no login, or ended already (logout() ends it before the flush)
    websessions.end(
        instance.session_key,
        reason="web_session_ended",
        user_pk=user_pk,
        expires_at=instance.expire_date.timestamp(),
        # Maybe a new key of the same session (cycle_key()): its provider
        # login's record follows the key, it does not end here.
        forget_login=False,
    )


# --- Chat sessions and API keys ---------------------------------------------------


def _chat_session_deleted(sender: Any, instance: ChatSession, **kwargs: Any) -> None:
    from chatauth.chatsessions import tell

    if instance.closed_at is not None:
        return
    tell(instance, reason="chat_session_deleted", code=CloseCode.REVOKED)
    signals.chat_session_deleted.send(sender=ChatSession, session=instance)


def _api_key_changed(sender: Any, instance: APIKey, **kwargs: Any) -> None:
    deleted = kwargs.get("signal") is post_delete
    if not deleted and instance.revoked_at is None:
        return
    lifetime = settings.COPILOT_TOKEN_LIFETIME.total_seconds()
    revocation.revoke_key(
        api_key_id(instance.pk),
        kind="api_key",
        reason="api_key_deleted" if deleted else "api_key_revoked",
        expires_at=time.time() + lifetime,
        identifier=instance.name,
    )


def connect() -> None:
    """Connect the receivers (``AppConfig.ready()``), each to its own senders:
    the user model and every proxy or subclass of it (each sends its own
    signals), chatauth's models, the session engine's model."""
    User = get_user_model()
    for model in apps.get_models():
        if not issubclass(model, User):
            continue
        uid = f"{model._meta.label_lower}"
        post_init.connect(_user_loaded, sender=model, dispatch_uid=f"ca.init.{uid}")
        post_save.connect(_user_saved, sender=model, dispatch_uid=f"ca.save.{uid}")
        pre_delete.connect(
            _user_deleting, sender=model, dispatch_uid=f"ca.deleting.{uid}"
        )
        post_delete.connect(
            _user_deleted, sender=model, dispatch_uid=f"ca.deleted.{uid}"
        )
    post_save.connect(
        _profile_saved, sender=Profile, dispatch_uid="chatauth.profile_saved"
    )
    user_logged_out.connect(_logged_out, dispatch_uid="chatauth.logged_out")
    post_delete.connect(
        _chat_session_deleted,
        sender=ChatSession,
        dispatch_uid="chatauth.chat_session_deleted",
    )
    post_save.connect(
        _api_key_changed, sender=APIKey, dispatch_uid="chatauth.api_key_saved"
    )
    post_delete.connect(
        _api_key_changed, sender=APIKey, dispatch_uid="chatauth.api_key_deleted"
    )
    if apps.is_installed("django.contrib.sessions"):
        session_model = _session_model()
        if session_model is not None:
            post_delete.connect(
                _web_session_deleted,
                sender=session_model,
                dispatch_uid="chatauth.web_session_deleted",
            )


def _session_model() -> Any:
    """The model of the configured session engine, if it keeps sessions in the
    database (``db``, ``cached_db`` or a custom one built on them)."""
    store_class = type(websessions.store())
    get_model_class = getattr(store_class, "get_model_class", None)
    return get_model_class() if get_model_class is not None else None
