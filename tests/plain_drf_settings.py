"""The test settings as a project that never configured drf-spectacular would
have them: DRF's own default schema class, drf-spectacular not an installed app."""

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS

REST_FRAMEWORK: dict = {}
INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "drf_spectacular"]
# With an API view of the project's own (which DRF's schema class describes).
ROOT_URLCONF = "tests.plain_drf_urls"
