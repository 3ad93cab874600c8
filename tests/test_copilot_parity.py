"""One host page written for Chainlit's copilot, with Chainlit's bundle and chatauth's.

``tests/parity/page.html`` is a host page as Chainlit's copilot docs show it: the
script tag, a ``chainlit-call-fn`` listener, ``mountChainlitWidget({...})`` with
Chainlit's options.  It is loaded twice in headless Chromium:

* ``chainlit``: ``<chainlit>/copilot/index.js`` against a real Chainlit 2.x server
  running ``tests/parity/chainlit_app.py``;
* ``chatauth``: ``/static/chatauth/copilot.js`` against chatauth (uvicorn, the
  demo project with ``tests/parity/chatauth_app.py`` as ``ON_MESSAGE``).

Both chats do the same: "call" calls the page's ``test`` function and replies with
its result, "thread" replies with the server's thread id, anything else replies
"<message type>: <content>".  One copilot token, minted by chatauth, serves both
(the servers share the secret).  Every assertion below runs against both bundles
unchanged: the same visible behaviour for each option, function and event.
"""

from __future__ import annotations

import json
import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.browser import browser_context, require_chromium
from tests.servers import (
    CHAINLIT_VENV,
    SECRET,
    manage,
    migrate,
    server_env,
    start_chainlit,
    start_server,
    stop_process,
)

pytestmark = pytest.mark.timeout(600)

PARITY = Path(__file__).parent / "parity"
UUID = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)
#: Finds an element by id in the light DOM or any open shadow root.
FIND = """(id) => {
  const walk = (root) => {
    const found = root.getElementById
      ? root.getElementById(id) : root.querySelector('#' + id);
    if (found) return found;
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) { const inner = walk(el.shadowRoot); if (inner) return inner; }
    }
    return null;
  };
  return walk(document);
}"""


#: Whether an element is inside a message shown as the user's (Chainlit's
#: ``data-step-type="user_message"`` step, chatauth's ``.msg.user``).
AS_USER = """e => {
  for (; e; e = e.parentElement || (e.getRootNode() && e.getRootNode().host)) {
    const step = e.getAttribute && e.getAttribute('data-step-type');
    if (step === 'user_message') return true;
    const cls = e.classList;
    if (cls && cls.contains('msg') && cls.contains('user')) return true;
  }
  return false;
}"""


def js(body: str) -> str:
    """A page function with ``find(id)`` in scope."""
    return f"(arg) => {{ const find = {FIND}; {body} }}"


# --- Servers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A plain static server for the host pages (another origin than both chats)."""
    root = tmp_path_factory.mktemp("host-pages")
    for name in ("custom.css", "button.png"):
        (root / name).write_bytes((PARITY / name).read_bytes())
    handler = partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.root = root
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def chatauth_server(tmp_path_factory, host):
    tmp = tmp_path_factory.mktemp("parity-chatauth")
    env = server_env(
        DJANGO_SETTINGS_MODULE="tests.parity.settings",
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        DJANGO_SERVE_STATIC="1",
        CHATAUTH_ALLOWED_ORIGINS=host.url,
    )
    migrate(env)
    manage(env, "demo_user")
    server = start_server(env, tmp)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chainlit_server(tmp_path_factory):
    if not (CHAINLIT_VENV / ".chatauth-ready").exists():
        pytest.skip(
            f"no Chainlit virtualenv at {CHAINLIT_VENV} "
            "(tests/test_chainlit_compat.py builds it)"
        )
    app_dir = tmp_path_factory.mktemp("parity-chainlit")
    source = (PARITY / "chainlit_app.py").read_text()
    process, url = start_chainlit(app_dir, source, SECRET)
    yield url
    stop_process(process)


@pytest.fixture(scope="module")
def token(chatauth_server):
    return manage(chatauth_server.env, "chatauth_token", "demo").strip()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    require_chromium()
    with browser_context(
        tmp_path_factory.mktemp("parity-browser"),
        viewport={"width": 1200, "height": 800},
    ) as context:
        context.set_default_timeout(20_000)
        yield context


