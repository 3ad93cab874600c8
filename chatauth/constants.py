"""Names shared by the HTTP and WebSocket sides: close codes, groups, token types."""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """WebSocket close codes from the contract (4000-4999 is the private range).
    Which error code closes with which: :data:`chatauth.exceptions.ERRORS`."""

    # A normal end: the client closed, or ``chatauth_prune`` closed the row of a
    # session whose worker stopped reporting.
    NORMAL = 1000
    UNAUTHORIZED = 4401  # missing, invalid or expired credentials
    FORBIDDEN = 4403  # an application refused an authenticated socket
    AUTH_TIMEOUT = 4408  # no credentials within AUTH_TIMEOUT
    REVOKED = 4410  # logged out here or elsewhere, or closed by an admin
    TOO_LARGE = 4413  # message over MAX_MESSAGE_BYTES
    RATE_LIMITED = 4429  # too many messages
    PROTOCOL_ERROR = 4400  # repeated malformed frames
    # The server cannot go on (its channel layer, cache or database failed):
    # reconnect.  RFC 6455's 1011, or 4503 from a server that cannot send 1011
    # (daphne, hence ``runserver`` with daphne: autobahn sends only 1000 and
    # 3000-4999).
    SERVER_ERROR = 1011
    UNAVAILABLE = 4503  # 1011's meaning, from a server that cannot send 1011


class TokenType:
    ACCESS = "access"
    REFRESH = "refresh"
    COPILOT = "copilot"
    CHAINLIT = "chainlit"  # minted by Chainlit or the Chainlit way: no type claim
    #: Not a token: a Django session behind a chat socket (its cookie).
    SESSION = "session"

    #: Types accepted where an access token is expected.
    ACCESS_LIKE = frozenset({ACCESS, COPILOT, CHAINLIT})


class Method:
    """How a user authenticated; stored in the audit log."""

    PASSWORD = "password"
    HEADER = "header"
    OAUTH = "oauth"
    API_KEY = "api_key"
    TOKEN = "token"
    SESSION = "session"
    ADMIN = "admin"
    COMMAND = "command"
    WEBSOCKET = "websocket"
    #: An identity provider's back-channel logout (OpenID Connect).
    BACKCHANNEL = "backchannel"
    #: A reverse proxy asking ``auth/verify`` (forward auth).
    FORWARD_AUTH = "forward_auth"


def user_group(user_pk: object) -> str:
    """Channel-layer group of every live session of one user."""
    return f"chatauth.user.{user_pk}"


def token_group(token_key: str) -> str:
    """Channel-layer group of every live session opened with one token."""
    return f"chatauth.token.{token_key}"
