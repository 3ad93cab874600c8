"""The table ``python -m bench`` prints, and the JSON file it writes."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.measure import Row

RESULTS_DIR = Path(__file__).resolve().parent / "results"
COLUMNS = ("benchmark", "measure", "value", "baseline", "ratio", "target", "result")


def fmt_number(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "—"
    magnitude = abs(value)
    if magnitude >= 1000:
        text = f"{value:,.0f}"
    elif magnitude >= 100:
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".rstrip()


def result_label(row: Row) -> str:
    if row.errors and math.isnan(row.value):
        return "ERROR"
    return {True: "pass", False: "FAIL", None: "—"}[row.passed]


def cells(row: Row) -> tuple[str, ...]:
    return (
        row.benchmark,
        row.measure,
        fmt_number(row.value, row.unit),
        fmt_number(row.baseline, row.unit),
        fmt_number(row.ratio),
        str(row.target) if row.target else "—",
        result_label(row),
    )


def table(rows: Sequence[Row], *, notes: bool = True) -> str:
    """A plain-text table, then each row's note (how it was measured)."""
    body = [cells(row) for row in rows]
    widths = [max(len(r[i]) for r in [COLUMNS, *body]) for i in range(len(COLUMNS))]
    numeric = {2, 3, 4}  # right-aligned columns

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if i in numeric else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    out = [line(COLUMNS), line(["-" * w for w in widths]), *map(line, body)]
    if notes and any(row.note for row in rows):
        out += ["", "notes:"]
        out += [f"  {r.benchmark} · {r.measure}: {r.note}" for r in rows if r.note]
    return "\n".join(out)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def _git(*args: str) -> str:
    try:
        result = subprocess.run(
            ["git", *args],
            cwd=RESULTS_DIR.parent.parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def write_json(
    rows: Sequence[Row],
    *,
    started: datetime,
    finished: datetime,
    quick: bool,
    directory: Path = RESULTS_DIR,
) -> Path:
    """Write the run to ``bench/results/<UTC start time>.json``; return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    document = {
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "quick": quick,
        "machine": machine(),
        "passed": all(row.passed is not False for row in rows),
        "rows": [_finite(row.as_dict()) for row in rows],
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path


def _finite(value: Any) -> Any:
    """NaN is not JSON: write null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
