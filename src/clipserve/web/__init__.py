"""The web pages: server-rendered templates plus a little JavaScript per page, against the JSON /v1 API."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from clipserve.config import Settings
from clipserve.web import routes_forms, routes_pages
from clipserve.web.page_headers import STATIC_CACHE_CONTROL
from clipserve.web.rendering import STATIC_DIR


class CachedStaticFiles(StaticFiles):
    """The site's CSS and JS, cacheable for an hour and never sniffed as another type."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = STATIC_CACHE_CONTROL
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def install_web(app: FastAPI, settings: Settings) -> None:
    """Serve the site at / (pages, form posts) and its assets at /static."""
    del settings  # the pages read the running settings from the app context, like the API routes
    app.include_router(routes_pages.router)
    app.include_router(routes_forms.router)
    app.mount("/static", CachedStaticFiles(directory=STATIC_DIR), name="static")
