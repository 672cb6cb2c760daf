"""The gateway: every service composed into one ASGI app (the default `make run` process)."""
