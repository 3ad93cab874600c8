"""The demo's pages: a host page that embeds the copilot widget, and the same chat
embedded the way Chainlit's copilot documentation does it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from chatauth.signals import token_issued
from chatauth.tokens import get_secret, session_key_id


def home(request: HttpRequest) -> HttpResponse:
    """The host page: ``{% copilot_widget %}`` for the signed-in user."""
    return render(request, "home.html")


def create_jwt(identifier: str, metadata: dict, request: HttpRequest) -> str:
    """A token minted as Chainlit's copilot docs show (PyJWT, HS256,
    ``identifier``/``metadata``/``exp``, signed with ``CHAINLIT_AUTH_SECRET``,
    which is chatauth's secret), plus what makes it revocable: a ``jti``, and
    the Django session it is minted for (``sid``: signing out ends it; it never
    outlives the session).  Chainlit ignores the extra claims."""
    session = request.session
    if not session.session_key:
        session.save()
    now = datetime.now(UTC)
    expires = min(
        now + timedelta(minutes=60 * 24 * 15),  # 15 days
        session.get_expiry_date(),
    )
    to_encode = {
        "identifier": identifier,
        "metadata": metadata,
        "exp": expires,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "sid": session_key_id(session.session_key),
    }
    token = jwt.encode(to_encode, get_secret(), algorithm="HS256")
    token_issued.send(
        sender=create_jwt,
        user=request.user,
        token_type="chainlit",
        jti=to_encode["jti"],
        method="session",
        request=request,
    )
    return token


@never_cache  # the page holds a token
def chainlit_embed(request: HttpRequest) -> HttpResponse:
    """``mountChainlitWidget({chainlitServer, accessToken})`` with a PyJWT token for
    the signed-in user (anonymous visitors get a link to log in)."""
    embed = None
    if request.user.is_authenticated:
        metadata = {"source": "pyjwt", "role": "demo"}
        embed = {
            "config": {
                "chainlitServer": request.build_absolute_uri("/"),
                "accessToken": create_jwt(
                    request.user.get_username(), metadata, request
                ),
            },
            "claims_json": json.dumps(
                {"identifier": request.user.get_username(), "metadata": metadata},
                indent=2,
            ),
        }
    return render(request, "chainlit_embed.html", {"embed": embed})
