"""chatauth: authentication for chat and AI-assistant products, the Django way.

The public API mirrors Chainlit's::

    import chatauth

    @chatauth.password_auth_callback
    async def auth(username, password) -> chatauth.User | None: ...
"""

from chatauth.context import user_session
from chatauth.functions import CopilotFunction
from chatauth.hooks import (
    User,
    header_auth_callback,
    oauth_callback,
    on_logout,
    password_auth_callback,
)

__all__ = [
    "CopilotFunction",
    "User",
    "header_auth_callback",
    "oauth_callback",
    "on_logout",
    "password_auth_callback",
    "user_session",
]
__version__ = "0.1.0"
