"""``make mutation``: mutation testing of the security core, scored per module.

Runs mutmut (configured under ``[tool.mutmut]`` in pyproject.toml) on the
modules below, each mutant against only the tests that call the function it
changed, then prints for each module its score -- mutants killed out of those
that can change behaviour -- and every survivor as a one-line diff.  Survivors
listed under ``[tool.chatauth.mutation] equivalent`` (mutants that cannot change
behaviour, each with its reason) are shown apart and not counted.

    python -m tools.mutation                  # every module (make mutation)
    python -m tools.mutation throttling flows  # some of them: faster
    python -m tools.mutation --report         # the last run's results again

Exits 1 when a module scores under ``fail_under`` (90).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Module -> (source file, the mutant names it covers; mutmut names a mutant
#: ``<module>.x_<function>__mutmut_<n>``, a method ``x<sep><Class><sep><name>...``).
MODULES: dict[str, tuple[str, str]] = {
    "throttling": ("chatauth/throttling.py", "chatauth.throttling.*"),
    "revocation": ("chatauth/revocation.py", "chatauth.revocation.*"),
    "tokens": ("chatauth/tokens.py", "chatauth.tokens.*"),
    "signed": ("chatauth/internal/signed.py", "chatauth.internal.signed.*"),
    "flows": ("chatauth/flows.py", "chatauth.flows.*"),
    "backends": ("chatauth/backends.py", "chatauth.backends.*"),
    # The sweep of live sessions: sessions.sweep() (its verdicts are
    # revocation.verdicts(), counted under revocation).
    "sweep": ("chatauth/sessions.py", "chatauth.sessions.x_sweep__mutmut_*"),
}
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


@dataclass
class Score:
    module: str
    killed: int = 0
    equivalent: list[tuple[str, str, str]] = field(default_factory=list)
    survivors: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def counted(self) -> int:
        return self.killed + len(self.survivors)

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.counted if self.counted else 100.0


def load_config() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["chatauth"]["mutation"]


def run_mutmut(modules: list[str], max_children: int) -> None:
    """A fresh run over ``modules`` (results of an earlier run are dropped)."""
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    mutmut = Path(sys.executable).with_name("mutmut")
    globs = [MODULES[m][1] for m in modules]
    command = [str(mutmut), "run", "--max-children", str(max_children), *globs]
    print("$", " ".join(command[1:]), flush=True)
    # mutmut redraws a progress line; its own output is kept in a log.
    (ROOT / "mutants").mkdir()
    log = ROOT / "mutants" / "run.log"
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=out, check=False)
    if done.returncode != 0:
        sys.exit(f"mutmut failed (exit {done.returncode}): see {log}")


def changed_line(name: str, path: str) -> str:
    """The line a mutant changes, as ``- old`` / ``+ new``."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(name, path=path).splitlines()
    minus = [x[1:].strip() for x in diff if x.startswith("-") and x[1:2] != "-"]
    plus = [x[1:].strip() for x in diff if x.startswith("+") and x[1:2] != "+"]
    return f"- {' / '.join(minus)}  + {' / '.join(plus)}"


def score(modules: list[str], equivalent: list[dict]) -> list[Score]:
    from mutmut.stats import status_by_exit_code

    os.chdir(ROOT)  # mutmut reads its files relative to the project
    allowed = {e["mutant"]: e for e in equivalent}
    scores = []
    for module in modules:
        path, glob = MODULES[module]
        meta = ROOT / "mutants" / (path + ".meta")
        if not meta.exists():
            sys.exit(f"no results for {module}: run `make mutation` first")
        results = json.loads(meta.read_text())["exit_code_by_key"]
        s = Score(module)
        for name, exit_code in sorted(results.items(), key=lambda kv: _order(kv[0])):
            if not fnmatch.fnmatchcase(name, glob):
                continue
            status = status_by_exit_code[exit_code]
            if status in KILLED:
                s.killed += 1
                continue
            line = changed_line(name, path)
            entry = allowed.get(name)
            if entry is not None and entry["change"].split() == line.split():
                s.equivalent.append((name, line, entry["reason"]))
            else:
                s.survivors.append((name, line, status))
        scores.append(s)
    return scores


def _order(name: str) -> tuple[str, int]:
    base, _, number = name.rpartition("_")
    return base, int(number) if number.isdigit() else 0


def report(scores: list[Score], fail_under: float) -> bool:
    print()
    for s in scores:
        for name, line, status in s.survivors:
            print(f"SURVIVED [{status}] {name}\n    {line}")
    for s in scores:
        for name, line, reason in s.equivalent:
            print(f"equivalent {name}\n    {line}\n    ({reason})")
    print(f"\n{'module':<12} {'score':>7} {'killed':>7} {'survived':>9} {'equiv.':>7}")
    ok = True
    for s in scores:
        passed = s.percent >= fail_under
        ok = ok and passed
        print(
            f"{s.module:<12} {s.percent:6.1f}% {s.killed:>7} {len(s.survivors):>9}"
            f" {len(s.equivalent):>7}{'' if passed else '  < ' + str(fail_under)}"
        )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=", ".join(MODULES))
    parser.add_argument("--report", action="store_true", help="no run: report")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    modules = args.modules or list(MODULES)
    unknown = set(modules) - set(MODULES)
    if unknown:
        parser.error(f"unknown module(s) {', '.join(sorted(unknown))}")
    config = load_config()
    started = time.monotonic()
    if not args.report:
        run_mutmut(modules, args.max_children)
    ok = report(score(modules, config["equivalent"]), config["fail_under"])
    if not args.report:
        print(f"\nmutation run: {time.monotonic() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
