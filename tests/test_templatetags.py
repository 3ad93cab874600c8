"""``{% copilot_widget %}`` and ``{% copilot_token %}``: what a page gets, for whom,
escaped how; and the session binding of the tokens they mint."""

from __future__ import annotations

import json
import os
import re

import jwt
import pytest
from django.contrib.auth import logout
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import ImproperlyConfigured
from django.template import Context, Template, TemplateSyntaxError
from django.test import Client, RequestFactory

from chatauth import copilot
from chatauth.constants import TokenType
from chatauth.exceptions import TokenRevoked
from chatauth.models import AuditEvent, Profile
from chatauth.tokens import verify_token
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

ISLAND = re.compile(
    r'<script id="(chatauth-copilot-[0-9a-f]+)" type="application/json">(.*?)</script>',
    re.S,
)
EVIL = "</script><script>alert(1)</script><!--"


def make_request(user=None, path: str = "/page/?q=1"):
    request = RequestFactory().get(path)
    SessionMiddleware(lambda r: None).process_request(request)
    request.user = user if user is not None else AnonymousUser()
    return request


def render(source: str, request, **context) -> str:
    template = Template("{% load chatauth %}" + source)
    return template.render(Context({"request": request, **context}))


def island(html: str) -> tuple[str, dict]:
    match = ISLAND.search(html)
    assert match, html
    return match.group(1), json.loads(match.group(2))


# --- For whom ---------------------------------------------------------------------


def test_nothing_for_an_anonymous_visitor():
    request = make_request()
    assert render("{% copilot_widget %}", request).strip() == ""
    assert render("{% copilot_token %}", request) == ""
    assert render('{% copilot_widget chainlit_server="https://c.example" %}', request)
    assert "<script" not in render(
        '{% copilot_widget chainlit_server="https://c.example" %}', request
    )


def test_anonymous_visitor_gets_a_sign_in_launcher_when_asked():
    html = render("{% copilot_widget anonymous=True %}", make_request())
    _, config = island(html)
    assert config["accessToken"] is None
    assert config["loginUrl"] == "/accounts/login/?next=%2Fpage%2F%3Fq%3D1"
    assert "tokenUrl" not in config and "user" not in config


def test_widget_for_a_user(user):
    Profile.objects.create(user=user, display_name="Alice", metadata={"plan": "pro"})
    request = make_request(user)
    html = render(
        '{% copilot_widget title="Help desk" open=True server="https://chat.example/" '
        'path="ws/other/" %}',
        request,
    )
    config_id, config = island(html)
    script = re.search(r"<script ([^>]*)></script>", html).group(1)
    assert 'src="/static/chatauth/copilot.js"' in script
    assert f'data-chatauth-config="{config_id}"' in script
    assert "defer" in script
    assert config["title"] == "Help desk"
    assert config["open"] is True
    assert config["server"] == "https://chat.example"
    assert config["path"] == "ws/other/"
    assert config["user"] == {
        "identifier": "alice",
        "display_name": "Alice",
        "metadata": {"plan": "pro"},
    }
    assert config["tokenUrl"] == "/auth/copilot/token"
    assert config["csrfToken"]
    verified = verify_token(config["accessToken"], expected={TokenType.COPILOT})
    assert verified.identifier == "alice"
    assert str(verified.user_pk) == str(user.pk)
    assert verified.claims["metadata"] == {"plan": "pro"}


def test_no_inline_script_unless_a_nonce_is_given(user):
    html = render("{% copilot_widget %}", make_request(user))
    assert "nonce" not in html
    # Only the JSON island and the src script: nothing a CSP would have to allow.
    assert html.count("<script") == 2
    html = render('{% copilot_widget nonce="abc123" %}', make_request(user))
    assert 'nonce="abc123"' in html


def test_refresh_off_leaves_out_the_token_endpoint(user):
    _, config = island(render("{% copilot_widget refresh=False %}", make_request(user)))
    assert "tokenUrl" not in config and "csrfToken" not in config


def test_copilot_token_as_variable(user):
    request = make_request(user)
    html = render("{% copilot_token as t %}[{{ t }}]", request)
    token = html.strip("[]")
    assert verify_token(token).identifier == "alice"


def test_an_inactive_user_gets_nothing(user):
    user.is_active = False
    user.save()
    assert render("{% copilot_widget %}", make_request(user)).strip() == ""


# --- Escaping ---------------------------------------------------------------------


