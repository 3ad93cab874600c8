"""Model helpers that work with any ``AUTH_USER_MODEL``."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def has_field(model: Any, name: str) -> bool:
    """Whether ``model`` has a concrete field ``name`` (a custom user model
    may have no ``is_active`` or no ``password``)."""
    return any(f.name == name for f in model._meta.concrete_fields)
