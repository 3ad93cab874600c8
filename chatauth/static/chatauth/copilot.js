/*! chatauth copilot widget | MIT
 *
 * window.mountChatWidget({server, accessToken, getAccessToken, title, open, path})
 * window.mountChainlitWidget({chainlitServer, accessToken})   (Chainlit's name)
 *
 * A launcher button opens a chat panel that talks to chatauth's `ws/chat/`:
 * the token travels as the WebSocket subprotocol pair ["chatauth.bearer", <jwt>]
 * (never in the URL, where proxies and access logs would keep it).  The server
 * answers {"type": "session"}; chat is {"type": "message", "content"} both
 * ways (several messages in a row are one streamed reply).  Close codes: 4401
 * expired or invalid (the widget asks getAccessToken() for a new token and
 * reconnects), 4410 signed out, 4413 message too large, 4429 too many messages;
 * anything else is treated as a network loss and retried with back-off.
 *
 * Loaded by {% copilot_widget %}, the script mounts itself from the JSON island
 * named in its data-chatauth-config attribute: no inline script on the page.
 * The host element carries data-state and fires "chatauth:state" and
 * "chatauth:message" events; mountChatWidget returns
 * {open, close, toggle, send, logout, destroy, element, state, timings}.
 */
(function (w, d) {
  "use strict";

  var PROTOCOL = "chatauth.bearer";
  var STATUS = {
    idle: "",
    connecting: "Connecting\u2026",
    connected: "Connected",
    reconnecting: "Connection lost. Reconnecting\u2026",
    offline: "You are offline. Waiting for the network\u2026",
    expired: "Session expired. Renewing\u2026",
    "signed-out": "You have been signed out.",
    anonymous: "Sign in to chat with the assistant.",
    error: "The chat is unavailable."
  };
  var CSS =
    ":host{all:initial}" +
    "*{box-sizing:border-box}" +
    "[hidden]{display:none!important}" +
    ".launcher{position:fixed;right:20px;bottom:20px;z-index:2147483000;width:56px;height:56px;border:0;border-radius:50%;background:#1d4ed8;color:#fff;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.3);display:flex;align-items:center;justify-content:center}" +
    ".launcher.unread::after{content:'';position:absolute;top:6px;right:6px;width:12px;height:12px;border-radius:50%;background:#dc2626;border:2px solid #fff}" +
    "button:focus-visible,a:focus-visible,textarea:focus-visible,.log:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}" +
    ".panel{position:fixed;right:20px;bottom:88px;z-index:2147483001;width:min(380px,calc(100vw - 40px));height:min(560px,calc(100vh - 110px));display:flex;flex-direction:column;background:#fff;color:#111827;border-radius:12px;overflow:hidden;box-shadow:0 8px 30px rgba(0,0,0,.3);font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}" +
    ".panel[hidden]{display:none}" +
    "header{display:flex;align-items:center;gap:8px;padding:4px 4px 4px 14px;background:#1e3a8a;color:#fff}" +
    "h2{margin:0;font-size:15px;font-weight:600}" +
    ".who{font-size:12px;opacity:.85;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}" +
    ".head{flex:1;min-width:0}" +
    ".x{width:44px;height:44px;border:0;background:none;color:inherit;font-size:24px;cursor:pointer;border-radius:8px}" +
    ".status{margin:0;padding:6px 14px;font-size:13px;background:#f3f4f6;color:#374151}" +
    ".status:empty{display:none}" +
    ":host([data-state=signed-out]) .status,:host([data-state=error]) .status,:host([data-state=anonymous]) .status{background:#fef2f2;color:#991b1b}" +
    ":host([data-state=connected]) .status{background:#ecfdf5;color:#065f46}" +
    ".act{display:none;padding:8px 14px;gap:8px}" +
    ".act a,.act button{font:inherit;color:#1d4ed8;background:none;border:1px solid #1d4ed8;border-radius:8px;padding:8px 12px;min-height:44px;display:inline-flex;align-items:center;cursor:pointer;text-decoration:none}" +
    ".act.on{display:flex}" +
    ".log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;overscroll-behavior:contain}" +
    ".msg{max-width:85%;padding:8px 11px;border-radius:12px;white-space:pre-wrap;overflow-wrap:anywhere}" +
    ".user{align-self:flex-end;background:#1d4ed8;color:#fff}" +
    ".assistant{align-self:flex-start;background:#f3f4f6}" +
    ".notice{align-self:center;font-size:12px;color:#4b5563;text-align:center}" +
    "form{display:flex;gap:8px;padding:10px;border-top:1px solid #e5e7eb;margin:0}" +
    "textarea{flex:1;min-height:44px;max-height:140px;resize:none;font:inherit;color:inherit;padding:10px;border:1px solid #6b7280;border-radius:8px}" +
    ".send{min-width:68px;min-height:44px;border:0;border-radius:8px;background:#1d4ed8;color:#fff;font:inherit;font-weight:600;cursor:pointer}" +
    ".send:disabled{background:#9ca3af;cursor:not-allowed}" +
    ".sr{position:absolute;width:1px;height:1px;margin:-1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0}" +
    "@media (max-width:480px){.panel{inset:0;width:100%;height:100%;border-radius:0}.launcher{right:12px;bottom:12px}}";
  var ICON =
    '<svg aria-hidden="true" width="28" height="28" viewBox="0 0 24 24" fill="currentColor"><path d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"/></svg>';
  var current = null;

  function now() {
    return w.performance ? w.performance.now() : Date.now();
  }

  function el(tag, attrs, text) {
    var node = d.createElement(tag);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (text) node.textContent = text;
    return node;
  }

  /** The ws(s):// URL of the chat endpoint under `server` (default: this site). */
  function socketUrl(server, path) {
    var base = server || w.location.origin;
    if (base.charAt(base.length - 1) !== "/") base += "/";
    var url = new URL(path || "ws/chat/", base);
    if (url.protocol === "https:") url.protocol = "wss:";
    else if (url.protocol === "http:") url.protocol = "ws:";
    return url.href;
  }

  /** `exp` of a JWT in ms, or 0 when it cannot be read (it is not verified here). */
  function expiresAt(token) {
    try {
      var part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return (JSON.parse(w.atob(part)).exp || 0) * 1000;
    } catch (e) {
      return 0;
    }
  }

  /** getAccessToken() over the host's session: POST tokenUrl with the CSRF token. */
  function sessionTokenFetcher(tokenUrl, csrfToken) {
    return function () {
      return w
        .fetch(tokenUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken || "" },
          body: "{}"
        })
        .then(function (response) {
          if (!response.ok) {
            var error = new Error("token request failed: " + response.status);
            error.status = response.status;
            throw error;
          }
          return response.json();
        })
        .then(function (body) {
          return body.access_token;
        });
    };
  }

  function mountChatWidget(options) {
    options = options || {};
    if (current) current.destroy();
    var token = options.accessToken || null;
    var getToken =
      typeof options.getAccessToken === "function"
        ? options.getAccessToken
        : options.tokenUrl
          ? sessionTokenFetcher(options.tokenUrl, options.csrfToken)
          : null;
    var url = socketUrl(options.server, options.path);
    var maxBytes = options.maxMessageBytes || 65536;
    var encoder = w.TextEncoder ? new w.TextEncoder() : null;
    var timings = { mount: now(), open: null, connected: null };
    var ws = null;
    var state = "idle";
    var ended = false; // signed out, refused, or destroyed: no more reconnecting
    var started = false;
    var attempts = 0; // consecutive failed connections (back-off exponent)
    var renewed = false; // the token was renewed and not yet accepted
    var timer = 0;
    var reply = null; // the assistant bubble a streamed reply is appended to
    var sessionId = null;
    var pinger = 0;
    var pingMs = options.pingInterval || 25000;

    // --- DOM: a host element with a shadow root, so host-page CSS cannot
    // break the widget and the widget's CSS cannot leak into the page.
    var host = el("div", { class: "chatauth-copilot", "data-state": state });
    var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
    var style = el("style", {}, CSS);
    var launcher = el("button", {
      type: "button",
      class: "launcher",
      "aria-label": "Chat",
      "aria-expanded": "false",
      "aria-controls": "panel"
    });
    launcher.innerHTML = ICON; // a constant: no untrusted text
    var panel = el("section", {
      id: "panel",
      class: "panel",
      role: "dialog",
      "aria-modal": "false",
      "aria-labelledby": "title"
    });
    panel.hidden = true;
    var header = el("header");
    var head = el("div", { class: "head" });
    head.appendChild(el("h2", { id: "title" }, options.title || "Assistant"));
    var who = el("div", { class: "who" });
    head.appendChild(who);
    var closer = el("button", { type: "button", class: "x", "aria-label": "Close chat" }, "\u00d7");
    header.appendChild(head);
    header.appendChild(closer);
    var status = el("p", { class: "status", role: "status", "aria-live": "polite" });
    var actions = el("div", { class: "act" });
    var signIn = null;
    if (options.loginUrl) {
      signIn = el("a", { href: options.loginUrl }, "Sign in");
      actions.appendChild(signIn);
    }
    var retry = el("button", { type: "button" }, "Try again");
    actions.appendChild(retry);
    var log = el("div", {
      class: "log",
      role: "log",
      "aria-live": "polite",
      "aria-label": "Conversation",
      tabindex: "0"
    });
    var form = el("form");
    var input = el("textarea", { id: "input", rows: "1", placeholder: "Type a message" });
    var sendButton = el("button", { type: "submit", class: "send" }, "Send");
    sendButton.disabled = true;
    form.appendChild(el("label", { for: "input", class: "sr" }, "Message"));
    form.appendChild(input);
    form.appendChild(sendButton);
    [header, status, actions, log, form].forEach(function (n) {
      panel.appendChild(n);
    });
    [style, launcher, panel].forEach(function (n) {
      root.appendChild(n);
    });
    showUser(options.user);

    function showUser(user) {
      if (user && typeof user === "object") {
        who.textContent = "Signed in as " + (user.display_name || user.identifier || "");
      }
    }

    function emit(name, detail) {
      // Bubbles out of the widget (composed: across the shadow boundary too).
      detail.timings = timings;
      host.dispatchEvent(new w.CustomEvent(name, { detail: detail, bubbles: true, composed: true }));
    }

    function setState(next, message) {
      state = next;
      host.setAttribute("data-state", next);
      status.textContent = message || STATUS[next] || "";
      sendButton.disabled = next !== "connected";
      var out = next === "signed-out" || next === "anonymous";
      // Typing ahead is fine while (re)connecting, pointless once signed out.
      input.disabled = out || next === "error";
      if (out) who.textContent = "";
      var showSignIn = !!signIn && out;
      if (signIn) signIn.hidden = !showSignIn;
      retry.hidden = next !== "error";
      actions.className = showSignIn || next === "error" ? "act on" : "act";
      emit("chatauth:state", { state: next, message: status.textContent, sessionId: sessionId });
    }

    function bubble(kind, text) {
      var node = el("div", { class: "msg " + kind });
      if (kind !== "notice") node.appendChild(el("span", { class: "sr" }, kind === "user" ? "You: " : "Assistant: "));
      var body = el("span");
      body.textContent = text;
      node.appendChild(body);
      log.appendChild(node);
      log.scrollTop = log.scrollHeight;
      return body;
    }

    function notice(text) {
      bubble("notice", text);
    }

    // --- Connection ------------------------------------------------------
    function connect() {
      w.clearTimeout(timer);
      if (ended || ws) return;
      if (w.navigator.onLine === false) return setState("offline");
      var expired = token && expiresAt(token) && expiresAt(token) < Date.now() + 5000;
      if (!token || (expired && !renewed)) {
        // No token yet, or one the clock says is spent: ask the host first
        // (once: a skewed client clock must not cause a renewal loop).
        if (getToken) return renew();
        if (!token) return end(options.loginUrl ? "anonymous" : "signed-out");
      }
      setState(attempts ? "reconnecting" : "connecting");
      var socket;
      try {
        socket = new w.WebSocket(url, [PROTOCOL, token]);
      } catch (e) {
        return end("error", "Cannot connect to " + url);
      }
      ws = socket;
      var answered = true;
      // Keep-alive: proxies close idle sockets, and a connection that died
      // silently (sleep, a network change) fires no close event for minutes.
      // No answer to a ping in one interval counts as a network loss.
      w.clearInterval(pinger);
      pinger = w.setInterval(function () {
        if (ws !== socket || socket.readyState !== 1) return;
        if (!answered) {
          drop(socket);
          return closed(1006);
        }
        answered = false;
        socket.send('{"type":"ping"}');
      }, pingMs);
      socket.onmessage = function (event) {
        answered = true;
        var data;
        try {
          data = JSON.parse(event.data);
        } catch (e) {
          return;
        }
        if (!data || typeof data !== "object") return;
        if (data.type === "session") {
          attempts = 0;
          renewed = false;
          reply = null;
          sessionId = data.session_id || null;
          if (timings.connected === null) timings.connected = now();
          showUser(data.user);
          setState("connected");
        } else if (data.type === "message") {
          receive(data.content);
        } else if (data.type === "error") {
          if (data.detail || data.code) notice(String(data.detail || data.code));
        } else if (data.type === "logout") {
          end("signed-out");
        }
      };
      socket.onclose = function (event) {
        if (ws !== socket) return; // dropped already
        drop(socket);
        if (!ended) closed(event.code);
      };
    }

    function drop(socket) {
      w.clearInterval(pinger);
      socket.onclose = socket.onmessage = null;
      if (ws === socket) ws = null;
      if (socket.readyState < 2) socket.close(1000);
    }

    function closed(code) {
      if (code === 4410) return end("signed-out");
      if (code === 4401) {
        // Expired or invalid: one renewal; a renewed token refused again means
        // the host cannot vouch for this user any more.
        if (getToken && !renewed) return renew();
        return end("signed-out", "Your chat session has expired. Sign in again to continue.");
      }
      if (code === 4403) return end("error", "You are not allowed to use this chat.");
      if (code === 4413) {
        notice("That message was too long to send.");
        return later(0);
      }
      if (code === 4429) {
        notice("Too many messages. Please wait a moment.");
        return later(5000);
      }
      later(); // 1006 network loss, 1001 going away, 1011, 4408, 4400, ...
    }

    /** Reconnect after `delay` ms, or after an exponential, jittered back-off. */
    function later(delay) {
      if (delay === undefined) {
        attempts += 1;
        var base = Math.min(30000, 500 * Math.pow(2, attempts));
        delay = base / 2 + (Math.random() * base) / 2;
      }
      setState(w.navigator.onLine === false ? "offline" : "reconnecting");
      timer = w.setTimeout(connect, delay);
    }

    function renew() {
      setState(token ? "expired" : "connecting");
      renewed = true;
      w.Promise.resolve()
        .then(function () {
          return getToken();
        })
        .then(
          function (fresh) {
            if (ended) return;
            if (!fresh) return end("signed-out");
            token = String(fresh);
            connect();
          },
          function (error) {
            if (ended) return;
            renewed = false;
            // 401/403 from the token endpoint: the host session is gone.
            if (error && (error.status === 401 || error.status === 403)) return end("signed-out");
            later();
          }
        );
    }

    function end(next, message) {
      ended = true;
      w.clearTimeout(timer);
      if (ws) drop(ws);
      setState(next, message);
    }

    function receive(content) {
      var text = typeof content === "string" ? content : JSON.stringify(content);
      if (!reply) reply = bubble("assistant", "");
      reply.textContent += text; // textContent: a reply is never parsed as HTML
      log.scrollTop = log.scrollHeight;
      if (panel.hidden) {
        launcher.classList.add("unread");
        launcher.setAttribute("aria-label", "Chat (new messages)");
      }
      emit("chatauth:message", { content: content });
    }

    function send(text) {
      text = String(text == null ? "" : text);
      if (!text.trim() || state !== "connected" || !ws) return false;
      var frame = JSON.stringify({ type: "message", content: text });
      if ((encoder ? encoder.encode(frame).length : frame.length) > maxBytes) {
        notice("That message is too long to send.");
        return false;
      }
      ws.send(frame);
      bubble("user", text);
      reply = null; // what comes next is a new reply
      return true;
    }

    // --- Panel -------------------------------------------------------------
    function open() {
      panel.hidden = false;
      launcher.setAttribute("aria-expanded", "true");
      launcher.setAttribute("aria-label", "Chat");
      launcher.classList.remove("unread");
      if (!started) {
        started = true;
        timings.open = now();
        connect();
      }
      (input.disabled ? (signIn && !signIn.hidden ? signIn : closer) : input).focus();
    }

    function close() {
      var hadFocus = root.activeElement && panel.contains(root.activeElement);
      panel.hidden = true;
      launcher.setAttribute("aria-expanded", "false");
      if (hadFocus || d.activeElement === host) launcher.focus();
    }

    function toggle() {
      if (panel.hidden) open();
      else close();
    }

    launcher.addEventListener("click", toggle);
    closer.addEventListener("click", close);
    retry.addEventListener("click", function () {
      ended = false;
      attempts = 0;
      renewed = false;
      connect();
    });
    panel.addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        event.preventDefault();
        close();
      }
    });
    input.addEventListener("keydown", function (event) {
      // Enter sends, Shift+Enter is a new line; never mid-composition (IME).
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        if (send(input.value)) input.value = "";
      }
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (send(input.value)) input.value = "";
      input.focus();
    });
    function online() {
      if (!ended && started && !ws) {
        attempts = 0;
        connect();
      }
    }
    function offline() {
      if (!ended && started && state !== "connected") setState("offline");
    }
    w.addEventListener("online", online);
    w.addEventListener("offline", offline);

    function attach() {
      (options.container || d.body).appendChild(host);
    }
    if (d.body) attach();
    else d.addEventListener("DOMContentLoaded", attach);

    var api = {
      element: host,
      timings: timings,
      open: open,
      close: close,
      toggle: toggle,
      send: send,
      logout: function () {
        if (ws && state === "connected") ws.send(JSON.stringify({ type: "logout" }));
      },
      destroy: function () {
        end("idle");
        w.removeEventListener("online", online);
        w.removeEventListener("offline", offline);
        if (host.parentNode) host.parentNode.removeChild(host);
        if (current === api) current = null;
      }
    };
    Object.defineProperty(api, "state", {
      get: function () {
        return state;
      }
    });
    current = api;
    if (!token && !getToken) setState(options.loginUrl ? "anonymous" : "signed-out");
    if (options.open) open();
    return api;
  }

  /** Chainlit's copilot API, for pages written against it. */
  function mountChainlitWidget(config) {
    config = config || {};
    var options = {};
    for (var k in config) options[k] = config[k];
    options.server = config.chainlitServer || config.server;
    return mountChatWidget(options);
  }

  w.mountChatWidget = mountChatWidget;
  w.mountChainlitWidget = mountChainlitWidget;
  w.unmountChainlitWidget = function () {
    if (current) current.destroy();
  };
  w.toggleChainlitCopilot = function () {
    if (current) current.toggle();
  };
  w.sendChainlitMessage = function (message) {
    return !!current && current.send(typeof message === "string" ? message : message && (message.output || message.content));
  };

  // {% copilot_widget %}: <script src=copilot.js data-chatauth-config="<id>">
  // names the json_script island holding this page's options.
  var script = d.currentScript;
  var islandId = script && script.getAttribute("data-chatauth-config");
  if (islandId) {
    var island = d.getElementById(islandId);
    if (island) mountChatWidget(JSON.parse(island.textContent));
  }
})(window, document);
