"""Chainlit-compatible callbacks: ``@chatauth.password_auth_callback`` and friends.

Each decorator registers one function (sync or async) and returns it unchanged.
The module holding them is named in ``CHATAUTH["HOOKS"]``; otherwise a
``chat_hooks`` module in every installed app is imported when the app registry is
ready (see :func:`load_hooks`).  A function whose signature cannot take the
arguments Chainlit passes is refused at registration with
:class:`~django.core.exceptions.ImproperlyConfigured`, so a typo fails at start-up,
not at the first login.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class User:
    """A user as a callback returns it (Chainlit's ``cl.User``).

    ``identifier`` becomes the user model's ``USERNAME_FIELD``; ``display_name`` and
    ``metadata`` are stored on the user's profile.
    """

    identifier: str
    display_name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "display_name": self.display_name,
            "metadata": self.metadata,
        }


# name -> (arguments it is called with, keyword arguments that may be missing)
SIGNATURES: dict[str, tuple[tuple[str, ...], int]] = {
    "password_auth_callback": (("username", "password"), 0),
    "header_auth_callback": (("headers",), 0),
    "oauth_callback": (
        ("provider_id", "token", "raw_user_data", "default_user", "id_token"),
        1,  # Chainlit calls older callbacks without ``id_token``
    ),
    "on_logout": (("request", "response"), 0),
}

_registry: dict[str, list[Callable[..., Any]]] = {name: [] for name in SIGNATURES}


def _check_signature(kind: str, func: Callable[..., Any]) -> None:
    names, optional_tail = SIGNATURES[kind]
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError) as e:
        raise ImproperlyConfigured(f"@chatauth.{kind}: {func!r} is not callable") from e
    for count in (len(names), len(names) - optional_tail):
        try:
            sig.bind(*range(count))
        except TypeError:
            continue
        return
    expected = ", ".join(names)
    raise ImproperlyConfigured(
        f"@chatauth.{kind} {func.__module__}.{func.__qualname__}{sig} "
        f"must accept ({expected})"
    )


def _register(kind: str) -> Callable[[F], F]:
    def decorator(func: F) -> F:
        _check_signature(kind, func)
        hooks = _registry[kind]
        # Re-importing a hooks module (autoreload, tests) must not double-register.
        key = (func.__module__, func.__qualname__)
        hooks[:] = [h for h in hooks if (h.__module__, h.__qualname__) != key]
        hooks.append(func)
        return func

    decorator.__name__ = kind
    decorator.__doc__ = f"Register a ``{kind}`` (sync or async)."
    return decorator


password_auth_callback = _register("password_auth_callback")
header_auth_callback = _register("header_auth_callback")
oauth_callback = _register("oauth_callback")
on_logout = _register("on_logout")


def get_hook(kind: str) -> Callable[..., Any] | None:
    """The callback of ``kind`` that applies (the last registered), or None."""
    hooks = _registry[kind]
    return hooks[-1] if hooks else None


def get_hooks(kind: str) -> list[Callable[..., Any]]:
    """Every callback of ``kind`` (``on_logout`` runs them all)."""
    return list(_registry[kind])


def clear() -> None:
    """Forget every registered hook (for tests)."""
    for hooks in _registry.values():
        hooks.clear()


def load_hooks() -> None:
    """Import the hooks module named in settings, or autodiscover ``chat_hooks``."""
    from chatauth.conf import settings

    if settings.HOOKS:
        try:
            __import__(settings.HOOKS)
        except ImportError as e:
            raise ImproperlyConfigured(
                f"Could not import CHATAUTH['HOOKS'] = {settings.HOOKS!r}: {e}"
            ) from e
    elif settings.AUTODISCOVER_HOOKS and apps.apps_ready:
        autodiscover_modules("chat_hooks")
