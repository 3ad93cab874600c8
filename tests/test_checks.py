"""System checks, in process and as ``manage.py check --deploy`` (demo settings)."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from django.test import override_settings

from chatauth import checks
from tests.servers import run_manage, server_env

LONG_SECRET = "a-long-enough-secret-" + "z" * 40


def ids(messages) -> set[str]:
    return {m.id for m in messages}


# --- In process -----------------------------------------------------------------------


def test_secret_missing_outside_debug_is_an_error(monkeypatch):
    monkeypatch.delenv("CHATAUTH_SECRET", raising=False)
    monkeypatch.delenv("CHAINLIT_AUTH_SECRET", raising=False)
    with override_settings(DEBUG=False, CHATAUTH={"SECRET": None}):
        [error] = checks.check_secret()
        assert error.id == "chatauth.E001" and error.is_serious()
    with override_settings(DEBUG=True, CHATAUTH={"SECRET": None}):
        # In DEBUG too: without it the first login would be a 500.
        [error] = checks.check_secret()
        assert error.id == "chatauth.E001" and "secrets.token_urlsafe" in error.hint


def test_chainlit_secret_is_enough(monkeypatch):
    monkeypatch.delenv("CHATAUTH_SECRET", raising=False)
    monkeypatch.setenv("CHAINLIT_AUTH_SECRET", LONG_SECRET)
    with override_settings(DEBUG=False, CHATAUTH={"SECRET": None}):
        assert checks.check_secret() == []


def test_short_secret_warns():
    with override_settings(CHATAUTH={"SECRET": "short"}):
        [warning] = checks.check_secret()
    assert warning.id == "chatauth.W001" and not warning.is_serious()
    with override_settings(CHATAUTH={"SECRET": LONG_SECRET}):
        assert checks.check_secret() == []


def test_unsupported_algorithm_is_an_error():
    with override_settings(CHATAUTH={"SECRET": LONG_SECRET, "ALGORITHM": "RS256"}):
        assert "chatauth.E002" in ids(checks.check_secret())


def test_settings_checks():
    with override_settings(
        CHATAUTH={
            "SECRET": LONG_SECRET,
            "ACCESS_LIFETIME": 5,  # a typo
            "ADAPTER": "no.such.Adapter",
            "ALLOW_QUERY_STRING_TOKEN": True,
            "TRUSTED_PROXIES": ["10.0.0.0/8", "not-an-ip"],
        },
        PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"],
    ):
        found = checks.check_settings()
    assert ids(found) == {
        "chatauth.W002",
        "chatauth.E003",
        "chatauth.W003",
        "chatauth.E004",
        "chatauth.W004",
    }
    assert any("ACCESS_LIFETIME" in m.msg for m in found)
    assert any("not-an-ip" in m.msg for m in found)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"AUDIENCE": "chat"}, {"chatauth.W021"}),
        ({"ISSUER": "https://auth.example.com"}, {"chatauth.W022"}),
        ({"AUDIENCE": "chat", "ISSUER": "x"}, {"chatauth.W021", "chatauth.W022"}),
        ({"AUDIENCE": "chat", "ACCEPT_CHAINLIT_TOKENS": False}, set()),
        ({"ISSUER": "x", "ACCEPT_CHAINLIT_TOKENS": False}, set()),
    ],
)
def test_settings_that_break_chainlit_interop_warn(options, expected):
    with override_settings(CHATAUTH={"SECRET": LONG_SECRET, **options}):
        found = checks.check_settings()
    assert ids(found) == expected
    assert all(m.is_serious() is False for m in found)  # warnings, not errors


def test_test_settings_are_clean():
    assert ids(checks.check_settings()) == set()
    assert ids(checks.check_secret()) == set()


def test_deploy_warnings_for_local_cache_and_layer():
    assert ids(checks.check_deploy()) == {"chatauth.W005", "chatauth.W006"}
    with override_settings(CHATAUTH={"AUTH_COOKIE_SECURE": False}):
        assert "chatauth.W007" in ids(checks.check_deploy())


# --- manage.py check --deploy with the demo's production settings ---------------------


def check_deploy(**env: str) -> subprocess.CompletedProcess:
    """Run it as a deployment would: DEBUG off, secrets only from ``env``."""
    environment = server_env(DJANGO_DEBUG="0")
    for name in (
        "DJANGO_SECURE_COOKIES",
        "DJANGO_SSL_REDIRECT",
        "CHATAUTH_SECRET",
        "CHAINLIT_AUTH_SECRET",
    ):
        environment.pop(name, None)
    environment.update({k: v for k, v in env.items() if v is not None})
    return run_manage(environment, "check", "--deploy")


def test_check_deploy_passes_with_a_secret():
    result = check_deploy(CHATAUTH_SECRET=LONG_SECRET)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "chatauth.E001" not in output
    assert "chatauth.W001" not in output


def test_check_deploy_fails_without_a_secret():
    result = check_deploy(CHATAUTH_SECRET=None)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "chatauth.E001" in output


@pytest.mark.parametrize("variable", ["CHAINLIT_AUTH_SECRET"])
def test_check_deploy_accepts_the_chainlit_variable(variable):
    result = check_deploy(CHATAUTH_SECRET=None, **{variable: LONG_SECRET})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "chatauth.E001" not in output


def test_check_deploy_warns_on_a_short_secret():
    result = check_deploy(CHATAUTH_SECRET="too-short")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "chatauth.W001" in output


@pytest.mark.parametrize("size", [-1, "4096", 1.5, True])
def test_bad_verified_token_cache_size(size):
    with override_settings(
        CHATAUTH={"SECRET": LONG_SECRET, "VERIFIED_TOKEN_CACHE_SIZE": size}
    ):
        assert "chatauth.E005" in ids(checks.check_settings())


def redis_layer(*hosts) -> dict:
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": list(hosts)},
        }
    }


@pytest.mark.parametrize(
    "host",
    [
        "redis://127.0.0.1:6379/0",  # redis-py 8's default: 5 s
        {"address": "redis://127.0.0.1:6379/0", "socket_timeout": 5},
        "redis://127.0.0.1:6379/0?socket_timeout=2",
    ],
)
def test_channel_layer_read_timeout_too_short(host):
    with override_settings(CHANNEL_LAYERS=redis_layer(host)):
        assert ids(checks.check_channel_layer()) == {"chatauth.W008"}


def test_redis_default_read_timeout_is_read_from_redis_py():
    import redis

    expected = 5.0 if int(redis.__version__.split(".")[0]) >= 8 else None
    assert checks._redis_default_socket_timeout() == expected


@pytest.mark.parametrize(
    "host",
    [
        {"address": "redis://127.0.0.1:6379/0", "socket_timeout": 30},
        {"address": "redis://127.0.0.1:6379/0", "socket_timeout": None},
        "redis://127.0.0.1:6379/0?socket_timeout=30",
    ],
)
def test_channel_layer_read_timeout_long_enough(host):
    with override_settings(CHANNEL_LAYERS=redis_layer(host)):
        assert ids(checks.check_channel_layer()) == set()


def test_demo_production_settings_pass_the_layer_check():
    result = check_deploy(
        CHATAUTH_SECRET=LONG_SECRET, REDIS_URL="redis://127.0.0.1:6379/0"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "chatauth.W008" not in output
    assert "chatauth.W005" not in output and "chatauth.W006" not in output
    # The shipped production settings: nothing at all, Django's checks included.
    assert "System check identified no issues" in output, output


# --- Each dangerous deployment variant has its check ---------------------------------


def deploy_ids(**chatauth) -> set[str]:
    with override_settings(CHATAUTH={"SECRET": LONG_SECRET, **chatauth}):
        return ids(checks.check_deploy())


@pytest.mark.parametrize(
    "name", ["SECURE_PROXY_SSL_HEADER", "USE_X_FORWARDED_HOST", "USE_X_FORWARDED_PORT"]
)
def test_forwarded_headers_trusted_from_everyone(name):
    value = ("HTTP_X_FORWARDED_PROTO", "https") if name.startswith("SECURE") else True
    assert "chatauth.W012" not in deploy_ids()
    with override_settings(**{name: value}):
        assert "chatauth.W012" in deploy_ids()


@pytest.mark.parametrize(
    ("entry", "flagged"),
    [
        ("0.0.0.0/0", True),
        ("10.0.0.0/8", True),
        ("::/0", True),
        ("10.0.0.0/24", False),
        ("10.0.0.5", False),
        ("2001:db8::/64", False),
    ],
)
def test_trusted_proxies_that_are_whole_networks(entry, flagged):
    assert ("chatauth.W013" in deploy_ids(TRUSTED_PROXIES=[entry])) is flagged


def test_header_login_trusting_loopback():
    import chatauth

    assert "chatauth.W014" not in deploy_ids(TRUSTED_PROXIES=["127.0.0.1"])
    chatauth.header_auth_callback(lambda headers: None)
    assert "chatauth.W014" in deploy_ids(TRUSTED_PROXIES=["127.0.0.1"])
    assert "chatauth.W014" not in deploy_ids(TRUSTED_PROXIES=["10.0.0.5"])
    assert "chatauth.W014" not in deploy_ids(TRUSTED_PROXIES=[])


def test_query_strings_in_logs():
    assert "chatauth.W015" in deploy_ids(REDACT_QUERY_STRINGS=False)
    assert "chatauth.W015" not in deploy_ids()


def test_placeholder_secret_and_shared_secret():
    placeholder = "insecure-demo-secret-for-development-only-0123456789"
    with override_settings(CHATAUTH={"SECRET": placeholder}):
        [error] = [m for m in checks.check_deploy() if m.id == "chatauth.E010"]
        assert error.is_serious()
    with override_settings(SECRET_KEY=LONG_SECRET):
        assert "chatauth.W016" in deploy_ids()
    assert "chatauth.W016" not in deploy_ids()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_MESSAGE_BYTES", 16 * 1024 * 1024),
        ("MAX_SOCKETS_PER_USER", 100_000),
        ("MAX_SOCKETS_PER_CREDENTIAL", 5_000),
        ("MAX_SOCKETS_PER_ADDRESS", 1_000_000),
        ("MAX_PENDING_SOCKETS_PER_ADDRESS", 50_000),
    ],
)
def test_limits_that_bound_nothing(name, value):
    assert "chatauth.W017" not in deploy_ids()
    assert "chatauth.W017" in deploy_ids(**{name: value})


@pytest.mark.parametrize(
    ("origin", "flagged"),
    [
        ("http://chat.example.com", True),
        ("http://10.1.2.3:8000", True),
        ("https://chat.example.com", False),
        ("http://localhost:3000", False),
        ("http://127.0.0.1:8000", False),
        ("http://[::1]:8000", False),
    ],
)
def test_plain_http_origins(origin, flagged):
    assert ("chatauth.W018" in deploy_ids(ALLOWED_ORIGINS=[origin])) is flagged


@pytest.mark.parametrize(
    ("engine", "flagged"),
    [
        ("django.contrib.sessions.backends.db", False),
        ("django.contrib.sessions.backends.cached_db", False),
        ("django.contrib.sessions.backends.cache", True),
        ("django.contrib.sessions.backends.file", True),
        ("django.contrib.sessions.backends.signed_cookies", True),
    ],
)
def test_session_engines_chatauth_cannot_follow_are_flagged(engine, flagged):
    from chatauth.checks import check_session_engine

    with override_settings(SESSION_ENGINE=engine):
        ids = [e.id for e in check_session_engine()]
    assert ids == (["chatauth.W009"] if flagged else [])


@pytest.mark.parametrize(
    ("host", "flagged"),
    [
        ("redis://127.0.0.1:6379", True),  # redis-py 8.1: 100 by default
        ({"address": "redis://127.0.0.1:6379"}, True),
        ({"address": "redis://127.0.0.1:6379", "max_connections": 50}, True),
        ({"address": "redis://127.0.0.1:6379", "max_connections": 1000}, False),
    ],
)
def test_a_small_redis_layer_pool_is_flagged(host, flagged):
    from chatauth.checks import check_channel_layer_pool

    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [host]},
        }
    }
    with override_settings(CHANNEL_LAYERS=layers):
        ids = [e.id for e in check_channel_layer_pool()]
    assert ids == (["chatauth.W011"] if flagged else [])


def test_demo_user_prints_the_port_it_was_given():
    result = run_manage(
        server_env(DJANGO_DEBUG="1", DATABASE_URL="sqlite:///:memory:"),
        "shell",
        "-c",
        "from django.core.management import call_command; "
        "call_command('migrate', verbosity=0); "
        "call_command('demo_user', '--port', '8123', '--host', 'localhost')",
    )
    assert "Open http://localhost:8123/" in result.stdout, result.stdout + result.stderr


def test_manage_py_prints_no_third_party_warnings():
    result = run_manage(server_env(DJANGO_DEBUG="1"), "check")
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr


@pytest.mark.parametrize("value", ["15m", "900", None, -5, timedelta(seconds=-1)])
def test_a_duration_that_is_not_one(value):
    with override_settings(
        CHATAUTH={"SECRET": LONG_SECRET, "ACCESS_TOKEN_LIFETIME": value}
    ):
        assert "chatauth.E011" in ids(checks.check_settings())


@pytest.mark.parametrize("value", [900, 900.5, timedelta(minutes=15)])
def test_durations_as_seconds_or_timedelta(value):
    with override_settings(
        CHATAUTH={"SECRET": LONG_SECRET, "ACCESS_TOKEN_LIFETIME": value}
    ):
        assert "chatauth.E011" not in ids(checks.check_settings())


def test_chatauth_listed_before_the_django_apps(settings):
    apps = [a for a in settings.INSTALLED_APPS if a != "chatauth"]
    assert "chatauth.E012" not in ids(checks.check_settings())
    with override_settings(INSTALLED_APPS=["chatauth", *apps]):
        [error] = [m for m in checks.check_settings() if m.id == "chatauth.E012"]
    assert "django.contrib.auth" in error.msg and "django.contrib.admin" in error.msg


# --- What a chat socket needs: a channel layer and a route -------------------------


def test_no_channel_layer_is_an_error():
    with override_settings(CHANNEL_LAYERS={}):
        assert "chatauth.E013" in ids(checks.check_asgi())
    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    ):
        assert "chatauth.E013" not in ids(checks.check_asgi())


def test_debug_without_a_channel_layer_gets_the_in_memory_one():
    from chatauth.apps import default_channel_layer

    with override_settings(DEBUG=True):
        del settings_module().CHANNEL_LAYERS
        default_channel_layer()
        assert (
            settings_module()
            .CHANNEL_LAYERS["default"]["BACKEND"]
            .endswith("InMemoryChannelLayer")
        )
        assert checks.check_asgi() == []
    with override_settings(DEBUG=False, CHANNEL_LAYERS={}):
        default_channel_layer()  # outside DEBUG: no default, E013 says so
        assert settings_module().CHANNEL_LAYERS == {}


def settings_module():
    from django.conf import settings

    return settings


@pytest.mark.parametrize(
    ("overrides", "routed"),
    [
        ({"ASGI_APPLICATION": "project.asgi.application"}, True),
        ({"ASGI_APPLICATION": "tests.plain_asgi.application"}, False),
        # No ASGI_APPLICATION: startproject's <project>/asgi.py.
        ({"ASGI_APPLICATION": None, "ROOT_URLCONF": "project.urls"}, True),
        # Not importable: the server reports that, not a check.
        ({"ASGI_APPLICATION": "tests.no_such_module.application"}, True),
    ],
)
def test_an_asgi_application_without_the_chat_route_warns(overrides, routed):
    with override_settings(**overrides):
        warned = "chatauth.W019" in ids(checks.check_asgi())
    assert warned is not routed
