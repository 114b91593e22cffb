"""``/docs``: Swagger UI for the broker's OpenAPI document, served from the package.

The page's script, stylesheet and icon come from the ``swagger-ui-bundle`` distribution
(Swagger UI's own files, Apache-2.0, installed with the ``server`` extra) under
``/docs/assets/``, so the page works on an offline or air-gapped broker: it references no
other host. ReDoc is not served: it has no such package, and loads its script and fonts from
CDNs.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

__all__ = ["ASSETS", "install"]

#: Where Swagger UI's files are served.
ASSETS = "/docs/assets"


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and ``/docs/oauth2-redirect`` (the app is built with ``docs_url=None``)."""
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")
    redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            oauth2_redirect_url=redirect,
        )

    @app.get(redirect, include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
