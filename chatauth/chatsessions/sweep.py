"""The sweep: one batch of the heartbeat's re-check of live chat sessions.

Every ``HEARTBEAT_INTERVAL`` each worker's
:class:`~chatauth.chatsessions.registry.Registry` hands its live chat sessions,
in batches of ``SWEEP_BATCH_SIZE``, to :func:`sweep` on the writer's thread: a
lost channel-layer message, a bulk ``QuerySet.update()`` or a revocation by a
process with no shared layer costs at most one beat.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from django.utils import timezone

from chatauth import revocation, websessions
from chatauth.constants import CloseCode
from chatauth.identities import WebSessionAuth
from chatauth.models import ChatSession

if TYPE_CHECKING:
    from chatauth.consumers import ChatConsumer


def sweep(consumers: list[ChatConsumer]) -> list[int | None]:
    """One batch of the heartbeat: mark the sessions alive, and return for each
    the close code it must get (None while it holds), as the database says.

    A handful of queries for the whole batch: the open rows, their
    ``last_seen_at``, the denylist, the users' states, and (for sockets opened
    with a web session's cookie) those web sessions and their users.
    """
    ids = [c.session_id for c in consumers]
    open_ids = set(
        ChatSession.objects.filter(pk__in=ids, closed_at__isnull=True).values_list(
            "pk", flat=True
        )
    )
    ChatSession.objects.filter(pk__in=list(open_ids)).update(
        last_seen_at=timezone.now()
    )
    credentials = [c.auth.token for c in consumers]
    codes = revocation.verdicts(credentials)
    now = time.time()
    for i, verified in enumerate(credentials):
        if codes[i] is None and verified.expires_at <= now:
            codes[i] = CloseCode.UNAUTHORIZED  # expired: as its timer would say
    web = [i for i, c in enumerate(consumers) if isinstance(c.auth, WebSessionAuth)]
    valid = websessions.still_valid([credentials[i] for i in web])
    for i, holds in zip(web, valid, strict=True):
        if not holds and codes[i] is None:
            codes[i] = CloseCode.REVOKED
    for i, session_id in enumerate(ids):
        # Closed (auth/sessions, the admin) or deleted elsewhere: a message
        # that should have closed it was lost.
        if session_id not in open_ids and codes[i] is None:
            codes[i] = CloseCode.REVOKED
    return codes
