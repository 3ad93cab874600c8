"""Bench-only instruments on the heartbeat, for the ``lifecycle`` benchmark.

Installed by ``bench.site.asgi`` when ``BENCH_SWEEP_PROBE=1`` (never in the
demo or the library); read and switched through ``POST bench/debug/sweep``
(:func:`view`).  It wraps two names of :mod:`chatauth.chatsessions` without
changing what they do:

* ``Registry._heartbeat``: counts the heartbeats and the process CPU time
  (``time.process_time()``: every thread) and wall time each takes; switched
  off, it returns at once, so the loop keeps its rhythm but nothing is swept
  (the baseline of the sweep's cost);
* ``_writing`` (what runs each job of the session writer's thread), for the
  ``sweep`` jobs only: counts the SQL statements Django's cursors execute in it
  (``connection.execute_wrapper``), the sessions swept and the thread's CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt


@dataclass
class Stats:
    enabled: bool = True
    beats: int = 0  # heartbeats that ran
    skipped: int = 0  # heartbeats skipped while switched off
    beat_wall: float = 0.0  # seconds, summed over the heartbeats
    beat_cpu: float = 0.0  # process CPU seconds (all threads) during them
    sweeps: int = 0  # sweep() batches
    swept: int = 0  # sessions handed to sweep()
    queries: int = 0  # SQL statements executed by the sweeps
    writer_cpu: float = 0.0  # the writer thread's CPU seconds in the sweeps
    live: int = 0  # live sessions at the last heartbeat

    def reset(self) -> None:
        """Zero the counters (the switch stays as it is)."""
        for name, value in asdict(Stats()).items():
            if name != "enabled":
                setattr(self, name, value)


STATS = Stats()
_waiting: list[tuple[int, asyncio.Future[None]]] = []
_installed = False


def install() -> None:
    """Wrap the heartbeat and the writer's jobs (once per process)."""
    global _installed
    if _installed:
        return
    from django.db import connections

    from chatauth.chatsessions import registry, writer
    from chatauth.chatsessions.sweep import sweep

    heartbeat = registry.Registry._heartbeat
    writing = writer._writing

    async def probed_heartbeat(self: Any) -> None:
        if not STATS.enabled:
            STATS.skipped += 1
            return
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            await heartbeat(self)
        finally:
            STATS.beats += 1
            STATS.beat_wall += time.perf_counter() - wall
            STATS.beat_cpu += time.process_time() - cpu
            STATS.live = len(self.sessions)
            _wake()

    def probed_writing(fn: Any, args: tuple[Any, ...]) -> Any:
        if fn is not sweep:
            return writing(fn, args)
        count = 0

        def counted(execute: Any, sql: str, params: Any, many: bool, ctx: Any) -> Any:
            nonlocal count
            count += 1
            return execute(sql, params, many, ctx)

        cpu = time.thread_time()
        try:
            with contextlib.ExitStack() as stack:
                for connection in connections.all():
                    stack.enter_context(connection.execute_wrapper(counted))
                return writing(fn, args)
        finally:
            STATS.sweeps += 1
            STATS.swept += len(args[0])
            STATS.queries += count
            STATS.writer_cpu += time.thread_time() - cpu

    registry.Registry._heartbeat = probed_heartbeat  # type: ignore[method-assign]
    writer._writing = probed_writing
    _installed = True


def _wake() -> None:
    for entry in list(_waiting):
        beats, future = entry
        if STATS.beats >= beats:
            _waiting.remove(entry)
            if not future.done():
                future.set_result(None)


@csrf_exempt
async def view(request: HttpRequest) -> JsonResponse:
    """``POST bench/debug/sweep[?on=0|1][&reset=1][&wait=N]``: switch the
    heartbeat off or on, zero the counters, wait for ``N`` more heartbeats
    (at most ``timeout`` seconds, default 120); then the counters."""
    if not _installed:
        return JsonResponse({"installed": False}, status=404)
    if request.method != "POST":
        return JsonResponse({"detail": "POST"}, status=405)
    if "on" in request.GET:
        STATS.enabled = request.GET["on"] == "1"
    if request.GET.get("reset"):
        STATS.reset()
    wait = int(request.GET.get("wait", 0))
    if wait > 0:
        future = asyncio.get_running_loop().create_future()
        _waiting.append((STATS.beats + wait, future))
        try:
            async with asyncio.timeout(float(request.GET.get("timeout", 120))):
                await future
        except TimeoutError:
            return JsonResponse({"detail": "no heartbeat", **asdict(STATS)}, status=504)
        finally:
            _waiting[:] = [e for e in _waiting if e[1] is not future]
    return JsonResponse({"installed": True, **asdict(STATS)})
