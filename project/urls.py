from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path

from project import views

urlpatterns = [
    path("", views.home, name="home"),
    path("chainlit/", views.chainlit_embed, name="chainlit-embed"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("auth/", include("chatauth.urls")),
]

if getattr(settings, "SERVE_STATIC", False):
    # Development and tests: the app directories' static files, through the
    # finders (no collectstatic).  A deployment serves them from its web server.
    urlpatterns += [
        re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
    ]
