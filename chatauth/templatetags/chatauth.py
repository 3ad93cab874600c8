"""Template tags that put the copilot widget on a page.

``{% load chatauth %}`` then:

``{% copilot_widget %}``
    The widget for ``request.user``, with a copilot token minted for them (tied
    to their session: it is revoked when they sign out).  Renders nothing for an
    anonymous visitor unless ``anonymous=True``, which shows a "sign in to chat"
    launcher instead.  Keyword options: ``server`` (the chat server's base URL;
    default this site), ``path`` (default ``ws/chat/``), ``title``, ``open``
    (start with the panel open), ``refresh`` (default True: when the token
    expires, the widget asks ``POST auth/copilot/token`` for a new one with the
    session cookie and the CSRF token), ``login_url``, ``nonce`` (a CSP nonce).

    The configuration goes into the page as a ``json_script`` island read by
    ``copilot.js``, which makes the ``mountChatWidget(...)`` call itself: the page
    needs no inline script, so it works under ``script-src 'self'``.

``{% copilot_widget chainlit_server="https://chat.example.com" %}``
    Chainlit's own widget: ``<script src="<server>/copilot/index.js">`` and
    ``window.mountChainlitWidget({chainlitServer, accessToken})`` with a chatauth
    token, which a Chainlit app accepts when its ``CHAINLIT_AUTH_SECRET`` is
    chatauth's secret (Chainlit's copilot set-up, with Django as the host site).
    ``open`` becomes Chainlit's ``opened``, ``refresh=False`` and ``nonce`` hold
    as they are; every option Chainlit's widget cannot apply (``title``: the
    Chainlit app names itself; ``refresh``: it cannot renew a token;
    ``login_url`` and ``anonymous``: it has no signed-out state; ``server`` and
    ``path``: chatauth's chat server) is a ``TemplateSyntaxError`` naming it,
    never silently dropped.

``{% copilot_token as token %}``
    Just the token ("" for an anonymous visitor), for a page that mounts the
    widget itself.

Both need ``request`` in the template context
(``django.template.context_processors.request``).
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

from django import template
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django.middleware.csrf import get_token
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.http import urlencode

from chatauth import copilot
from chatauth.adapter import get_adapter

register = template.Library()


def _request(context: template.Context) -> HttpRequest:
    request: HttpRequest | None = context.get("request")
    if request is None:
        raise ImproperlyConfigured(
            "chatauth's template tags need the request in the context: add "
            "'django.template.context_processors.request' to the template "
            "engine's context_processors."
        )
    return request


def _http_url(value: str, option: str) -> str:
    """``value`` if it is an absolute http(s) URL, without a trailing slash."""
    parts = urlsplit(str(value).strip())
    # Only http(s) with a host: never "javascript:", "data:" or a relative path
    # that the browser would resolve against the host page.
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise template.TemplateSyntaxError(
            f"copilot_widget: {option} must be an http(s) URL, not {value!r}."
        )
    return parts.geturl().rstrip("/")


def _login_url(request: HttpRequest, login_url: str | None) -> str | None:
    url = login_url or django_settings.LOGIN_URL
    if not url:
        return None
    try:
        url = reverse(url)
    except NoReverseMatch:
        pass  # already a path or URL
    return f"{url}?{urlencode({'next': request.get_full_path()})}"


def _token_url() -> str | None:
    try:
        return reverse("chatauth:copilot-token")
    except NoReverseMatch:  # chatauth.urls not mounted under its namespace
        return None


#: Options Chainlit's own widget cannot apply, and why.
_NOT_FOR_CHAINLIT = {
    "title": "the Chainlit app's own name is its title",
    "refresh": "Chainlit's widget cannot renew a token (refresh=False is fine)",
    "login_url": "Chainlit's widget has no signed-out state to link from",
    "anonymous": "Chainlit's widget needs a token",
    "server": "server= is chatauth's chat server; use one or the other",
    "path": "path= is chatauth's chat socket; use one or the other",
}


def _refuse_for_chainlit(**given: Any) -> None:
    """A TemplateSyntaxError for the first option given that Chainlit's own
    widget would silently drop."""
    for option, value in given.items():
        if value is None or value is False:
            continue
        if option == "title" and value == "":
            continue
        raise template.TemplateSyntaxError(
            f"copilot_widget: {option}= cannot be applied with chainlit_server= "
            f"({_NOT_FOR_CHAINLIT[option]})."
        )


@register.simple_tag(takes_context=True)
def copilot_token(context: template.Context) -> str:
    """A copilot token for ``request.user``; "" for an anonymous visitor."""
    return copilot.token_for_request(_request(context)) or ""


@register.inclusion_tag("chatauth/copilot_widget.html", takes_context=True)
def copilot_widget(
    context: template.Context,
    *,
    server: str | None = None,
    path: str | None = None,
    title: str | None = None,
    open: bool = False,  # the widget's own name for the option
    refresh: bool | None = None,  # None: True, except with chainlit_server
    anonymous: bool = False,
    login_url: str | None = None,
    chainlit_server: str | None = None,
    nonce: str | None = None,
) -> dict[str, Any]:
    """The copilot widget for ``request.user`` (see the module docstring)."""
    request = _request(context)
    if chainlit_server is not None:
        _refuse_for_chainlit(
            title=title,
            refresh=refresh,
            login_url=login_url,
            anonymous=anonymous,
            server=server,
            path=path,
        )
        server_url = _http_url(chainlit_server, "chainlit_server")
    token = copilot.token_for_request(request)
    if token is None and not anonymous:
        return {"widget": None}
    config_id = "chatauth-copilot-" + secrets.token_hex(6)
    if chainlit_server is not None:
        config: dict[str, Any] = {"chainlitServer": server_url, "accessToken": token}
        if open:
            config["opened"] = True  # Chainlit's name for it
        return {
            "widget": {
                "chainlit": True,
                "config_id": config_id,
                "config": config,
                "src": f"{server_url}/copilot/index.js",
                "nonce": nonce,
            }
        }
    refresh = True if refresh is None else refresh
    config = {"accessToken": token, "open": bool(open)}
    if server:
        config["server"] = _http_url(server, "server")
    if path:
        config["path"] = str(path)
    if title:
        config["title"] = str(title)
    # (A token is only ever minted for an authenticated user.)
    if token is not None and request.user.is_authenticated:
        # Shown in the panel's header; json_script keeps any "</script>" in a
        # display name or metadata value inert (it is escaped to \u003C/script>).
        config["user"] = get_adapter().user_claims(request.user)
        if refresh and (token_url := _token_url()):
            config["tokenUrl"] = token_url
            config["csrfToken"] = get_token(request)
    # Offered when there is no user yet, and after a sign-out.
    config["loginUrl"] = _login_url(request, login_url)
    return {
        "widget": {
            "chainlit": False,
            "config_id": config_id,
            "config": config,
            "src": static("chatauth/copilot.js"),
            "nonce": nonce,
        }
    }