@pytest.fixture(params=["chainlit", "chatauth"])
def bundle(request, chatauth_server, chainlit_server):
    """(name, script URL, chat server URL) of one of the two widgets."""
    if request.param == "chainlit":
        return "chainlit", f"{chainlit_server}/copilot/index.js", chainlit_server
    base = chatauth_server.url
    return "chatauth", f"{base}/static/chatauth/copilot.js", base


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.console = []
    page.on("console", lambda m: page.console.append((m.type, m.text)))
    page.requested = []
    page.on("request", lambda r: page.requested.append(r.url))
    page.on("websocket", lambda ws: page.requested.append(ws.url))
    yield page
    page.evaluate("() => localStorage.clear()")
    page.close()


def load(page, host, bundle, token, options: dict, name: str = "page") -> None:
    """Write the host page for ``bundle`` with ``options`` and open it."""
    _, script, server = bundle
    html = (PARITY / "page.html").read_text()
    html = html.replace("__SCRIPT__", script).replace("__SERVER__", server)
    html = html.replace("__TOKEN__", token).replace("__OPTIONS__", json.dumps(options))
    filename = f"{name}-{bundle[0]}.html"
    (host.root / filename).write_text(html)
    page.goto(f"{host.url}/{filename}")


def chat(page, text: str) -> None:
    """Type ``text`` in the chat input (``#chat-input`` in both) and press Enter."""
    handle = page.evaluate_handle(js("return find('chat-input');"))
    field = handle.as_element()
    field.click()
    field.fill(text)
    # Sendable: connected (and, for Chainlit, not empty). Both widgets keep the
    # send button (#chat-submit) disabled until then.
    page.wait_for_function(
        js("const b = find('chat-submit'); return !!b && !b.disabled;")
    )
    field.focus()
    page.keyboard.press("Enter")


def reply(page, text: str, timeout: float = 20_000) -> None:
    page.get_by_text(text, exact=True).last.wait_for(timeout=timeout)


def visible(page, element_id: str) -> bool:
    return page.evaluate(
        js(
            "const el = find(arg); if (!el) return false;"
            "const box = el.getBoundingClientRect();"
            "return box.width > 0 && box.height > 0 &&"
            " getComputedStyle(el).visibility !== 'hidden';"
        ),
        element_id,
    )


def wait_visible(page, element_id: str, shown: bool = True) -> None:
    page.wait_for_function(
        js(
            "const el = find(arg[0]); const box = el && el.getBoundingClientRect();"
            "return !!(box && box.width > 0 && box.height > 0) === arg[1];"
        ),
        arg=[element_id, shown],
    )


def connected(page) -> None:
    """The chat answers (both widgets): a first round trip."""
    chat(page, "hello")
    reply(page, "user_message: hello")


# --- One page load, every option that both widgets apply ------------------------------

OPTIONS = {
    "opened": True,
    "expanded": True,
    "theme": "dark",
    "language": "fr-FR",
    "button": {"imageUrl": "/button.png", "className": "host-button"},
    "customCssUrl": "/custom.css",
    "additionalQueryParamsForAPI": {"tenant": "acme"},
}


