"""The service: HTTP functions, the embedded gateway, the task core, Redis and NATS.

Installed with ``qmill[server]``; the client (`qmill.client`) never imports it. Nothing
here runs or connects at import time: each process opens its clients on first use.
"""
