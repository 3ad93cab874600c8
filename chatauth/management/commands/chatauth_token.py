"""Print a copilot access token for a user (created or updated)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatauth.adapter import get_adapter
from chatauth.exceptions import HookError
from chatauth.hooks import User
from chatauth.tokens import issue_copilot_token

MAX_TTL = 10 * 365 * 24 * 3600


class Command(BaseCommand):
    help = (
        "Print a copilot access token for IDENTIFIER (the user is created or "
        "updated), for scripts and host sites without Django sessions."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("identifier")
        parser.add_argument("--display-name", default=None)
        parser.add_argument(
            "--metadata", default=None, help="a JSON object stored on the profile"
        )
        parser.add_argument(
            "--ttl",
            type=int,
            default=None,
            help="lifetime in seconds (default: COPILOT_TOKEN_LIFETIME)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        metadata: dict[str, Any] = {}
        if options["metadata"] is not None:
            try:
                metadata = json.loads(options["metadata"])
            except ValueError as e:
                raise CommandError(
                    f"--metadata is not valid JSON: {e}", returncode=2
                ) from e
            if not isinstance(metadata, dict):
                raise CommandError("--metadata must be a JSON object.", returncode=2)
        ttl = options["ttl"]
        if ttl is not None and not 0 < ttl <= MAX_TTL:
            raise CommandError(
                f"--ttl must be between 1 and {MAX_TTL} seconds.", returncode=2
            )
        identifier = options["identifier"].strip()
        if not identifier:
            raise CommandError("IDENTIFIER must not be empty.", returncode=2)
        adapter = get_adapter()
        try:
            user = adapter.get_or_create_user(
                User(identifier, options["display_name"], metadata),
                update=options["display_name"] is not None or bool(metadata),
            )
        except HookError as e:
            raise CommandError(str(e), returncode=2) from e
        lifetime = timedelta(seconds=ttl) if ttl else None
        self.stdout.write(str(issue_copilot_token(user, lifetime)))
