"""A project whose user model has no ``is_active`` (``AUTH_USER_MODEL`` cannot
change within one test run: tests/test_custom_user_model.py runs
``checks_custom_user.py`` in its own pytest process with these settings)."""
