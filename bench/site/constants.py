"""What the baselines answer (no Django imports: the ASGI module loads this early)."""

from __future__ import annotations

from typing import Any

#: Shaped like ``VerifiedToken.user_dict()`` of the first bench user.
CONSTANT_USER: dict[str, Any] = {
    "identifier": "bench-0",
    "display_name": "bench-0",
    "metadata": {},
}

#: The bare consumer's path (``bench.site.asgi``): the WebSocket baselines.
BARE_WS_PATH = "/bench/ws/bare"
