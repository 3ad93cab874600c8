"""One host page, written as Chainlit's copilot docs show, for two widgets.

``page.html`` is the page; ``chatauth_app.py`` and ``CHAINLIT_APP`` are the same
chat on both servers (see tests/test_copilot_parity.py).
"""
