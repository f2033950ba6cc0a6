"""crossbit.server.web: the web page and its JSON API (Starlette on uvicorn) over the same core."""

from crossbit.server.web.app import build_app, start_web

__all__ = ["build_app", "start_web"]
