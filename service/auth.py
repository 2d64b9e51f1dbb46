"""API keys: creation, storage as salted HMACs, and checking a presented key.

A key reads ``gga_<id>_<secret>``. Only the id, a random per-key salt and
``HMAC-SHA256(salt + pepper, secret)`` are stored; a presented key is found by its id and its
secret checked with ``hmac.compare_digest`` (constant time). Keys may also come from
``GGA_API_KEYS`` (deployments that inject secrets); those are hashed in memory at startup.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import math
import secrets
import time
from dataclasses import dataclass

from service.errors import Unauthorized
from service.store import Database
from service.store import repository as repo

logger = logging.getLogger(__name__)

_PREFIX = "gga"
# How long "are any keys configured?" is cached: a key created with `gga keys create` while the
# server runs switches it out of open mode within this many seconds.
_MODE_TTL_S = 5.0


def _digest(salt: str, pepper: str, secret: str) -> str:
    return hmac.new((salt + pepper).encode(), secret.encode(), hashlib.sha256).hexdigest()


def create_key(db: Database, name: str, pepper: str = "") -> tuple[str, str]:
    """Create and store a new API key.

    Args:
        db: The store (migrated).
        name: A label for humans (``gga keys list`` shows it).
        pepper: ``GGA_KEY_PEPPER``, mixed into the hash; the server must use the same value.

    Returns:
        The key id and the full key; the key is shown once and cannot be recovered.
    """
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    salt = secrets.token_hex(16)
    repo.add_key(
        db,
        {
            "id": key_id,
            "name": name,
            "salt": salt,
            "secret_hash": _digest(salt, pepper, secret),
            "created_at": dt.datetime.now(dt.UTC),
            "revoked_at": None,
        },
    )
    return key_id, f"{_PREFIX}_{key_id}_{secret}"


def _split(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != _PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


@dataclass(frozen=True)
class _StaticKey:
    key_id: str
    digest: bytes


class Authenticator:
    """Resolves a presented key to its key id, or refuses it.

    Args:
        db: The store holding created keys.
        static_keys: Plain keys from the settings (``GGA_API_KEYS``).
        required: Demand a key even when none is configured yet (``GGA_API_KEYS_REQUIRED``).
        pepper: Secret mixed into stored key hashes (``GGA_KEY_PEPPER``).
    """

    def __init__(
        self,
        db: Database,
        static_keys: list[str] | None = None,
        *,
        required: bool = False,
        pepper: str = "",
    ) -> None:
        self.db = db
        self.required = required
        self.pepper = pepper
        self._static = [
            _StaticKey(
                key_id="env-" + hashlib.sha256(k.encode()).hexdigest()[:8],
                digest=hashlib.sha256(k.encode()).digest(),
            )
            for k in static_keys or []
        ]
        self._mode_checked = -math.inf
        self._enabled = bool(self._static) or required

    @property
    def enabled(self) -> bool:
        """Whether keys are checked (False: open mode, everyone is anonymous).

        May query the store (at most every few seconds); :meth:`stale` says whether it will.
        """
        if self.stale:
            self.refresh()
        return self._enabled

    @property
    def stale(self) -> bool:
        """Whether the cached mode is too old (reading ``enabled`` would query the store)."""
        if self._static or self.required:
            return False
        return time.monotonic() - self._mode_checked > _MODE_TTL_S

    def refresh(self) -> None:
        """Re-read from the store whether any key exists."""
        if self._static or self.required:
            return
        self._enabled = repo.count_active_keys(self.db) > 0
        self._mode_checked = time.monotonic()

    def authenticate(self, token: str | None) -> str | None:
        """The key id of ``token``; None in open mode.

        Raises:
            Unauthorized: Keys are on and the token is missing, malformed, unknown or revoked.
        """
        if not self.enabled:
            return None
        if not token:
            raise Unauthorized()
        presented = hashlib.sha256(token.encode()).digest()
        for key in self._static:
            if hmac.compare_digest(key.digest, presented):
                return key.key_id
        parts = _split(token)
        if parts is not None:
            key_id, secret = parts
            row = repo.get_key(self.db, key_id)
            if row is not None and row["revoked_at"] is None:
                presented_hash = _digest(row["salt"], self.pepper, secret)
                if hmac.compare_digest(presented_hash, row["secret_hash"]):
                    return key_id
        raise Unauthorized("the API key is unknown or revoked; create one with `gga keys create`")


def token_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise Unauthorized("the Authorization header must read 'Bearer <key>'")
    return None
