"""Why an OAuth login stops: :class:`Refusal` and its codes, and the exceptions
that mean the provider failed.

``GET auth/oauth/<id>/callback`` is a browser navigation coming back from the
provider, so every refusal is a ``302`` to ``FRONTEND_URL`` with
``?error=<code>`` (and an ``oauth_refused`` audit row with the same reason); it
is never a 500.  Codes: ``invalid_state`` (missing, unknown, expired, replayed,
or issued for another provider), ``access_denied`` (the user or provider
declined), ``provider_error`` (the provider answered with an error or garbage),
``provider_unavailable`` (timeout or connection error), ``invalid_issuer``
(RFC 9207 ``iss`` mismatch), ``invalid_id_token`` (missing, badly signed, wrong
issuer/audience/nonce, expired), ``callback_refused`` / ``callback_failed``
(the ``oauth_callback`` returned None / raised), ``account_exists`` (a local
account has this identifier or email and the adapter does not let the
identity join it), ``invalid_user`` (the user model cannot hold the
identifier), ``invalid_claims`` (a claim too long for its column, or holding
control characters or a NUL), ``user_inactive``, ``server_error`` (the login
could not be recorded for the provider's logout: it is undone).
An unknown provider id is a ``404`` JSON answer on both routes.
"""

from __future__ import annotations

import httpx
from authlib.integrations.base_client import OAuthError
from joserfc.errors import JoseError

try:  # authlib's httpx client runs on httpx2 when it is installed, else on httpx
    import httpx2
except ImportError:  # pragma: no cover - the usual case
    httpx2 = httpx

#: The provider could not be reached or did not answer in time.
UNAVAILABLE = (httpx.TransportError, httpx2.TransportError, TimeoutError)
#: The provider answered, but not with what the protocol says.
PROVIDER_ERRORS = (httpx.HTTPError, httpx2.HTTPError, OAuthError, JoseError)


class Refusal(Exception):
    """A login that must not go on; ``reason`` is the error code shown and audited."""

    def __init__(self, reason: str, identifier: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.identifier = identifier
