"""A tiny Django site for the benchmarks: the demo project plus baseline routes.

``bench.site.settings`` is the demo's settings with throttling out of the way;
``bench.site.urls`` adds the no-auth twin of ``auth/me``; ``bench.site.asgi``
adds a bare Channels consumer, the baseline of the WebSocket benchmarks.
``bench.site.actor`` is another process on the same database (it mints and ends
credentials on request), ``bench.site.probe`` instruments the heartbeat.
"""
