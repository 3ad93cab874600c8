"""Sphinx configuration of chatauth's docs (``make docs``).

The pages are Markdown (MyST).  The reference tables (settings, close codes,
system checks, routes, management commands) are generated from chatauth's
source by the local extension ``docs/_ext/chatauth_docs.py``, which needs
Django set up: the test settings are used, as ``make test`` does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "docs" / "_ext")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import chatauth  # noqa: E402

project = "chatauth"
author = "chatauth contributors"
copyright = "chatauth contributors"  # noqa: A001 - Sphinx's name for it
release = version = chatauth.__version__

extensions = ["myst_parser", "chatauth_docs"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "README.md"]
myst_enable_extensions = ["colon_fence", "deflist"]
# Anchors for headings down to ###, so pages can link to each other's sections.
myst_heading_anchors = 3
nitpicky = True

html_theme = "furo"
html_title = f"chatauth {release}"
pygments_style = "default"