def test_script_in_user_data_and_options_stays_inert(user):
    Profile.objects.create(
        user=user, display_name=EVIL, metadata={"note": EVIL, EVIL: ["<!--<script>"]}
    )
    html = render("{% copilot_widget title=title %}", make_request(user), title=EVIL)
    # Two <script> elements, two closing tags: nothing broke out of the island.
    assert html.count("<script") == 2
    assert html.lower().count("</script") == 2
    assert "<!--" not in html
    _, config = island(html)
    assert config["title"] == EVIL
    assert config["user"]["display_name"] == EVIL
    assert config["user"]["metadata"] == {"note": EVIL, EVIL: ["<!--<script>"]}


def test_chainlit_server_with_script_is_refused(user):
    for bad in ("javascript:alert(1)//", "//evil.example", "/relative", "ftp://x"):
        with pytest.raises(TemplateSyntaxError):
            render("{% copilot_widget chainlit_server=s %}", make_request(user), s=bad)
        with pytest.raises(TemplateSyntaxError):
            render("{% copilot_widget server=s %}", make_request(user), s=bad)


def test_chainlit_server_url_is_attribute_escaped(user):
    html = render(
        "{% copilot_widget chainlit_server=s %}",
        make_request(user),
        s='https://c.example/a"><img src=x onerror=alert(1)>',
    )
    assert "<img" not in html
    assert "&quot;&gt;&lt;img" in html


def test_unknown_option_is_a_template_error():
    with pytest.raises(TemplateSyntaxError):
        Template("{% load chatauth %}{% copilot_widget colour='red' %}")


def test_request_must_be_in_the_context(user):
    with pytest.raises(ImproperlyConfigured, match="context_processors.request"):
        Template("{% load chatauth %}{% copilot_widget %}").render(
            Context({"user": user})
        )


# --- Chainlit's own widget ---------------------------------------------------------


def test_chainlit_mode_renders_chainlits_script_and_mount_call(user):
    Profile.objects.create(user=user, display_name="Alice", metadata={"team": "red"})
    html = render(
        '{% copilot_widget chainlit_server="https://chainlit.example:8443/" %}',
        make_request(user),
    )
    config_id, config = island(html)
    assert '<script src="https://chainlit.example:8443/copilot/index.js"></script>' in (
        html
    )
    assert (
        "window.mountChainlitWidget(JSON.parse(document.getElementById("
        f'"{config_id}").textContent));'
    ) in html
    assert config["chainlitServer"] == "https://chainlit.example:8443"
    # What Chainlit's decode_jwt does with it: PyJWT, HS256, the shared secret.
    claims = jwt.decode(
        config["accessToken"], os.environ["CHATAUTH_SECRET"], algorithms=["HS256"]
    )
    assert claims["identifier"] == "alice"
    assert claims["metadata"] == {"team": "red"}
    assert claims["display_name"] == "Alice"


# --- Session binding -----------------------------------------------------------------


def test_the_session_token_is_reused_until_half_its_life(user, settings):
    request = make_request(user)
    first = render("{% copilot_token %}", request)
    assert render("{% copilot_token %}", request) == first
    # New claims (the profile changed): a token that carries them.
    Profile.objects.create(user=user, metadata={"plan": "team"})
    second = render("{% copilot_token %}", request)
    assert second != first
    assert verify_token(second).claims["metadata"] == {"plan": "team"}
    # Less than half the life a new one would get (a 15-day token, 40 days
    # now, in a session that lasts 60): a fresh one.
    settings.CHATAUTH = {**settings.CHATAUTH, "COPILOT_TOKEN_LIFETIME": 40 * 86400}
    request.session.set_expiry(60 * 86400)
    third = render("{% copilot_token %}", request)
    assert third != second
    assert verify_token(third).expires_at - verify_token(second).expires_at > 86400


def test_sign_out_revokes_every_token_of_the_session(user):
    request = make_request(user)
    from_tag = render("{% copilot_token %}", request)
    minted = [str(copilot.mint(request, user)) for _ in range(30)]
    other_session = render("{% copilot_token %}", make_request(user))
    logout(request)  # django.contrib.auth.logout: sends user_logged_out
    # However many were minted for the session, they all end with it.
    for token in (from_tag, *minted):
        with pytest.raises(TokenRevoked):
            verify_token(token)
    assert verify_token(other_session).identifier == "alice"  # another session


