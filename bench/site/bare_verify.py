"""The physical limit of a forward-auth check in Python: a bare ASGI app that
decodes the bearer token with PyJWT (HS256, the shared secret, ``exp``
required) and answers 200 with the identifier, or 401.  No framework, no
revocation, no user state: what ``bench.forward_auth`` measures chatauth's
``auth/verify`` against, served by the same uvicorn.
"""

from __future__ import annotations

import os
from typing import Any

import jwt

SECRET = os.environ["CHATAUTH_SECRET"]
DENIED = {"type": "http.response.start", "status": 401, "headers": []}
BODY = {"type": "http.response.body", "body": b""}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":  # lifespan: nothing to start or stop
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        return
    token = None
    for name, value in scope["headers"]:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            token = value[7:].decode("latin-1")
    try:
        claims = jwt.decode(
            token or "", SECRET, algorithms=["HS256"], options={"require": ["exp"]}
        )
    except jwt.PyJWTError:
        await send(DENIED)
        await send(BODY)
        return
    headers = [(b"x-auth-user", str(claims.get("identifier", "")).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send(BODY)
