/*! chatauth copilot widget | MIT
 *
 * window.mountChatWidget({server, accessToken, getAccessToken, title, open, path})
 * window.mountChainlitWidget({chainlitServer, accessToken, opened, expanded,
 *   displayMode, theme, language, button: {imageUrl, className}, customCssUrl,
 *   additionalQueryParamsForAPI})   (Chainlit's copilot API, same meanings)
 * window.getChainlitCopilotThreadId(), clearChainlitCopilotThreadId([id]),
 * the "chainlit-call-fn" window event ({name, args, callback}).
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
  // UI text per language (Chainlit's `language` option; default the browser's).
  var TEXT = {
    en: {
      connecting: "Connecting\u2026",
      connected: "Connected",
      reconnecting: "Connection lost. Reconnecting\u2026",
      offline: "You are offline. Waiting for the network\u2026",
      expired: "Session expired. Renewing\u2026",
      "signed-out": "You have been signed out.",
      anonymous: "Sign in to chat with the assistant.",
      error: "The chat is unavailable.",
      foreign: "This chat server does not answer. Is it a chatauth server?",
      chat: "Chat",
      unread: "Chat (new messages)",
      close: "Close chat",
      expand: "Expand",
      sidebar: "Show as sidebar",
      title: "Assistant",
      signIn: "Sign in",
      retry: "Try again",
      log: "Conversation",
      placeholder: "Type a message",
      label: "Message",
      send: "Send",
      you: "You: ",
      bot: "Assistant: ",
      as: "Signed in as ",
      long: "That message is too long to send.",
      longSent: "That message was too long to send.",
      many: "Too many messages. Please wait a moment.",
      ended: "Your chat session has expired. Sign in again to continue.",
      denied: "You are not allowed to use this chat."
    },
    fr: {
      connecting: "Connexion\u2026",
      connected: "Connect\u00e9",
      reconnecting: "Connexion perdue. Reconnexion\u2026",
      offline: "Vous \u00eates hors ligne. En attente du r\u00e9seau\u2026",
      expired: "Session expir\u00e9e. Renouvellement\u2026",
      "signed-out": "Vous avez \u00e9t\u00e9 d\u00e9connect\u00e9.",
      anonymous: "Connectez-vous pour discuter avec l\u2019assistant.",
      error: "Le chat est indisponible.",
      foreign: "Ce serveur de chat ne r\u00e9pond pas. Est-ce un serveur chatauth\u00a0?",
      chat: "Chat",
      unread: "Chat (nouveaux messages)",
      close: "Fermer le chat",
      expand: "Agrandir",
      sidebar: "Afficher en barre lat\u00e9rale",
      title: "Assistant",
      signIn: "Se connecter",
      retry: "R\u00e9essayer",
      log: "Conversation",
      placeholder: "Tapez votre message ici\u2026",
      label: "Message",
      send: "Envoyer",
      you: "Vous\u00a0: ",
      bot: "Assistant\u00a0: ",
      as: "Connect\u00e9 en tant que ",
      long: "Ce message est trop long pour \u00eatre envoy\u00e9.",
      longSent: "Ce message \u00e9tait trop long pour \u00eatre envoy\u00e9.",
      many: "Trop de messages. Patientez un instant.",
      ended: "Votre session a expir\u00e9. Reconnectez-vous pour continuer.",
      denied: "Vous n\u2019avez pas acc\u00e8s \u00e0 ce chat."
    },
    de: {
      connecting: "Verbinden\u2026",
      connected: "Verbunden",
      reconnecting: "Verbindung verloren. Neu verbinden\u2026",
      offline: "Sie sind offline. Warten auf das Netzwerk\u2026",
      expired: "Sitzung abgelaufen. Erneuern\u2026",
      "signed-out": "Sie wurden abgemeldet.",
      anonymous: "Melden Sie sich an, um mit dem Assistenten zu chatten.",
      error: "Der Chat ist nicht verf\u00fcgbar.",
      foreign: "Dieser Chat-Server antwortet nicht. Ist es ein chatauth-Server?",
      chat: "Chat",
      unread: "Chat (neue Nachrichten)",
      close: "Chat schlie\u00dfen",
      expand: "Vergr\u00f6\u00dfern",
      sidebar: "Als Seitenleiste anzeigen",
      title: "Assistent",
      signIn: "Anmelden",
      retry: "Erneut versuchen",
      log: "Unterhaltung",
      placeholder: "Geben Sie hier Ihre Nachricht ein\u2026",
      label: "Nachricht",
      send: "Senden",
      you: "Sie: ",
      bot: "Assistent: ",
      as: "Angemeldet als ",
      long: "Diese Nachricht ist zu lang zum Senden.",
      longSent: "Diese Nachricht war zu lang zum Senden.",
      many: "Zu viele Nachrichten. Bitte warten Sie einen Moment.",
      ended: "Ihre Sitzung ist abgelaufen. Melden Sie sich erneut an.",
      denied: "Sie d\u00fcrfen diesen Chat nicht verwenden."
    },
    es: {
      connecting: "Conectando\u2026",
      connected: "Conectado",
      reconnecting: "Conexi\u00f3n perdida. Reconectando\u2026",
      offline: "Est\u00e1s sin conexi\u00f3n. Esperando a la red\u2026",
      expired: "Sesi\u00f3n caducada. Renovando\u2026",
      "signed-out": "Se ha cerrado tu sesi\u00f3n.",
      anonymous: "Inicia sesi\u00f3n para hablar con el asistente.",
      error: "El chat no est\u00e1 disponible.",
      foreign: "Este servidor de chat no responde. \u00bfEs un servidor chatauth?",
      chat: "Chat",
      unread: "Chat (mensajes nuevos)",
      close: "Cerrar el chat",
      expand: "Ampliar",
      sidebar: "Mostrar como barra lateral",
      title: "Asistente",
      signIn: "Iniciar sesi\u00f3n",
      retry: "Reintentar",
      log: "Conversaci\u00f3n",
      placeholder: "Escribe tu mensaje aqu\u00ed\u2026",
      label: "Mensaje",
      send: "Enviar",
      you: "T\u00fa: ",
      bot: "Asistente: ",
      as: "Sesi\u00f3n iniciada como ",
      long: "Ese mensaje es demasiado largo para enviarlo.",
      longSent: "Ese mensaje era demasiado largo para enviarlo.",
      many: "Demasiados mensajes. Espera un momento.",
      ended: "Tu sesi\u00f3n ha caducado. Vuelve a iniciar sesi\u00f3n.",
      denied: "No tienes permiso para usar este chat."
    }
  };
  // Chainlit's localStorage keys: a page that switches between Chainlit's
  // bundle and this one keeps its thread and display mode.
  var THREAD_KEY = "chainlit-copilot-thread-id";
  var THREAD_EVENT = "chainlit-copilot-thread-changed";
  var MODE_KEY = "chainlit-copilot-displayMode";
  var WIDTH_KEY = "chainlit-copilot-sidebarWidth";
  var THREAD_RE = /^[A-Za-z0-9_-]{1,64}$/;
  // Options this script knows (chatauth's and Chainlit's); any other is warned about.
  var KNOWN = ("server chainlitServer accessToken getAccessToken tokenUrl csrfToken path title open " +
    "opened user loginUrl container maxMessageBytes pingInterval handshakeTimeout expanded " +
    "displayMode theme language button customCssUrl additionalQueryParamsForAPI").split(" ");
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
    ".system{align-self:flex-start;font-style:italic;color:#4b5563;border:1px dashed #d1d5db}" +
    "form{display:flex;gap:8px;padding:10px;border-top:1px solid #e5e7eb;margin:0}" +
    "textarea{flex:1;min-height:44px;max-height:140px;resize:none;font:inherit;color:inherit;padding:10px;border:1px solid #6b7280;border-radius:8px}" +
    ".send{min-width:68px;min-height:44px;border:0;border-radius:8px;background:#1d4ed8;color:#fff;font:inherit;font-weight:600;cursor:pointer}" +
    ".send:disabled{background:#9ca3af;cursor:not-allowed}" +
    ".sr{position:absolute;width:1px;height:1px;margin:-1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0}" +
    ".launcher img{width:100%;height:100%;border-radius:50%;object-fit:cover}" +
    ".panel.expanded{width:80vw}" +
    ".panel.sidebar{top:0;right:0;bottom:0;height:100%;max-width:none;border-radius:0;box-shadow:-2px 0 12px rgba(0,0,0,.2)}" +
    ".grip{position:absolute;left:0;top:0;width:5px;height:100%;cursor:col-resize}" +
    ".panel:not(.sidebar) .grip{display:none}" +
    ".tool{width:36px;height:44px;border:0;background:none;color:inherit;font-size:18px;cursor:pointer;border-radius:8px}" +
    ".tool[aria-pressed=true]{background:rgba(255,255,255,.2)}" +
    ":host([data-theme=dark]) .panel{background:#111827;color:#f3f4f6}" +
    ":host([data-theme=dark]) .assistant,:host([data-theme=dark]) .status{background:#1f2937;color:#e5e7eb}" +
    ":host([data-theme=dark]) textarea{background:#1f2937;border-color:#4b5563}" +
    ":host([data-theme=dark]) form{border-color:#374151}" +
    ":host([data-theme=dark]) .notice{color:#9ca3af}" +
    "@media (max-width:480px){.panel,.panel.expanded,.panel.sidebar{inset:0;width:100%!important;height:100%;border-radius:0}.launcher{right:12px;bottom:12px}}";
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

  /** The ws(s):// URL of the chat endpoint under `server` (default: this site),
   * with Chainlit's additionalQueryParamsForAPI in its query string. */
  function socketUrl(server, path, params) {
    var base = server || w.location.origin;
    if (base.charAt(base.length - 1) !== "/") base += "/";
    var url = new URL(path || "ws/chat/", base);
    if (url.protocol === "https:") url.protocol = "wss:";
    else if (url.protocol === "http:") url.protocol = "ws:";
    for (var k in params || {}) {
      // Never a credential in a URL: proxies and access logs keep them.
      if (/^(token|access_token)$/i.test(k)) warn("additionalQueryParamsForAPI." + k + " is not sent: no credentials in URLs");
      else url.searchParams.append(k, String(params[k]));
    }
    return url.href;
  }

  function warn(text) {
    if (w.console) w.console.warn("chatauth copilot: " + text);
  }

  function stored(key) {
    try {
      return w.localStorage.getItem(key);
    } catch (e) {
      return null; // storage blocked (third-party context, privacy mode)
    }
  }

  function store(key, value) {
    try {
      w.localStorage.setItem(key, value);
    } catch (e) {}
  }

  function newId() {
    if (w.crypto && w.crypto.randomUUID) return w.crypto.randomUUID();
    return "t" + Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  /** The page's copilot thread id (Chainlit's key and JSON encoding), or null. */
  function threadId() {
    try {
      var id = JSON.parse(stored(THREAD_KEY));
      return typeof id === "string" && THREAD_RE.test(id) ? id : null;
    } catch (e) {
      return null;
    }
  }

  function setThreadId(id) {
    store(THREAD_KEY, JSON.stringify(id));
    return id;
  }

  /** The text table for `language` ("fr-FR" -> fr), English when there is none. */
  function texts(language, asked) {
    var tag = String(language || "en").toLowerCase();
    var found = TEXT[tag] || TEXT[tag.split("-")[0]];
    if (!found && asked) warn("language " + JSON.stringify(language) + " has no translation here; using English");
    return found || TEXT.en;
  }

  /** An http(s) or relative URL for a stylesheet or an image; null otherwise. */
  function safeUrl(value, option) {
    try {
      var url = new URL(String(value), w.location.href);
      if (url.protocol === "http:" || url.protocol === "https:") return url.href;
    } catch (e) {}
    warn(option + " must be an http(s) URL; ignored");
    return null;
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
    for (var key in options) if (KNOWN.indexOf(key) < 0) warn("option " + key + " is not supported; ignored");
    var button = options.button || {};
    for (key in button) if (key !== "imageUrl" && key !== "className") warn("option button." + key + " is not supported; ignored");
    var T = texts(options.language || w.navigator.language, !!options.language);
    var STATUS = {
      idle: "",
      connecting: T.connecting,
      connected: T.connected,
      reconnecting: T.reconnecting,
      offline: T.offline,
      expired: T.expired,
      "signed-out": T["signed-out"],
      anonymous: T.anonymous,
      error: T.error
    };
    var mode = options.displayMode || stored(MODE_KEY) || "floating";
    if (mode !== "floating" && mode !== "sidebar") {
      warn("displayMode " + JSON.stringify(mode) + " is not floating or sidebar; using floating");
      mode = "floating";
    }
    var expanded = !!options.expanded;
    var thread = threadId() || setThreadId(newId());
    var everConnected = false; // a session frame seen since mount
    var handshakeMs = options.handshakeTimeout || 15000;
    var token = options.accessToken || null;
    var getToken =
      typeof options.getAccessToken === "function"
        ? options.getAccessToken
        : options.tokenUrl
          ? sessionTokenFetcher(options.tokenUrl, options.csrfToken)
          : null;
    var url = socketUrl(options.server, options.path, options.additionalQueryParamsForAPI);
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
    var pushed = null; // the page's own margin-right while the sidebar pushes it

    // --- DOM: a host element with a shadow root, so host-page CSS cannot
    // break the widget and the widget's CSS cannot leak into the page.
    // Chainlit's element ids, so a host page's CSS for Chainlit's widget applies.
    var host = el("div", { id: "chainlit-copilot", class: "chatauth-copilot", "data-state": state });
    var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
    var style = el("style", {}, CSS);
    var launcher = el("button", {
      id: "chainlit-copilot-button",
      type: "button",
      class: "launcher" + (button.className ? " " + button.className : ""),
      "aria-label": T.chat,
      "aria-expanded": "false",
      "aria-controls": "chainlit-copilot-chat"
    });
    var image = button.imageUrl && safeUrl(button.imageUrl, "button.imageUrl");
    if (image) launcher.appendChild(el("img", { src: image, alt: "" }));
    else launcher.innerHTML = ICON; // a constant: no untrusted text
    var panel = el("section", {
      id: "chainlit-copilot-chat",
      class: "panel",
      role: "dialog",
      "aria-modal": "false",
      "aria-labelledby": "title",
      lang: T === TEXT.en ? "en" : (options.language || w.navigator.language || "en")
    });
    panel.hidden = true;
    var grip = el("div", { class: "grip", "aria-hidden": "true" });
    var header = el("header");
    var head = el("div", { class: "head" });
    head.appendChild(el("h2", { id: "title" }, options.title || T.title));
    var who = el("div", { class: "who" });
    head.appendChild(who);
    var expander = el("button", { type: "button", class: "tool", "aria-label": T.expand }, "\u2922");
    var sider = el("button", { type: "button", class: "tool", "aria-label": T.sidebar }, "\u25e8");
    var closer = el("button", { type: "button", class: "x", "aria-label": T.close }, "\u00d7");
    header.appendChild(head);
    header.appendChild(expander);
    header.appendChild(sider);
    header.appendChild(closer);
    var status = el("p", { class: "status", role: "status", "aria-live": "polite" });
    var actions = el("div", { class: "act" });
    var signIn = null;
    if (options.loginUrl) {
      signIn = el("a", { href: options.loginUrl }, T.signIn);
      actions.appendChild(signIn);
    }
    var retry = el("button", { type: "button" }, T.retry);
    actions.appendChild(retry);
    var log = el("div", {
      class: "log",
      role: "log",
      "aria-live": "polite",
      "aria-label": T.log,
      tabindex: "0"
    });
    var form = el("form");
    var input = el("textarea", { id: "chat-input", rows: "1", placeholder: T.placeholder });
    var sendButton = el("button", { id: "chat-submit", type: "submit", class: "send" }, T.send);
    sendButton.disabled = true;
    form.appendChild(el("label", { for: "chat-input", class: "sr" }, T.label));
    form.appendChild(input);
    form.appendChild(sendButton);
    [grip, header, status, actions, log, form].forEach(function (n) {
      panel.appendChild(n);
    });
    [style, launcher, panel].forEach(function (n) {
      root.appendChild(n);
    });
    // Chainlit's customCssUrl: a stylesheet inside the shadow root (the only
    // way a page's CSS reaches the widget's insides).
    var css = options.customCssUrl && safeUrl(options.customCssUrl, "customCssUrl");
    if (css) root.appendChild(el("link", { rel: "stylesheet", href: css }));
    showUser(options.user);
    applyTheme();
    layout();

    // Chainlit's theme: "light", "dark" or "system" (the page's colour scheme).
    function applyTheme() {
      var theme = options.theme || "light";
      if (theme === "system") {
        var dark = w.matchMedia && w.matchMedia("(prefers-color-scheme: dark)").matches;
        theme = dark ? "dark" : "light";
      } else if (theme !== "light" && theme !== "dark") {
        warn("theme " + JSON.stringify(theme) + " is not light, dark or system; using light");
        theme = "light";
      }
      host.setAttribute("data-theme", theme);
      panel.classList.toggle("dark", theme === "dark");
      panel.classList.toggle("light", theme === "light");
    }

    function sidebarWidth() {
      var width = Number(stored(WIDTH_KEY)) || 400;
      return Math.max(300, Math.min(width, w.innerWidth / 2));
    }

    /** Chainlit's layouts: floating (expanded or not) or a sidebar that
     * pushes the page aside while it is open. */
    function layout() {
      var side = mode === "sidebar";
      panel.classList.toggle("sidebar", side);
      panel.classList.toggle("expanded", expanded && !side);
      panel.classList.toggle("copilot-container-expanded", expanded && !side);
      expander.setAttribute("aria-pressed", String(expanded));
      expander.hidden = side;
      sider.setAttribute("aria-pressed", String(side));
      var open = !panel.hidden;
      panel.style.width = side ? sidebarWidth() + "px" : "";
      launcher.hidden = side && open;
      if (side && open) {
        if (pushed === null) pushed = d.body.style.marginRight;
        d.body.style.marginRight = sidebarWidth() + "px";
      } else if (pushed !== null) {
        d.body.style.marginRight = pushed;
        pushed = null;
      }
    }

    function showUser(user) {
      if (user && typeof user === "object") {
        who.textContent = T.as + (user.display_name || user.identifier || "");
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
      if (kind === "user" || kind === "assistant") node.appendChild(el("span", { class: "sr" }, kind === "user" ? T.you : T.bot));
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
      var greeted = false;
      // A server that accepts the socket but never says "session" does not
      // speak this protocol (or is stuck): count it as a failed attempt.
      var handshake = w.setTimeout(function () {
        if (ws !== socket || greeted) return;
        drop(socket);
        closed(1006);
      }, handshakeMs);
      socket.onopen = function () {
        if (socket.protocol !== PROTOCOL) {
          drop(socket);
          end("error", T.foreign);
        }
      };
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
          greeted = true;
          everConnected = true;
          w.clearTimeout(handshake);
          attempts = 0;
          renewed = false;
          reply = null;
          sessionId = data.session_id || null;
          if (timings.connected === null) timings.connected = now();
          showUser(data.user);
          // The page's thread first, so the server resumes it before any message.
          socket.send(JSON.stringify({ type: "thread", thread_id: thread }));
          setState("connected");
        } else if (data.type === "message") {
          receive(data.content);
        } else if (data.type === "call_fn") {
          callFunction(socket, data);
        } else if (data.type === "error") {
          if (data.detail || data.code) notice(String(data.detail || data.code));
        } else if (data.type === "logout") {
          end("signed-out");
        }
      };
      socket.onclose = function (event) {
        w.clearTimeout(handshake);
        if (ws !== socket) return; // dropped already
        drop(socket);
        if (!ended) closed(event.code);
      };
    }

    /** Chainlit's page functions: the server's {"type": "call_fn"} becomes the
     * "chainlit-call-fn" window event; its callback answers, once, on the
     * socket that asked (a reconnect in between drops the answer: the call
     * has ended on the server with that socket). */
    function callFunction(socket, data) {
      if (typeof data.id !== "string" || typeof data.name !== "string") return;
      var answered = false;
      function callback(result) {
        if (answered) return;
        answered = true;
        if (ws !== socket || socket.readyState !== 1) return;
        var frame;
        try {
          frame = JSON.stringify({ type: "call_fn_result", id: data.id, result: result === undefined ? null : result });
        } catch (e) {
          frame = null; // not JSON (a cycle, a BigInt)
        }
        if (!frame || (encoder ? encoder.encode(frame).length : frame.length) > maxBytes) {
          warn("the result of " + data.name + " cannot be sent (not JSON, or too large); sending null");
          frame = JSON.stringify({ type: "call_fn_result", id: data.id, result: null });
        }
        socket.send(frame);
      }
      w.dispatchEvent(new w.CustomEvent("chainlit-call-fn", { detail: { name: data.name, args: data.args, callback: callback } }));
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
        return end("signed-out", T.ended);
      }
      if (code === 4403) return end("error", T.denied);
      if (code === 4413) {
        notice(T.longSent);
        return later(0);
      }
      if (code === 4429) {
        notice(T.many);
        return later(5000);
      }
      // Never a session since mount, and failed again: not a chatauth server
      // (a Chainlit URL, a typo) or one that is down. Say so instead of
      // "Reconnecting..." forever; "Try again" starts over.
      if (!everConnected && attempts >= 3) return end("error", T.foreign);
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
        launcher.setAttribute("aria-label", T.unread);
      }
      emit("chatauth:message", { content: content });
    }

    /** Send `text` as the user's, or with Chainlit's type "system_message" from
     * the page (shown apart from the user's messages; the server sees its type). */
    function send(text, type) {
      text = String(text == null ? "" : text);
      if (!text.trim() || state !== "connected" || !ws) return false;
      var message = { type: "message", content: text };
      if (type === "system_message") message.message_type = type;
      else if (type && type !== "user_message") warn("message type " + JSON.stringify(type) + " is sent as a user_message");
      var frame = JSON.stringify(message);
      if ((encoder ? encoder.encode(frame).length : frame.length) > maxBytes) {
        notice(T.long);
        return false;
      }
      ws.send(frame);
      // A page's system message shows on the assistant's side, as Chainlit shows it.
      bubble(message.message_type ? "system" : "user", text);
      reply = null; // what comes next is a new reply
      return true;
    }

    /** Chainlit's clearChainlitCopilotThreadId(): a new conversation. */
    function newThread(event) {
      var wanted = event && event.detail && event.detail.newThreadId;
      if (wanted && !THREAD_RE.test(String(wanted))) {
        warn("thread id " + JSON.stringify(wanted) + " is not 1-64 of A-Z a-z 0-9 _ -; using a new one");
        wanted = null;
      }
      thread = setThreadId(wanted ? String(wanted) : newId());
      log.textContent = "";
      reply = null;
      if (ws && state === "connected") ws.send(JSON.stringify({ type: "thread", thread_id: thread }));
    }

    // --- Panel -------------------------------------------------------------
    function open() {
      panel.hidden = false;
      layout();
      launcher.setAttribute("aria-expanded", "true");
      launcher.setAttribute("aria-label", T.chat);
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
      layout();
      launcher.setAttribute("aria-expanded", "false");
      if (hadFocus || d.activeElement === host) launcher.focus();
    }

    function toggle() {
      if (panel.hidden) open();
      else close();
    }

    launcher.addEventListener("click", toggle);
    closer.addEventListener("click", close);
    expander.addEventListener("click", function () {
      expanded = !expanded;
      layout();
    });
    sider.addEventListener("click", function () {
      mode = mode === "sidebar" ? "floating" : "sidebar";
      store(MODE_KEY, mode);
      layout();
    });
    // The sidebar's left edge resizes it (300 px to half the window), as Chainlit's.
    grip.addEventListener("mousedown", function (event) {
      event.preventDefault();
      function move(e) {
        store(WIDTH_KEY, String(Math.round(w.innerWidth - e.clientX)));
        layout();
      }
      function up() {
        d.removeEventListener("mousemove", move);
        d.removeEventListener("mouseup", up);
      }
      d.addEventListener("mousemove", move);
      d.addEventListener("mouseup", up);
    });
    w.addEventListener(THREAD_EVENT, newThread);
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
      threadId: function () {
        return thread;
      },
      logout: function () {
        if (ws && state === "connected") ws.send(JSON.stringify({ type: "logout" }));
      },
      destroy: function () {
        end("idle");
        panel.hidden = true;
        layout(); // gives the page its margin back
        w.removeEventListener("online", online);
        w.removeEventListener("offline", offline);
        w.removeEventListener(THREAD_EVENT, newThread);
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
    if (options.displayMode) store(MODE_KEY, mode);
    if (options.open || options.opened) open(); // Chainlit's name: opened
    return api;
  }

  /** Chainlit's copilot API, for pages written against it. */
  function mountChainlitWidget(config) {
    config = config || {};
    var options = {};
    for (var k in config) if (k !== "chainlitServer") options[k] = config[k];
    options.server = config.chainlitServer || config.server;
    unmounted = false;
    return mountChatWidget(options);
  }

  var unmounted = false; // Chainlit's getChainlitCopilotThreadId() is null after an unmount
  w.mountChatWidget = mountChatWidget;
  w.mountChainlitWidget = mountChainlitWidget;
  w.unmountChainlitWidget = function () {
    if (current) current.destroy();
    unmounted = true;
  };
  w.toggleChainlitCopilot = function () {
    if (current) current.toggle();
    else w.console.error("Widget not mounted.");
  };
  w.sendChainlitMessage = function (message) {
    if (!current) return false;
    if (typeof message === "string") return current.send(message);
    if (!message || typeof message !== "object") return false;
    return current.send(message.output != null ? message.output : message.content, message.type);
  };
  w.getChainlitCopilotThreadId = function () {
    return unmounted ? null : threadId();
  };
  w.clearChainlitCopilotThreadId = function (newThreadId) {
    if (!current) return w.console.error("Widget not mounted.");
    w.dispatchEvent(new w.CustomEvent(THREAD_EVENT, { detail: { newThreadId: newThreadId } }));
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
