"""The demo's URLs plus an API view of the project's own, described by DRF's
default schema class (which drf-spectacular cannot read)."""

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from project.urls import urlpatterns as project_urlpatterns


class Hello(APIView):
    def get(self, request):
        return Response({"hello": "world"})


urlpatterns = [*project_urlpatterns, path("api/hello/", Hello.as_view())]
