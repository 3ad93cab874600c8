"""Model helpers that work with any ``AUTH_USER_MODEL``."""

from __future__ import annotations

import functools

from django.db.models import Model


@functools.cache
def has_field(model: type[Model], name: str) -> bool:
    """Whether ``model`` has a concrete field ``name`` (a custom user model
    may have no ``is_active`` or no ``password``)."""
    return any(f.name == name for f in model._meta.concrete_fields)
