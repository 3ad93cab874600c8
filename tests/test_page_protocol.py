"""The chat socket's Chainlit-copilot frames: threads, system messages, page calls.

``{"type": "thread"}`` names the conversation, ``message_type`` marks a message
the host page sent, and ``{"type": "call_fn"}`` / ``{"type": "call_fn_result"}``
let a handler run a function of the page (:class:`chatauth.CopilotFunction`).
Hostile input on each gets an error frame, a close code or is ignored; never a
crash, never a handler run for a call it did not make.
"""

from __future__ import annotations

import asyncio
import json

import pytest

import chatauth
from chatauth.constants import CloseCode
from chatauth.functions import TooManyCalls
from tests.test_consumers import expect_close, hang_up, open_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]

SEEN: list = []


@pytest.fixture(autouse=True)
def _seen():
    SEEN.clear()


# --- Handlers named by the tests ------------------------------------------------------


async def kinds(content, send):
    """Reply with what the handler can tell about the message."""
    await send(
        {
            "content": content,
            "message_type": chatauth.user_session.get("message_type"),
            "thread_id": chatauth.user_session.get("thread_id"),
        }
    )


async def resume(thread_id, send):
    SEEN.append(thread_id)
    await send(f"resumed {thread_id}")


async def ask_page(content, send):
    """Call the page function named by the message; reply with its result."""
    result = await chatauth.CopilotFunction(name=content, args={"n": 1}).acall(
        timeout=0.5
    )
    await send({"result": result})


async def ask_page_strict(content, send):
    try:
        await chatauth.CopilotFunction(name="slow").acall(
            timeout=0.2, raise_on_timeout=True
        )
    except TimeoutError:
        await send("timed out")


async def ask_many(content, send):
    calls = [chatauth.CopilotFunction(name=f"f{i}").acall(timeout=1) for i in range(3)]
    try:
        await asyncio.gather(*calls)
    except TooManyCalls:
        await send("too many")


def ask_page_sync(content, send):
    result = chatauth.CopilotFunction(name="sync", args={}).call(timeout=2)
    send({"sync result": result})


# --- Threads and message types -----------------------------------------------------


async def test_thread_and_system_message(chat, pair):
    chat(ON_MESSAGE="tests.test_page_protocol.kinds", ON_THREAD=None)
    comm, _ = await open_session(pair["access_token"])
    await comm.send_json_to({"type": "thread", "thread_id": "t-1"})
    assert await comm.receive_json_from(timeout=5) == {
        "type": "thread",
        "thread_id": "t-1",
    }
    await comm.send_json_to(
        {"type": "message", "content": "hi", "message_type": "system_message"}
    )
    reply = await comm.receive_json_from(timeout=5)
    assert reply["content"] == {
        "content": "hi",
        "message_type": "system_message",
        "thread_id": "t-1",
    }
    await comm.send_json_to({"type": "message", "content": "typed"})
    reply = await comm.receive_json_from(timeout=5)
    assert reply["content"]["message_type"] == "user_message"
    await hang_up(comm)


async def test_on_thread_runs_in_order_with_messages(chat, pair):
    chat(
        ON_MESSAGE="tests.test_page_protocol.kinds",
        ON_THREAD="tests.test_page_protocol.resume",
    )
    comm, _ = await open_session(pair["access_token"])
    await comm.send_json_to({"type": "message", "content": "before"})
    await comm.send_json_to({"type": "thread", "thread_id": "abc"})
    await comm.send_json_to({"type": "message", "content": "after"})
    frames = [await comm.receive_json_from(timeout=5) for _ in range(4)]
    assert frames[0]["content"]["thread_id"] is None
    assert frames[1] == {"type": "message", "content": "resumed abc"}
    assert frames[2] == {"type": "thread", "thread_id": "abc"}
    assert frames[3]["content"]["thread_id"] == "abc"
    assert SEEN == ["abc"]
    await hang_up(comm)


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "thread"},
        {"type": "thread", "thread_id": ""},
        {"type": "thread", "thread_id": "x" * 65},
        {"type": "thread", "thread_id": "../../etc"},
        {"type": "thread", "thread_id": ["a"]},
        {"type": "message", "content": "x", "message_type": "assistant_message"},
        {"type": "message", "content": "x", "message_type": {"a": 1}},
        {"type": "call_fn_result"},
        {"type": "call_fn_result", "id": 5, "result": 1},
        {"type": "call_fn_result", "id": "x" * 65, "result": 1},
    ],
)
async def test_malformed_frames_are_protocol_errors(chat, pair, frame):
    chat(ON_MESSAGE="tests.test_page_protocol.kinds", MAX_PROTOCOL_ERRORS=2)
    comm, _ = await open_session(pair["access_token"])
    await comm.send_json_to(frame)
    error = await comm.receive_json_from(timeout=5)
    assert error["type"] == "error" and error["code"] in (
        "invalid_thread",
        "invalid_message",
    )
    await comm.send_json_to(frame)
    await comm.receive_json_from(timeout=5)
    await expect_close(comm, CloseCode.PROTOCOL_ERROR)


