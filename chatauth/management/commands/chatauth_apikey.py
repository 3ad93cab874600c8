"""Create, list and revoke API keys."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError, transaction
from django.utils import timezone

from chatauth.models import APIKey


class Command(BaseCommand):
    help = "Manage API keys: create NAME (prints the key once), list, revoke NAME."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a key and print it once")
        create.add_argument("name")
        sub.add_parser("list", help="list keys (never the keys themselves)")
        revoke = sub.add_parser("revoke", help="revoke a key by name")
        revoke.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "create":
            name = options["name"].strip()
            if not name or len(name) > 100:
                raise CommandError("NAME must be 1 to 100 characters.", returncode=2)
            try:
                with transaction.atomic():  # a savepoint, also inside a transaction
                    _, raw = APIKey.objects.create_key(name)
            except IntegrityError as e:
                raise CommandError(
                    f"An API key named {name!r} exists.", returncode=2
                ) from e
            self.stdout.write(raw)
            self.stderr.write(
                "Store this key now: it is not stored and not shown again."
            )
        elif action == "list":
            for key in APIKey.objects.order_by("name"):
                state = "revoked" if key.revoked_at else "active"
                used = key.last_used_at.isoformat() if key.last_used_at else "never"
                self.stdout.write(
                    f"{key.name}\tca_{key.prefix}…\t{state}\tlast used {used}"
                )
        else:
            updated = APIKey.objects.filter(
                name=options["name"], revoked_at__isnull=True
            ).update(revoked_at=timezone.now())
            if not updated:
                raise CommandError(
                    f"No active API key named {options['name']!r}.", returncode=2
                )
            self.stdout.write(f"Revoked {options['name']}.")
