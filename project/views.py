"""The demo's pages: a host page that embeds the copilot widget."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")


def chainlit_embed(request: HttpRequest) -> HttpResponse:
    return render(request, "chainlit_embed.html")