# --- Page calls ----------------------------------------------------------------------


async def test_call_fn_round_trip(chat, pair):
    chat(ON_MESSAGE="tests.test_page_protocol.ask_page")
    comm, _ = await open_session(pair["access_token"])
    await comm.send_json_to({"type": "message", "content": "url"})
    call = await comm.receive_json_from(timeout=5)
    assert call["type"] == "call_fn" and call["name"] == "url"
    assert call["args"] == {"n": 1} and isinstance(call["id"], str)
    # A made-up id and a wrong one are ignored; the right one answers.
    await comm.send_json_to({"type": "call_fn_result", "id": "nope", "result": 9})
    await comm.send_json_to({"type": "call_fn_result", "id": call["id"] + "x"})
    await comm.send_json_to(
        {"type": "call_fn_result", "id": call["id"], "result": {"href": "/x"}}
    )
    assert await comm.receive_json_from(timeout=5) == {
        "type": "message",
        "content": {"result": {"href": "/x"}},
    }
    # Answering again: ignored (no frame, no crash); the session goes on.
    await comm.send_json_to({"type": "call_fn_result", "id": call["id"], "result": 2})
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
    await hang_up(comm)


async def test_an_unanswered_call_times_out_to_none(chat, pair):
    chat(ON_MESSAGE="tests.test_page_protocol.ask_page")
    comm, _ = await open_session(pair["access_token"])
    await comm.send_json_to({"type": "message", "content": "ignored"})
    call = await comm.receive_json_from(timeout=5)
    reply = await comm.receive_json_from(timeout=5)
    assert reply == {"type": "message", "content": {"result": None}}
    # A late answer is ignored.
    await comm.send_json_to({"type": "call_fn_result", "id": call["id"], "result": 1})
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
    await hang_up(comm)


async def test_raise_on_timeout(chat, pair):
    chat(ON_MESSAGE="tests.test_page_protocol.ask_page_strict")
    comm, _ = await open_session(pair["access_token"])
    await comm.send_json_to({"type": "message", "content": "x"})
    assert (await comm.receive_json_from(timeout=5))["type"] == "call_fn"
    assert (await comm.receive_json_from(timeout=5))["content"] == "timed out"
    await hang_up(comm)


async def test_pending_calls_are_bounded(chat, pair):
    chat(ON_MESSAGE="tests.test_page_protocol.ask_many", MAX_PENDING_CALLS=2)
    comm, _ = await open_session(pair["access_token"])
    await comm.send_json_to({"type": "message", "content": "x"})
    frames = [await comm.receive_json_from(timeout=5) for _ in range(3)]
    assert [f["type"] for f in frames] == ["call_fn", "call_fn", "message"]
    assert frames[2]["content"] == "too many"
    await hang_up(comm)


async def test_a_sync_handler_calls_the_page(chat, pair):
    chat(ON_MESSAGE="tests.test_page_protocol.ask_page_sync")
    comm, _ = await open_session(pair["access_token"])
    await comm.send_json_to({"type": "message", "content": "x"})
    call = await comm.receive_json_from(timeout=5)
    await comm.send_json_to({"type": "call_fn_result", "id": call["id"], "result": 7})
    reply = await comm.receive_json_from(timeout=5)
    assert reply["content"] == {"sync result": 7}
    await hang_up(comm)


async def test_an_oversized_result_closes_4413(chat, pair):
    chat(ON_MESSAGE="tests.test_page_protocol.ask_page", MAX_MESSAGE_BYTES=1024)
    comm, _ = await open_session(pair["access_token"])
    await comm.send_json_to({"type": "message", "content": "big"})
    call = await comm.receive_json_from(timeout=5)
    await comm.send_to(
        text_data=json.dumps(
            {"type": "call_fn_result", "id": call["id"], "result": "x" * 2000}
        )
    )
    await expect_close(comm, CloseCode.TOO_LARGE)


async def test_a_flood_of_results_is_rate_limited(chat, pair):
    chat(ON_MESSAGE="tests.test_page_protocol.kinds", MESSAGE_RATE=(5, 10))
    comm, _ = await open_session(pair["access_token"])
    for i in range(6):
        await comm.send_json_to({"type": "call_fn_result", "id": f"i{i}"})
    await expect_close(comm, CloseCode.RATE_LIMITED)


async def test_a_call_outside_a_chat_session():
    with pytest.raises(LookupError):
        await chatauth.CopilotFunction(name="x").acall()


async def test_hanging_up_during_a_call_leaves_nothing_running(chat, pair):
    from tests.test_consumers import assert_no_tasks

    chat(ON_MESSAGE="tests.test_page_protocol.ask_page", COPILOT_FUNCTION_TIMEOUT=30)
    comm, _ = await open_session(pair["access_token"])
    await comm.send_json_to({"type": "message", "content": "x"})
    assert (await comm.receive_json_from(timeout=5))["type"] == "call_fn"
    await hang_up(comm)
    await assert_no_tasks()
