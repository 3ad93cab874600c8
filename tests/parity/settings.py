"""The demo's settings with the parity test's chat handler."""

from project.settings import *  # noqa: F403
from project.settings import CHATAUTH

CHATAUTH["ON_MESSAGE"] = "tests.parity.chatauth_app.answer"
