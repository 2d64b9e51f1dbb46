"""API keys: creation, storage as salted HMACs, and checking a presented key, cached briefly.

A key reads ``gga_<id>_<secret>``. Only the id, a random per-key salt, the key's scope and
``HMAC-SHA256(salt + pepper, secret)`` are stored; a presented key is found by its id and its
secret checked with ``hmac.compare_digest`` (constant time). Keys may also come from
``GGA_API_KEYS`` (deployments that inject secrets); those are hashed in memory at startup and
have the predict scope, or the one an entry names (``admin:KEY``, ``access.parse_static_keys``).

Asking the store on every request costs a database round trip per request. The answer (the key's
caller, or its refusal) and whether keys are on at all are therefore kept for
``GGA_AUTH_CACHE_S`` seconds: a key revoked, or given another scope, takes effect within that
time, and a store that cannot be reached is noticed within it too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from service.access import Caller, Scope, parse_static_keys
from service.errors import Unauthorized
from service.store import Database
from service.store import repository as repo

logger = logging.getLogger(__name__)

_PREFIX = "gga"
# Most presented keys remembered; beyond it the least recently used are forgotten, so a client
# sending random keys cannot grow the cache without bound.
MAX_CACHED_KEYS = 10_000
_REFUSED = "the API key is unknown or revoked; create one with `gga keys create`"


def _digest(salt: str, pepper: str, secret: str) -> str:
    return hmac.new((salt + pepper).encode(), secret.encode(), hashlib.sha256).hexdigest()


def create_key(
    db: Database, name: str, pepper: str = "", scope: Scope = Scope.PREDICT
) -> tuple[str, str]:
    """Create and store a new API key.

    Args:
        db: The store (migrated).
        name: A label for humans (``gga keys list`` shows it).
        pepper: ``GGA_KEY_PEPPER``, mixed into the hash; the server must use the same value.
        scope: What the key may do (``service.access``).

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
            "scope": Scope(scope).value,
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
    scope: Scope


def _static_key(scope: Scope, key: str) -> _StaticKey:
    # The id hashes the key alone: giving a key a scope keeps its id, so the predictions it
    # made stay its own.
    digest = hashlib.sha256(key.encode()).digest()
    return _StaticKey(key_id="env-" + digest.hex()[:8], digest=digest, scope=scope)


class _Verdicts:
    """Recent answers for presented keys, by the key's SHA-256: a caller, or None for refused.

    Thread-safe: the event loop reads it, worker threads fill it.
    """

    def __init__(self, ttl_s: float, capacity: int = MAX_CACHED_KEYS) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._entries: OrderedDict[bytes, tuple[float, Caller | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> tuple[bool, Caller | None]:
        """(found, verdict); an entry older than the TTL is not found."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None or time.monotonic() >= entry[0]:
                return False, None
            self._entries.move_to_end(digest)
            return True, entry[1]

    def forget(self, key_id: str) -> None:
        """Drop the verdicts that name ``key_id`` (revoked here: refused at once, not in TTL)."""
        with self._lock:
            for digest in [d for d, (_, v) in self._entries.items() if v and v.key_id == key_id]:
                del self._entries[digest]

    def put(self, digest: bytes, verdict: Caller | None) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._entries[digest] = (time.monotonic() + self.ttl_s, verdict)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


class Authenticator:
    """Resolves a presented key to its caller, or refuses it.

    Args:
        db: The store holding created keys.
        static_keys: Entries of ``GGA_API_KEYS``: ``KEY`` (predict scope) or ``SCOPE:KEY``.
        required: Demand a key even when none is configured yet (``GGA_API_KEYS_REQUIRED``).
        pepper: Secret mixed into stored key hashes (``GGA_KEY_PEPPER``).
        cache_s: How long a verdict on a key, and the mode (keys on or off), is believed
            without asking the store (``GGA_AUTH_CACHE_S``); 0 asks on every request.
    """

    def __init__(
        self,
        db: Database,
        static_keys: list[str] | None = None,
        *,
        required: bool = False,
        pepper: str = "",
        cache_s: float = 5.0,
    ) -> None:
        self.db = db
        self.required = required
        self.pepper = pepper
        self.cache_s = cache_s
        self._static = [_static_key(*entry) for entry in parse_static_keys(static_keys or [])]
        self._verdicts = _Verdicts(cache_s)
        self._mode_checked = -math.inf
        # Whether keys were on when last read from the store; reading it never queries.
        self.keys_on = bool(self._static) or required

    @property
    def enabled(self) -> bool:
        """Whether keys are checked (False: open mode, everyone is anonymous).

        Queries the store when the cached answer is stale (:attr:`stale`); the event loop reads
        :attr:`keys_on` after refreshing off the loop instead.
        """
        if self.stale:
            self.refresh()
        return self.keys_on

    @property
    def stale(self) -> bool:
        """Whether the cached mode is too old (reading ``enabled`` would query the store)."""
        if self._static or self.required:
            return False
        return time.monotonic() - self._mode_checked >= self.cache_s

    def refresh(self) -> None:
        """Re-read from the store whether any key exists.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: The store cannot be read (the app answers 503).
        """
        if self._static or self.required:
            return
        self.keys_on = repo.count_active_keys(self.db) > 0
        self._mode_checked = time.monotonic()

    def forget(self, key_id: str) -> None:
        """Forget what this replica believed about ``key_id`` (the key API revoked it); other
        replicas refuse it once their cached verdict expires (``GGA_AUTH_CACHE_S``)."""
        self._verdicts.forget(key_id)

    def cached(self, token: str | None) -> Caller | None:
        """The caller of ``token`` if known without the store; None when the store must be asked.

        The event loop calls this; :meth:`authenticate` (on a worker thread) does the rest.

        Raises:
            Unauthorized: Keys are on and the token is missing, or was refused recently.
        """
        if not token:
            raise Unauthorized()
        presented = hashlib.sha256(token.encode()).digest()
        for key in self._static:
            if hmac.compare_digest(key.digest, presented):
                return Caller(key.key_id, key.scope)
        found, verdict = self._verdicts.get(presented)
        if not found:
            return None
        if verdict is None:
            raise Unauthorized(_REFUSED)
        return verdict

    def authenticate(self, token: str | None) -> Caller:
        """The caller of ``token``, with keys on (the cache first, then the store).

        Raises:
            Unauthorized: The token is missing, malformed, unknown or revoked.
            sqlalchemy.exc.SQLAlchemyError: The store cannot be read (the app answers 503).
        """
        known = self.cached(token)
        if known is not None:
            return known
        assert token is not None  # cached() refuses a missing one
        verdict = self._look_up(token)
        self._verdicts.put(hashlib.sha256(token.encode()).digest(), verdict)
        if verdict is None:
            raise Unauthorized(_REFUSED)
        return verdict

    def _look_up(self, token: str) -> Caller | None:
        """Ask the store about ``token``: its caller, or None when it is not a valid key."""
        parts = _split(token)
        if parts is None:
            return None
        key_id, secret = parts
        row = repo.get_key(self.db, key_id)
        if row is None or row["revoked_at"] is not None:
            return None
        presented_hash = _digest(row["salt"], self.pepper, secret)
        if not hmac.compare_digest(presented_hash, row["secret_hash"]):
            return None
        try:
            return Caller(key_id, Scope(row["scope"]))
        except ValueError:  # a scope this release does not know: refuse rather than guess
            logger.warning("API key %s has an unknown scope %r; refused", key_id, row["scope"])
            return None


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
