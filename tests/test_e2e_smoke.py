"""The demo answers over a real socket."""

import httpx


def test_config_over_http(demo_server):
    response = httpx.get(f"{demo_server.url}/auth/config")
    assert response.status_code == 200
    assert response.json()["password"] is True
