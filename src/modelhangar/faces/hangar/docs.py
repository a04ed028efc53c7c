"""`/docs` and `/redoc` with their scripts, styles and icon served by this server, not a CDN.

A page in the admin API's origin must not run scripts from a third party, and the pages must
work offline. The assets come from the `fastapi-offline` package (Swagger UI and ReDoc bundles);
the validator badge (an image from swagger.io) and web fonts are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from typing import Any

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


SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "hgr_<id>_<secret>",
        "description": "An API token (`hangar user add`, `hangar token add`); `Token <token>` works too.",
    },
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "Any user name and an API token as the password.",
    },
}
"""How a request says who it is (README "Accounts"; `auth.py` reads them)."""


def with_security(schema: Callable[[], dict[str, Any]], auth: str) -> Callable[[], dict[str, Any]]:
    """`schema` (FastAPI's `app.openapi`) declaring the token schemes for every operation; under
    HANGAR_AUTH=local a request without one is allowed too (a loopback client is the local admin)."""

    def openapi() -> dict[str, Any]:
        doc = schema()
        if "security" not in doc:  # FastAPI keeps the document it built: this runs once
            doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            doc["security"] = [{"bearer": []}, {"basic": []}] + ([{}] if auth == "local" else [])
        return doc

    return openapi


def routes() -> list[BaseRoute]:
    static = StaticFiles(directory=str(files("fastapi_offline") / "static"))
    return [
        Route("/docs", swagger, methods=["GET", "HEAD"]),
        Route("/redoc", redoc, methods=["GET", "HEAD"]),
        Mount(ASSETS, app=static),
    ]