def test_a_session_token_never_outlives_the_session(user):
    request = make_request(user)
    request.session.set_expiry(3600)
    token = verify_token(render("{% copilot_token %}", request))
    assert token.expires_at <= request.session.get_expiry_date().timestamp()
    assert token.expires_at - token.issued_at < 3601


def test_host_page_logout_revokes_the_widget_token(user):
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="alice", password=PASSWORD)
    page = client.get("/")
    assert page.status_code == 200
    _, config = island(page.content.decode())
    token = config["accessToken"]
    assert verify_token(token).identifier == "alice"
    # The widget's getAccessToken(): the session endpoint, with the CSRF token.
    refused = client.post("/auth/copilot/token", {}, content_type="application/json")
    assert refused.status_code == 403
    fresh = client.post(
        "/auth/copilot/token",
        {},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=config["csrfToken"],
    )
    assert fresh.status_code == 200, fresh.content
    renewed = fresh.json()["access_token"]
    assert verify_token(renewed).identifier == "alice"
    # Django's LogoutView (the demo's "Log out" button).
    out = client.post("/accounts/logout/", HTTP_X_CSRFTOKEN=config["csrfToken"])
    assert out.status_code == 302
    for spent in (token, renewed):
        with pytest.raises(TokenRevoked):
            verify_token(spent)


def test_chatauth_logout_of_the_session_revokes_the_widget_token(user):
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="alice", password=PASSWORD)
    _, config = island(client.get("/").content.decode())
    out = client.post(
        "/auth/logout",
        {},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=config["csrfToken"],
    )
    assert out.status_code == 200, out.content
    with pytest.raises(TokenRevoked):
        verify_token(config["accessToken"])


def test_demo_pages(user):
    client = Client()
    anonymous = client.get("/")
    assert anonymous.status_code == 200
    _, config = island(anonymous.content.decode())
    assert config["accessToken"] is None and config["loginUrl"].startswith(
        "/accounts/login/"
    )
    assert client.get("/chainlit/").status_code == 200
    client.login(username="alice", password=PASSWORD)
    page = client.get("/chainlit/").content.decode()
    config = json.loads(
        re.search(
            r'<script id="chainlit-config" type="application/json">(.*?)</script>',
            page,
        ).group(1)
    )
    assert config["chainlitServer"] == "http://testserver/"
    claims = jwt.decode(
        config["accessToken"], os.environ["CHATAUTH_SECRET"], algorithms=["HS256"]
    )
    # Chainlit's own shape, plus what makes it revocable (Chainlit ignores it).
    assert set(claims) == {"identifier", "metadata", "exp", "iat", "jti", "sid"}
    verified = verify_token(config["accessToken"])
    assert verified.token_type == TokenType.CHAINLIT
    # Its real issue time, not ``exp - CHAINLIT_TOKEN_MAX_LIFETIME``: a password
    # change just before the page view must not refuse it.
    assert verified.issued_at == claims["iat"]
    assert str(verified.user_pk) == str(user.pk)
    assert verified.key == claims["jti"]
    row = AuditEvent.objects.get(event="token_issued", reason="chainlit")
    assert (row.user_id, row.token_id) == (user.pk, claims["jti"])
    assert row.method == "session"
    # Signing out of the page's session ends it.
    client.post("/accounts/logout/")
    with pytest.raises(TokenRevoked):
        verify_token(config["accessToken"])


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("title", "'Help'"),
        ("refresh", "True"),
        ("login_url", "'/login/'"),
        ("anonymous", "True"),
        ("server", "'https://chat.example'"),
        ("path", "'ws/x/'"),
    ],
)
def test_chainlit_mode_refuses_what_chainlits_widget_cannot_apply(user, option, value):
    source = (
        f'{{% copilot_widget chainlit_server="https://c.example" {option}={value} %}}'
    )
    for who in (user, None):  # for an anonymous visitor too: a template bug
        with pytest.raises(TemplateSyntaxError, match=f"{option}="):
            render(source, make_request(who))


def test_chainlit_mode_honours_open_and_refresh_false(user):
    html = render(
        '{% copilot_widget chainlit_server="https://c.example" open=True '
        'refresh=False nonce="n0nce" %}',
        make_request(user),
    )
    _, config = island(html)
    assert config["opened"] is True  # Chainlit's name for open
    assert set(config) == {"chainlitServer", "accessToken", "opened"}
    assert 'nonce="n0nce"' in html
    _, closed = island(
        render(
            '{% copilot_widget chainlit_server="https://c.example" %}',
            make_request(user),
        )
    )
    assert "opened" not in closed
