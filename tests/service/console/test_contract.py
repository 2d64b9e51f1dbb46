"""The fields the console reads (contract.json) exist in the server's OpenAPI schema, typed as
the page expects: renaming or retyping one of them in ``service/protocol/schemas.py`` fails here,
not silently in a browser."""

import json
import re
from pathlib import Path
from typing import Any

import pytest

from service.app import create_app
from service.console import STATIC_DIR
from service.settings import Settings

CONTRACT = json.loads((STATIC_DIR / "contract.json").read_text())["responses"]
JSON_TYPES = {"string", "integer", "number", "boolean", "array", "object"}


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    db = tmp_path_factory.mktemp("contract") / "gga.db"
    return create_app(Settings(_env_file=None, database_url=f"sqlite:///{db}")).openapi()


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` and drop the ``null`` branch of an optional field."""
    while True:
        if "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        elif "anyOf" in schema:
            branches = [s for s in schema["anyOf"] if s.get("type") != "null"]
            assert len(branches) == 1, f"ambiguous schema {schema}"
            schema = branches[0]
        else:
            return schema


def _field(root: dict[str, Any], path: str, spec: dict[str, Any]) -> dict[str, Any] | None:
    """The schema at a contract path such as ``predictions[].saliency.others[].map``."""
    schema = _resolve(root, spec)
    for segment in path.split("."):
        key = segment.removesuffix("[]")
        props = schema.get("properties", {})
        if key not in props:
            return None
        schema = _resolve(props[key], spec)
        if segment.endswith("[]"):
            assert schema.get("type") == "array", f"{path}: {key} is not an array"
            schema = _resolve(schema["items"], spec)
    return schema


def _response_schema(spec: dict[str, Any], name: str) -> dict[str, Any]:
    method, path = name.split(" ", 1)
    operation = spec["paths"][path][method.lower()]
    return operation["responses"]["200"]["content"]["application/json"]["schema"]


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_every_field_the_console_reads_is_in_the_schema(openapi, name: str) -> None:
    root = _response_schema(openapi, name)
    for key, expected in CONTRACT[name].items():
        optional = key.endswith("?")
        path = key.removesuffix("?")
        assert expected in JSON_TYPES, f"{name} {key}: unknown type {expected}"
        schema = _field(root, path, openapi)
        if schema is None:
            # Optional fields may come later (per-view p-values, detector views); required
            # ones must exist now, or the page shows a contract error on every answer.
            assert optional or _under_open_object(root, path, openapi), (
                f"{name}: the console reads {path!r}, which the API no longer declares"
            )
            continue
        declared = schema.get("type")
        if declared is None:
            continue  # an untyped field (Any) accepts what the page expects
        fits = declared == expected or (declared == "integer" and expected == "number")
        assert fits, f"{name}: {path} is {declared} in the API, the console expects {expected}"


def _under_open_object(root: dict[str, Any], path: str, spec: dict[str, Any]) -> bool:
    """Whether ``path`` lies in an object that allows extra keys (the detector summary)."""
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    if not parent:
        return False
    schema = _field(root, parent, spec)
    return bool(schema) and schema.get("additionalProperties", False) is not False


def test_the_contract_names_real_endpoints(openapi) -> None:
    for name in CONTRACT:
        method, path = name.split(" ", 1)
        assert path in openapi["paths"], name
        assert method.lower() in openapi["paths"][path], name


def test_every_api_path_the_pages_call_is_in_the_contract() -> None:
    """A call added to api.js without a contract entry would go unchecked."""
    source = (STATIC_DIR / "js" / "api.js").read_text()
    called = set(re.findall(r'contract: "([A-Z]+ /v1/[^"]+)"', source))
    assert called == set(CONTRACT), called ^ set(CONTRACT)


def test_static_files_are_all_referenced_assets_that_exist() -> None:
    index = (STATIC_DIR / "index.html").read_text()
    for ref in re.findall(r'(?:href|src)="console/([^"]+)"', index):
        assert (STATIC_DIR / ref).is_file(), ref
    for module in (STATIC_DIR / "js").rglob("*.js"):
        for ref in re.findall(r'from "(\.[^"]+)"', module.read_text()):
            assert (module.parent / ref).resolve().is_file(), f"{module.name} imports {ref}"
    assert Path(STATIC_DIR / "contract.json").is_file()
