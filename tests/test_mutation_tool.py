"""``make mutation``'s driver (tools/mutation.py): its configuration holds
together.  The mutation run itself is too slow for the suite."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tools import mutation

ROOT = Path(__file__).resolve().parent.parent


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]


def test_every_module_scored_is_mutated_and_exists():
    mutated = set(pyproject()["mutmut"]["only_mutate"])
    for path, glob in mutation.MODULES.values():
        assert (ROOT / path).is_file()
        assert path in mutated
        assert glob.startswith(path.removesuffix(".py").replace("/", ".") + ".")
    assert mutated == {path for path, _ in mutation.MODULES.values()}


def test_the_tests_run_against_mutants_exist():
    per_module = mutation.load_config()["tests"]
    assert set(per_module) == set(mutation.MODULES)
    everything = set(pyproject()["mutmut"]["pytest_add_cli_args_test_selection"])
    for tests in per_module.values():
        assert set(tests) <= everything
    for path in everything:
        assert (ROOT / path).is_file(), path


def test_each_equivalent_mutant_says_why():
    config = mutation.load_config()
    assert config["fail_under"] >= 90
    for entry in config["equivalent"]:
        assert set(entry) == {"mutant", "change", "reason"}
        assert entry["change"].startswith("- ") and "  + " in entry["change"]
        assert len(entry["reason"]) > 20


def test_the_report_counts_equivalent_mutants_out(capsys):
    scores = [
        mutation.Score("tokens", killed=9, survivors=[("m1", "- a  + b", "survived")]),
        mutation.Score("flows", killed=10, equivalent=[("m2", "- a  + b", "why")]),
    ]
    assert mutation.report(scores, 90) is True
    out = capsys.readouterr().out
    assert "SURVIVED [survived] m1" in out and "equivalent m2" in out
    assert mutation.report(scores, 95) is False
    assert "tokens         90.0%" in capsys.readouterr().out
