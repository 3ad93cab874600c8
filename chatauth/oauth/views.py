"""The login routes: ``GET auth/oauth/<id>`` sends the browser to the
provider, ``GET auth/oauth/<id>/callback`` brings it back logged in.

The protocol is authlib's: the authorization-code flow with ``state``, PKCE
``S256`` (RFC 7636) and, for OpenID providers, a ``nonce``; the ID token is
verified against the provider's JWKS (signature, ``iss``, ``aud``, ``exp``,
``iat``, ``nonce``).  chatauth adds what authlib leaves to the framework: where
``state`` lives (:mod:`chatauth.oauth.state`), which user a provider identity
becomes (:mod:`chatauth.oauth.linking`), and the refusals
(:mod:`chatauth.oauth.errors`: every one a ``302`` to ``FRONTEND_URL`` with
``?error=<code>``, audited).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions
from rest_framework.request import Request

from chatauth import flows, hooks, signals
from chatauth.adapter import get_adapter
from chatauth.conf import settings
from chatauth.constants import Method
from chatauth.exceptions import HookError
from chatauth.internal.apiview import AsyncAPIView
from chatauth.models import AuditEvent
from chatauth.oauth.errors import PROVIDER_ERRORS, UNAVAILABLE, Refusal
from chatauth.oauth.identity import (
    Identity,
    checked,
    default_user,
    fetch_identity,
)
from chatauth.oauth.linking import link_account
from chatauth.oauth.providers import Provider, get_provider
from chatauth.oauth.redirects import no_store, safe_next, with_query
from chatauth.oauth.rp_logout import remember_login
from chatauth.oauth.state import (
    add_pending,
    read_pending,
    take_state,
    write_pending,
)
from chatauth.schema import documented
from chatauth.serializers import DetailSerializer

logger = logging.getLogger("chatauth.oauth")

UNKNOWN = "Unknown OAuth provider."


def _lookup(provider_id: str) -> Provider:
    provider = get_provider(provider_id)
    if provider is None:
        raise exceptions.NotFound(UNKNOWN)
    return provider


def _redirect_uri(request: HttpRequest, provider: Provider) -> str:
    configured: str | None = provider.config.get("redirect_uri")
    if configured:
        return configured
    path = reverse("chatauth:oauth-callback", kwargs={"provider": provider.id})
    return request.build_absolute_uri(path)


class OAuthStartView(AsyncAPIView):
    """``GET auth/oauth/<provider>``: 302 to the provider's consent page."""

    @documented(
        request=None,
        responses={
            302: OpenApiResponse(description="To the provider's login page."),
            404: DetailSerializer,
        },
        summary="Start an OAuth / OpenID Connect login",
    )
    async def get(self, request: Request, provider: str) -> HttpResponseRedirect:
        found = _lookup(provider)
        django_request = request._request
        app = found.app()
        redirect_uri = _redirect_uri(django_request, found)
        try:
            # authlib draws the state, the PKCE verifier and (openid) the nonce.
            started = await app.create_authorization_url(redirect_uri)
        except (*PROVIDER_ERRORS, TimeoutError, ValueError, RuntimeError) as e:
            unavailable = isinstance(e, UNAVAILABLE)
            reason = "provider_unavailable" if unavailable else "provider_error"
            return await refuse(django_request, found, Refusal(reason), e)
        pending = add_pending(
            read_pending(django_request),
            started["state"],
            {
                "provider": found.id,
                "code_verifier": started.get("code_verifier"),
                "nonce": started.get("nonce"),
                "redirect_uri": redirect_uri,
                "next": safe_next(django_request, request.query_params.get("next")),
            },
        )
        response = no_store(HttpResponseRedirect(started["url"]))
        write_pending(response, found, pending)
        return response


