"""The demo's callbacks: what a project puts in its own ``chat_hooks.py``.

Password login uses Django's users (no password callback is registered).
"""

import logging

import chatauth

logger = logging.getLogger("project")


@chatauth.header_auth_callback
def from_proxy(headers) -> chatauth.User | None:
    """Trust ``X-Forwarded-User`` as set by a reverse proxy on this machine
    (``CHATAUTH["TRUSTED_PROXIES"]`` decides which addresses may send it)."""
    user = headers.get("x-forwarded-user")
    if not user:
        return None
    return chatauth.User(
        identifier=user,
        display_name=headers.get("x-forwarded-name") or user,
        metadata={"provider": "header", "email": headers.get("x-forwarded-email", "")},
    )


@chatauth.on_logout
async def said_goodbye(request, response) -> None:
    logger.info("a user logged out")
