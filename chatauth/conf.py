"""The one place chatauth reads its settings.

Everything lives in a single ``CHATAUTH`` dict in the Django settings.  Values are
read when used, never captured at import time, and :func:`reload` (connected to
``setting_changed``) clears the cached attributes *in place*, so
``from chatauth.conf import settings`` stays valid under ``override_settings``.

Usage::

    from chatauth.conf import settings
    settings.ACCESS_TOKEN_LIFETIME
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    # --- Signing ---------------------------------------------------------------
    # Falls back to $CHATAUTH_SECRET, then $CHAINLIT_AUTH_SECRET (see ``SECRET``).
    "SECRET": None,
    # Earlier secrets still accepted for verification (never for signing), so a
    # secret can be rotated without logging everybody out.  Empty by default.
    "PREVIOUS_SECRETS": [],
    # The HMAC algorithm tokens are signed with: HS256 (Chainlit's), HS384 or
    # HS512.  Tokens signed with any other algorithm are refused.
    "ALGORITHM": "HS256",
    # Clock skew allowed when checking a token's expiry.
    "LEEWAY": timedelta(seconds=10),
    # The ``iss`` claim put in every token, and required of every token; None:
    # no ``iss`` claim.
    "ISSUER": None,
    # The ``aud`` claim put in every token, and required of every token; None:
    # no ``aud`` claim.
    "AUDIENCE": None,
    # --- Lifetimes -------------------------------------------------------------
    # How long an access token (``auth/login``, ``auth/header``, a refresh) lives.
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=15),
    # How long a refresh token lives; each refresh rotates it.
    "REFRESH_TOKEN_LIFETIME": timedelta(days=7),
    # How long a copilot token (``auth/copilot/token``, the template tags,
    # ``chatauth_token``) lives; Chainlit's copilot example uses 15 days.
    "COPILOT_TOKEN_LIFETIME": timedelta(days=15),
    # --- Chainlit compatibility ---------------------------------------------------
    # Accept tokens minted the way Chainlit documents (PyJWT, HS256, claims
    # ``identifier``, ``metadata``, ``exp``, signed with the shared secret) as
    # copilot access tokens.  They are revocable like chatauth's own.
    "ACCEPT_CHAINLIT_TOKENS": True,
    # The longest a token minted the Chainlit way (no ``iat``) may live: one whose
    # ``exp`` lies further ahead is refused, and its issue time is taken to be
    # ``exp`` minus this.  So "log out everywhere" refuses every such token that
    # was accepted at that moment.  Set it to the lifetime your minter uses
    # (Chainlit's docs use 15 days): a token with a shorter lifetime minted
    # within (this - its lifetime) after a logout everywhere is refused too.
    # ``CHAINLIT_TOKEN_LIFETIME`` is the former name, still read.
    "CHAINLIT_TOKEN_MAX_LIFETIME": timedelta(days=15),
    # --- Hooks and extension points (import strings) ---------------------------
    "HOOKS": None,  # a module holding the @chatauth.* callbacks
    "AUTODISCOVER_HOOKS": True,  # import ``chat_hooks`` from installed apps
    # The class that decides how a login is checked and a user stored: a
    # subclass of ``chatauth.adapter.DefaultAdapter``.
    "ADAPTER": "chatauth.adapter.DefaultAdapter",
    # The chat handler, ``handler(content, send)``, sync or async: each
    # ``{"type": "message"}`` a client sends is handed to it.
    "ON_MESSAGE": "chatauth.handlers.echo",
    # Called as ``handler(thread_id, send)``, sync or async, when a page names
    # its conversation (Chainlit's copilot thread, on connect and when the page
    # starts a new one), in order with the messages; None: the thread id is
    # only kept in ``user_session["thread_id"]``.  Use it to resume a thread.
    "ON_THREAD": None,
    # --- Page functions (chatauth.CopilotFunction) --------------------------------
    # Seconds a handler waits for the page to answer a call (Chainlit's 300).
    "COPILOT_FUNCTION_TIMEOUT": 300,
    # Page calls one chat session may have waiting at once; one more raises
    # chatauth.functions.TooManyCalls in the handler.
    "MAX_PENDING_CALLS": 16,
    # --- Login throttling ------------------------------------------------------
    # Failed password checks allowed per username and per client address within
    # the window, on every door that calls ``authenticate()`` (through
    # ``chatauth.backends``) and on ``auth/login``.
    "LOGIN_FAILURE_LIMIT": 10,
    # The window LOGIN_FAILURE_LIMIT counts failures in.
    "LOGIN_FAILURE_WINDOW": timedelta(minutes=5),
    # --- Audit log -------------------------------------------------------------
    # Rows older than this are deleted by ``chatauth_prune``; None keeps them all.
    "AUDIT_RETENTION": timedelta(days=180),
    # Refusals of unknown clients (bad API keys, throttled logins, foreign
    # origins, ...) are counted and written as one row per kind and address at
    # most this often.
    "AUDIT_REFUSAL_INTERVAL": timedelta(seconds=60),
    # --- Cache / revocation ----------------------------------------------------
    # The Django cache (an alias of ``CACHES``) that holds the denylist, each
    # user's revocation state and the login throttle's counts.  Shared by every
    # worker in production (Redis).
    "CACHE_ALIAS": "default",
    # Prefix of every key chatauth writes to that cache.
    "CACHE_PREFIX": "chatauth",
    # How long a "this token is not revoked" answer may be served from the cache
    # before the database is asked again.  With a local-memory cache (which
    # other processes cannot write to) at most ``HEARTBEAT_INTERVAL``.
    "DENYLIST_CACHE_TTL": timedelta(minutes=5),
    # With Django's Redis cache: keep the revocation answers each check reads in
    # the worker's memory too, dropped the moment Redis reports a write to them
    # (client-side caching: ``CLIENT TRACKING``, Redis 6+), so a check needs no
    # round trip.  If the network fails, a copy outlives a revocation by at most
    # one second.  Off, or when Redis refuses tracking, every check reads Redis.
    "NEAR_CACHE": True,
    # How many tokens whose signature was checked are remembered in each process
    # (exact string, until it expires; revocation is still checked on every
    # use): a token presented again skips PyJWT.  0 turns it off.
    "VERIFIED_TOKEN_CACHE_SIZE": 4096,
    # --- HTTP ------------------------------------------------------------------
    # Name of the HttpOnly cookie that holds the access token after a login or
    # a refresh (a chat socket from a same-site page may present it).
    "AUTH_COOKIE": "chatauth_access",
    "AUTH_COOKIE_SECURE": None,  # whether that cookie is Secure; None: unless DEBUG
    # Its SameSite attribute: "Lax", "Strict" or "None".
    "AUTH_COOKIE_SAMESITE": "Lax",
    # Where a browser lands after an OAuth login (with ``?error=<code>`` after a
    # refused one): a path of this site or an absolute URL of the front end.
    "FRONTEND_URL": "/",
    # The largest ``metadata`` (serialised as JSON) an API-key client may set
    # through ``auth/copilot/token``; larger is a 400.
    "MAX_METADATA_BYTES": 16 * 1024,
    # The largest request body chatauth's routes read; larger is a 413.
    "MAX_BODY_BYTES": 64 * 1024,
    # --- WebSocket -------------------------------------------------------------
    # Origins (``scheme://host[:port]``, compared exactly) whose pages may open
    # chat sockets, besides this server's own origin (its host allowed by
    # ALLOWED_HOSTS).  A socket from any other origin is refused (HTTP 403).
    "ALLOWED_ORIGINS": [],
    # Seconds a socket opened without credentials has to send its first
    # ``{"type": "auth", "token": ...}`` frame; then it closes with 4408.
    "AUTH_TIMEOUT": 10,
    # The largest frame a client may send; a larger one closes the socket, 4413.
    "MAX_MESSAGE_BYTES": 64 * 1024,
    # (messages, seconds): at most 30 messages per 10 seconds, else 4429.
    "MESSAGE_RATE": (30, 10),
    # Malformed frames (each answered ``{"type": "error"}``) a socket may send
    # before it is closed with 4400.
    "MAX_PROTOCOL_ERRORS": 5,
    # Live chat sessions per worker process (each refused over it with 4429 and
    # the cap's name as the close reason): per user,
    "MAX_SOCKETS_PER_USER": 32,
    # per credential (one token, one Django session: a widget's tabs share one),
    "MAX_SOCKETS_PER_CREDENTIAL": 16,
    # per client address,
    "MAX_SOCKETS_PER_ADDRESS": 256,
    # and sockets of one client address still authenticating.
    "MAX_PENDING_SOCKETS_PER_ADDRESS": 16,
    # Accept a token in the socket URL's ``?token=`` query string.  Off: URLs
    # end up in logs and browser history (check chatauth.W003 warns when on).
    "ALLOW_QUERY_STRING_TOKEN": False,
    # Drop query strings from the paths the ASGI server logs (uvicorn's access
    # log and its WebSocket lines): a token or OAuth code sent in one must not
    # land in the logs, even though chatauth refuses it (chatauth.accesslog).
    "REDACT_QUERY_STRINGS": True,
    # Seconds between two heartbeats of a worker: its live chat sessions are
    # marked alive and re-checked against the database (the sweep), so a
    # revocation whose message was lost, or made by another process without a
    # shared channel layer, closes the socket within one heartbeat.
    "HEARTBEAT_INTERVAL": 30,
    # Live sessions re-checked per database round trip of the sweep.
    "SWEEP_BATCH_SIZE": 500,
    # --- Identities -------------------------------------------------------------
    # How identifiers that create or find users are compared (see
    # chatauth.identifiers): "fold" (case-insensitive; the default) or
    # "preserve" (Unicode-normalised only).
    "IDENTIFIER_CASE": "fold",
    # --- Header / OAuth login --------------------------------------------------
    # Addresses or networks of the reverse proxies allowed to assert who the
    # user is (``auth/header``) and the client's address (``X-Forwarded-For``).
    # Empty: header login is off.
    "TRUSTED_PROXIES": [],
    # OAuth / OpenID Connect providers: provider id -> its configuration
    # (``{}`` reads the client id and secret from OAUTH_<ID>_CLIENT_ID and
    # OAUTH_<ID>_CLIENT_SECRET, as Chainlit does).  See chatauth.oauth.providers.
    "OAUTH_PROVIDERS": {},
    # Whether a first OAuth login may join an existing local account whose
    # email (or identifier) the provider verified as the user's: off, as in
    # django-allauth (someone may have created that account with the victim's
    # address and a password of their own).  When on, the local account's
    # email must be verified too (``DefaultAdapter.email_verified``), and staff
    # and superusers are never joined unless OAUTH_LINK_STAFF is on as well.
    "OAUTH_LINK_BY_EMAIL": False,
    # Whether OAUTH_LINK_BY_EMAIL (or an ``oauth_callback`` returning their
    # identifier) may join a staff member's or superuser's account too.
    "OAUTH_LINK_STAFF": False,
    # Seconds any one call to an OAuth provider may take (connect, read, write,
    # pool): a hung provider becomes a clean refusal, not a stuck worker.
    "OAUTH_TIMEOUT": 10,
    # How long a started OAuth login (its state, PKCE verifier and nonce, kept in
    # the session) may take before the callback refuses it.
    "OAUTH_STATE_LIFETIME": timedelta(minutes=10),
    # OpenID Connect back-channel logout: a logout token issued (``iat``) longer
    # ago than this (plus LEEWAY) is refused, and each token's ``jti`` is
    # remembered that long, so none is accepted twice.
    "OAUTH_LOGOUT_TOKEN_MAX_AGE": timedelta(minutes=5),
    # The built-in header callback, chatauth.contrib.proxy_header_auth (enable it
    # with "HOOKS": "chatauth.contrib.proxy_header_auth").  "proxy": which reverse
    # proxy sets the identity headers ("oauth2-proxy", "authelia", "cloudflare");
    # "headers": per-field overrides of its header names (user, email, name,
    # groups); "identifier": "email" or "user" first; "groups": if not empty, a
    # user must be in one of them.  Only that one proxy's headers are read.
    "PROXY_HEADER_AUTH": {
        "proxy": "oauth2-proxy",
        "headers": {},
        "identifier": "email",
        "groups": [],
    },
}

IMPORT_STRINGS = ("ADAPTER", "ON_MESSAGE", "ON_THREAD")
#: Former names still read: new name -> old name.
RENAMED = {"CHAINLIT_TOKEN_MAX_LIFETIME": "CHAINLIT_TOKEN_LIFETIME"}
TIMEDELTAS = (
    "LEEWAY",
    "ACCESS_TOKEN_LIFETIME",
    "REFRESH_TOKEN_LIFETIME",
    "COPILOT_TOKEN_LIFETIME",
    "CHAINLIT_TOKEN_MAX_LIFETIME",
    "LOGIN_FAILURE_WINDOW",
    "DENYLIST_CACHE_TTL",
    "OAUTH_STATE_LIFETIME",
    "OAUTH_LOGOUT_TOKEN_MAX_AGE",
    "AUDIT_RETENTION",
    "AUDIT_REFUSAL_INTERVAL",
)


class ChatAuthSettings:
    """Attribute access to ``settings.CHATAUTH`` merged over :data:`DEFAULTS`."""

    def __init__(self, defaults: dict[str, Any] | None = None) -> None:
        self.defaults = defaults or DEFAULTS
        self._cached: set[str] = set()

    @property
    def user_settings(self) -> dict[str, Any]:
        return getattr(django_settings, "CHATAUTH", None) or {}

    def __getattr__(self, name: str) -> Any:
        if name not in self.defaults:
            raise AttributeError(f"Invalid chatauth setting: {name!r}")
        user_settings = self.user_settings
        if name not in user_settings and RENAMED.get(name) in user_settings:
            value = user_settings[RENAMED[name]]
        else:
            value = user_settings.get(name, self.defaults[name])
        if name == "SECRET" and not value:
            value = os.environ.get("CHATAUTH_SECRET") or os.environ.get(
                "CHAINLIT_AUTH_SECRET"
            )
        elif name in TIMEDELTAS and isinstance(value, int | float):
            value = timedelta(seconds=value)
        elif name in IMPORT_STRINGS and isinstance(value, str):
            value = _import(value, name)
        self._cached.add(name)
        setattr(self, name, value)
        return value

    def reload(self) -> None:
        """Forget every value read so far, and everything derived from them."""
        for name in self._cached:
            self.__dict__.pop(name, None)
        self._cached.clear()
        for forget in _on_reload:
            forget()


#: Called by :meth:`ChatAuthSettings.reload`: modules that keep state derived
#: from settings (a token backend, a cache client) register how to forget it,
#: so this module imports none of them.
_on_reload: list[Callable[[], None]] = []


def on_reload(forget: Callable[[], None]) -> Callable[[], None]:
    """Register ``forget`` to run whenever chatauth's settings change."""
    _on_reload.append(forget)
    return forget


def _import(path: str, setting: str) -> Any:
    try:
        return import_string(path)
    except ImportError as e:
        raise ImproperlyConfigured(
            f"Could not import {path!r} for CHATAUTH[{setting!r}]: {e}"
        ) from e


settings = ChatAuthSettings()


@receiver(setting_changed)
def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting in ("CHATAUTH", "CACHES"):
        settings.reload()
