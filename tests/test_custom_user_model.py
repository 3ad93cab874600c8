"""A project whose user model has no ``is_active``: its users are active.

``AUTH_USER_MODEL`` cannot change within a test run, so the checks in
tests/customuser/ run in a pytest process of their own, with
tests/customuser/settings.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatauth import revocation

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_a_user_model_without_is_active(user):
    # Django's user model here, is_active read from its column...
    assert revocation.load_user_state(user.pk).active
    user.is_active = False
    user.save()
    assert not revocation.load_user_state(user.pk).active
    # ...and a model with no such column, in a process of its own.
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.customuser.settings"}
    env.pop("DATABASE_URL", None)  # its own SQLite file, whatever this run uses
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--ds=tests.customuser.settings",
            "tests/customuser/checks_custom_user.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout, done.stdout
