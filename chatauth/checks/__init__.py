"""System checks for a misconfigured chatauth (``manage.py check [--deploy]``).

One module per topic, each registering its checks on import (``chatauth.apps``
imports this package in ``ready()``):

- :mod:`chatauth.checks.settings`: the signing secret, ``CHATAUTH`` entries, the
  app order, Chainlit interoperability.
- :mod:`chatauth.checks.security`: password doors, web-session revocation, and
  the ``--deploy`` checks (caches, channel layers, proxies, secrets, limits,
  origins).
- :mod:`chatauth.checks.oauth`: provider logout settings.
- :mod:`chatauth.checks.channels`: the channel layer, the ASGI application,
  Redis timeouts and connection pools.

Every check function stays importable from ``chatauth.checks``.
"""

from __future__ import annotations

from chatauth.checks.channels import (
    LAYER_BLOCK_SECONDS,
    MIN_LAYER_CONNECTIONS,
    check_asgi,
    check_channel_layer,
    check_channel_layer_pool,
)
from chatauth.checks.channels import (
    _redis_default_pool_size as _redis_default_pool_size,
)
from chatauth.checks.channels import (
    _redis_default_socket_timeout as _redis_default_socket_timeout,
)
from chatauth.checks.oauth import check_provider_logout
from chatauth.checks.security import (
    DB_SESSION_ENGINES,
    check_deploy,
    check_login_doors,
    check_session_engine,
)
from chatauth.checks.settings import (
    HMAC_ALGORITHMS,
    MIN_SECRET_BYTES,
    check_secret,
    check_settings,
)

__all__ = [
    "DB_SESSION_ENGINES",
    "HMAC_ALGORITHMS",
    "LAYER_BLOCK_SECONDS",
    "MIN_LAYER_CONNECTIONS",
    "MIN_SECRET_BYTES",
    "check_asgi",
    "check_channel_layer",
    "check_channel_layer_pool",
    "check_deploy",
    "check_login_doors",
    "check_provider_logout",
    "check_secret",
    "check_session_engine",
    "check_settings",
]
