"""Optional, ready-made callbacks.  Nothing here is active until a setting names it
(e.g. ``CHATAUTH["HOOKS"] = "chatauth.contrib.proxy_header_auth"``)."""
