"""Delete expired denylist rows, ended chat-session rows and old audit rows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from chatauth import audit
from chatauth.conf import settings
from chatauth.constants import CloseCode
from chatauth.models import AuditEvent, ChatSession, RevokedToken
from chatauth.oauth.rp_logout import forget_ended


class Command(BaseCommand):
    help = (
        "Delete denylist rows of tokens that have expired (and records of "
        "provider logins whose session is gone), mark sessions whose "
        "worker stopped reporting as closed, delete closed session rows, and "
        "audit rows older than CHATAUTH['AUDIT_RETENTION']."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--keep-days",
            type=int,
            default=0,
            help="keep closed session rows this many days (default 0)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["keep_days"] < 0:
            raise CommandError("--keep-days must be 0 or more.", returncode=2)
        now = timezone.now()
        tokens, _ = RevokedToken.objects.filter(expires_at__lt=now).delete()
        # Records of provider logins whose Django session is gone (whether it
        # exists, not when it was due: a session's expiry slides).
        logins = forget_ended()
        # A live session reports at least every HEARTBEAT_INTERVAL; three missed
        # beats mean its worker is gone (killed, crashed) and nobody will close it.
        stale_before = now - timedelta(seconds=3 * settings.HEARTBEAT_INTERVAL)
        stale = ChatSession.objects.filter(
            closed_at__isnull=True, last_seen_at__lt=stale_before
        ).update(closed_at=now, close_code=CloseCode.NORMAL)
        cutoff = now - timedelta(days=options["keep_days"])
        sessions, _ = ChatSession.objects.filter(closed_at__lt=cutoff).delete()
        audit.refusals.flush()  # what this process counted, before it goes
        audited = 0
        if settings.AUDIT_RETENTION is not None:
            old = now - settings.AUDIT_RETENTION
            audited, _ = AuditEvent.objects.filter(created_at__lt=old).delete()
        self.stdout.write(
            f"Deleted {tokens} expired denylist row(s), {logins} provider login "
            f"record(s) of ended sessions, closed {stale} stale "
            f"session(s), deleted {sessions} closed session row(s) and {audited} "
            "audit row(s) past their retention."
        )
