"""Caps on live and pending sockets, per worker: per user, per credential, per
client address, and sockets still authenticating per address."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chatauth import tokens
from chatauth.constants import CloseCode
from tests.test_consumers import communicator, hang_up, open_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


@pytest.fixture(autouse=True)
async def _fresh_layer():
    from channels.layers import get_channel_layer

    await get_channel_layer().flush()


async def refused_with(comm, reason: str) -> None:
    connected, _ = await comm.connect(timeout=5)
    assert connected
    message = await comm.receive_output(5)
    assert message == {
        "type": "websocket.close",
        "code": CloseCode.RATE_LIMITED,
        "reason": reason,
    }


async def test_sockets_per_credential_and_per_user(chat, user):
    chat(MAX_SOCKETS_PER_CREDENTIAL=2, MAX_SOCKETS_PER_USER=3)
    first, second = await sync_to_async(
        lambda: [str(tokens.issue_pair(user).access) for _ in range(2)]
    )()
    open_ = [(await open_session(first))[0], (await open_session(first))[0]]
    await refused_with(communicator(first), "sockets_per_credential")
    open_.append((await open_session(second))[0])  # another token of alice
    await refused_with(communicator(second), "sockets_per_user")
    # A session that ends gives its place back.
    await hang_up(open_.pop(0))
    open_.append((await open_session(first))[0])
    for comm in open_:
        await hang_up(comm)


async def test_sockets_per_address(chat, make_user):
    chat(MAX_SOCKETS_PER_ADDRESS=2)
    raws = []
    for _ in range(3):
        owner = await sync_to_async(make_user)()
        raws.append(
            await sync_to_async(lambda u=owner: str(tokens.issue_pair(u).access))()
        )
    open_ = [(await open_session(raw))[0] for raw in raws[:2]]
    await refused_with(communicator(raws[2]), "sockets_per_address")
    for comm in open_:
        await hang_up(comm)


async def test_sockets_still_authenticating_per_address(chat, pair):
    chat(MAX_PENDING_SOCKETS_PER_ADDRESS=2)
    waiting = []
    for _ in range(2):  # no credentials: they wait for an auth frame
        comm = communicator()
        assert (await comm.connect(timeout=5))[0]
        waiting.append(comm)
    await refused_with(communicator(), "pending_sockets_per_address")
    # Once one authenticates, its place is free again.
    await waiting[0].send_json_to({"type": "auth", "token": pair["access_token"]})
    assert (await waiting[0].receive_json_from(timeout=5))["type"] == "session"
    comm, _ = await open_session(pair["access_token"])
    for other in (waiting[0], comm, waiting[1]):
        await hang_up(other)
