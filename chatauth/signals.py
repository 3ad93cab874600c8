"""Signals chatauth sends, besides Django's ``user_logged_in``, ``user_login_failed``
and ``user_logged_out`` (sent from every login path, with ``request=None`` on a
WebSocket, as Channels does).

``token_issued(sender, user, token_type, jti, method, request)``
    A token was minted: ``token_type`` is ``"access"``, ``"refresh"`` or
    ``"copilot"``; ``jti`` its id (never the token).
``token_refreshed(sender, user, old_jti, new_jti, request)``
    A refresh token was used and rotated out.
``refresh_token_reused(sender, user_pk, jti, identifier, request)``
    A refresh token that had been rotated out was presented again: its whole
    family (the login) was revoked (RFC 9700 §4.14.2).
``token_revoked(sender, key, kind, reason, user_pk, identifier)``
    A credential was put on the denylist: a token (``kind`` its type, ``key`` its
    ``jti``), or one that tokens descend from (``kind`` ``"family"``,
    ``"session"``, ``"api_key"`` or ``"identifier"``).  Never the token itself.
``user_tokens_revoked(sender, user, reason)``
    Every token of ``user`` issued so far was revoked (logout everywhere,
    password change, deactivation; ``reason`` says which).
``api_key_used(sender, api_key, request, success)``
    An API key was presented; ``api_key`` is None when none matched.
``auth_refused(sender, event, identifier, method, reason, request, scope, actor)``
    A request was turned away before any login: untrusted proxy, foreign
    WebSocket origin, refused OAuth callback, refused back-channel logout.
    ``event`` is an ``AuditEvent.Event``; ``actor`` (optional) who the request
    claims to come from (``provider:<id>``).
``chat_session_opened(sender, session, scope)``
    A live chat session started.
``chat_session_closed(sender, session, code)``
    A live chat session ended.
``chat_session_deleted(sender, session)``
    The row of a live chat session was deleted (admin, ORM); its socket closes.
"""

from django.dispatch import Signal

token_issued = Signal()
token_refreshed = Signal()
refresh_token_reused = Signal()
token_revoked = Signal()
user_tokens_revoked = Signal()
api_key_used = Signal()
auth_refused = Signal()
chat_session_opened = Signal()
chat_session_closed = Signal()
chat_session_deleted = Signal()
