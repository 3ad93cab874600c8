"""The demo's routes plus the baselines (under ``bench/``)."""

from django.urls import path

from bench.site import probe
from bench.site.debug import runtime
from bench.site.views import MeNoAuthView
from project.urls import urlpatterns as project_urlpatterns

urlpatterns = [
    *project_urlpatterns,
    path("bench/me-noauth", MeNoAuthView.as_view(), name="bench-me-noauth"),
    path("bench/debug/runtime", runtime, name="bench-debug-runtime"),
    path("bench/debug/sweep", probe.view, name="bench-debug-sweep"),
]
