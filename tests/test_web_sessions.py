"""Logout everywhere also ends the user's Django web sessions for chatauth:
no copilot token is minted for them and no chat socket opens with their cookie."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.template import Context, Template
from django.test import RequestFactory
from rest_framework.test import APIClient

from chatauth import revocation, websessions
from chatauth.constants import CloseCode
from tests.test_middleware import closed_with, connect, cookie, session_of

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


def logged_in_client(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def mint(client: APIClient):
    return client.post("/auth/copilot/token", {}, format="json")


def test_login_stamps_the_session_and_api_logins_do_not(user, login):
    client = logged_in_client(user)
    stamp = client.session[websessions.SESSION_AUTH_AT]
    assert time.time() - 5 < stamp <= time.time()
    response = login()
    assert response.status_code == 200
    assert django_settings.SESSION_COOKIE_NAME not in response.cookies


def test_session_mints_until_logout_everywhere(user):
    client = logged_in_client(user)
    assert mint(client).status_code == 200
    time.sleep(0.002)
    revocation.revoke_user(user)
    refused = mint(client)
    assert refused.status_code == 401
    assert "detail" in refused.json()
    # The session was ended: logging in again works at once.
    time.sleep(0.002)
    client.force_login(user)
    assert mint(client).status_code == 200


def test_template_tag_renders_nothing_for_a_session_logged_out_everywhere(user):
    client = logged_in_client(user)
    request = RequestFactory().get("/")
    request.user = user
    request.session = client.session
    template = Template("{% load chatauth %}{% copilot_token as t %}[{{ t }}]")
    assert template.render(Context({"request": request})) != "[]"
    time.sleep(0.002)
    revocation.revoke_user(user)
    assert template.render(Context({"request": request})) in ("[]", "[None]")


async def test_socket_with_a_session_logged_out_everywhere_is_refused(user):
    client = await sync_to_async(logged_in_client)(user)
    key = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    comm = connect(headers=cookie(django_settings.SESSION_COOKIE_NAME, key))
    assert (await session_of(comm))["user"]["identifier"] == "alice"
    await comm.disconnect()
    await sync_to_async(time.sleep)(0.002)
    await sync_to_async(revocation.revoke_user)(user)
    comm = connect(headers=cookie(django_settings.SESSION_COOKIE_NAME, key))
    connected, _ = await comm.connect(timeout=5)
    assert connected
    await closed_with(comm, CloseCode.REVOKED)


def test_sessions_of_a_dead_worker_are_not_listed_and_are_pruned(user, pair):
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    from chatauth.models import ChatSession

    old = timezone.now() - timedelta(hours=1)
    dead = ChatSession.objects.create(user=user, worker="gone:1", last_seen_at=old)
    live = ChatSession.objects.create(user=user, worker="here:2")
    api = APIClient()
    listed = api.get(
        "/auth/sessions", HTTP_AUTHORIZATION=f"Bearer {pair['access_token']}"
    ).json()
    assert [row["id"] for row in listed] == [str(live.id)]
    call_command("chatauth_prune")
    dead.refresh_from_db()
    live.refresh_from_db()
    assert dead.closed_at is not None and live.closed_at is None
