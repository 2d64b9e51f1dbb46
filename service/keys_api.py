"""``/v1/keys``: admin keys create, list and revoke the stored API keys over HTTP.

What ``gga keys create|list|revoke`` does on the host, for operators who reach the service only
through its API (a managed deployment, several replicas): the same store, the same salted HMACs,
the same scopes. The plain key is in the answer to ``POST`` alone, never stored and never shown
again. Only an admin key may call these routes; predict and read keys get 403, and so does open
mode, where nobody is identified (the first key is made on the host). Keys given in
``GGA_API_KEYS`` live in the environment, not the store: they are neither listed nor revoked
here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from service.access import Caller, Scope, check_may_manage_keys
from service.auth import Authenticator, create_key
from service.errors import KeyNotFound, StoreUnavailable
from service.protocol.deps import IdentityDep
from service.protocol.schemas import ErrorV1
from service.store import repository as repo

logger = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorV1} for code in (401, 403, 404, 422, 429, 503)
}
# Key ids are 12 hex digits (auth.create_key); the pattern keeps anything else out of the query.
KeyId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="The key's id.")]


class KeyCreate(BaseModel):
    """Body of ``POST /v1/keys``."""

    model_config = ConfigDict(extra="forbid")

    # Printable text only: the store's column holds 128 characters and PostgreSQL no NUL.
    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="A label for humans (who holds the key).",
    )
    scope: Literal["predict", "read", "admin"] = Field(
        "predict", description="What the key may do (docs/configuration.md, API keys)."
    )


class KeyOut(BaseModel):
    id: str = Field(description="The key's id: the part of the key between 'gga_' and '_'.")
    name: str
    scope: str
    state: Literal["active", "revoked"]
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None


class KeyCreated(KeyOut):
    key: str = Field(description="The whole key, shown in this answer only: store it now.")


class KeyList(BaseModel):
    keys: list[KeyOut] = Field(description="Every stored key, oldest first (no secrets).")


def _out(row: dict[str, Any]) -> dict[str, Any]:
    state = "revoked" if row["revoked_at"] is not None else "active"
    fields = ("id", "name", "scope", "created_at", "revoked_at")
    return {**{f: row[f] for f in fields}, "state": state}


async def _written(db, key_id: str) -> dict[str, Any]:
    """The row of a key this request has just written; a store that lost it is a 503."""
    row = await asyncio.to_thread(repo.get_key, db, key_id)
    if row is None:
        raise StoreUnavailable(f"key {key_id} not found right after it was written", writing=False)
    return row


def _admin(identity: Caller) -> Caller:
    check_may_manage_keys(identity)
    return identity


async def create(body: KeyCreate, request: Request, identity: IdentityDep) -> Response:
    """Create a key; the answer holds the whole key, which cannot be shown again."""
    admin = _admin(identity)
    db = request.app.state.db
    pepper = request.app.state.settings.key_pepper
    key_id, key = await asyncio.to_thread(create_key, db, body.name, pepper, Scope(body.scope))
    row = await _written(db, key_id)
    logger.info("API key %s (%s) created by key %s", key_id, body.scope, admin.key_id)
    created = KeyCreated(**_out(row), key=key)
    # The secret must not stay in a cache between here and the client.
    return Response(
        created.model_dump_json(),
        status_code=201,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def list_keys(request: Request, identity: IdentityDep) -> KeyList:
    """Every stored key: id, name, scope, state and times, never a secret."""
    _admin(identity)
    rows = await asyncio.to_thread(repo.list_keys, request.app.state.db)
    return KeyList(keys=[KeyOut(**_out(row)) for row in rows])


async def revoke(key_id: KeyId, request: Request, identity: IdentityDep) -> KeyOut:
    """Revoke an active key: refused at once by this server, by the others within
    ``GGA_AUTH_CACHE_S``."""
    admin = _admin(identity)
    db = request.app.state.db
    if not await asyncio.to_thread(repo.revoke_key, db, key_id):
        raise KeyNotFound(key_id)
    auth: Authenticator = request.app.state.auth
    auth.forget(key_id)
    logger.info("API key %s revoked by key %s", key_id, admin.key_id)
    row = await _written(db, key_id)
    return KeyOut(**_out(row))


def register_key_endpoints(app: FastAPI) -> None:
    """Add ``/v1/keys`` to ``app``."""
    router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=ERRORS)
    router.add_api_route(
        "",
        create,
        methods=["POST"],
        status_code=201,
        response_model=KeyCreated,
        responses={201: {"description": "The key, shown once", "model": KeyCreated}},
    )
    router.add_api_route("", list_keys, methods=["GET"])
    router.add_api_route("/{key_id}", revoke, methods=["DELETE"])
    app.include_router(router)
