"""The parity test's chat for Chainlit (run by Chainlit's own interpreter)."""

import chainlit as cl


@cl.password_auth_callback
def auth(username: str, password: str):
    return None  # authentication on: the copilot logs in with its token


@cl.on_message
async def answer(message: cl.Message):
    if message.content == "call":
        result = await cl.CopilotFunction(name="test", args={"msg": "hi"}).acall()
        await cl.Message(content=f"result: {result}").send()
    elif message.content == "thread":
        await cl.Message(content=f"thread: {cl.context.session.thread_id}").send()
    else:
        await cl.Message(content=f"{message.type}: {message.content}").send()
