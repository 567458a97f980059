"""S2's REST API (v1) over s2core: the ASGI app and its Hypercorn server."""
from s2core.http.app import create_app
from s2core.http.server import serve_http

__all__ = ["create_app", "serve_http"]
