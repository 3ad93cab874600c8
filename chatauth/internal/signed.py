"""A bounded in-process memory of token signatures already checked.

Clients present the same token again and again: an API client on every request,
the chat widget on every reconnect.  Checking an HS256 signature with PyJWT
(base64, JSON, key preparation, HMAC, claim checks) is most of what a token
check costs on a hot path, so a token whose signature and claims passed once is
remembered, *as the exact string presented*, until its ``exp`` (+ leeway):

* only a string that passed :func:`chatauth.tokens.decode` in full is stored,
  and a hit is an exact match of the whole token, signature included;
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

import json
import threading
import time
from collections import OrderedDict
from typing import Any

_lock = threading.Lock()
_entries: OrderedDict[str, tuple[float, str]] = OrderedDict()


def get(raw: str, leeway: float) -> dict[str, Any] | None:
    """The claims of ``raw`` if its signature was checked and it has not expired."""
    with _lock:
        entry = _entries.get(raw)
        if entry is None:
            return None
        if entry[0] + leeway <= time.time():
            del _entries[raw]
            return None
        _entries.move_to_end(raw)
    return json.loads(entry[1])


def put(raw: str, claims: dict[str, Any], size: int) -> None:
    """Remember that ``raw`` passed the full check with these ``claims``."""
    expires_at = claims.get("exp")
    if size <= 0 or isinstance(expires_at, bool):
        return
    if not isinstance(expires_at, int | float):
        return
    try:
        payload = json.dumps(claims, separators=(",", ":"))
    except (TypeError, ValueError):
        return  # claims JSON cannot hold again (e.g. NaN): not remembered
    with _lock:
        _entries[raw] = (float(expires_at), payload)
        _entries.move_to_end(raw)
        while len(_entries) > size:
            _entries.popitem(last=False)


def clear() -> None:
    with _lock:
        _entries.clear()


def size() -> int:
    """How many tokens are remembered now."""
    return len(_entries)
