"""A bounded in-process memory of token signatures already checked.

Clients present the same token again and again: an API client on every request,
the chat widget on every reconnect.  Checking an HS256 signature with PyJWT
(base64, JSON, key preparation, HMAC, claim checks) is most of what a token
check costs on a hot path, so a token whose signature and claims passed once is
remembered, *as the exact string presented*, until its ``exp`` (+ leeway):

* only a string that passed :func:`chatauth.tokens.decode` in full is stored,
  and a hit is an exact match of the whole token, signature included (by its
  SHA-256: the bearer tokens themselves are not kept in memory);
* a hit past ``exp`` + ``LEEWAY`` is dropped and the full check runs (and
  refuses it as expired);
* the claims are stored as JSON and parsed per hit: every caller gets its own
  dict, no state is shared between requests;
* revocation is not remembered here: every use is still checked against the
  denylist (:mod:`chatauth.revocation`);
* changing any chatauth setting (secret, previous secrets, algorithm, leeway,
  issuer, audience) forgets everything (``settings.reload()``).

``CHATAUTH["VERIFIED_TOKEN_CACHE_SIZE"]`` bounds it (least recently used out
first); 0 turns it off.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from typing import Any

from chatauth.conf import on_reload

_lock = threading.Lock()
_entries: OrderedDict[bytes, tuple[int, str]] = OrderedDict()
_generation = 0


def generation() -> int:
    """Changes at every :func:`clear`; pass it to :func:`put` so a check made
    under settings that changed meanwhile is not remembered."""
    return _generation


def get(raw: str, leeway: float) -> dict[str, Any] | None:
    """The claims of ``raw`` if its signature was checked and it has not expired."""
    key = _key(raw)
    with _lock:
        entry = _entries.get(key)
        if entry is None:
            return None
        # As PyJWT decides: expired once ``now`` reaches ``int(exp)`` + leeway.
        if entry[0] + leeway <= time.time():
            del _entries[key]
            return None
        _entries.move_to_end(key)
    claims: dict[str, Any] = json.loads(entry[1])
    return claims


def put(raw: str, claims: dict[str, Any], size: Any, checked_in: int) -> None:
    """Remember that ``raw`` passed the full check with these ``claims``.

    ``checked_in``: :func:`generation` when the check began.  A size that is not a
    whole number > 0 remembers nothing (check E005 reports it).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        return
    expires_at = claims.get("exp")
    if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
        return
    try:
        payload = json.dumps(claims, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, OverflowError):
        return  # not plain JSON (e.g. NaN): simply not remembered
    key = _key(raw)
    with _lock:
        if checked_in != _generation:
            return
        _entries[key] = (int(expires_at), payload)
        _entries.move_to_end(key)
        while len(_entries) > size:
            _entries.popitem(last=False)


def _key(raw: str) -> bytes:
    return hashlib.sha256(raw.encode()).digest()


@on_reload
def clear() -> None:
    global _generation
    with _lock:
        _entries.clear()
        _generation += 1


def size() -> int:
    """How many tokens are remembered now."""
    return len(_entries)
