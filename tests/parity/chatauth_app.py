"""The parity test's chat for chatauth: what ``CHAINLIT_APP`` does for Chainlit."""

from __future__ import annotations

import chatauth


async def answer(content, send):
    if content == "call":
        # The page's "chainlit-call-fn" listener answers.
        result = await chatauth.CopilotFunction(name="test", args={"msg": "hi"}).acall()
        await send(f"result: {result}")
    elif content == "thread":
        await send(f"thread: {chatauth.user_session.get('thread_id')}")
    else:
        await send(f"{chatauth.user_session.get('message_type')}: {content}")
