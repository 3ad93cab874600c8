"""Calling user callbacks that may be sync or async."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async


async def acall(func: Callable[..., Any], *args: Any) -> Any:
    """Await ``func(*args)``; a sync ``func`` runs in a worker thread.

    ``thread_sensitive=False``: a sync password callback that hashes (bcrypt
    releases the GIL) then runs on every core instead of queueing behind every
    other sync view on Django's one shared thread.
    """
    if inspect.iscoroutinefunction(func):
        return await func(*args)
    result = await sync_to_async(func, thread_sensitive=False)(*args)
    if inspect.isawaitable(result):
        return await result
    return result


def call(func: Callable[..., Any], *args: Any) -> Any:
    """Call ``func(*args)`` from sync code, running it to completion if it is async."""
    if inspect.iscoroutinefunction(func):
        return async_to_sync(func)(*args)
    result = func(*args)
    if inspect.isawaitable(result):

        async def wait() -> Any:
            return await result

        return async_to_sync(wait)()
    return result
