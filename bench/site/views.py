"""Baseline views: chatauth's views with authentication taken out."""

from __future__ import annotations

from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from bench.site.constants import CONSTANT_USER
from chatauth.views import MeView


class MeNoAuthView(MeView):
    """``auth/me`` without the token check: the same view class, parsers,
    renderer and response, so the difference in req/s is the authentication."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    async def get(self, request: Request) -> Response:
        return Response(dict(CONSTANT_USER))
