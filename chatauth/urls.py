"""Mount with ``path("auth/", include("chatauth.urls"))``."""

from django.urls import path

from chatauth import copilot_token, forwardauth, schema, views
from chatauth.oauth.backchannel import BackchannelLogoutView
from chatauth.oauth.views import OAuthCallbackView, OAuthStartView

app_name = "chatauth"

urlpatterns = [
    path("config", views.ConfigView.as_view(), name="config"),
    path("login", views.LoginView.as_view(), name="login"),
    path("header", views.HeaderLoginView.as_view(), name="header"),
    path("oauth/<str:provider>", OAuthStartView.as_view(), name="oauth-start"),
    path(
        "oauth/<str:provider>/callback",
        OAuthCallbackView.as_view(),
        name="oauth-callback",
    ),
    path(
        "oauth/<str:provider>/backchannel-logout",
        BackchannelLogoutView.as_view(),
        name="oauth-backchannel-logout",
    ),
    path("token/refresh", views.TokenRefreshView.as_view(), name="token-refresh"),
    path(
        "copilot/token", copilot_token.CopilotTokenView.as_view(), name="copilot-token"
    ),
    path("me", views.MeView.as_view(), name="me"),
    path("logout", views.LogoutView.as_view(), name="logout"),
    path("sessions", views.SessionListView.as_view(), name="sessions"),
    path(
        "sessions/<str:session_id>",
        views.SessionDetailView.as_view(),
        name="session-detail",
    ),
    path("schema", schema.SchemaView.as_view(), name="schema"),
    # Served ahead of Django by chatauth.asgi's application (the same answer).
    path("verify", forwardauth.verify_view, name="verify"),
]
