"""Chat sessions: a live socket and its :class:`~chatauth.models.ChatSession` row.

The consumer (:class:`chatauth.consumers.ChatConsumer`) is one end of a chat
session; this package holds the rest:

* :mod:`chatauth.chatsessions.registry` -- each worker's :class:`Registry` of
  its live chat sessions (per event loop): the caps on them per user,
  credential and client address; **durable before announced** -- a socket's
  ``{"type": "session"}`` frame goes out only once its row is committed, by
  group commit; and the heartbeat that marks them alive and sweeps them;
* :mod:`chatauth.chatsessions.writer` -- the one thread that writes their rows
  (a batch per commit) and the lifecycle of its database connection;
* :mod:`chatauth.chatsessions.sweep` -- one batch of the heartbeat's re-check:
  each chat session whose credential the database no longer holds, or whose
  row is gone, is closed.

The row is the record of the chat session's opening and end (who, when, from
where, with which credential, the close code); the admin's *audit trail* shows
them among the audit log's events.

:func:`close_session` and :func:`tell` (here) end a chat session from anywhere
(an HTTP request, the admin, another worker): its socket closes on whichever
worker holds it.
"""

from __future__ import annotations

import logging

from django.utils import timezone

from chatauth.constants import CloseCode
from chatauth.models import ChatSession

logger = logging.getLogger("chatauth.sessions")


def close_session(
    session: ChatSession, *, reason: str = "revoked", code: int = CloseCode.REVOKED
) -> None:
    """Mark ``session`` closed and tell its socket, wherever it runs, to close."""
    ChatSession.objects.filter(pk=session.pk, closed_at__isnull=True).update(
        closed_at=timezone.now(), close_code=code
    )
    tell(session, reason=reason, code=code)


def tell(session: ChatSession, *, reason: str, code: int = CloseCode.REVOKED) -> None:
    """Tell the socket of ``session``, on whichever worker holds it, to close
    with ``code`` (nothing happens if it is gone already)."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None or not session.channel_name:
        return
    message = {"type": "chatauth.revoked", "reason": reason, "code": int(code)}
    try:
        async_to_sync(layer.send)(session.channel_name, message)
    except Exception:  # the worker may be gone; its sweep closes what is left
        logger.warning("could not reach a chat session", exc_info=True)
