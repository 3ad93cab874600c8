"""Forget the failed logins of a username or a client address."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatauth import throttling


class Command(BaseCommand):
    help = (
        "Lift the login throttle of a username or a client address (an IP "
        "address; 'unknown' also clears the bucket of requests without one)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("identifier_or_address")

    def handle(self, *args: Any, **options: Any) -> None:
        value = options["identifier_or_address"].strip()
        if not value or len(value) > 255:
            raise CommandError(
                "IDENTIFIER_OR_ADDRESS must be 1 to 255 characters.", returncode=2
            )
        from chatauth.internal.cache import is_process_memory

        if is_process_memory():
            self.stderr.write(
                "chatauth's cache is a local-memory cache: a server process keeps "
                "its own counts, which this command cannot reach."
            )
        kind = throttling.unlock(value)
        self.stdout.write(f"Unlocked {kind} {value}.")
