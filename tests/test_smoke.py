import pytest

from tests.conftest import bearer

pytestmark = pytest.mark.django_db(transaction=True)


def test_login_me_refresh_logout(api, pair):
    assert api.get("/auth/me", **bearer(pair["access_token"])).status_code == 200
