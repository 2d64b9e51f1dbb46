"""Request bodies declared by hand in ``/openapi.json``, with references that resolve.

Endpoints that read their body themselves (multipart or JSON, the v2 binary extension) declare
its schema in ``openapi_extra``. Pydantic's schema of a model with nested models carries them in a
local ``$defs`` whose ``#/$defs/...`` references point at the document root, where nothing is:
schema-driven clients and fuzzers cannot resolve them. Here the nested models become components
(``#/components/schemas/...``) like every model FastAPI generates itself.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

REF = "#/components/schemas/{model}"


def body_ref(model: type[BaseModel]) -> dict[str, str]:
    """A reference to ``model``'s component schema, for an ``openapi_extra`` request body."""
    return {"$ref": REF.format(model=model.__name__)}


def component_schemas(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """``model``'s schema and its nested models' schemas, each by its component name."""
    schema = model.model_json_schema(ref_template=REF)
    schemas = dict(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return schemas


def install_body_schemas(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Make ``app``'s OpenAPI document hold the component schemas of ``models``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                for name, schema in component_schemas(model).items():
                    components.setdefault(name, schema)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
