"""`/docs` and `/redoc` with their scripts, styles and icon served by this server, not a CDN.

A page in the admin API's origin must not run scripts from a third party, and the pages must
work offline. The assets come from the `fastapi-offline` package (Swagger UI and ReDoc bundles);
the validator badge (an image from swagger.io) and web fonts are left out.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

ASSETS = "/docs/assets"
TITLE = "modelhangar"


async def swagger(request: Request) -> Response:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{TITLE} - Swagger UI",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},
    )


async def redoc(request: Request) -> Response:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title=f"{TITLE} - ReDoc",
        redoc_js_url=f"{ASSETS}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS}/favicon.png",
        with_google_fonts=False,
    )


def routes() -> list[BaseRoute]:
    static = StaticFiles(directory=str(files("fastapi_offline") / "static"))
    return [
        Route("/docs", swagger, methods=["GET", "HEAD"]),
        Route("/redoc", redoc, methods=["GET", "HEAD"]),
        Mount(ASSETS, app=static),
    ]
