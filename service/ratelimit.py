"""Limits per caller: requests in flight (the default), and an optional token bucket.

The caller is its API key id, or its client address in open mode (no keys), so an anonymous
client cannot take the whole service either.

The default limit is on load, not on politeness: :class:`InFlightLimiter` lets one caller hold
at most ``GGA_CALLER_CONCURRENCY`` requests in the server at once. A client that waits for each
answer before sending the next is never refused however fast the server answers it; one that
floods the server is refused (429) beyond its share, at once, whatever the server's speed.

The token bucket (``GGA_RATE_LIMIT``, off by default) counts requests over time instead. With
``GGA_REDIS_URL`` set, every replica draws from the same buckets (a Lua script updates a bucket
atomically, on the Redis server's clock), so N replicas enforce the configured rate, not N times
it. If Redis cannot be reached the limit is not enforced for that request (availability first)
and a warning is logged, at most once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Protocol

from service.errors import RateLimited, TooManyInFlight

logger = logging.getLogger(__name__)


class InFlightLimiter:
    """At most ``limit`` requests of one caller in this process at once.

    Used on the event loop only (the request path's dependency), so the counts need no lock.

    Args:
        limit: Requests one caller may have in the server at once; 0 disables the limit.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # Only callers with a request in the server: an entry goes when its count reaches 0.
        self._in_flight: dict[str, int] = {}

    def enter(self, caller: str) -> None:
        """Count one more request of ``caller``.

        Raises:
            TooManyInFlight: ``caller`` already has ``limit`` requests in the server.
        """
        held = self._in_flight.get(caller, 0)
        if self.limit > 0 and held >= self.limit:
            raise TooManyInFlight(self.limit)
        self._in_flight[caller] = held + 1

    def leave(self, caller: str) -> None:
        """One request of ``caller`` has been answered."""
        held = self._in_flight.get(caller, 0) - 1
        if held > 0:
            self._in_flight[caller] = held
        else:
            self._in_flight.pop(caller, None)

    def held(self, caller: str) -> int:
        """Requests ``caller`` has in the server now."""
        return self._in_flight.get(caller, 0)


class RateLimiter(Protocol):
    """What the request path needs of a rate limiter."""

    rate: float

    async def acquire(self, caller: str) -> None:
        """Take one token from ``caller``'s bucket; raises ``RateLimited`` when it is empty."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def _retry_after(tokens: float, rate: float) -> int:
    return max(1, math.ceil((1.0 - tokens) / rate))


class MemoryRateLimiter:
    """A token bucket per caller in this process: ``rate`` requests per second, bursts of ``burst``.

    Args:
        rate: Sustained requests per second per caller; 0 disables the limit.
        burst: Bucket size (requests allowed at once after idling).
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, caller: str) -> None:
        """Take one token from ``caller``'s bucket.

        Raises:
            RateLimited: The bucket is empty; ``Retry-After`` says when a token is back.
        """
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(caller, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[caller] = (tokens, now)
                raise RateLimited(_retry_after(tokens, self.rate))
            self._buckets[caller] = (tokens - 1.0, now)
            if len(self._buckets) > 100_000:
                self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled completely (they equal a fresh bucket)."""
        refill_s = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill_s}

    async def acquire(self, caller: str) -> None:
        self.take(caller)

    async def close(self) -> None:
        return None


# KEYS[1]: the bucket; ARGV: rate, burst. Returns {allowed (0/1), tokens left as a string}.
# TIME is the Redis server's clock, the same for every replica whatever their clocks say.
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {allowed, tostring(tokens)}
"""


class RedisRateLimiter:
    """Token buckets in Redis, shared by every replica that uses the same server and prefix.

    Args:
        url: ``redis://host:6379/0``.
        rate: Sustained requests per second per caller; 0 disables the limit.
        burst: Bucket size.
        prefix: Key prefix (one per deployment sharing a Redis server).
        timeout_s: Socket timeout; a slower Redis is treated as unreachable.
    """

    def __init__(
        self, url: str, rate: float, burst: int, prefix: str = "gga", timeout_s: float = 0.25
    ) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.rate = rate
        self.burst = max(1, burst)
        self.prefix = prefix
        self._timeout_s = timeout_s
        self._redis_module = aioredis
        # One client per event loop: redis.asyncio connections belong to the loop that made them.
        self._clients: dict[int, tuple[object, object]] = {}
        self._last_warning = -math.inf

    def _client(self) -> tuple[object, object]:
        loop_id = id(asyncio.get_running_loop())
        if loop_id not in self._clients:
            client = self._redis_module.from_url(
                self.url, socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s
            )
            self._clients[loop_id] = (client, client.register_script(TOKEN_BUCKET_LUA))
        return self._clients[loop_id]

    def key(self, caller: str) -> str:
        return f"{self.prefix}:ratelimit:{caller}"

    async def acquire(self, caller: str) -> None:
        """Take one token from ``caller``'s shared bucket.

        Raises:
            RateLimited: The bucket is empty.
        """
        if self.rate <= 0:
            return
        _client, script = self._client()
        try:
            allowed, tokens = await script(keys=[self.key(caller)], args=[self.rate, self.burst])
        except Exception as err:  # redis.RedisError, OSError, timeouts: fail open
            now = time.monotonic()
            if now - self._last_warning > 60:
                self._last_warning = now
                logger.warning("rate limit not enforced: Redis at %s failed (%s)", self.url, err)
            return
        if not int(allowed):
            raise RateLimited(_retry_after(float(tokens), self.rate))

    async def close(self) -> None:
        for client, _script in self._clients.values():
            await client.aclose()  # type: ignore[attr-defined]
        self._clients.clear()


def build_rate_limiter(
    rate: float, burst: int, redis_url: str | None, prefix: str = "gga"
) -> MemoryRateLimiter | RedisRateLimiter:
    """The limiter the settings ask for: shared in Redis when a URL is given, else per process."""
    if redis_url:
        return RedisRateLimiter(redis_url, rate, burst, prefix=prefix)
    return MemoryRateLimiter(rate, burst)
