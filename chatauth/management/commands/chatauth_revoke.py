"""Log a user out everywhere: every token refused, every live session closed."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatauth import flows


class Command(BaseCommand):
    help = "Log the user IDENTIFIER out everywhere (tokens and live chat sessions)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("identifier")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        user = User._default_manager.filter(
            **{User.USERNAME_FIELD: options["identifier"]}
        ).first()
        if user is None:
            raise CommandError(f"No user {options['identifier']!r}.", returncode=2)
        flows.logout_everywhere(user, reason="command")
        self.stdout.write(f"Logged {options['identifier']} out everywhere.")