def test_options_functions_and_events(page, host, bundle, token, chatauth_server):
    name, _, server = bundle
    load(page, host, bundle, token, {**OPTIONS, "button": dict(OPTIONS["button"])})
    # opened: the panel is open at once.
    wait_visible(page, "chainlit-copilot-chat")
    # The host page's CSS for #chainlit-copilot applies to the widget's element.
    assert (
        page.evaluate(
            "() => getComputedStyle("
            "document.getElementById('chainlit-copilot')).outlineColor"
        )
        == "rgb(1, 2, 3)"
    )
    # button.className and button.imageUrl, on #chainlit-copilot-button.
    button = page.evaluate(
        js(
            "const b = find('chainlit-copilot-button');"
            "const img = b.querySelector('img');"
            "return {cls: b.className, img: img && img.src,"
            " outline: getComputedStyle(b).outlineColor};"
        )
    )
    assert "host-button" in button["cls"].split()
    assert button["img"] == f"{host.url}/button.png"
    # customCssUrl: loaded, and its rules reach inside the widget.
    assert f"{host.url}/custom.css" in page.requested
    page.wait_for_function(
        js(
            "return getComputedStyle(find('chainlit-copilot-button')).outlineColor"
            " === 'rgb(4, 5, 6)';"
        )
    )
    # expanded: the open panel is 80% of the window wide (once Chainlit's
    # opening animation is over).
    page.wait_for_function(
        js(
            "const w = find('chainlit-copilot-chat').getBoundingClientRect().width;"
            "return Math.abs(w - 0.8 * 1200) <= 2;"
        )
    )
    # theme "dark": the panel's background is dark.
    luminance = page.evaluate(
        js(
            "let el = find('chainlit-copilot-chat');"
            "while (el) { const c = getComputedStyle(el).backgroundColor;"
            "  if (c && c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') {"
            "    const [r, g, b] = c.match(/[\\d.]+/g).map(Number);"
            "    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255; }"
            "  el = el.parentElement || (el.getRootNode() && el.getRootNode().host); }"
            "return 1;"
        )
    )
    assert luminance < 0.3
    # language "fr-FR": the input speaks French.
    page.wait_for_function(
        js(
            "const el = find('chat-input'); if (!el) return false;"
            "const all = [el, ...el.querySelectorAll('*')];"
            "return all.some(e => /^Tapez votre message/.test("
            " e.getAttribute('placeholder') || e.getAttribute('data-placeholder') ||"
            " e.textContent || ''));"
        )
    )
    # accessToken: the chat answers.
    connected(page)
    # additionalQueryParamsForAPI: sent to the chat server.
    assert any(
        url.startswith(server.replace("http", "ws", 1)) or url.startswith(server)
        for url in page.requested
        if "tenant=acme" in url
    ), page.requested

    # chainlit-call-fn: the server calls the page's function, the callback answers.
    chat(page, "call")
    reply(page, "result: You sent: hi")

    # Threads: an id kept for this page, the one the server sees.
    thread = page.evaluate("() => window.getChainlitCopilotThreadId()")
    assert UUID.match(thread), thread
    chat(page, "thread")
    reply(page, f"thread: {thread}")

    # sendChainlitMessage({type: "system_message"}): the server gets it with its
    # type; it is not shown as the user's message.
    page.evaluate(
        "() => window.sendChainlitMessage({type: 'system_message', output: 'from page',"
        " id: crypto.randomUUID(), threadId: '', name: 'host',"
        " createdAt: new Date().toISOString()})"
    )
    reply(page, "system_message: from page")
    # Shown on the assistant's side (Chainlit renders it as an AI message), not
    # as the user's, which a typed message is.
    page.get_by_text("from page", exact=True).wait_for()
    assert not page.get_by_text("from page", exact=True).evaluate(AS_USER)
    assert page.get_by_text("hello", exact=True).evaluate(AS_USER)

    # clearChainlitCopilotThreadId(): a new thread, an empty conversation.
    page.evaluate("() => window.clearChainlitCopilotThreadId()")
    page.wait_for_function(
        "(old) => window.getChainlitCopilotThreadId() !== old", arg=thread
    )
    fresh = page.evaluate("() => window.getChainlitCopilotThreadId()")
    assert UUID.match(fresh) and fresh != thread
    page.get_by_text("result: You sent: hi", exact=True).wait_for(state="detached")
    if name == "chainlit":
        page.wait_for_timeout(1500)  # Chainlit reconnects for the new thread
    chat(page, "thread")
    reply(page, f"thread: {fresh}")
    # ... or a thread id the page chooses.
    page.evaluate("() => window.clearChainlitCopilotThreadId('my-thread-1')")
    page.wait_for_function(
        "() => window.getChainlitCopilotThreadId() === 'my-thread-1'"
    )

    # toggleChainlitCopilot(): closes and opens the panel.
    page.evaluate("() => window.toggleChainlitCopilot()")
    wait_visible(page, "chainlit-copilot-chat", False)
    page.evaluate("() => window.toggleChainlitCopilot()")
    wait_visible(page, "chainlit-copilot-chat")

    # The thread id outlives a reload of the host page.
    page.reload()
    wait_visible(page, "chainlit-copilot-chat")
    assert page.evaluate("() => window.getChainlitCopilotThreadId()") == "my-thread-1"

    # unmountChainlitWidget(): the widget is gone; the thread functions say so.
    page.evaluate("() => window.unmountChainlitWidget()")
    wait_visible(page, "chainlit-copilot-button", False)
    assert not visible(page, "chainlit-copilot-chat")
    assert page.evaluate("() => window.getChainlitCopilotThreadId()") is None


