"""A hooks module named in ``CHATAUTH["HOOKS"]`` by tests/test_hooks.py."""

import chatauth


@chatauth.password_auth_callback
async def auth(username, password):
    return chatauth.User(username) if password == "from-module" else None


@chatauth.on_logout
def bye(request, response):
    return None
