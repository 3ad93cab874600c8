"""Create, list and revoke API keys."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError, transaction

from chatauth.models import APIKey


class Command(BaseCommand):
    help = "Manage API keys: create NAME (prints the key once), list, revoke NAME."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a key and print it once")
        create.add_argument("name")
        create.add_argument(
            "--identifiers",
            default="*",
            help="shell pattern of the identifiers it may mint for (default '*')",
        )
        create.add_argument(
            "--group", default=None, help="mint only for members of this group"
        )
        create.add_argument(
            "--staff",
            action="store_true",
            help="may mint for staff members and superusers",
        )
        create.add_argument(
            "--profiles",
            action="store_true",
            help="may set existing users' display names and metadata",
        )
        sub.add_parser("list", help="list keys (never the keys themselves)")
        revoke = sub.add_parser("revoke", help="revoke a key by name")
        revoke.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "create":
            name = options["name"].strip()
            if not name or len(name) > 100:
                raise CommandError("NAME must be 1 to 100 characters.", returncode=2)
            scope = self._scope(options)
            try:
                with transaction.atomic():  # a savepoint, also inside a transaction
                    _, raw = APIKey.objects.create_key(name, **scope)
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
                reach = key.identifiers
                if key.group is not None:
                    reach += f" in group {key.group.name}"
                reach += " +staff" * key.may_mint_for_staff
                reach += " +profiles" * key.may_update_profiles
                self.stdout.write(
                    f"{key.name}\tca_{key.prefix}…\t{state}\tfor {reach}"
                    f"\tlast used {used}"
                )
        else:
            keys = APIKey.objects.get_queryset()  # APIKeyQuerySet, with revoke()
            updated = keys.filter(name=options["name"]).revoke()
            if not updated:
                raise CommandError(
                    f"No active API key named {options['name']!r}.", returncode=2
                )
            self.stdout.write(f"Revoked {options['name']}.")

    @staticmethod
    def _scope(options: dict[str, Any]) -> dict[str, Any]:
        from django.contrib.auth.models import Group

        pattern = (options["identifiers"] or "").strip()
        if not pattern or len(pattern) > 255:
            raise CommandError(
                "--identifiers must be 1 to 255 characters.", returncode=2
            )
        group = None
        if options["group"] is not None:
            group = Group.objects.filter(name=options["group"]).first()
            if group is None:
                raise CommandError(f"No group {options['group']!r}.", returncode=2)
        return {
            "identifiers": pattern,
            "group": group,
            "may_mint_for_staff": options["staff"],
            "may_update_profiles": options["profiles"],
        }
