"""chatauth's benchmark suite: every headline figure as a ratio to a baseline
measured in the same run.  Run it with ``python -m bench`` (or ``make bench``).

Adding a benchmark: write ``bench/<name>.py`` with a module docstring (its first
line is the title) and ``run(quick: bool) -> list[bench.measure.Row]``, then add
``<name>`` to :data:`BENCHMARKS`.  The pieces to build it from:

* :mod:`bench.servers` — ``workspace().server(name, app=..., workers=...,
  **env)`` starts uvicorn on a fresh copy of a migrated database (pass
  ``REDIS_URL`` for the Redis cache and channel layer); ``setup_django()`` for
  in-process work; ``login(server)`` for a real token pair.
* :mod:`bench.measure` — ``compare_load`` (async calls at a fixed concurrency)
  and ``compare_calls`` (in-process), interleaved rounds with warm-up, median
  rate, p50/p99; ``Row`` and ``Target``.
* :mod:`bench.http` — a lean keep-alive load client; WebSocket benchmarks use
  ``websockets`` as their ``Call`` (connect, first message, close).
* ``bench.site.asgi`` — the demo app plus ``/bench/ws/bare``, a bare Channels
  consumer: the baseline of the WebSocket measures.
"""

#: Run in this order by ``python -m bench``.
BENCHMARKS: tuple[str, ...] = (
    "verify",
    "http_me",
    "forward_auth",
    "login",
    "ws_connect",
    "ws_logout",
    "ws_memory",
    "lifecycle",
    "abuse",
)
#: Run only when asked for (``--soak``, or ``--only soak``): ten minutes long.
ON_REQUEST: tuple[str, ...] = ("soak",)
