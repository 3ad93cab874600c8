"""Bench-only debug route: what the soak benchmark asks a server about itself.

Mounted by ``bench.site.urls`` only (never in the demo or the library).  An
async view, so it runs on the server's event loop and sees its tasks.
"""

from __future__ import annotations

import asyncio
import gc

from django.http import HttpRequest, JsonResponse


async def runtime(request: HttpRequest) -> JsonResponse:
    """``{"tasks", "live_sessions", "consumers"}`` of this process's event loop.

    ``?objects=1`` also counts the chat consumers still in memory (a full
    ``gc`` walk: only for the end of a soak run).
    """
    from chatauth.consumers import ChatConsumer, registry

    body = {
        "tasks": len(asyncio.all_tasks()),
        "live_sessions": len(registry().sessions),
    }
    if request.GET.get("objects"):
        gc.collect()
        body["consumers"] = sum(
            1 for obj in gc.get_objects() if isinstance(obj, ChatConsumer)
        )
    return JsonResponse(body)
