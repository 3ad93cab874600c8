"""The one place that decides how a login is checked and how a user is stored.

The Chainlit-style decorators are the public face; this adapter is what runs them.
Subclass :class:`DefaultAdapter` and name it in ``CHATAUTH["ADAPTER"]`` to change a
step; each method says when it runs and what it may return.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.contrib.auth import authenticate, get_user_model
from django.db import IntegrityError, close_old_connections, transaction
from django.http import HttpRequest

from chatauth import hooks
from chatauth.conf import settings
from chatauth.exceptions import HookError
from chatauth.internal.calls import acall
from chatauth.models import Profile

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger("chatauth.adapter")


def as_chat_user(value: Any) -> hooks.User | None:
    """Normalise a callback's return value (a ``chatauth.User``, Chainlit's
    ``cl.User`` or anything with an ``identifier``) or refuse it."""
    if value is None or value is False:
        return None
    identifier = getattr(value, "identifier", None)
    if not isinstance(identifier, str) or not identifier.strip():
        raise HookError("A callback returned a user without a string identifier.")
    metadata = getattr(value, "metadata", None) or {}
    if not isinstance(metadata, dict):
        raise HookError("A callback returned a user whose metadata is not a dict.")
    display_name = getattr(value, "display_name", None)
    return hooks.User(
        identifier.strip(),
        None if display_name is None else str(display_name),
        metadata,
    )


class DefaultAdapter:
    """chatauth's default behaviour.  Override methods in a subclass to change it."""

    # --- Password login --------------------------------------------------------

    async def authenticate_password(
        self, request: HttpRequest, username: str, password: str
    ) -> AbstractBaseUser | None:
        """Runs on ``POST auth/login``.  Return the user, or None to refuse.

        With a ``password_auth_callback`` registered it decides; otherwise Django's
        ``authenticate()`` does, so every configured backend works.  Either way
        the work runs on a worker thread: bcrypt releases the GIL, so logins use
        every core instead of queueing on the event loop or on Django's one
        thread for sync code.
        """
        callback = hooks.get_hook("password_auth_callback")
        if callback is not None:
            chat_user = await self.run_callback(callback, username, password)
            if chat_user is None:
                return None
            return await sync_to_async(self.get_or_create_user)(chat_user)
        return await sync_to_async(self._authenticate, thread_sensitive=False)(
            request, username, password
        )

    def _authenticate(
        self, request: HttpRequest, username: str, password: str
    ) -> AbstractBaseUser | None:
        try:
            # Django's ModelBackend hashes the password once for an unknown user
            # too, so unknown user and wrong password cost the same (#20760).
            return authenticate(request, username=username, password=password)
        finally:
            close_old_connections()  # this worker thread is not a request thread

    async def run_callback(self, callback: Any, *args: Any) -> hooks.User | None:
        """Run a user callback; any exception it raises becomes a :class:`HookError`
        (logged with its traceback, shown to nobody)."""
        try:
            result = await acall(callback, *args)
        except Exception as e:
            logger.exception("chatauth callback %s raised", callback.__qualname__)
            raise HookError(code="hook_failed") from e
        return as_chat_user(result)

    # --- Users -----------------------------------------------------------------

    def can_authenticate(self, user: AbstractBaseUser) -> bool:
        """False for a user that must not log in (inactive)."""
        return bool(getattr(user, "is_active", True))

    def get_or_create_user(
        self, chat_user: hooks.User, *, update: bool = True
    ) -> AbstractBaseUser:
        """Persist a callback's user: ``identifier`` is the ``USERNAME_FIELD``;
        display name and metadata go to the profile (overwritten when ``update``)."""
        User = get_user_model()
        field = User.USERNAME_FIELD
        max_length = getattr(User._meta.get_field(field), "max_length", None)
        if max_length and len(chat_user.identifier) > max_length:
            raise HookError("Identifier is too long for the user model.")
        try:
            encoded = json.dumps(chat_user.metadata)
        except (TypeError, ValueError) as e:  # JSONField would raise mid-save
            raise HookError("User metadata is not plain JSON.") from e
        # PostgreSQL text and jsonb cannot hold NUL: refuse it here, as a clean
        # error, instead of a database exception in the middle of a login.
        if "\x00" in chat_user.identifier or "\\u0000" in encoded:
            raise HookError("A user's identifier or metadata holds a NUL character.")
        try:
            with transaction.atomic():
                user, created = User._default_manager.get_or_create(
                    **{field: chat_user.identifier},
                    defaults=self.new_user_fields(chat_user),
                )
        except IntegrityError:  # created concurrently by another request
            user = User._default_manager.get(**{field: chat_user.identifier})
            created = False
        if created or update:
            self.save_profile(user, chat_user)
        return user

    def new_user_fields(self, chat_user: hooks.User) -> dict[str, Any]:
        """Extra fields for a user created from a callback (no usable password)."""
        from django.contrib.auth.hashers import make_password

        return {"password": make_password(None)}

    def save_profile(self, user: AbstractBaseUser, chat_user: hooks.User) -> Profile:
        profile, _ = Profile.objects.update_or_create(
            user=user,
            defaults={
                # The column holds 255 (PostgreSQL enforces it, SQLite does not).
                "display_name": (chat_user.display_name or "")[:255],
                "metadata": chat_user.metadata or {},
            },
        )
        return profile

    def user_claims(self, user: AbstractBaseUser) -> dict[str, Any]:
        """``identifier``, ``display_name`` and ``metadata`` as tokens and ``auth/me``
        carry them."""
        identifier = str(getattr(user, get_user_model().USERNAME_FIELD))
        profile = (
            Profile.objects.filter(user=user).only("display_name", "metadata").first()
        )
        display_name = profile.display_name if profile else ""
        if not display_name and hasattr(user, "get_full_name"):
            display_name = user.get_full_name()
        return {
            "identifier": identifier,
            "display_name": display_name or None,
            "metadata": profile.metadata if profile else {},
        }

    def chat_user(self, user: AbstractBaseUser) -> hooks.User:
        claims = self.user_claims(user)
        return hooks.User(
            claims["identifier"], claims["display_name"], claims["metadata"]
        )


def get_adapter() -> DefaultAdapter:
    """An instance of ``CHATAUTH["ADAPTER"]``."""
    return settings.ADAPTER()
