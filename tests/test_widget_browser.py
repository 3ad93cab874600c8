"""The copilot widget in a real browser against a real server.

Debian's Chromium, driven by Playwright, on the demo served by uvicorn
(``project.asgi``: Django pages, ``auth/`` routes and ``ws/chat/``).  Copilot
tokens live 8 seconds here (``CHATAUTH_COPILOT_TOKEN_LIFETIME``), so the server
closes the chat with 4401 at expiry plus the 10 s leeway and the widget has to
renew its token through the session endpoint and carry on.
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import time

import httpx
import jwt
import pytest

from tests.browser import (
    STATE_RECORDER,
    browser_context,
    require_chromium,
    states,
    wait_for_state,
)
from tests.servers import ROOT, SECRET, manage, migrate, server_env, start_server

WIDGET = ROOT / "chatauth" / "static" / "chatauth" / "copilot.js"
USERNAME, PASSWORD = "demo", "demo-password-123"  # project's demo_user command
TOKEN_LIFETIME = 8


# --- Without a browser ------------------------------------------------------------


def test_widget_script_is_small_and_valid():
    raw = WIDGET.read_bytes()
    gzipped = len(gzip.compress(raw, compresslevel=9))
    print(f"\ncopilot.js: {len(raw)} bytes raw, {gzipped} bytes gzipped")
    assert gzipped <= 15 * 1024
    assert b"?token=" not in raw  # the credential never goes in the URL
    node = subprocess.run(
        ["node", "--check", str(WIDGET)], capture_output=True, text=True, timeout=30
    )
    if node.returncode == 127:  # pragma: no cover - node is on every dev machine
        pytest.skip("node is not installed")
    assert node.returncode == 0, node.stderr


# --- Fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def widget_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("widget-server")
    env = server_env(
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        CHATAUTH_COPILOT_TOKEN_LIFETIME=str(TOKEN_LIFETIME),
        DJANGO_SERVE_STATIC="1",
    )
    migrate(env)
    manage(env, "demo_user")
    server = start_server(env, tmp)
    server.tmp = tmp
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(widget_server, tmp_path_factory):
    require_chromium()
    with browser_context(tmp_path_factory.mktemp("browser")) as context:
        context.set_default_timeout(15_000)
        context.add_init_script(STATE_RECORDER)
        yield context


@pytest.fixture
def page(browser):
    browser.clear_cookies()
    page = browser.new_page()
    yield page
    page.close()


def log_in(page, base: str) -> None:
    page.goto(f"{base}/accounts/login/?next=/")
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def open_widget(page) -> dict:
    page.get_by_role("button", name="Chat", exact=True).click()
    return wait_for_state(page, "connected")


def chat(page, text: str) -> None:
    page.get_by_role("textbox", name="Message").fill(text)
    page.keyboard.press("Enter")
    page.locator(".msg.user").filter(has_text=text).wait_for()
    page.locator(".msg.assistant").filter(has_text=text).wait_for(timeout=5_000)


# --- Chat, renewal, reconnection ----------------------------------------------------


def test_chat_then_the_token_expires_and_is_renewed(page, widget_server):
    base = widget_server.url
    token_requests = []
    page.on(
        "request",
        lambda r: token_requests.append(r) if r.url.endswith("/copilot/token") else 0,
    )
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws))
    log_in(page, base)
    first = open_widget(page)
    timings = first["timings"]
    print(
        f"\nmount -> connected {timings['connected'] - timings['mount']:.0f} ms "
        f"(open -> connected {timings['connected'] - timings['open']:.0f} ms)"
    )
    assert sockets and "token" not in sockets[0].url  # subprotocol, not the URL
    assert sockets[0].url == f"{widget_server.ws_url}/ws/chat/"
    chat(page, "hello from the browser")

    # The server closes with 4401 when the token expires; the widget renews it
    # through POST auth/copilot/token (session + CSRF) and reconnects.
    wait_for_state(page, "expired", timeout=TOKEN_LIFETIME + 25)
    second = wait_for_state(page, "connected", count=2, timeout=10)
    assert second["sessionId"] != first["sessionId"]
    assert len(token_requests) == 1
    assert token_requests[0].method == "POST"
    assert token_requests[0].headers.get("x-csrftoken")
    assert not any(e["state"] in ("signed-out", "error") for e in states(page))
    chat(page, "still here after renewal")


def test_reconnects_with_back_off_after_a_network_loss(page, widget_server):
    log_in(page, widget_server.url)
    first = open_widget(page)
    chat(page, "before the outage")
    # Kill the server: the browser sees the connection drop (1006), as on a
    # network loss.  Bring it back on the same port with the same database.
    widget_server.process.kill()
    widget_server.process.wait(timeout=10)
    wait_for_state(page, "reconnecting", timeout=5)
    time.sleep(1.5)  # let the widget fail at least one retry against a dead port
    restarted = start_server(
        widget_server.env, widget_server.tmp, port=widget_server.port
    )
    widget_server.process, widget_server.log = restarted.process, restarted.log
    again = wait_for_state(page, "connected", count=2, timeout=40)
    assert again["sessionId"] != first["sessionId"]
    chat(page, "after the outage")


def test_a_silently_dead_connection_is_noticed(page, widget_server):
    """A frozen server keeps the TCP connection open but answers nothing (as
    after a laptop sleep or a network change): the widget's keep-alive ping
    goes unanswered, it reconnects, and carries on once the server is back."""
    log_in(page, widget_server.url)
    page.evaluate(
        """() => {
          const island = document.querySelector('script[id^="chatauth-copilot-"]');
          const options = JSON.parse(island.textContent);
          options.pingInterval = 400;
          options.open = true;
          window.mountChatWidget(options);
        }"""
    )
    first = wait_for_state(page, "connected")
    chat(page, "before the freeze")
    widget_server.process.send_signal(signal.SIGSTOP)
    try:
        wait_for_state(page, "reconnecting", timeout=5)
    finally:
        widget_server.process.send_signal(signal.SIGCONT)
    again = wait_for_state(page, "connected", count=2, timeout=30)
    assert again["sessionId"] != first["sessionId"]
    chat(page, "after the freeze")


# --- Sign-out ---------------------------------------------------------------------


def test_logout_in_another_tab_signs_the_widget_out(page, browser, widget_server):
    base = widget_server.url
    log_in(page, base)
    open_widget(page)
    chat(page, "about to log out elsewhere")
    other = browser.new_page()
    try:
        other.goto(f"{base}/")
        started = time.monotonic()
        other.get_by_role("button", name="Log out").click()
        other.wait_for_url(f"{base}/")
        signed_out = wait_for_state(page, "signed-out", timeout=2)
        elapsed = time.monotonic() - started
    finally:
        other.close()
    print(f"\nlogout in another tab -> widget signed out in {elapsed * 1000:.0f} ms")
    assert elapsed < 2
    assert "signed out" in signed_out["message"]
    assert page.get_by_role("status").inner_text() == signed_out["message"]
    assert page.get_by_role("link", name="Sign in").is_visible()
    assert page.get_by_role("button", name="Send").is_disabled()
    assert page.get_by_role("textbox", name="Message").is_disabled()
    assert "Signed in as" not in page.get_by_role("dialog").inner_text()
    time.sleep(1)  # and it stays signed out: no reconnecting with a revoked token
    assert states(page)[-1]["state"] == "signed-out"


def test_anonymous_visitor_is_asked_to_sign_in(page, widget_server):
    page.goto(f"{widget_server.url}/")
    page.get_by_role("button", name="Chat", exact=True).click()
    wait_for_state(page, "anonymous")
    link = page.get_by_role("link", name="Sign in")
    assert link.get_attribute("href") == "/accounts/login/?next=%2F"
    assert link.evaluate("e => e.getRootNode().activeElement === e")  # focused
    assert page.get_by_role("button", name="Send").is_disabled()


# --- Accessibility, keyboard, phone -------------------------------------------------


def test_keyboard_focus_and_aria(page, widget_server):
    log_in(page, widget_server.url)
    launcher = page.get_by_role("button", name="Chat", exact=True)
    launcher.focus()
    page.keyboard.press("Enter")
    wait_for_state(page, "connected")
    dialog = page.get_by_role("dialog", name="Demo assistant")
    assert dialog.is_visible()
    assert page.get_by_role("log", name="Conversation").get_attribute("aria-live") == (
        "polite"
    )
    message = page.get_by_role("textbox", name="Message")
    assert message.evaluate("e => e.getRootNode().activeElement === e")  # focused
    page.keyboard.type("typed, not clicked")
    page.keyboard.press("Enter")
    page.locator(".msg.assistant").filter(has_text="typed, not clicked").wait_for()
    # Shift+Enter is a new line, not a send.
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    assert message.input_value() == "line one\nline two"
    page.keyboard.press("Escape")
    assert not dialog.is_visible()
    toggle = page.get_by_role("button", name="Chat", exact=True)
    assert toggle.get_attribute("aria-expanded") == "false"
    assert toggle.evaluate("e => e.getRootNode().activeElement === e")  # focus back


def test_fits_a_narrow_phone_screen(page, widget_server):
    page.set_viewport_size({"width": 360, "height": 640})
    log_in(page, widget_server.url)
    open_widget(page)
    box = page.get_by_role("dialog").bounding_box()
    assert box == {"x": 0, "y": 0, "width": 360, "height": 640}
    send = page.get_by_role("button", name="Send").bounding_box()
    assert send["height"] >= 44  # a touch target (WCAG 2.5.5)
    assert send["x"] + send["width"] <= 360
    page.get_by_role("button", name="Close chat").click()
    assert page.get_by_role("button", name="Chat", exact=True).is_visible()


def test_oversized_messages(page, widget_server):
    sent = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda f: sent.append(f)))
    log_in(page, widget_server.url)
    first = open_widget(page)
    big = "x" * (64 * 1024 + 1)
    # Over MAX_MESSAGE_BYTES: the widget does not even send it.
    assert page.evaluate("t => window.sendChainlitMessage(t)", big) is False
    page.locator(".msg.notice").filter(has_text="too long").wait_for()
    assert [json.loads(f)["type"] for f in sent] == ["thread"]  # no message
    assert states(page)[-1]["state"] == "connected"
    # A widget configured with a higher limit than the server's: the server
    # closes with 4413, the widget says so and reconnects.
    page.evaluate(
        """() => {
          const island = document.querySelector('script[id^="chatauth-copilot-"]');
          const options = JSON.parse(island.textContent);
          options.maxMessageBytes = 1e7;
          options.open = true;
          window.mountChatWidget(options);
        }"""
    )
    mounted = wait_for_state(page, "connected", count=2)
    assert page.evaluate("t => window.sendChainlitMessage(t)", big) is True
    page.locator(".msg.notice").filter(has_text="too long to send").wait_for()
    again = wait_for_state(page, "connected", count=3)
    assert len({first["sessionId"], mounted["sessionId"], again["sessionId"]}) == 3


def test_too_many_messages_shows_a_notice_and_recovers(page, widget_server):
    log_in(page, widget_server.url)
    first = open_widget(page)
    # MESSAGE_RATE is 30 per 10 s: the 31st closes the socket with 4429.
    page.evaluate(
        "() => { for (let i = 0; i < 40; i++) window.sendChainlitMessage('m' + i); }"
    )
    page.locator(".msg.notice").filter(has_text="Too many messages").wait_for()
    again = wait_for_state(page, "connected", count=2, timeout=20)
    assert again["sessionId"] != first["sessionId"]


# --- Chainlit's API on the PyJWT demo page -------------------------------------------


def test_chainlit_style_page_chats_with_a_pyjwt_token(page, widget_server):
    log_in(page, widget_server.url)
    page.goto(f"{widget_server.url}/chainlit/")
    page.evaluate("() => window.toggleChainlitCopilot()")
    connected = wait_for_state(page, "connected")
    assert connected["sessionId"]
    chat(page, "minted the Chainlit way")


# --- Server to server: a host site without Django sessions ----------------------------


def test_api_key_minting_rate(widget_server):
    """Copilot tokens minted per second with an API key, over real HTTP (one
    client, keep-alive; the demo's SQLite file: one writer at a time)."""
    key = manage(widget_server.env, "chatauth_apikey", "create", "rate").strip()
    url = f"{widget_server.url}/auth/copilot/token"
    headers = {"Authorization": f"Api-Key {key}"}
    tokens = []
    with httpx.Client(timeout=30) as client:
        assert client.post(url, json={"identifier": "x"}).status_code in (401, 403)
        started = time.perf_counter()
        while time.perf_counter() - started < 2 and len(tokens) < 2_000:
            response = client.post(
                url,
                json={"identifier": f"visitor-{len(tokens) % 20}", "metadata": {}},
                headers=headers,
            )
            assert response.status_code == 200, response.text
            tokens.append(response.json()["access_token"])
        elapsed = time.perf_counter() - started
    print(
        f"\ncopilot tokens minted with an API key: {len(tokens) / elapsed:.0f}/s "
        f"({len(tokens)} in {elapsed:.1f} s)"
    )
    assert len(set(tokens)) == len(tokens)
    claims = jwt.decode(tokens[-1], SECRET, algorithms=["HS256"])
    assert claims["token_type"] == "copilot"
    assert claims["identifier"] == f"visitor-{(len(tokens) - 1) % 20}"
