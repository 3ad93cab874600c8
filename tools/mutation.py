"""``make mutation``: mutation testing of the security core, scored per module.

Runs mutmut (configured under ``[tool.mutmut]`` in pyproject.toml) on the
modules below, one at a time: each module against the test files that exercise
it (``[tool.chatauth.mutation.tests]``), and within those each mutant against
only the tests that call the function it changed.  Then prints for each module
its score -- mutants killed out of those that can change behaviour -- and every
survivor as a one-line diff.  Survivors
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
    "denylist": ("chatauth/denylist.py", "chatauth.denylist.*"),
    "tokens": ("chatauth/tokens.py", "chatauth.tokens.*"),
    "credentials": ("chatauth/credentials.py", "chatauth.credentials.*"),
    "signed": ("chatauth/internal/signed.py", "chatauth.internal.signed.*"),
    "flows": ("chatauth/flows.py", "chatauth.flows.*"),
    "backends": ("chatauth/backends.py", "chatauth.backends.*"),
    # The sweep of live chat sessions: chatsessions.sweep.sweep() (its verdicts
    # are revocation.verdicts(), counted under revocation).
    "sweep": (
        "chatauth/chatsessions/sweep.py",
        "chatauth.chatsessions.sweep.x_sweep__mutmut_*",
    ),
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


RESULTS = ROOT / "mutants.results"


def run_mutmut(module: str, max_children: int) -> None:
    """A fresh mutmut run over ``module``, against its own tests; its results
    (each mutant's status and changed line) are kept in ``mutants.results/``."""
    started = time.monotonic()
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    (ROOT / "mutants").mkdir()
    log = ROOT / "mutants" / "run.log"  # mutmut's own output (a progress line)
    command = [sys.executable, "-m", "tools.mutation", "--mutmut", module]
    command += ["--max-children", str(max_children)]
    print(f"{module}: mutmut against {' '.join(tests_of(module))}", flush=True)
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=out, check=False)
    if done.returncode != 0:
        sys.exit(f"mutmut failed (exit {done.returncode}): see {log}")
    RESULTS.mkdir(exist_ok=True)
    results = collect(module)
    (RESULTS / f"{module}.json").write_text(json.dumps(results, indent=1))
    print(f"{module}: {len(results)} mutants in {time.monotonic() - started:.0f} s")


def tests_of(module: str) -> list[str]:
    return load_config()["tests"][module]


def mutmut_main(module: str, max_children: int) -> None:
    """mutmut's own ``run``, on ``module`` and its tests only (mutmut reads one
    configuration from pyproject.toml; these two settings are per module)."""
    from mutmut import configuration

    config = configuration.config()
    config.only_mutate = [MODULES[module][0]]
    config.pytest_add_cli_args_test_selection = tests_of(module)
    from mutmut.__main__ import cli

    cli(["run", "--max-children", str(max_children), MODULES[module][1]])


def collect(module: str) -> dict[str, tuple[str, str]]:
    """Each mutant of ``module``'s last run: its status and the line it changed."""
    from mutmut.stats import status_by_exit_code

    path, glob = MODULES[module]
    meta = json.loads((ROOT / "mutants" / (path + ".meta")).read_text())
    results = {}
    for name, exit_code in meta["exit_code_by_key"].items():
        if fnmatch.fnmatchcase(name, glob):
            status = status_by_exit_code[exit_code]
            line = "" if status in KILLED else changed_line(name, path)
            results[name] = (status, line)
    return results


def changed_line(name: str, path: str) -> str:
    """The line a mutant changes, as ``- old`` / ``+ new``."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(name, path=path).splitlines()
    minus = [x[1:].strip() for x in diff if x.startswith("-") and x[1:2] != "-"]
    plus = [x[1:].strip() for x in diff if x.startswith("+") and x[1:2] != "+"]
    return f"- {' / '.join(minus)}  + {' / '.join(plus)}"


def score(modules: list[str], equivalent: list[dict]) -> list[Score]:
    allowed = {e["mutant"]: e for e in equivalent}
    scores = []
    for module in modules:
        saved = RESULTS / f"{module}.json"
        if not saved.exists():
            sys.exit(f"no results for {module}: run `make mutation` first")
        results = json.loads(saved.read_text())
        s = Score(module)
        for name, (status, line) in sorted(results.items(), key=lambda r: _order(r[0])):
            if status in KILLED:
                s.killed += 1
                continue
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
    parser.add_argument("--mutmut", help=argparse.SUPPRESS)  # one module's run
    args = parser.parse_args(argv)
    if args.mutmut:
        mutmut_main(args.mutmut, args.max_children)
        return 0
    modules = args.modules or list(MODULES)
    unknown = set(modules) - set(MODULES)
    if unknown:
        parser.error(f"unknown module(s) {', '.join(sorted(unknown))}")
    config = load_config()
    started = time.monotonic()
    if not args.report:
        for module in modules:
            run_mutmut(module, args.max_children)
    ok = report(score(modules, config["equivalent"]), config["fail_under"])
    if not args.report:
        print(f"\nmutation run: {time.monotonic() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
