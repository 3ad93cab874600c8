"""OpenID Connect RP-Initiated Logout 1.0, and the record of each login
through an OpenID provider that both logouts read.

Each such login is recorded (:func:`remember_login`, a
:class:`~chatauth.models.ProviderLogin` row) with the ID token's ``sid`` and
``sub``, for back-channel logout (:mod:`chatauth.oauth.backchannel`).  For a
provider configured with ``"rp_initiated_logout": True`` or a
``"post_logout_redirect_uri"``, the ID token of each login is kept there too
(encrypted: :func:`seal`, never logged) and ``POST auth/logout`` of such a
login answers, besides ending it, ``provider_logout_url``: the provider's
``end_session_endpoint`` with ``id_token_hint``, ``client_id`` and
``post_logout_redirect_uri``, for the front end to navigate to
(:func:`provider_logout_url`; it never asks the provider anything).
"""

from __future__ import annotations

import base64
import functools
import logging
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.contrib.auth import SESSION_KEY
from django.db import transaction
from django.http import HttpRequest

from chatauth import websessions
from chatauth.conf import settings
from chatauth.credentials import get_secret
from chatauth.models import ProviderLogin
from chatauth.oauth.identity import Identity
from chatauth.oauth.providers import Provider, get_provider
from chatauth.oauth.redirects import with_query

# The logger of the module this began in (logging configurations name it).
logger = logging.getLogger("chatauth.oidc_logout")

#: An ID token kept for ``id_token_hint``, at most.  The hint travels in a URL
#: (the ``end_session_endpoint``'s query), and browsers, proxies and providers
#: cut URLs at about 8 KiB: a longer ID token is not kept, and the logout URL
#: names the client (``client_id``) instead.
MAX_ID_TOKEN_LENGTH = 6 * 1024
#: The HKDF label of the key that encrypts kept ID tokens (never the key of
#: anything else derived from the same secret).  It names the module this
#: began in: changed, no ID token kept so far would decrypt.
_ID_TOKEN_PURPOSE = b"chatauth.oidc_logout.id_token_hint"


# --- Recording logins ---------------------------------------------------------------


def remember_login(
    request: HttpRequest, provider: Provider, identity: Identity, id_token: Any
) -> None:
    """Record the login ``request`` just made through ``provider`` (after
    ``login()``): its provider session and subject, for back-channel logout,
    and the ID token (encrypted) when RP-initiated logout needs it as a hint.
    The session holds the row's id (:data:`chatauth.websessions.SESSION_LOGIN`)."""
    session = request.session
    user_pk = session.get(SESSION_KEY)
    key = session.session_key
    if user_pk is None or not key or len(key) > websessions.MAX_SESSION_KEY:
        return  # no server-side session to name (signed cookies: check W012)
    user = request.user
    if not user.is_authenticated:  # (never: this runs after login())
        return
    keep = (
        provider.rp_initiated_logout
        and isinstance(id_token, str)
        and len(id_token) <= MAX_ID_TOKEN_LENGTH
    )
    with transaction.atomic():  # a failure leaves no half-done transaction
        row = ProviderLogin.objects.create(
            user_id=user.pk,
            provider=provider.id,
            subject=identity.subject,
            sid=identity.session_id or "",
            session_key=key,
            id_token=seal(id_token) if keep else "",
        )
    record: dict[str, Any] = {"id": row.pk, "key": key}
    if provider.rp_initiated_logout:
        endpoint = provider.app().server_metadata.get("end_session_endpoint")
        if _usable_endpoint(endpoint):
            record["end_session"] = endpoint
    session[websessions.SESSION_LOGIN] = record


