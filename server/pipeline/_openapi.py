"""``GET /openapi.json``: the OpenAPI document, made by quart-schema from the routes.

Every route is in it, with its docstring; the request bodies, query strings and
responses that the blueprints declare (``validate_request``, ``validate_querystring``,
``document_response``, with pydantic models) come with their schemas. The same
request models validate what arrives, so a body that the document says is wrong
gets a 422 that names the field (``invalid_field``, see ``handlers/_schema.py``).

Only the document is taken from quart-schema: its ``init_app`` would also replace
Canopy's compact JSON provider and wrap ``make_response`` for every response, and
its UI pages load scripts from a CDN (none is reachable from many deployments).
"""

from __future__ import annotations

from quart import Quart
from quart_schema import QuartSchema
from quart_schema.extension import hide
from quart_schema.openapi import OpenAPIProvider

__all__ = ["install_openapi"]


class _DocumentOnly(QuartSchema):
    def init_app(self, app: Quart) -> None:
        app.extensions["QUART_SCHEMA"] = self
        app.config.setdefault("QUART_SCHEMA_PYDANTIC_DUMP_OPTIONS", self.pydantic_dump_options)
        app.config.setdefault("QUART_SCHEMA_CONVERT_CASING", self.convert_casing)
        app.config.setdefault("QUART_SCHEMA_CONVERSION_PREFERENCE", self.conversion_preference)
        self.openapi_provider = self.openapi_provider_class(app, self)
        if self.openapi_path is not None:
            app.add_url_rule(self.openapi_path, "openapi", self.openapi)


def install_openapi(app: Quart, version: str) -> None:
    _DocumentOnly(
        app,
        info={"title": "Canopy", "version": version},
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,
        openapi_provider_class=OpenAPIProvider,
    )
    hide(app.send_static_file.__func__)  # type: ignore[attr-defined]
