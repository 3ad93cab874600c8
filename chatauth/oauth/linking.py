"""Which user a provider identity logs in as: the account already linked to
it, a local account the adapter lets it join, or a new one.

The decisions are the adapter's (:class:`~chatauth.adapter.DefaultAdapter`:
``oauth_account_fields``, ``find_oauth_user``, ``may_link_oauth``,
``email_verified``, ``create_oauth_user``, ``save_profile``,
``can_authenticate``); this module runs them in one transaction and turns a
"no" into the login's :class:`~chatauth.oauth.errors.Refusal`.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from chatauth import hooks
from chatauth.adapter import DefaultAdapter, get_adapter
from chatauth.exceptions import HookError
from chatauth.models import OAuthAccount
from chatauth.oauth.errors import Refusal
from chatauth.oauth.identity import Identity
from chatauth.oauth.providers import Provider


def link_account(
    provider: Provider,
    identity: Identity,
    chat_user: hooks.User,
    *,
    identifier_chosen: bool,
) -> Any:
    """The user this provider identity logs in as, creating or linking as needed.

    1. An account already linked to ``(provider, subject)`` wins.
    2. Else a local user the identity names
       (:meth:`~chatauth.adapter.DefaultAdapter.find_oauth_user`: by
       identifier, or by the email the provider verified) is joined only if the
       adapter's policy says so
       (:meth:`~chatauth.adapter.DefaultAdapter.may_link_oauth`: by default,
       never); else the login is refused (``account_exists``).
    3. Else a new user is created
       (:meth:`~chatauth.adapter.DefaultAdapter.create_oauth_user`).

    An inactive user is refused before anything is linked.
    """
    adapter = get_adapter()
    fields = adapter.oauth_account_fields(identity)
    with transaction.atomic():
        account = (
            OAuthAccount.objects.select_for_update()
            .select_related("user")
            .filter(provider=provider.id, subject=identity.subject)
            .first()
        )
        if account is not None:
            return _linked_user(adapter, account, fields, chat_user)
        user = _local_user(adapter, provider, identity, chat_user, identifier_chosen)
        return _link(user, provider, identity, fields)


def _linked_user(
    adapter: DefaultAdapter,
    account: OAuthAccount,
    fields: dict[str, Any],
    chat_user: hooks.User,
) -> Any:
    """The user of an account linked already, the link and profile updated."""
    if not adapter.can_authenticate(account.user):
        raise Refusal("user_inactive", chat_user.identifier)
    for name, value in fields.items():
        setattr(account, name, value)
    account.save(update_fields=[*fields])
    adapter.save_profile(account.user, chat_user)
    return account.user


def _local_user(
    adapter: DefaultAdapter,
    provider: Provider,
    identity: Identity,
    chat_user: hooks.User,
    identifier_chosen: bool,
) -> Any:
    """The user a first login of this identity joins, or a new one."""
    try:
        existing = adapter.find_oauth_user(identity, chat_user)
    except HookError as e:  # an identifier no user can have, or ambiguous
        raise Refusal("invalid_user", chat_user.identifier) from e
    if existing is None:
        try:
            return adapter.create_oauth_user(identity, chat_user)
        except HookError as e:  # e.g. an identifier the user model can't hold
            raise Refusal("invalid_user", chat_user.identifier) from e
    if not adapter.may_link_oauth(
        existing,
        provider=provider.id,
        email=identity.email if identity.email_verified else None,
        identifier_chosen=identifier_chosen,
    ):
        raise Refusal("account_exists", chat_user.identifier)
    if not adapter.can_authenticate(existing):
        raise Refusal("user_inactive", chat_user.identifier)
    adapter.save_profile(existing, chat_user)
    return existing


def _link(
    user: Any, provider: Provider, identity: Identity, fields: dict[str, Any]
) -> Any:
    """Link the identity to ``user``; the user it is linked to."""
    try:
        with transaction.atomic():
            OAuthAccount.objects.create(
                user=user, provider=provider.id, subject=identity.subject, **fields
            )
    except IntegrityError:  # linked concurrently by a parallel callback
        account = OAuthAccount.objects.get(
            provider=provider.id, subject=identity.subject
        )
        return account.user
    return user
