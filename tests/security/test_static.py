"""``manage.py check --deploy`` on the production settings (the demo's, DEBUG off).

The Makefile's ``test`` target runs the other static checks (ruff, bandit, mypy,
pip-audit) before pytest; this one needs the settings, so it is a test.
"""

from __future__ import annotations

import re

import pytest

from tests.servers import run_manage, server_env

pytestmark = pytest.mark.timeout(60)


def check_deploy(**env: str) -> tuple[int, set[str], str]:
    environment = server_env(DATABASE_URL="sqlite:///:memory:", **env)
    environment = {k: v for k, v in environment.items() if v is not None}
    result = run_manage(environment, "check", "--deploy")
    output = result.stdout + result.stderr
    return (
        result.returncode,
        set(re.findall(r"\((chatauth\.[EW]\d+)\)", output)),
        output,
    )


def test_production_settings_have_no_chatauth_errors():
    code, found, output = check_deploy()
    assert code == 0, output
    assert not {c for c in found if c.startswith("chatauth.E")}, output
    # Without REDIS_URL: local-memory cache and in-memory layer, said clearly.
    assert found == {"chatauth.W005", "chatauth.W006"}, output


def test_with_redis_the_scale_out_warnings_disappear():
    # The check reads the settings only; nothing connects to this URL.
    code, found, output = check_deploy(REDIS_URL="redis://127.0.0.1:6379/0")
    assert code == 0, output
    assert found == set(), output


def test_without_a_secret_the_check_fails():
    environment = {"CHATAUTH_SECRET": ""}
    code, found, output = check_deploy(**environment)
    assert code != 0, output
    assert "chatauth.E001" in found, output
