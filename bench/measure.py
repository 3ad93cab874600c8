"""What a benchmark reports (:class:`Row`, :class:`Target`) and how it measures.

Two drivers:

* :func:`compare_calls` times plain functions in this process (bounded in count);
* :func:`compare_load` drives async calls (HTTP requests, WebSocket sessions) at a
  fixed concurrency against a server (bounded in time and count, each call
  under a timeout).

Both take several *variants* — the measured thing and its baseline — and run them
in interleaved rounds (A B, B A, A B, ...), after a warm-up, so that drift on a
shared machine (another process waking up, CPU frequency) hits both alike.  A
variant's throughput is the median of its rounds; its latencies are pooled over
all rounds for p50 and p99; :func:`paired_ratio` compares two variants round
pair by round pair.  :class:`CpuMeter` says how busy the machine was otherwise.
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# --- What a benchmark reports ------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A pass/fail bound on the ratio to the baseline (or on the value itself)."""

    op: str  # ">=" or "<="
    bound: float
    on: str = "ratio"  # "ratio" or "value"
    unit: str = ""

    def met(self, x: float) -> bool:
        return x >= self.bound if self.op == ">=" else x <= self.bound

    def __str__(self) -> str:
        sign = "≥" if self.op == ">=" else "≤"
        subject = "ratio " if self.on == "ratio" else ""
        unit = f" {self.unit}" if self.unit else ""
        return f"{subject}{sign} {self.bound:g}{unit}"


def at_least(bound: float, *, on: str = "ratio", unit: str = "") -> Target:
    return Target(">=", bound, on, unit)


def at_most(bound: float, *, on: str = "ratio", unit: str = "") -> Target:
    """``at_most(50, on="value", unit="ms")`` for a bound without a baseline."""
    return Target("<=", bound, on, unit)


@dataclass
class Row:
    """One line of the table: a measure, its baseline from the same run, a target."""

    measure: str
    value: float
    unit: str
    baseline: float | None = None
    target: Target | None = None
    note: str = ""
    errors: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    #: When set, the ratio (e.g. the median of paired rounds, see
    #: :func:`paired_ratio`) rather than ``value / baseline``.
    paired: float | None = None
    benchmark: str = ""  # set by the runner: the module that produced the row

    @property
    def ratio(self) -> float | None:
        if self.paired is not None:
            return self.paired
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def passed(self) -> bool | None:
        """None when there is nothing to pass; False on any error."""
        if self.errors:
            return False
        if self.target is None:
            return None
        subject = self.ratio if self.target.on == "ratio" else self.value
        return subject is not None and self.target.met(subject)

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "measure": self.measure,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "target": str(self.target) if self.target else None,
            "passed": self.passed,
            "errors": self.errors,
            "note": self.note,
            "stats": self.stats,
        }