class OAuthCallbackView(AsyncAPIView):
    """``GET auth/oauth/<provider>/callback``: the provider sends the browser back."""

    @documented(
        request=None,
        responses={
            302: OpenApiResponse(
                description="To FRONTEND_URL, logged in; or with ?error=<code>."
            ),
            404: DetailSerializer,
        },
        summary="Finish an OAuth / OpenID Connect login",
    )
    async def get(self, request: Request, provider: str) -> HttpResponseRedirect:
        found = _lookup(provider)
        django_request = request._request
        pending = read_pending(django_request)
        try:
            flow = await take_state(django_request, found, pending)
            user, identity, token = await self._login(django_request, found, flow)
        except Refusal as refusal:
            response = await refuse(django_request, found, refusal)
        except UNAVAILABLE as e:
            response = await refuse(
                django_request, found, Refusal("provider_unavailable"), e
            )
        except (*PROVIDER_ERRORS, ValueError, KeyError, TypeError) as e:
            response = await refuse(django_request, found, Refusal("provider_error"), e)
        else:
            await flows.web_login(django_request, user, Method.OAUTH)
            try:
                if found.openid:
                    await sync_to_async(remember_login)(
                        django_request, found, identity, token.get("id_token")
                    )
            except Exception as e:
                # A login the provider could not end later is no login: undone
                # before its session cookie ever reaches the browser.
                await sync_to_async(_undo_login)(django_request)
                response = await refuse(
                    django_request, found, Refusal("server_error"), e
                )
            else:
                target = flow.get("next") or str(settings.FRONTEND_URL)
                response = no_store(HttpResponseRedirect(target))
        write_pending(response, found, pending)  # the used state is gone
        return response

    async def _login(
        self, request: HttpRequest, provider: Provider, flow: dict[str, Any]
    ) -> tuple[Any, Identity, dict[str, Any]]:
        """The user who logged in, what the provider said, and its token
        response."""
        error = request.GET.get("error")
        if error:
            raise Refusal(
                "access_denied" if error == "access_denied" else "provider_error"
            )
        code = request.GET.get("code")
        if not code:
            raise Refusal("provider_error")
        app = provider.app()
        metadata = await app.load_server_metadata()
        iss = request.GET.get("iss")
        if iss is None and metadata.get(
            "authorization_response_iss_parameter_supported"
        ):
            # RFC 9207 §2.4: a provider that says it always sends ``iss`` and a
            # response without it: the response may come from another provider.
            raise Refusal("invalid_issuer")
        if iss is not None and metadata.get("issuer") and iss != metadata["issuer"]:
            raise Refusal("invalid_issuer")  # RFC 9207 §2.4
        token = await app.fetch_access_token(
            redirect_uri=flow["redirect_uri"],
            code=code,
            code_verifier=flow.get("code_verifier"),
        )
        if not token.get("access_token"):
            raise Refusal("provider_error")
        identity = checked(
            await fetch_identity(provider, app, token, flow.get("nonce"))
        )
        chat_user = default_user(provider, identity)
        adapter = get_adapter()
        callback = hooks.get_hook("oauth_callback")
        identifier_chosen = False
        if callback is not None:
            args: list[Any] = [
                provider.id,
                token["access_token"],
                identity.raw,
                chat_user,
                token.get("id_token"),
            ]
            if not _takes(callback, len(args)):
                args.pop()  # Chainlit's older four-argument callbacks
            try:
                result = await adapter.run_callback(callback, *args)
            except HookError as e:
                raise Refusal("callback_failed", chat_user.identifier) from e
            if result is None:
                raise Refusal("callback_refused", chat_user.identifier)
            identifier_chosen = result.identifier != chat_user.identifier
            chat_user = result
        user = await sync_to_async(link_account)(
            provider, identity, chat_user, identifier_chosen=identifier_chosen
        )
        if not adapter.can_authenticate(user):
            raise Refusal("user_inactive", chat_user.identifier)
        return user, identity, token


def _undo_login(request: HttpRequest) -> None:
    """Take back the ``login()`` this request just made: the session emptied
    and deleted (what was derived from it ends with it), the user anonymous.
    The new session key was never sent: even if its deletion fails (the
    database is down), the emptied session sets no cookie."""
    try:
        request.session.flush()
    except Exception:
        logger.exception("could not delete the session of an undone OAuth login")
        request.session.clear()
    request.user = AnonymousUser()


def _takes(func: Any, count: int) -> bool:
    try:
        inspect.signature(func).bind(*range(count))
    except TypeError:
        return False
    except ValueError:
        return True
    return True


async def refuse(
    request: HttpRequest,
    provider: Provider,
    refusal: Refusal,
    error: BaseException | None = None,
) -> HttpResponseRedirect:
    """Audit ``refusal`` and send the browser to the front end with ``?error=``."""
    if error is not None:
        # The exception's repr names its type and the provider's message; never a
        # token (authlib's errors carry the error code and description only).
        logger.warning("OAuth login with %s failed: %r", provider.id, error)
    await sync_to_async(signals.auth_refused.send)(
        sender=OAuthCallbackView,
        event=AuditEvent.Event.OAUTH_REFUSED,
        identifier=refusal.identifier,
        method=Method.OAUTH,
        reason=refusal.reason,
        request=request,
    )
    target = with_query(str(settings.FRONTEND_URL), error=refusal.reason)
    return no_store(HttpResponseRedirect(target))