def test_display_mode_sidebar(page, host, bundle, token):
    load(page, host, bundle, token, {"opened": True, "displayMode": "sidebar"}, "side")
    wait_visible(page, "chainlit-copilot-chat")
    box = page.evaluate(
        js(
            "let el = find('chainlit-copilot-chat');"
            "while (el && getComputedStyle(el).position !== 'fixed')"
            "  el = el.parentElement || (el.getRootNode() && el.getRootNode().host);"
            "const b = el.getBoundingClientRect();"
            "return {right: b.right, top: b.top, height: b.height, width: b.width};"
        )
    )
    # Docked to the right edge, the window's full height, 400 px wide ...
    assert box == {"right": 1200, "top": 0, "height": 800, "width": 400}
    # ... pushing the page aside while it is open; no launcher meanwhile.
    page.wait_for_function("() => document.body.style.marginRight === '400px'")
    assert not visible(page, "chainlit-copilot-button")
    assert page.evaluate(
        "() => localStorage.getItem('chainlit-copilot-displayMode')"
    ) == ("sidebar")
    page.evaluate("() => window.toggleChainlitCopilot()")
    wait_visible(page, "chainlit-copilot-button")
    page.wait_for_function("() => document.body.style.marginRight === ''")


# --- chatauth only ------------------------------------------------------------------


def test_unknown_options_are_named_in_a_console_warning(
    page, host, chatauth_server, token
):
    bundle = (
        "chatauth",
        f"{chatauth_server.url}/static/chatauth/copilot.js",
        chatauth_server.url,
    )
    load(
        page,
        host,
        bundle,
        token,
        {"showCot": True, "button": {"style": {"size": "2rem"}}, "language": "tlh"},
        "warn",
    )
    page.wait_for_function("() => !!document.getElementById('chainlit-copilot')")
    warnings = [text for kind, text in page.console if kind == "warning"]
    assert any("showCot" in w for w in warnings), warnings
    assert any("button.style" in w for w in warnings), warnings
    assert any('"tlh"' in w for w in warnings), warnings


def test_a_server_that_is_not_chatauth_gets_an_error_state(
    page, host, chatauth_server, chainlit_server, token
):
    """chatauth's script pointed at a Chainlit server (a non-chatauth URL): after a
    few failed handshakes, an error the user can read and a "Try again" button,
    not "Reconnecting..." forever.  (Chainlit's own bundle cannot be pointed at
    chatauth: it is served by the Chainlit server.)"""
    script = f"{chatauth_server.url}/static/chatauth/copilot.js"
    load(
        page,
        host,
        ("chatauth", script, chainlit_server),
        token,
        {"opened": True},
        "foreign",
    )
    page.wait_for_function(
        "() => document.getElementById('chainlit-copilot').dataset.state === 'error'",
        timeout=30_000,
    )
    status = page.get_by_role("status").inner_text()
    assert "chatauth" in status
    assert page.get_by_role("button", name="Try again").is_visible()
    state = page.evaluate(
        "() => document.getElementById('chainlit-copilot').dataset.state"
    )
    page.wait_for_timeout(2000)  # and it stays there: no more reconnecting
    assert state == "error"
    assert (
        page.evaluate("() => document.getElementById('chainlit-copilot').dataset.state")
        == "error"
    )