# --- Statistics ----------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Round:
    count: int
    errors: int
    elapsed: float  # seconds
    latencies: list[float]  # seconds, one per successful call
    throughput: float | None = None  # calls/s, when known better than count/elapsed
    failures: Counter[str] = field(default_factory=Counter)  # why calls failed

    @property
    def rate(self) -> float:
        if self.throughput is not None:
            return self.throughput
        return self.count / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class Series:
    """The rounds of one variant."""

    rounds: list[Round] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Median throughput over the rounds (calls per second)."""
        return statistics.median(r.rate for r in self.rounds)

    @property
    def latencies(self) -> list[float]:
        return [x for r in self.rounds for x in r.latencies]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)

    @property
    def count(self) -> int:
        return sum(r.count for r in self.rounds)

    @property
    def failures(self) -> Counter[str]:
        return sum((r.failures for r in self.rounds), Counter())

    def summary(self) -> dict[str, Any]:
        """Machine-readable figures for the JSON file."""
        return {
            "rate_median": self.rate,
            "rates": [round(r.rate, 3) for r in self.rounds],
            "p50_ms": self.p50 * 1e3,
            "p99_ms": self.p99 * 1e3,
            "calls": self.count,
            "errors": self.errors,
            "failures": dict(self.failures),
        }

    def describe(self, name: str) -> str:
        """``name: p50 1.23 ms, p99 4.56 ms, 5 rounds, 12,345 calls``"""
        text = (
            f"{name}: p50 {fmt_seconds(self.p50)}, p99 {fmt_seconds(self.p99)}, "
            f"{len(self.rounds)} rounds, {self.count:,} calls"
        )
        if self.errors:
            why = ", ".join(f"{n}× {reason}" for reason, n in self.failures.items())
            text += f", {self.errors} errors ({why})"
        return text


def paired_ratio(measured: Series, baseline: Series) -> float:
    """Median over round pairs of ``measured`` rate / ``baseline`` rate.

    Rounds of the two variants run back to back, so each pair shares the
    machine's conditions of that moment; on a shared machine this is steadier
    than the ratio of the two medians.
    """
    pairs = zip(measured.rounds, baseline.rounds, strict=True)
    return statistics.median(a.rate / b.rate for a, b in pairs if b.rate > 0)


def fmt_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _order(names: list[str], index: int) -> list[str]:
    # A B, B A, A B, ...: neither variant always runs first.
    return names if index % 2 == 0 else names[::-1]


# --- In-process driver --------------------------------------------------------


def time_calls(
    fn: Callable[[], Any], calls: int, before: Callable[[], Any] | None = None
) -> Round:
    """Call ``fn`` ``calls`` times; time each call and the whole round.

    ``before`` runs ahead of each call, outside its latency (e.g. to drop a cache
    entry); it does count in the round's wall time.
    """
    latencies: list[float] = []
    clock = time.perf_counter
    started = clock()
    for _ in range(calls):
        if before is not None:
            before()
        t0 = clock()
        fn()
        latencies.append(clock() - t0)
    return Round(calls, 0, clock() - started, latencies)


def compare_calls(
    variants: Mapping[str, Callable[[], Any]],
    *,
    calls: int,
    rounds: int,
    warmup: int,
    before: Callable[[], Any] | None = None,
    prepare: Mapping[str, Callable[[], Any]] | None = None,
) -> dict[str, Series]:
    """Interleaved rounds of ``calls`` calls of each variant, after a warm-up.

    ``prepare[name]``, if given, runs (untimed) before each round of that variant,
    e.g. to point the database connection at that variant's file.
    """
    names = list(variants)
    prepare = prepare or {}

    def one_round(name: str, count: int) -> Round:
        if name in prepare:
            prepare[name]()
        return time_calls(variants[name], count, before)

    for name in names:
        one_round(name, warmup)
    results = {name: Series() for name in names}
    for index in range(rounds):
        for name in _order(names, index):
            results[name].rounds.append(one_round(name, calls))
    return results


# --- Load driver ---------------------------------------------------------------

#: One unit of work against a server; returns True when the answer was right
#: (or raises :class:`CallFailed` saying what was wrong).
Call = Callable[[], Awaitable[bool]]


class CallFailed(Exception):
    """A call got a wrong answer; the message (e.g. ``HTTP 503``) is tallied."""


#: A round stops early after this many failed calls (a dead server fails fast).
MAX_ERRORS = 50
#: A call that takes longer than this counts as failed (a hung server cannot hang
#: the benchmark).
CALL_TIMEOUT = 30.0


async def closed_loop(
    call: Call, *, concurrency: int, duration: float, max_calls: int
) -> Round:
    """``concurrency`` workers each issue ``call`` back to back until ``duration``
    has passed or ``max_calls`` were started; in-flight calls are let finish.

    The round's rate is the sum of each worker's calls over its own busy time:
    with slow calls (a 250 ms login) the last call of one worker must not count
    as idle time of the others, which ``count / elapsed`` would.
    """
    clock = time.perf_counter
    latencies: list[float] = []
    errors = 0
    failures: Counter[str] = Counter()
    started_calls = 0
    started = clock()
    deadline = started + duration
    worker_rates: list[float] = []

    async def worker() -> None:
        nonlocal errors, started_calls
        done, last = 0, started
        while started_calls < max_calls and clock() < deadline and errors < MAX_ERRORS:
            started_calls += 1
            t0 = clock()
            reason = "wrong answer"
            try:
                async with asyncio.timeout(CALL_TIMEOUT):
                    ok = await call()
            except CallFailed as e:
                ok, reason = False, str(e)
            except Exception as e:  # refused, reset, timed out: all are errors
                ok, reason = False, type(e).__name__
            last = clock()
            if ok:
                latencies.append(last - t0)
                done += 1
            else:
                errors += 1
                failures[reason] += 1
        if last > started:
            worker_rates.append(done / (last - started))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Round(
        len(latencies),
        errors,
        clock() - started,
        latencies,
        sum(worker_rates),
        failures,
    )


async def compare_load(
    variants: Mapping[str, Call],
    *,
    concurrency: int | Mapping[str, int],
    duration: float,
    rounds: int,
    warmup: float,
    max_calls: int = 1_000_000,
) -> dict[str, Series]:
    """Interleaved closed-loop rounds of each variant, after a warm-up of each.

    ``concurrency`` is one number for all variants or one per variant name.
    """
    names = list(variants)

    def workers(name: str) -> int:
        return concurrency if isinstance(concurrency, int) else concurrency[name]

    async def one_round(name: str, seconds: float) -> Round:
        return await closed_loop(
            variants[name],
            concurrency=workers(name),
            duration=seconds,
            max_calls=max_calls,
        )

    for name in names:
        await one_round(name, warmup)
    results = {name: Series() for name in names}
    for index in range(rounds):
        for name in _order(names, index):
            results[name].rounds.append(await one_round(name, duration))
    return results


# --- What else the machine was doing -------------------------------------------


def _proc_cpu(pid: int | str) -> float:
    """CPU seconds of a process and its threads (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) process ``pid`` and its
    children have used so far; 0 once it is gone.  Linux only (``/proc``)."""
    return _proc_cpu(pid) + sum(_proc_cpu(c) for c in _children(pid))


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (everything but idle/iowait)."""
    # user nice system idle iowait irq softirq steal (guest time is inside user).
    first = Path("/proc/stat").read_text().split("\n", 1)[0]
    values = [int(v) for v in first.split()[1:9]]
    return (sum(values) - values[3] - values[4]) / _TICKS


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class CpuMeter:
    """How many cores were busy during a measurement: ours (this process, the
    given server processes and their children) and everybody else's.

    Benchmarks share their machine; a figure taken while other work held a core
    says so in its note.  Linux only (``/proc``); elsewhere it reports nothing.
    """

    def __init__(self, pids: Sequence[int] = ()) -> None:
        self.pids = list(pids)
        self.ours = self.busy = self.wall = 0.0

    def _ours(self) -> float:
        pids = {os.getpid(), *self.pids}
        pids |= {c for p in list(pids) for c in _children(p)}
        return sum(_proc_cpu(p) for p in pids)

    def __enter__(self) -> CpuMeter:
        try:
            self._start = (time.perf_counter(), _machine_busy(), self._ours())
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._start is None:
            return
        wall, busy, ours = self._start
        self.wall = time.perf_counter() - wall
        self.busy = (_machine_busy() - busy) / self.wall
        self.ours = (self._ours() - ours) / self.wall

    @property
    def others(self) -> float:
        """Cores busy with work that is not the benchmark's (on average)."""
        return max(0.0, self.busy - self.ours)

    def summary(self) -> dict[str, float]:
        return {"cores_ours": self.ours, "cores_others": self.others}

    def describe(self) -> str:
        if not self.wall:
            return ""
        return (
            f"CPU: bench {self.ours:.2f} cores, other processes "
            f"{self.others:.2f} of {os.cpu_count()} cores"
        )
