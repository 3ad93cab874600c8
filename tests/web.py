"""A browser's side of Django's own pages, over real HTTP: CSRF, forms, the admin."""

from __future__ import annotations

import re

import httpx

CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


class Browser:
    """An ``httpx.Client`` with a cookie jar, speaking Django's forms."""

    def __init__(self, base_url: str, **kwargs) -> None:
        self.base_url = base_url
        self.client = httpx.Client(base_url=base_url, timeout=30, **kwargs)

    def close(self) -> None:
        self.client.close()

    @property
    def csrf(self) -> str:
        self.client.get("/accounts/login/")  # any form page sets the cookie
        return self.client.cookies["csrftoken"]

    def form_post(self, path: str, data: dict, **kwargs) -> httpx.Response:
        """Post ``data`` to a Django form at ``path``, with its CSRF token."""
        page = self.client.get(path)
        found = CSRF_FIELD.search(page.text)
        token = found[1] if found else self.csrf
        return self.client.post(
            path,
            data={"csrfmiddlewaretoken": token, **data},
            headers={"Referer": self.base_url + path},
            **kwargs,
        )

    def login(self, path: str, username: str, password: str) -> httpx.Response:
        response = self.form_post(path, {"username": username, "password": password})
        assert response.status_code == 302, (response.status_code, response.text[:300])
        return response

    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        """A JSON call with the session cookie and the CSRF header (as the
        widget's own ``fetch`` does)."""
        headers = {"X-CSRFToken": self.csrf, **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def admin_action(self, changelist: str, action: str, *pks, **extra):
        """Run an admin action on the objects ``pks`` of ``changelist``."""
        data = {"action": action, "_selected_action": [str(pk) for pk in pks]}
        return self.client.post(
            changelist,
            data={"csrfmiddlewaretoken": self.csrf, **data, **extra},
            headers={"Referer": self.base_url + changelist},
        )

    @property
    def session_key(self) -> str:
        return self.client.cookies["sessionid"]
