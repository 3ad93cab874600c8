"""Live chat sessions: the rows behind ``auth/sessions`` and how to end them."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from chatauth.constants import CloseCode
from chatauth.models import ChatSession


def close_session(
    session: ChatSession, *, reason: str = "revoked", code: int = CloseCode.REVOKED
) -> None:
    """Mark ``session`` closed and tell its socket, wherever it runs, to close."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    ChatSession.objects.filter(pk=session.pk, closed_at__isnull=True).update(
        closed_at=timezone.now(), close_code=code
    )
    layer = get_channel_layer()
    if layer is not None and session.channel_name:
        message = {"type": "chatauth.revoked", "reason": reason, "code": int(code)}
        try:
            async_to_sync(layer.send)(session.channel_name, message)
        except Exception:  # the worker may be gone; the row is closed either way
            import logging

            logging.getLogger("chatauth.sessions").warning("could not reach a session")


def open_sessions(user: Any) -> list[ChatSession]:
    return list(ChatSession.objects.filter(user=user, closed_at__isnull=True))