def forget_ended(batch: int = 500) -> int:
    """Delete the records of provider logins whose Django session no longer
    exists, or is no longer their user's (``chatauth_prune``); how many.
    Whether it exists, not when it was due to expire: a session's expiry
    slides (``SESSION_SAVE_EVERY_REQUEST``, ``set_expiry()``)."""
    deleted = 0
    last = 0
    while True:
        rows = list(
            ProviderLogin.objects.filter(pk__gt=last)
            .order_by("pk")
            .values_list("pk", "session_key", "user_id")[:batch]
        )
        if not rows:
            return deleted
        last = rows[-1][0]
        sessions = websessions.load_many([key for _, key, _ in rows])
        gone = [
            pk
            for pk, key, user_pk in rows
            if not (data := sessions.get(key))
            or str(data.get(SESSION_KEY)) != str(user_pk)
        ]
        if gone:
            deleted += ProviderLogin.objects.filter(pk__in=gone).delete()[0]


# --- Keeping the ID token -----------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _fernet(secret: str) -> Fernet:
    """The key of kept ID tokens: HKDF-SHA256 of chatauth's signing secret,
    labelled for this use only."""
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=_ID_TOKEN_PURPOSE
    ).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal(id_token: str) -> str:
    """``id_token`` encrypted (Fernet: AES-128-CBC and HMAC-SHA256) with a key
    derived from the current secret."""
    return _fernet(get_secret()).encrypt(id_token.encode()).decode("ascii")


def unseal(stored: str) -> str | None:
    """The ID token :func:`seal` made, with the current secret or one of
    ``PREVIOUS_SECRETS``; None when none of them opens it (the secret was
    rotated out) or nothing was kept."""
    if not stored:
        return None
    secrets = [get_secret(), *settings.PREVIOUS_SECRETS]
    try:
        opened = MultiFernet([_fernet(s) for s in secrets]).decrypt(stored.encode())
        return opened.decode()
    except (InvalidToken, ValueError, UnicodeError):
        logger.info("a kept ID token could not be decrypted (secret rotated?)")
        return None


# --- RP-initiated logout ------------------------------------------------------------


def _usable_endpoint(endpoint: Any) -> bool:
    return isinstance(endpoint, str) and endpoint.startswith(("https:", "http:"))


def provider_logout_url(request: HttpRequest) -> str | None:
    """Where to send the browser to end, at the provider, the session whose
    login made ``request``'s Django session (RP-Initiated Logout 1.0 §2): the
    provider's ``end_session_endpoint`` with ``client_id``,
    ``post_logout_redirect_uri`` and the login's ID token as
    ``id_token_hint`` (when it was kept and can still be decrypted).  None
    unless that login came through a provider with RP-initiated logout on and
    the provider's endpoint is known without asking it: from its discovery
    document as this process last read it, else as it was at login.  Logging
    out never waits for the provider.

    Call it *before* the session ends (its record goes with it).
    """
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    if session is None or not key:
        return None
    record = session.get(websessions.SESSION_LOGIN)
    rows = ProviderLogin.objects.filter(session_key=key)
    if isinstance(record, dict) and isinstance(record.get("id"), int):
        rows = rows.filter(pk=record["id"])
    row = rows.order_by("-created_at").values_list("provider", "id_token").first()
    if row is None:
        return None
    provider = get_provider(row[0])
    if provider is None or not provider.rp_initiated_logout:
        return None
    endpoint = provider.app().server_metadata.get("end_session_endpoint")
    if not _usable_endpoint(endpoint) and isinstance(record, dict):
        endpoint = record.get("end_session")
    if not _usable_endpoint(endpoint):
        logger.warning("no end_session_endpoint known for %s", provider.id)
        return None
    redirect = provider.config.get("post_logout_redirect_uri") or str(
        settings.FRONTEND_URL
    )
    params = {"client_id": provider.config["client_id"]}
    hint = unseal(row[1])
    if hint is not None and len(hint) <= MAX_ID_TOKEN_LENGTH:
        params["id_token_hint"] = hint
    params["post_logout_redirect_uri"] = request.build_absolute_uri(redirect)
    return with_query(endpoint, **params)
