"""One normalisation of the identifiers that create or find users.

Every path that turns an outside identity into a user -- a password callback,
header login, OAuth, an API key's mint, a Chainlit-format token,
``chatauth_token`` -- goes through :func:`normalize` (in
:meth:`chatauth.adapter.DefaultAdapter.get_or_create_user`), so ``ｄｅｍｏ``
(fullwidth), ``DEMO`` and ``demo`` are one user, and ``demо`` (with a Cyrillic
``о``) is refused rather than becoming a look-alike of ``demo``:

1. Unicode NFKC (compatibility forms folded: fullwidth letters, ligatures,
   superscripts -- what Django's own ``AbstractBaseUser.normalize_username``
   does), then surrounding whitespace stripped;
2. with ``IDENTIFIER_CASE = "fold"`` (the default), case folded
   (``NFKC(casefold(...))``, Unicode's caseless matching); ``"preserve"``
   keeps the case;
3. refused: empty; control, format (zero-width) or unassigned characters;
   letters of more than one of the scripts that are confused with each other
   (Latin, Greek, Cyrillic, Armenian, Cherokee, Coptic); longer than the user
   model's ``USERNAME_FIELD`` holds.

Users that exist from before keep their identifiers: with case folding they are
found case-insensitively (one match, else the identity is refused as
ambiguous).  ``manage.py chatauth_identifiers`` lists the rows that are not in
normal form or collide once normalised, and ``--apply`` normalises those that
do not collide.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from chatauth.conf import settings
from chatauth.exceptions import HookError

#: Scripts whose letters are confused with each other ("а" and "a").
CONFUSABLE_SCRIPTS = frozenset(
    {"LATIN", "GREEK", "CYRILLIC", "ARMENIAN", "CHEROKEE", "COPTIC"}
)
#: Character categories an identifier never holds: control, format (zero-width
#: joiners, direction marks), surrogate, private use, unassigned.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


class InvalidIdentifier(HookError):
    """An identifier that cannot name a user (``reason`` says why)."""

    code = "invalid_identifier"

    def __init__(self, reason: str) -> None:
        super().__init__(f"Invalid identifier: {reason}.")
        self.reason = reason


def normalize(identifier: Any, max_length: int | None = None) -> str:
    """The normal form of ``identifier``; raises :class:`InvalidIdentifier`."""
    if not isinstance(identifier, str):
        raise InvalidIdentifier("not a string")
    value = unicodedata.normalize("NFKC", identifier).strip()
    if settings.IDENTIFIER_CASE == "fold":
        value = unicodedata.normalize("NFKC", value.casefold())
    if not value:
        raise InvalidIdentifier("empty")
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in value):
        raise InvalidIdentifier("control or invisible characters")
    if len(_confusable_scripts(value)) > 1:
        raise InvalidIdentifier("letters of scripts that look alike, mixed")
    if max_length is not None and len(value) > max_length:
        raise InvalidIdentifier("too long")
    return value


def is_normal(identifier: str) -> bool:
    try:
        return normalize(identifier) == identifier
    except InvalidIdentifier:
        return False


def _confusable_scripts(value: str) -> set[str]:
    scripts = set()
    for char in value:
        if unicodedata.category(char).startswith("L"):
            script = unicodedata.name(char, "").split(" ", 1)[0]
            if script in CONFUSABLE_SCRIPTS:
                scripts.add(script)
    return scripts
