"""Find (and fix) user identifiers that are not in chatauth's normal form."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from chatauth.identifiers import InvalidIdentifier, normalize


class Command(BaseCommand):
    help = (
        "List users whose identifier (USERNAME_FIELD) is not in chatauth's normal "
        "form (chatauth.identifiers), and those that would collide once "
        "normalised; with --apply, normalise every one that does not collide. "
        "Exits 1 while any is left."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--apply",
            action="store_true",
            help="rename the users whose normal form no other user has",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        field = User.USERNAME_FIELD
        max_length = getattr(User._meta.get_field(field), "max_length", None)
        by_normal: dict[str, list[tuple[Any, str]]] = defaultdict(list)
        invalid = []
        rows = User._default_manager.values_list("pk", field).order_by("pk")
        for pk, identifier in rows.iterator():
            try:
                by_normal[normalize(identifier, max_length)].append((pk, identifier))
            except InvalidIdentifier as e:
                invalid.append((pk, identifier, e.reason))
        renamed = left = 0
        for normal, users in sorted(by_normal.items()):
            if len(users) > 1:
                names = ", ".join(repr(name) for _, name in users)
                self.stdout.write(f"collide as {normal!r}: {names} (merge by hand)")
                left += len(users)
                continue
            [(pk, identifier)] = users
            if identifier == normal:
                continue
            if options["apply"]:
                with transaction.atomic():  # save(): the rename is an event too
                    user = User._default_manager.select_for_update().get(pk=pk)
                    setattr(user, field, normal)
                    user.save(update_fields=[field])
                renamed += 1
                self.stdout.write(f"renamed {identifier!r} to {normal!r}")
            else:
                left += 1
                self.stdout.write(f"not normal: {identifier!r} -> {normal!r}")
        for pk, identifier, reason in invalid:
            self.stdout.write(f"invalid: {identifier!r} (pk {pk}): {reason}")
            left += 1
        self.stdout.write(f"{renamed} renamed, {left} left.")
        if left:
            raise SystemExit(1)
