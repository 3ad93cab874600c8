"""The demo's pages: a host page that embeds the copilot widget, and the same chat
embedded the way Chainlit's copilot documentation does it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import jwt
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from chatauth.tokens import get_secret


def home(request: HttpRequest) -> HttpResponse:
    """The host page: ``{% copilot_widget %}`` for the signed-in user."""
    return render(request, "home.html")


def create_jwt(identifier: str, metadata: dict) -> str:
    """A token minted exactly as Chainlit's copilot docs show (PyJWT, HS256,
    ``identifier``/``metadata``/``exp``, signed with ``CHAINLIT_AUTH_SECRET``,
    which is chatauth's secret)."""
    to_encode = {
        "identifier": identifier,
        "metadata": metadata,
        "exp": datetime.now(UTC) + timedelta(minutes=60 * 24 * 15),  # 15 days
    }
    return jwt.encode(to_encode, get_secret(), algorithm="HS256")


def chainlit_embed(request: HttpRequest) -> HttpResponse:
    """``mountChainlitWidget({chainlitServer, accessToken})`` with a PyJWT token for
    the signed-in user (anonymous visitors get a link to log in)."""
    embed = None
    if request.user.is_authenticated:
        metadata = {"source": "pyjwt", "role": "demo"}
        embed = {
            "config": {
                "chainlitServer": request.build_absolute_uri("/"),
                "accessToken": create_jwt(request.user.get_username(), metadata),
            },
            "claims_json": json.dumps(
                {"identifier": request.user.get_username(), "metadata": metadata},
                indent=2,
            ),
        }
    return render(request, "chainlit_embed.html", {"embed": embed})
