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
from django.utils import timezone

from chatauth import hooks
from chatauth.conf import settings
from chatauth.exceptions import HookError
from chatauth.identifiers import InvalidIdentifier, normalize
from chatauth.internal.calls import acall
from chatauth.internal.models import has_field
from chatauth.models import Profile

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from chatauth.oauth.identity import Identity

logger = logging.getLogger("chatauth.adapter")

#: What a provider said about the user (``raw_user_data``), kept on the linked
#: account at most (bytes of JSON); past it, only the claims that name the user.
MAX_EXTRA_DATA = 16 * 1024


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
        """Persist a callback's user: its identifier, normalised
        (:func:`chatauth.identifiers.normalize`), is the ``USERNAME_FIELD``;
        display name and metadata go to the profile -- a new user's always, an
        existing user's when ``update`` (the caller speaks for the user: its
        callback, trusted proxy or provider).  Raises :class:`HookError` for an
        identifier or metadata no user can have."""
        User = get_user_model()
        field = User.USERNAME_FIELD
        max_length = getattr(User._meta.get_field(field), "max_length", None)
        identifier = normalize(chat_user.identifier, max_length)
        try:
            encoded = json.dumps(chat_user.metadata)
        except (TypeError, ValueError) as e:  # JSONField would raise mid-save
            raise HookError("User metadata is not plain JSON.") from e
        # PostgreSQL jsonb cannot hold NUL: refuse it here, as a clean error,
        # instead of a database exception in the middle of a login.
        if "\\u0000" in encoded:
            raise HookError("A user's metadata holds a NUL character.")
        chat_user = hooks.User(identifier, chat_user.display_name, chat_user.metadata)
        user = self.find_user(identifier)
        created = False
        if user is None:
            try:
                with transaction.atomic():
                    user, created = User._default_manager.get_or_create(
                        **{field: identifier},
                        defaults=self.new_user_fields(chat_user),
                    )
            except IntegrityError:  # created concurrently by another request
                user = User._default_manager.get(**{field: identifier})
        if created or update:
            self.save_profile(user, chat_user)
        return user

    def find_user(self, identifier: str) -> AbstractBaseUser | None:
        """The user a normalised ``identifier`` names, or None.

        Exactly, else (``IDENTIFIER_CASE = "fold"``) case-insensitively, for
        users created before identifiers were normalised; two such users are
        one identity too many: refused."""
        User = get_user_model()
        field = User.USERNAME_FIELD
        found = User._default_manager.filter(**{field: identifier}).first()
        if found is not None or settings.IDENTIFIER_CASE != "fold":
            return found
        matches = list(
            User._default_manager.filter(**{f"{field}__iexact": identifier})[:2]
        )
        if len(matches) > 1:
            raise InvalidIdentifier("several users have it, in different cases")
        return matches[0] if matches else None

    def new_user_fields(self, chat_user: hooks.User) -> dict[str, Any]:
        """Extra fields for a user created from a callback (no usable password)."""
        from django.contrib.auth.hashers import make_password

        return {"password": make_password(None)}

    def save_profile(self, user: AbstractBaseUser, chat_user: hooks.User) -> Profile:
        """Store ``chat_user``'s display name and metadata on ``user``'s profile.
        A display name of None keeps the one stored (it says nothing)."""
        defaults: dict[str, Any] = {"metadata": chat_user.metadata or {}}
        if chat_user.display_name is not None:
            # The column holds 255 (PostgreSQL enforces it, SQLite does not).
            defaults["display_name"] = chat_user.display_name[:255]
        # (any user model: the stubs type the field with the settings' one)
        profile, _ = Profile.objects.update_or_create(user=user, defaults=defaults)  # type: ignore[misc]
        return profile

    # --- OAuth account linking ----------------------------------------------------
    # Run by chatauth.oauth.linking.link_account, in one transaction, on every
    # OAuth login that the oauth_callback (if any) let through.

    def oauth_account_fields(self, identity: Identity) -> dict[str, Any]:
        """Runs on every OAuth login: the fields stored on the linked account
        (:class:`~chatauth.models.OAuthAccount`), whether it is new or linked
        already.  By default the email and whether the provider verified it,
        what the provider said (``extra_data``: its ``raw_user_data``, cut down
        to the claims that name the user past :data:`MAX_EXTRA_DATA` bytes of
        JSON) and the time of this login.  Override to keep less."""
        extra = identity.raw
        if len(json.dumps(extra, default=str)) > MAX_EXTRA_DATA:
            extra = {k: identity.raw.get(k) for k in ("sub", "id", "login", "email")}
        return {
            "email": identity.email or "",
            "email_verified": identity.email_verified,
            "extra_data": json.loads(json.dumps(extra, default=str)),
            "last_login_at": timezone.now(),
        }

    def find_oauth_user(
        self, identity: Identity, chat_user: hooks.User
    ) -> AbstractBaseUser | None:
        """Runs on a first OAuth login (no account linked to this provider
        identity yet): the local user the identity names, or None for a new
        user.  ``chat_user`` is the ``default_user``, or what the
        ``oauth_callback`` returned.

        By default: the user with ``chat_user``'s identifier
        (:meth:`find_user`), else the one user whose email is the one the
        provider verified (none when several have it).  A user found joins
        only if :meth:`may_link_oauth` says so.  Raise :class:`HookError` to
        refuse the login (``invalid_user``).
        """
        User = get_user_model()
        existing = self.find_user(normalize(chat_user.identifier))
        email_field = User.get_email_field_name()
        if (
            existing is None
            and identity.email_verified
            and has_field(User, email_field)
        ):
            matches = list(
                User._default_manager.filter(
                    **{f"{email_field}__iexact": identity.email}
                )[:2]
            )
            existing = matches[0] if len(matches) == 1 else None
        return existing

    def create_oauth_user(
        self, identity: Identity, chat_user: hooks.User
    ) -> AbstractBaseUser:
        """Runs on a first OAuth login whose identity names no local user
        (:meth:`find_oauth_user` returned None): the new user.

        By default :meth:`get_or_create_user` of ``chat_user``, and the email
        the provider verified stored on it when the user model has an email
        field and it is empty.  Raise :class:`HookError` to refuse the login
        (``invalid_user``).
        """
        user = self.get_or_create_user(chat_user)
        User = get_user_model()
        email_field = User.get_email_field_name()
        if (
            identity.email_verified
            and has_field(User, email_field)
            and not getattr(user, email_field, "")
        ):
            setattr(user, email_field, identity.email)
            user.save(update_fields=[email_field])
        return user

    def may_link_oauth(
        self,
        user: AbstractBaseUser,
        *,
        provider: str,
        email: str | None,
        identifier_chosen: bool,
    ) -> bool:
        """Runs on a first OAuth login whose identity names an existing local
        ``user`` (:meth:`find_oauth_user`: its identifier, or the email the
        provider verified, ``email``; None when it did not verify one).  True
        joins the identity to that account; False refuses the login
        (``account_exists``).

        By default, as django-allauth: never, unless ``OAUTH_LINK_BY_EMAIL`` is
        on -- whoever created that account may not be its owner ("pre-account
        hijacking": an attacker registers the victim's address with a password
        of their own, and it would still log in after the merge).  Then the
        provider must have verified the email, the local account must have
        verified it too (:meth:`email_verified`), and staff or superusers are
        joined only with ``OAUTH_LINK_STAFF``.  An ``oauth_callback`` that chose
        the identifier itself (``identifier_chosen``) is developer code deciding:
        it joins, staff still only with ``OAUTH_LINK_STAFF``.
        """
        privileged = getattr(user, "is_staff", False) or getattr(
            user, "is_superuser", False
        )
        if privileged and not settings.OAUTH_LINK_STAFF:
            return False
        if identifier_chosen:
            return True
        return bool(
            settings.OAUTH_LINK_BY_EMAIL and email and self.email_verified(user, email)
        )

    def email_verified(self, user: AbstractBaseUser, email: str) -> bool:
        """Whether ``email`` is ``user``'s own, verified (Django itself never
        verifies an address).  By default: a provider verified it on another of
        the user's linked accounts, or django-allauth (when installed) has it as
        verified.  Override to consult your own verification."""
        from django.apps import apps

        from chatauth.models import OAuthAccount

        if OAuthAccount.objects.filter(
            # (any user model: the stubs type the field with the settings' one)
            user=user,  # type: ignore[misc]
            email__iexact=email,
            email_verified=True,
        ).exists():
            return True
        if apps.is_installed("allauth.account"):
            # (allauth is optional: not installed in the settings the stubs load)
            EmailAddress = apps.get_model("account", "EmailAddress")  # type: ignore[misc]
            return bool(
                EmailAddress.objects.filter(
                    user=user, email__iexact=email, verified=True
                ).exists()
            )
        return False

    def user_claims(self, user: AbstractBaseUser) -> dict[str, Any]:
        """``identifier``, ``display_name`` and ``metadata`` as tokens and ``auth/me``
        carry them."""
        identifier = str(getattr(user, get_user_model().USERNAME_FIELD))
        profile = (
            # (any user model: the stubs type the field with the settings' one)
            Profile.objects.filter(user=user)  # type: ignore[misc]
            .only("display_name", "metadata")
            .first()
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
    # (a DefaultAdapter: the setting names a subclass)
    adapter: DefaultAdapter = settings.ADAPTER()
    return adapter
